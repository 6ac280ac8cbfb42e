"""Shared pieces of the quality-per-NFE campaign: model at a checkpoint, fixed seeds and labels,
resumable sampling in batches, one reference statistics file, honest timing.

Used by experiments/solver_nfe.py (FID against NFE), plateau_eval.py (the training curve) and
ode_deficit.py (where the deterministic samplers lose). A point is a dict
  {sampler, nfe, scale, schedule, options}
sampled in batches of `batch` images; batch i always uses key fold_in(PRNGKey(seed), i) and
labels LABELS[i * batch:(i + 1) * batch] (LABELS: 20,000 uniform class draws from
default_rng(seed)), so every sampler starts from the same x_T with the same labels, and a point
of N = 2,000 images is its N = 1,000 point plus four more batches. Every batch is saved at once
(images, labels, wall and process CPU seconds, load average) and skipped when rerun.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from adm_jax import xla_env  # noqa: E402  pylint: disable=wrong-import-position

# Where the campaign's runs, samples and statistics go (ADM_JAX_RUNS, else a folder in /tmp).
RUNS = os.environ.get("ADM_JAX_RUNS", os.path.join(tempfile.gettempdir(), "adm_jax_runs"))
REF_DIR = os.path.join(RUNS, "ref")
MAX_LABELS = 20000


def reference_stats(ref_dir: str = REF_DIR, split: str = "test", num: int = 10000) -> str:
  """The one reference statistics file: fmnist_cnn_v1 statistics of a Fashion-MNIST split."""
  from adm_jax.evaluation import api  # pylint: disable=g-import-not-at-top
  from experiments.guidance_sweep import cached_reference  # pylint: disable=g-import-not-at-top

  os.makedirs(ref_dir, exist_ok=True)
  path = os.path.join(ref_dir, f"fmnist_cnn_v1_stats_{split}_{num}.npz")
  if not os.path.exists(path):
    api.save_reference_stats(path + ".tmp.npz", cached_reference(ref_dir, split, num))
    os.replace(path + ".tmp.npz", path)
  return path


def labels_all(seed: int = 0, num_classes: int = 10) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, num_classes, size=MAX_LABELS).astype(np.int32)


def point_name(point) -> str:
  name = f"{point['sampler']}_{point['nfe']}_s{float(point['scale']):g}"
  if point.get("schedule") and point["sampler"] not in ("ddpm", "ddim"):
    name += "_" + point["schedule"]
  for key in sorted(point.get("options", {})):
    name += f"_{key}{point['options'][key]}"
  return name


def parse_point(text: str):
  """'sampler:nfe:scale[:schedule][:k=v,...]' -> point dict."""
  parts = text.split(":")
  point = {
    "sampler": parts[0],
    "nfe": int(parts[1]),
    "scale": float(parts[2]),
    "schedule": "",
    "options": {},
  }
  for part in parts[3:]:
    if "=" in part:
      point["options"].update(kv.split("=", 1) for kv in part.split(","))
    elif part:
      point["schedule"] = part
  return point


class Model:
  """The diffusion model (EMA params of one checkpoint) and its classifier, built once.

  `workdir`: a configs/fashion_mnist.py training workdir (its checkpoint `step`, EMA copy
  `ema_index`), or a frozen model written by `export` (a .npz; step and EMA are its own).
  """

  def __init__(
    self,
    workdir: str,
    step: int = -1,
    ema_index: int = -1,
    use_ema: bool = True,
    classifier: bool = True,
  ):
    xla_env.configure_for_cpu()
    import jax  # pylint: disable=g-import-not-at-top

    from adm_jax import sharding  # pylint: disable=g-import-not-at-top

    self.jax = jax
    self.workdir = workdir
    self.mesh = sharding.create_mesh(1, jax.devices()[:1])
    self.classifier = self.clf_params = None
    if workdir.endswith(".npz"):
      self._load_frozen(workdir, classifier)
    else:
      self._load_workdir(workdir, step, ema_index, use_ema, classifier)

  def _load_workdir(self, workdir, step, ema_index, use_ema, classifier):
    from adm_jax import config_base  # pylint: disable=g-import-not-at-top
    from adm_jax import networks  # pylint: disable=g-import-not-at-top
    from adm_jax import restore  # pylint: disable=g-import-not-at-top
    from adm_jax.training import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
    from adm_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
    from configs import fashion_mnist  # pylint: disable=g-import-not-at-top

    directory = restore.checkpoint_directory(workdir, "--mode=train", "--workdir")
    checkpointer = ckpt_lib.Checkpointer(directory, async_save=False, create=False)
    try:
      self.steps_available = sorted(checkpointer.all_steps())
      self.step = checkpointer.latest_step() if step < 0 else step
      saved = checkpointer.restore_meta(self.step).get("config") or {}
    finally:
      checkpointer.close()
    # The network and diffusion settings the checkpoint was trained with (as sampling takes
    # them), and its EMA rates, lr and batch for the records.
    config = fashion_mnist.get_config()
    keys = config_base.dotted_keys(
      config,
      restore.UNET_KEYS + ("train.ema_rate", "train.lr", "train.batch_size"),
      restore.UNET_EXCLUDED,
    )
    config = restore.trained_config(config, saved, keys, (), workdir)
    self.network = networks.unet(config)
    rates = state_lib.parse_ema_rates(config.train.ema_rate)
    self.params, _ = restore.restore_params(
      directory, self.network, self.mesh, rates, use_ema, ema_index, step=self.step
    )
    self.ema_rate = config.train.ema_rate.split(",")[ema_index] if use_ema else "none"
    self.base = networks.diffusion_process(config)
    clf_dir = os.path.join(workdir, config.classifier.checkpoint_dir)
    if classifier and os.path.isdir(clf_dir):
      self.classifier, self.clf_params = restore.guidance_classifier(config, workdir, self.mesh)
      checkpointer, _, meta = restore.newest_checkpoint(os.path.join(clf_dir, "checkpoints"))
      checkpointer.close()
      config = restore.trained_config(
        config, meta.get("config"), restore.CLASSIFIER_KEYS, (), clf_dir
      )
    self.config = config

  def _load_frozen(self, path, classifier):
    import ml_collections  # pylint: disable=g-import-not-at-top

    from adm_jax import networks  # pylint: disable=g-import-not-at-top

    with np.load(path) as d:
      arrays = {k: d[k] for k in d.files}
    meta = json.loads(str(arrays.pop("meta")))
    self.config = ml_collections.ConfigDict(meta["config"])
    self.step, self.ema_rate = meta["step"], meta["ema_rate"]
    self.steps_available = [self.step]
    self.network = networks.unet(self.config)
    self.params = _unflatten(self.network.abstract_params(), arrays, "unet")
    self.base = networks.diffusion_process(self.config)
    if classifier and meta["has_classifier"]:
      self.classifier = networks.classifier(self.config)
      self.clf_params = _unflatten(self.classifier.abstract_params(), arrays, "classifier")

  def export(self, path: str) -> None:
    """Writes this model (the sampled params, the classifier's, the settings) to one .npz that
    Model(path) loads without the training workdir: the campaign's model kept in the repo."""
    arrays = _flatten(self.params, "unet")
    if self.classifier is not None:
      arrays.update(_flatten(self.clf_params, "classifier"))
    meta = {
      "config": self.config.to_dict(),
      "step": self.step,
      "ema_rate": self.ema_rate,
      "has_classifier": self.classifier is not None,
      "source": os.path.abspath(self.workdir),
    }
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, meta=np.asarray(json.dumps(meta)), **arrays)
    os.replace(tmp, path)

  @property
  def image_shape(self):
    """(H, W, C) of the model's images."""
    m = self.config.model
    return (m.image_size, m.image_size, m.in_channels)

  def apply_fn(self):
    return self.network.inference_fn()

  def classifier_fn(self):
    return self.classifier.inference_fn() if self.classifier is not None else None

  def sample_fn(self, point):
    """(jitted fn(params, key, labels, clf_params) -> images [B, *image_shape], SamplerSpec)."""
    from adm_jax import sampling  # pylint: disable=g-import-not-at-top

    options = point.get("options", {})
    name = point["sampler"]
    solver = name in sampling.SOLVERS
    respacing = options.get("respacing", "")
    spec = sampling.SamplerSpec(
      name=name,
      steps=0 if respacing else point["nfe"],
      timestep_respacing=respacing,
      eta=float(options.get("eta", 0.0)),
      time_schedule=(point.get("schedule") or "logsnr") if solver else "time_uniform",
      thresholding=bool(int(options.get("thresholding", 0))),
      clip_guided=bool(int(options.get("clip_guided", 1))),
    )
    scale = float(point["scale"])
    if scale and self.classifier is None:
      raise ValueError("classifier guidance needs WORKDIR/classifier (--mode=train_classifier)")
    fn = sampling.make_sample_fn(
      self.apply_fn(),
      self.base,
      self.image_shape,
      spec,
      class_cond=True,
      classifier_fn=self.classifier_fn(),
      classifier_scale=scale,
      clip_denoised=bool(int(options.get("clip", 1))),
    )
    return fn, spec


