"""Evaluating sample batches: `evaluate_npz`, `classifier_accuracy`, reference batches.

Batches use the reference's npz layout: arr_0 uint8 [N, H, W, C] (arr_1 labels optional).
The reference side may also be a statistics npz written by `save_reference_stats`
(mu, sigma, spatial_mu, spatial_sigma; the raw pool features for precision/recall).
Every result names the feature network that produced it.
"""

import functools
import hashlib
import logging
import os
import re
from typing import Any, Dict, Optional
import zipfile

import numpy as np
import tqdm

from adm_jax import data as data_lib
from adm_jax.evaluation import feature_net
from adm_jax.evaluation import inception
from adm_jax.evaluation import metrics

log = logging.getLogger(__name__)

FEATURE_NETS = (feature_net.NAME, "inception_v3")


def _open_npz(path: str, what: str) -> Dict[str, np.ndarray]:
  """Every array of an npz, or one line saying why the file is not a readable npz."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{what} {path} not found")
  try:
    with np.load(path, allow_pickle=False) as data:
      if not hasattr(data, "files"):
        raise ValueError("a single .npy array, not an npz")
      return {k: data[k] for k in data.files}
  except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
    detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
    raise ValueError(
      f"{what} {path} is not a readable npz (truncated, damaged or another format: {detail})"
    ) from None


def load_batch(path: str, what: str = "sample batch") -> Dict[str, np.ndarray]:
  """{'images': uint8 [N, H, W, C], 'labels': [N] or None} from a reference-layout npz.

  A file that is not a readable npz, lacks arr_0, or whose images are not uint8 NHWC in
  0..255 (floats, NaN, values out of range) fails in one line naming it."""
  data = _open_npz(path, what)
  if "arr_0" not in data:
    raise ValueError(
      f"{what} {path}: expected the reference layout (arr_0 uint8 NHWC images, "
      f"arr_1 labels); found keys {sorted(data)}"
    )
  images, labels = data["arr_0"], data.get("arr_1")
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
    raise ValueError(
      f"{what} {path}: arr_0 must be images [N, H, W, C] with C = 1 or 3, got shape {images.shape}"
    )
  if images.dtype != np.uint8:
    if not np.issubdtype(images.dtype, np.number):
      raise ValueError(f"{what} {path}: arr_0 holds {images.dtype}, not uint8 images")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
      raise ValueError(
        f"{what} {path}: arr_0 holds NaN or inf ({images.dtype}; uint8 0..255 expected)"
      )
    raise ValueError(
      f"{what} {path}: arr_0 must be uint8 in 0..255, got {images.dtype} with "
      f"values {images.min()}..{images.max()}"
    )
  return {"images": images, "labels": labels}


STATS_KEYS = ("mu", "sigma", "spatial_mu", "spatial_sigma", "pool", "feature_net")


def load_reference(path: str, feature_net_name: str) -> Dict[str, np.ndarray]:
  """A reference: statistics written by save_reference_stats (checked to be of
  `feature_net_name`), or a batch of images ({'images': ...}). One line when it is neither."""
  data = _open_npz(path, "reference")
  if "mu" in data:
    missing = [k for k in STATS_KEYS if k not in data]
    if missing:
      raise ValueError(
        f"reference statistics {path} lack {', '.join(missing)}: write them with "
        "adm_jax.evaluation.save_reference_stats"
      )
    if str(data["feature_net"]) != feature_net_name:
      raise ValueError(
        f"reference statistics {path} are of the feature network "
        f"{data['feature_net']}, not {feature_net_name} (sample.feature_net): "
        "use statistics of the same network, or its reference images"
      )
    return data
  return {"images": load_batch(path, "reference batch")["images"]}


@functools.lru_cache(maxsize=4)
def _extractor(name: str, inception_weights: Optional[str]):
  """The jitted feature function of a network (kept per process: one compilation per network
  and weights file, whatever the number of evaluations)."""
  if name == feature_net.NAME:
    module, params = feature_net.load()
    return feature_net.make_feature_fn(params, module)
  if name == "inception_v3":
    return inception.make_feature_fn(inception.load_inception_params(inception_weights))
  raise ValueError(f"unknown feature network {name!r}; expected one of {FEATURE_NETS}")


def extract_features(
  images: np.ndarray, feature_fn, batch_size: int = 250, desc: str = "features"
) -> Dict[str, np.ndarray]:
  """Runs a feature network over uint8 images in batches (with a progress bar)."""
  out: Dict[str, list] = {}
  for start in tqdm.trange(0, len(images), batch_size, desc=desc, leave=False):
    feats = feature_fn(images[start : start + batch_size])
    for key, value in feats.items():
      out.setdefault(key, []).append(np.asarray(value, dtype=np.float32))
  return {k: np.concatenate(v) for k, v in out.items()}


def _softmax(logits):
  z = logits - logits.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def reference_stats(features: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  mu, sigma = metrics.compute_statistics(features["pool"])
  smu, ssigma = metrics.compute_statistics(metrics.spatial_features(features["spatial"]))
  return {
    "mu": mu,
    "sigma": sigma,
    "spatial_mu": smu,
    "spatial_sigma": ssigma,
    "pool": features["pool"],
  }


def save_reference_stats(
  path: str,
  ref_npz: str,
  feature_net_name: str = feature_net.NAME,
  inception_weights: Optional[str] = None,
) -> str:
  """Caches a reference batch's statistics (and pool features) for later evaluations."""
  batch = load_batch(ref_npz)
  feats = extract_features(
    batch["images"], _extractor(feature_net_name, inception_weights), desc="reference"
  )
  np.savez(path, feature_net=feature_net_name, **reference_stats(feats))
  return path


