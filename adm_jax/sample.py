"""Sampling from trained networks: jitted sampling functions, uint8 conversion, PNG grids.

`make_sample_fn` returns ONE jitted function (params, key, labels) -> images in [-1, 1]
that runs a whole sampler loop on device; the training loop uses it for periodic
sample grids from the EMA parameters.
"""
import json
import math
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from adm_jax import diffusion as diff
from adm_jax import guidance

SAMPLERS = ("ddpm", "ddim")


def make_sample_fn(apply_fn: Callable, gd: diff.GaussianDiffusion, image_shape, *,
                   sampler: str = "ddim", eta: float = 0.0, class_cond: bool = False,
                   cfg_scale: float = 0.0, null_label: int = -1,
                   classifier_fn: Optional[Callable] = None, classifier_scale: float = 0.0,
                   clip_denoised: bool = True, out_shardings=None):
  """A jitted sampler fn(params, key, labels[, classifier_params, model_kwargs]) -> [B, H, W, C].

  apply_fn(params, x, t, y, **model_kwargs) -> network output (model_kwargs: e.g. the
  super-resolution model's low_res [B, h, w, C]). `gd` is the (respaced) sampling process.
  cfg_scale > 0 turns on classifier-free guidance (needs class_cond and null_label);
  classifier_fn(classifier_params, x, t) -> logits turns on classifier guidance.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
  if cfg_scale and not class_cond:
    raise ValueError("classifier-free guidance (cfg_scale > 0) needs a class-conditional model")

  def run(params, key, labels, classifier_params=None, model_kwargs=None):
    def model_fn(x, t, y=None, **kw):
      return apply_fn(params, x, t, y if class_cond else None, **kw)
    if cfg_scale:
      model_fn = guidance.classifier_free_model_fn(model_fn, cfg_scale, null_label)
    cond_fn = None
    if classifier_fn is not None and classifier_scale:
      cond_fn = guidance.classifier_cond_fn(
          lambda x, t: classifier_fn(classifier_params, x, t), classifier_scale)
    shape = (labels.shape[0],) + tuple(image_shape)
    kwargs = dict(clip_denoised=clip_denoised, cond_fn=cond_fn,
                  model_kwargs=dict(model_kwargs or {}, y=labels))
    if sampler == "ddim":
      return diff.ddim_sample_loop(gd, model_fn, shape, key, eta=eta, **kwargs)
    return diff.p_sample_loop(gd, model_fn, shape, key, **kwargs)

  return jax.jit(run, out_shardings=out_shardings)


def to_uint8(images) -> np.ndarray:
  """[-1, 1] float images → uint8 [0, 255], rounded like the reference ((x + 1) * 127.5)."""
  images = np.asarray(images, dtype=np.float32)
  return np.clip((images + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def image_grid(images: np.ndarray, ncols: Optional[int] = None, pad: int = 2) -> np.ndarray:
  """Tiles uint8 images [N, H, W, C] into one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] image."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  ncols = ncols or int(math.ceil(math.sqrt(n)))
  nrows = int(math.ceil(n / ncols))
  grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, ncols)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = images[i]
  return grid


def save_grid(path: str, images_uint8: np.ndarray, ncols: Optional[int] = None,
              scale: int = 1) -> str:
  """Writes a PNG grid (optionally enlarged by an integer factor) and returns its path."""
  grid = image_grid(images_uint8, ncols)
  if grid.shape[-1] == 1:
    grid = grid[..., 0]
  img = Image.fromarray(grid)
  if scale > 1:
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return path


# ----------------------------------------------------------------------------- the sample mode
def parse_labels(spec, num: int, num_classes: int, seed: int) -> np.ndarray:
  """Class labels [num] from 'random', one integer ('3'), or a comma list cycled ('1,5,7')."""
  spec = str(spec).strip()
  if spec in ("", "random"):
    labels = np.random.default_rng(seed).integers(0, num_classes, size=num)
  else:
    try:
      values = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
      raise ValueError(f"sample.labels {spec!r}: expected 'random', an integer or a list") from None
    labels = np.resize(np.asarray(values), num)
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if bad.size:
    raise ValueError(f"sample.labels: label {int(bad[0])} is out of range [0, {num_classes})")
  return labels.astype(np.int32)