def _leaf_names(tree, prefix: str):
  """'prefix/a/b' for every leaf of a params tree, in jax.tree.leaves order."""
  import jax  # pylint: disable=g-import-not-at-top

  return [
    prefix + "/" + "/".join(str(getattr(k, "key", k)) for k in path)
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


def _flatten(tree, prefix: str):
  """{'prefix/a/b': np.ndarray} of a params tree."""
  import jax  # pylint: disable=g-import-not-at-top

  return dict(zip(_leaf_names(tree, prefix), (np.asarray(x) for x in jax.tree.leaves(tree))))


def _unflatten(abstract, arrays, prefix: str):
  """A params tree shaped as `abstract` from `_flatten`'s arrays; every leaf must match."""
  import jax  # pylint: disable=g-import-not-at-top

  paths = _leaf_names(abstract, prefix)
  shapes = [a.shape for a in jax.tree.leaves(abstract)]
  missing = [p for p in paths if p not in arrays]
  if missing:
    raise ValueError(f"frozen model lacks {len(missing)} {prefix} params, e.g. {missing[0]}")
  leaves = [jax.numpy.asarray(arrays[p]) for p in paths]
  for p, leaf, shape in zip(paths, leaves, shapes):
    if leaf.shape != shape:
      raise ValueError(f"frozen model's {p} has shape {leaf.shape}, the network wants {shape}")
  return jax.tree.unflatten(jax.tree.structure(abstract), leaves)


def run_batches(
  fn_or_factory, params, clf_params, out_dir: str, num: int, batch: int, seed: int = 0, log=print
):
  """Samples batches 0..ceil(num / batch) - 1 into out_dir/batch_{i}.npz (skipping saved ones).

  fn_or_factory: a jitted fn(params, key, labels, clf_params), or a callable returning one
  (called only when some batch is missing). Compilation is done before the timed batches.
  Returns (images uint8 [num], labels [num], per-batch records).
  """
  import jax  # pylint: disable=g-import-not-at-top

  from adm_jax import sampling  # pylint: disable=g-import-not-at-top

  os.makedirs(out_dir, exist_ok=True)
  labels = labels_all(seed)
  nb = -(-num // batch)
  compiled = None
  for i in range(nb):
    path = os.path.join(out_dir, f"batch_{i}.npz")
    if os.path.exists(path):
      continue
    y = jax.numpy.asarray(labels[i * batch : (i + 1) * batch])
    key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
    if compiled is None:
      fn = fn_or_factory if hasattr(fn_or_factory, "lower") else fn_or_factory()
      start = time.perf_counter()
      compiled = fn.lower(params, key, y, clf_params).compile()
      log(f"  compiled in {time.perf_counter() - start:.1f} s")
    load0 = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    out = np.asarray(jax.block_until_ready(compiled(params, key, y, clf_params)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    np.savez(
      path + ".tmp.npz",
      images=sampling.to_uint8(out),
      labels=np.asarray(y),
      wall_s=wall,
      cpu_s=cpu,
      load0=load0,
      load1=os.getloadavg()[0],
      batch=batch,
    )
    os.replace(path + ".tmp.npz", path)
    log(
      f"  batch {i}: {wall:.1f} s wall, {cpu:.1f} s CPU ({wall / batch * 1e3:.1f} ms/image), "
      f"load {load0:.1f}"
    )
  images, ys, records = [], [], []
  for i in range(nb):
    with np.load(os.path.join(out_dir, f"batch_{i}.npz")) as d:
      images.append(d["images"])
      ys.append(d["labels"])
      records.append({k: float(d[k]) for k in ("wall_s", "cpu_s", "load0", "load1", "batch")})
  return np.concatenate(images)[:num], np.concatenate(ys)[:num], records


def score(images, labels, npz_path: str, reference: str):
  """FID, sFID, IS, precision, recall, class accuracy (fmnist_cnn_v1) of uint8 images."""
  from adm_jax.evaluation import api  # pylint: disable=g-import-not-at-top

  np.savez(npz_path, arr_0=images, arr_1=labels)
  try:
    return api.evaluate_npz(npz_path, reference)
  finally:
    os.remove(npz_path)


def timing(records):
  """Seconds per image (wall and process CPU) over the timed batches, and the mean load."""
  n = sum(r["batch"] for r in records)
  return {
    "seconds_per_image": sum(r["wall_s"] for r in records) / n,
    "cpu_seconds_per_image": sum(r["cpu_s"] for r in records) / n,
    "load_avg_1min": float(np.mean([0.5 * (r["load0"] + r["load1"]) for r in records])),
  }


def load_results(path: str):
  return json.load(open(path)) if os.path.exists(path) else []


def save_results(path: str, results) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(results, f, indent=1)
  os.replace(path + ".tmp", path)


def add_result(path: str, record, key) -> list:
  """Adds `record` to the JSON list at `path` (replacing one with the same key(record)) under a
  file lock, re-reading the file first, so that several processes can share one results file.
  Returns the merged list."""
  import fcntl  # pylint: disable=g-import-not-at-top

  with open(path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    results = [r for r in load_results(path) if key(r) != key(record)] + [record]
    save_results(path, results)
  return results