def evaluate_npz(
  sample_npz: str,
  reference: str,
  feature_net_name: str = feature_net.NAME,
  inception_weights: Optional[str] = None,
  batch_size: int = 250,
) -> Dict[str, Any]:
  """FID, sFID, IS, precision and recall of a sample batch against a reference batch/stats."""
  samples = load_batch(sample_npz)  # both inputs are checked before any feature is computed
  ref = load_reference(reference, feature_net_name)
  feature_fn = _extractor(feature_net_name, inception_weights)
  sample_feats = extract_features(samples["images"], feature_fn, batch_size, desc="samples")
  if "images" in ref:
    ref = reference_stats(extract_features(ref["images"], feature_fn, batch_size, desc="reference"))
  mu, sigma = metrics.compute_statistics(sample_feats["pool"])
  smu, ssigma = metrics.compute_statistics(metrics.spatial_features(sample_feats["spatial"]))
  precision, recall = metrics.precision_recall(ref["pool"], sample_feats["pool"])
  result = {
    "feature_net": feature_net_name,
    "n_samples": int(len(samples["images"])),
    "n_reference": int(len(ref["pool"])),
    "fid": metrics.frechet_distance(ref["mu"], ref["sigma"], mu, sigma),
    "sfid": metrics.frechet_distance(ref["spatial_mu"], ref["spatial_sigma"], smu, ssigma),
    "inception_score": metrics.inception_score(_softmax(sample_feats["logits"])),
    "precision": precision,
    "recall": recall,
  }
  if samples["labels"] is not None and feature_net_name == feature_net.NAME:
    predicted = sample_feats["logits"].argmax(axis=1)
    result["classifier_accuracy"] = float((predicted == samples["labels"]).mean())
  return result


def classifier_accuracy(sample_npz: str) -> float:
  """Share of class-conditional samples that fmnist_cnn_v1 assigns to their class (arr_1)."""
  batch = load_batch(sample_npz)
  if batch["labels"] is None:
    raise ValueError(f"{sample_npz} has no labels (arr_1)")
  module, params = feature_net.load()
  feats = extract_features(batch["images"], feature_net.make_feature_fn(params, module))
  return float((feats["logits"].argmax(axis=1) == batch["labels"]).mean())


def write_reference_batch(
  path: str, data_config, split: str, num: int, image_size: int, source=None
) -> str:
  """A reference batch npz (arr_0 uint8, arr_1 labels) from the first `num` images of a split
  (of `source` when given, already created from data_config and split)."""
  if source is None:
    source = data_lib.create_source(data_config, split)
  num = min(num, len(source))
  images, labels = [], []
  for i in range(num):
    item, label = source[i]
    images.append(data_lib.preprocess(item, image_size, data_config.channels))
    labels.append(label)
  np.savez(path, arr_0=np.stack(images).astype(np.uint8), arr_1=np.asarray(labels))
  return path


def source_tag(name: str, limit: int = 60) -> str:
  """A file-name-safe tag of a data source's name (which says split and, for Fashion-MNIST, full set
  or embedded subset), e.g. 'fashion_mnist_subset_test'; long names end in a hash of the name."""
  tag = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
  if len(tag) > limit:
    tag = tag[: limit - 9] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
  return tag


def format_result(result: Dict[str, Any]) -> str:
  """One line: '[fmnist_cnn_v1] FID 3.420  sFID ...  class accuracy 0.789'."""
  line = (
    f"[{result['feature_net']}] FID {result['fid']:.3f}  sFID {result['sfid']:.3f}  "
    f"IS {result['inception_score']:.3f}  precision {result['precision']:.3f}  "
    f"recall {result['recall']:.3f}"
  )
  if "classifier_accuracy" in result:
    line += f"  class accuracy {result['classifier_accuracy']:.3f}"
  return line
