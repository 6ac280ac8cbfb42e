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

import numpy as np
import tqdm

from adm_jax import data as data_lib
from adm_jax.evaluation import feature_net
from adm_jax.evaluation import inception
from adm_jax.evaluation import metrics

log = logging.getLogger(__name__)

FEATURE_NETS = (feature_net.NAME, "inception_v3")


def load_batch(path: str) -> Dict[str, np.ndarray]:
  """{'images': uint8 [N, H, W, C], 'labels': [N] or None} from a reference-layout npz."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"sample batch {path} not found")
  with np.load(path) as data:
    if "arr_0" not in data.files:
      raise ValueError(f"{path}: expected the reference layout (arr_0 uint8 NHWC images, "
                       f"arr_1 labels); found keys {data.files}")
    images = data["arr_0"]
    labels = data["arr_1"] if "arr_1" in data.files else None
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"{path}: arr_0 must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
  return {"images": images, "labels": labels}


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


def extract_features(images: np.ndarray, feature_fn, batch_size: int = 250,
                     desc: str = "features") -> Dict[str, np.ndarray]:
  """Runs a feature network over uint8 images in batches (with a progress bar)."""
  out: Dict[str, list] = {}
  for start in tqdm.trange(0, len(images), batch_size, desc=desc, leave=False):
    feats = feature_fn(images[start:start + batch_size])
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
  return {"mu": mu, "sigma": sigma, "spatial_mu": smu, "spatial_sigma": ssigma,
          "pool": features["pool"]}


def save_reference_stats(path: str, ref_npz: str, feature_net_name: str = feature_net.NAME,
                         inception_weights: Optional[str] = None) -> str:
  """Caches a reference batch's statistics (and pool features) for later evaluations."""
  batch = load_batch(ref_npz)
  feats = extract_features(batch["images"], _extractor(feature_net_name, inception_weights),
                           desc="reference")
  np.savez(path, feature_net=feature_net_name, **reference_stats(feats))
  return path


def evaluate_npz(sample_npz: str, reference: str, feature_net_name: str = feature_net.NAME,
                 inception_weights: Optional[str] = None, batch_size: int = 250) -> Dict[str, Any]:
  """FID, sFID, IS, precision and recall of a sample batch against a reference batch/stats."""
  feature_fn = _extractor(feature_net_name, inception_weights)
  samples = load_batch(sample_npz)
  sample_feats = extract_features(samples["images"], feature_fn, batch_size, desc="samples")
  with np.load(reference) as data:
    if "mu" in data.files:
      if str(data["feature_net"]) != feature_net_name:
        raise ValueError(f"{reference} holds {data['feature_net']} statistics, not {feature_net_name}")
      ref = {k: data[k] for k in data.files}
    else:
      ref = None
  if ref is None:
    ref_images = load_batch(reference)["images"]
    ref = reference_stats(extract_features(ref_images, feature_fn, batch_size, desc="reference"))
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


def write_reference_batch(path: str, data_config, split: str, num: int, image_size: int,
                          source=None) -> str:
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
    tag = tag[:limit - 9] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
  return tag


def format_result(result: Dict[str, Any]) -> str:
  """One line: '[fmnist_cnn_v1] FID 3.420  sFID ...  class accuracy 0.789'."""
  line = (f"[{result['feature_net']}] FID {result['fid']:.3f}  sFID {result['sfid']:.3f}  "
          f"IS {result['inception_score']:.3f}  precision {result['precision']:.3f}  "
          f"recall {result['recall']:.3f}")
  if "classifier_accuracy" in result:
    line += f"  class accuracy {result['classifier_accuracy']:.3f}"
  return line