def _load_checkpoint_params(config, workdir: str, mesh, kind: str = "diffusion"):
  """EMA (or raw) params of the latest checkpoint of a training workdir, replicated."""
  from adm_jax import diffusion as d  # pylint: disable=g-import-not-at-top
  from adm_jax import models  # pylint: disable=g-import-not-at-top
  from adm_jax.training import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from adm_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from adm_jax import config_base  # pylint: disable=g-import-not-at-top
  if kind == "diffusion":
    directory = os.path.join(workdir, "checkpoints")
    model = models.create_model(config_base.model_config_for_training(config))
    ema_rates = state_lib.parse_ema_rates(config.train.ema_rate)
    cond = config.model.class_cond
  else:
    from adm_jax.training import classifier as clf_lib  # pylint: disable=g-import-not-at-top
    directory = os.path.join(workdir, config.classifier.checkpoint_dir, "checkpoints")
    if not os.path.isdir(directory):
      directory = os.path.join(workdir, "checkpoints")
    model = models.create_classifier(clf_lib.classifier_model_config(config))
    ema_rates, cond = (), False
  size, channels = config.model.image_size, config.model.in_channels

  def init(key):
    x = jnp.zeros((1, size, size, channels), jnp.float32)
    kw = {"y": jnp.zeros((1,), jnp.int32)} if cond else {}
    return model.init({"params": key}, x, jnp.zeros((1,), jnp.int32), train=False, **kw)["params"]

  checkpointer = ckpt_lib.Checkpointer(directory, async_save=False)
  step = checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {directory}: train first, or set "
                            "sample.checkpoint_path to a converted checkpoint")
  # The restore target needs the saved structure: the same optimizer and sampler as training.
  if kind == "diffusion":
    t = config.train
    tx = state_lib.create_optimizer(t.lr, t.weight_decay, t.lr_anneal_steps, t.grad_clip)
    sampler_name = config.diffusion.schedule_sampler
  else:
    c = config.classifier
    tx = state_lib.create_optimizer(c.lr, c.weight_decay, c.lr_anneal_steps)
    sampler_name = c.schedule_sampler
  sampler = d.create_named_schedule_sampler(sampler_name, config.diffusion.diffusion_steps)
  abstract, _ = state_lib.init_train_state(init, tx, sampler, ema_rates, 0, mesh,
                                           abstract_only=True)
  state = checkpointer.restore(step, abstract)
  checkpointer.close()
  use_ema = kind == "diffusion" and config.sample.use_ema and state.ema_params
  params = state.ema_params[config.sample.ema_index] if use_ema else state.params
  return model, params, step


def _sample_dir(config, workdir):
  out = config.sample.output_dir
  return out if os.path.isabs(out) else os.path.join(workdir, out)


def run(config, workdir: str, mesh=None) -> str:
  """--mode=sample: N samples into the reference's npz (arr_0 uint8 NHWC, arr_1 labels) + grid.

  Batches are written as they finish (part_XXXXX.npz); an interrupted run picks up at the
  first missing part. Batch i uses key fold_in(key(seed), i), so results do not depend on
  interruptions or on the number of devices.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  from adm_jax import config_base  # pylint: disable=g-import-not-at-top
  from adm_jax import sharding as shd  # pylint: disable=g-import-not-at-top
  scfg = config.sample
  mesh = mesh or shd.create_mesh(1)
  if scfg.batch_size % mesh.size:
    raise ValueError(f"sample.batch_size={scfg.batch_size} must be divisible by the number of "
                     f"devices ({mesh.size})")
  model, params, step = load_model_params(config, workdir, mesh)
  config = config_with_checkpoint_flags(config)
  classifier_fn, classifier_params = None, None
  if scfg.classifier_scale:
    classifier, classifier_params = load_classifier_params(config, workdir, mesh)
    classifier_fn = lambda p, x, t: classifier.apply({"params": p}, x, t, train=False)
  gd = diff.create_gaussian_diffusion(**config_base.diffusion_kwargs(config, scfg.timestep_respacing))
  shape = (config.model.image_size, config.model.image_size, config.model.in_channels)
  apply_fn = lambda p, x, t, y, **kw: model.apply({"params": p}, x, t, y=y, train=False, **kw)
  sample_fn = make_sample_fn(
      apply_fn, gd, shape, sampler=scfg.sampler, eta=scfg.eta, class_cond=config.model.class_cond,
      cfg_scale=scfg.cfg_scale, null_label=config.model.num_classes, classifier_fn=classifier_fn,
      classifier_scale=scfg.classifier_scale, clip_denoised=scfg.clip_denoised,
      out_shardings=shd.replicated(mesh))
  num_classes = config.model.num_classes
  num_samples = scfg.num_samples
  low_res_all = None
  if config.model.get("small_size", 0):
    # Two-stage sampling: upsample base samples (reference npz layout) with their labels.
    if not scfg.base_samples:
      raise ValueError("a super-resolution model samples from base images: set "
                       "sample.base_samples to an npz of base samples (arr_0, arr_1)")
    with np.load(scfg.base_samples) as base:
      low_res_all = base["arr_0"].astype(np.float32) / 127.5 - 1.0
      base_labels = base["arr_1"] if "arr_1" in base.files else np.zeros(len(low_res_all), np.int32)
    if low_res_all.shape[1] != config.model.small_size:
      raise ValueError(f"base samples are {low_res_all.shape[1]}px, the model upsamples "
                       f"{config.model.small_size}px images")
    num_samples = min(num_samples, len(low_res_all))
    labels = base_labels[:num_samples].astype(np.int32)
  else:
    labels = parse_labels(scfg.labels, num_samples, num_classes, scfg.seed)
  out_dir = _sample_dir(config, workdir)
  os.makedirs(out_dir, exist_ok=True)
  num_batches = -(-num_samples // scfg.batch_size)
  base_key = jax.random.PRNGKey(scfg.seed)
  bar = tqdm.tqdm(range(num_batches), desc="sample", unit="batch",
                  disable=jax.process_index() != 0)
  for i in bar:
    part = os.path.join(out_dir, f"part_{i:05d}.npz")
    if os.path.exists(part):
      continue  # finished by an earlier, interrupted run
    batch_labels = np.resize(labels[i * scfg.batch_size:(i + 1) * scfg.batch_size], scfg.batch_size)
    local = scfg.batch_size // jax.process_count()
    y = shd.global_batch(batch_labels[jax.process_index() * local:(jax.process_index() + 1) * local],
                         mesh)
    extra = None
    if low_res_all is not None:
      rows = np.minimum(np.arange(i * scfg.batch_size, (i + 1) * scfg.batch_size), num_samples - 1)
      local_rows = rows[jax.process_index() * local:(jax.process_index() + 1) * local]
      extra = {"low_res": shd.global_batch(low_res_all[local_rows], mesh)}
    images = sample_fn(params, jax.random.fold_in(base_key, i), y, classifier_params, extra)
    if jax.process_index() == 0:
      tmp = part + ".tmp.npz"
      np.savez(tmp, arr_0=to_uint8(jax.device_get(images)), arr_1=batch_labels)
      os.replace(tmp, part)
  if jax.process_index() != 0:
    return ""
  parts = [np.load(os.path.join(out_dir, f"part_{i:05d}.npz")) for i in range(num_batches)]
  arr_0 = np.concatenate([p["arr_0"] for p in parts])[:num_samples]
  arr_1 = np.concatenate([p["arr_1"] for p in parts])[:num_samples]
  name = "samples_" + "x".join(str(v) for v in arr_0.shape) + ".npz"
  path = os.path.join(out_dir, name)
  np.savez(path, arr_0=arr_0, arr_1=arr_1)
  save_grid(os.path.join(out_dir, "grid.png"), arr_0[:64], scale=max(1, 128 // shape[0]))
  with open(os.path.join(out_dir, "sample_info.json"), "w") as f:
    json.dump({"checkpoint_step": step, "num_samples": int(arr_0.shape[0]),
               "sampler": scfg.sampler, "timestep_respacing": scfg.timestep_respacing,
               "classifier_scale": scfg.classifier_scale, "cfg_scale": scfg.cfg_scale,
               "seed": scfg.seed, "npz": path}, f, indent=2)
  for i in range(num_batches):
    os.remove(os.path.join(out_dir, f"part_{i:05d}.npz"))
  return path


def config_with_checkpoint_flags(config):
  """The config with model/diffusion flags taken from sample.checkpoint_path's converted
  checkpoint (its flags describe the network; the config may be a generic one)."""
  if not config.sample.checkpoint_path:
    return config
  from adm_jax import convert  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  with open(os.path.join(config.sample.checkpoint_path, convert.META_FILE)) as f:
    flags = json.load(f)["flags"]
  config = ml_collections.ConfigDict(config.to_dict())
  if "large_size" in flags:
    flags = dict(flags, image_size=flags["large_size"])
  for key, value in flags.items():
    if key in config.model:
      config.model[key] = value
    if key in config.diffusion:
      config.diffusion[key] = value
  config.model.class_cond = bool(flags.get("class_cond", False))
  config.model.in_channels = int(flags.get("in_channels", 3))
  config.model.num_classes = int(flags.get("num_classes", 1000))
  return config


def load_model_params(config, workdir, mesh):
  """(model, params, step) from sample.checkpoint_path (converted) or the workdir's latest."""
  if config.sample.checkpoint_path:
    from adm_jax import convert  # pylint: disable=g-import-not-at-top
    from adm_jax import models  # pylint: disable=g-import-not-at-top
    model_cfg, params = convert.load_converted(config.sample.checkpoint_path)
    return models.create_model(model_cfg), params, -1
  return _load_checkpoint_params(config, workdir, mesh, "diffusion")


def load_classifier_params(config, workdir, mesh):
  """(classifier, params) from sample.classifier_path: a converted checkpoint or a workdir."""
  path = config.sample.classifier_path or workdir
  from adm_jax import convert  # pylint: disable=g-import-not-at-top
  from adm_jax import models  # pylint: disable=g-import-not-at-top
  if convert.is_converted_checkpoint(path):
    clf_cfg, params = convert.load_converted(path)
    return models.create_classifier(clf_cfg), params
  model, params, _ = _load_checkpoint_params(config, path, mesh, "classifier")
  return model, params


def run_nll(config, workdir: str, mesh=None) -> dict:
  """--mode=nll: bits/dim (full variational bound, calc_bpd_loop) over a dataset split.

  Uses sample.nll_batches batches of sample.batch_size images of split sample.nll_split,
  the process of config.diffusion (its timestep_respacing, "" for the exact bound).
  Writes <output_dir>/nll.json and returns the averages.
  """
  from adm_jax import config_base  # pylint: disable=g-import-not-at-top
  from adm_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from adm_jax import sharding as shd  # pylint: disable=g-import-not-at-top
  import tqdm  # pylint: disable=g-import-not-at-top
  scfg = config.sample
  mesh = mesh or shd.create_mesh(1)
  model, params, step = load_model_params(config, workdir, mesh)
  gd = diff.create_gaussian_diffusion(**config_base.diffusion_kwargs(config))
  cond = config.model.class_cond

  @jax.jit
  def bpd(params, images, labels, key):
    model_fn = lambda x, t, **kw: model.apply({"params": params}, x, t,
                                              y=labels if cond else None, train=False)
    return diff.calc_bpd_loop(gd, model_fn, images, key=key)

  batches = data_lib.create_data_iterator(
      config.data, global_batch_size=scfg.batch_size, image_size=config.model.image_size,
      seed=scfg.seed, start_step=0, process_index=jax.process_index(),
      process_count=jax.process_count(), split=scfg.nll_split)
  totals = {"total_bpd": [], "prior_bpd": [], "vb": [], "xstart_mse": [], "mse": []}
  try:
    for i in tqdm.trange(scfg.nll_batches, desc="nll", disable=jax.process_index() != 0):
      batch = shd.global_batch(next(batches), mesh)
      out = jax.device_get(bpd(params, batch["image"], batch["label"],
                               jax.random.fold_in(jax.random.PRNGKey(scfg.seed), i)))
      for k in totals:
        totals[k].append(np.asarray(out[k]))
  finally:
    getattr(batches, "close", lambda: None)()
  result = {"checkpoint_step": step, "split": scfg.nll_split,
            "num_images": int(sum(len(v) for v in totals["total_bpd"])),
            "bits_per_dim": float(np.concatenate(totals["total_bpd"]).mean()),
            "prior_bpd": float(np.concatenate(totals["prior_bpd"]).mean()),
            "steps": int(gd.num_timesteps)}
  vb = np.concatenate(totals["vb"]).mean(axis=0)  # per step, column j = step T-1-j
  result["vb_per_step_bpd"] = [float(v) for v in vb[::-1]]  # now index = step
  if jax.process_index() == 0:
    out_dir = _sample_dir(config, workdir)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "nll.json"), "w") as f:
      json.dump(result, f, indent=2)
  print(f"NLL: {result['bits_per_dim']:.4f} bits/dim over {result['num_images']} images "
        f"({result['steps']} steps, split {result['split']})")
  return result
