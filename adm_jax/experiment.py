"""Config -> everything a run needs, built once: the one front door of adm_jax.

  exp = experiment.build(config)             # the diffusion model of a config
  state = exp.init_state()                   # sharded init (exp.abstract_state: restore target)
  state, metrics = exp.train_step(state, batch)
  clf = experiment.build_classifier(config)  # the noisy-image classifier's counterpart
  spec = experiment.loop_spec(exp, workdir)  # what training.loop.run needs

An `Experiment` holds the network and its apply function, the un-respaced diffusion process
(samplers respace it), the timestep sampler, the optimizer, the abstract TrainState with its
shardings and the jitted train step. Training (adm_jax.train), sampling (adm_jax.sample), the
benchmark and the tests all build here, so the benchmark times exactly the step training runs.
"""
import dataclasses
import json
import logging
import os
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from adm_jax import config_base
from adm_jax import convert
from adm_jax import data as data_lib
from adm_jax import diffusion as diff
from adm_jax import models
from adm_jax import sampling
from adm_jax import sharding as shd
from adm_jax.training import checkpoint as ckpt_lib
from adm_jax.training import classifier_step
from adm_jax.training import loop as loop_lib
from adm_jax.training import state as state_lib
from adm_jax.training import step as step_lib
from adm_jax.training import update

log = logging.getLogger(__name__)

DIFFUSION, CLASSIFIER = "diffusion", "classifier"


@dataclasses.dataclass
class Experiment:
  """The built objects of one model of a config (see the module docstring)."""
  kind: str                          # DIFFUSION or CLASSIFIER
  config: ml_collections.ConfigDict
  mesh: Any
  model: Any                         # the Flax module
  apply_fn: Callable                 # diffusion: (params, x, t, y, rng, train, **kw); classifier: (params, x, t, rng, train)
  diffusion: diff.GaussianDiffusion  # the un-respaced process the model trains on
  timestep_sampler: diff.ScheduleSampler
  tx: Any                            # the optax optimizer (with its schedule)
  ema_rates: Tuple[float, ...]
  init_params: Callable              # key -> params
  seed: int
  batch_size: int                    # global batch of the train step
  microbatches: int
  abstract_state: state_lib.TrainState  # ShapeDtypeStructs with their shardings
  state_shardings: state_lib.TrainState
  train_step: Callable               # jitted (state, batch) -> (state, metrics)
  eval_step: Optional[Callable] = None  # classifier: jitted (state, batch) -> metrics

  def init_state(self) -> state_lib.TrainState:
    """The initial state, created directly in its sharded layout."""
    return state_lib.init_train_state(self.init_params, self.tx, self.timestep_sampler,
                                      self.ema_rates, self.seed, self.state_shardings)

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    m = self.config.model
    return (m.image_size, m.image_size, m.in_channels)

  def abstract_batch(self, batch_size: Optional[int] = None) -> Dict[str, jax.ShapeDtypeStruct]:
    """ShapeDtypeStructs of a global batch (for lowering and memory analysis)."""
    n = batch_size or self.batch_size
    sharding = shd.batch_sharding(self.mesh)
    return {"image": jax.ShapeDtypeStruct((n,) + self.image_shape, jnp.float32, sharding=sharding),
            "label": jax.ShapeDtypeStruct((n,), jnp.int32, sharding=sharding)}

  def source(self, split: str = "train"):
    """The data source of a split (created once; its name and size enter the run's identity)."""
    return data_source(self.config.data, split)

  def batches(self, start_step: int, split: str = "train", seed: Optional[int] = None):
    """This host's slices of the global batches from `start_step` (a BatchIterator)."""
    cfg = self.config
    data_cfg = ml_collections.ConfigDict(cfg.data.to_dict())
    if self.kind == CLASSIFIER:
      data_cfg.random_crop = True  # the reference trains its classifiers with random crops
      num_classes = cfg.classifier.num_classes
    else:
      num_classes = cfg.model.num_classes if cfg.model.class_cond else None
    shd.local_batch_size(self.batch_size)  # validates the batch against the devices
    return data_lib.create_data_iterator(
        data_cfg, global_batch_size=self.batch_size, image_size=cfg.model.image_size,
        seed=cfg.train.seed if seed is None else seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count(), split=split,
        num_classes=num_classes, source=self.source(split))

  def directory(self, workdir: str) -> str:
    """Where this model's checkpoints/ and metrics.jsonl live."""
    if self.kind == CLASSIFIER:
      return os.path.join(workdir, self.config.classifier.checkpoint_dir)
    return workdir


_SOURCES: Dict[Tuple[str, str], Any] = {}


def data_source(data_config, split: str = "train"):
  """data.create_source, once per (data config, split) in a process (a folder of a million
  images is walked once, by the checks before training and by the loader)."""
  key = (data_config.to_json(), split)
  if key not in _SOURCES:
    _SOURCES[key] = data_lib.create_source(data_config, split)
  return _SOURCES[key]


def class_names(config) -> Optional[list]:
  """Names of the data's classes when the source knows them (Fashion-MNIST, folders, TFDS)."""
  try:
    names = getattr(data_source(config.data, "train"), "class_names", None)
  except Exception:  # pylint: disable=broad-except  (no data here: grids go without captions)
    return None
  return list(names) if names else None


# ----------------------------------------------------------------------------- networks
def diffusion_process(config) -> diff.GaussianDiffusion:
  """The un-respaced process of a config (the one the network is trained on)."""
  return diff.create_gaussian_diffusion(**config_base.diffusion_kwargs(config, ""))


def diffusion_network(config):
  """(UNet module, init_params(key) -> params) with the training class count (null class)."""
  model = models.create_model(config_base.model_config_for_training(config))
  m = config.model
  shape = (1, m.image_size, m.image_size, m.in_channels)

  def init_params(key):
    kw = {}
    if m.small_size:
      kw["low_res"] = jnp.zeros((1, m.small_size, m.small_size, m.in_channels), jnp.float32)
    y = jnp.zeros((1,), jnp.int32) if m.class_cond else None
    return model.init({"params": key}, jnp.zeros(shape, jnp.float32), jnp.zeros((1,), jnp.int32),
                      y=y, train=False, **kw)["params"]

  return model, init_params


def classifier_network(config):
  """(classifier module, init_params(key) -> params)."""
  model = models.create_classifier(config_base.classifier_model_config(config))
  m = config.model
  shape = (1, m.image_size, m.image_size, m.in_channels)

  def init_params(key):
    return model.init({"params": key}, jnp.zeros(shape, jnp.float32), jnp.zeros((1,), jnp.int32),
                      train=False)["params"]

  return model, init_params


def unet_apply_fn(model) -> Callable:
  """(params, x, t, y=None, rng=None, train=False, **kw) -> output: dropout only when training."""

  def apply_fn(params, x, t, y=None, rng=None, train=False, **kwargs):
    rngs = {"dropout": rng} if (train and rng is not None) else None
    return model.apply({"params": params}, x, t, y=y, train=train, rngs=rngs, **kwargs)

  return apply_fn


def classifier_apply_fn(model) -> Callable:
  """(params, x, t, rng=None, train=False) -> logits [B, K]."""

  def apply_fn(params, x, t, rng=None, train=False):
    rngs = {"dropout": rng} if (train and rng is not None) else None
    return model.apply({"params": params}, x, t, train=train, rngs=rngs)

  return apply_fn


def model_kwargs_fn(config) -> Optional[Callable]:
  """Super-resolution models see the area-downsampled clean image as low_res."""
  small = config.model.small_size
  if not small:
    return None
  return lambda images: {"low_res": step_lib.area_downsample(images, small)}


# ----------------------------------------------------------------------------- builders
def build(config: ml_collections.ConfigDict, mesh=None, *, donate: bool = True) -> Experiment:
  """The diffusion model of a config: network, process, t sampler, optimizer, state, step."""
  t = config.train
  mesh = mesh or shd.create_mesh(t.fsdp)
  model, init_params = diffusion_network(config)
  apply_fn = unet_apply_fn(model)
  gd = diffusion_process(config)
  sampler = diff.create_named_schedule_sampler(config.diffusion.schedule_sampler, gd.num_timesteps)
  ema_rates = state_lib.parse_ema_rates(t.ema_rate)
  tx = state_lib.create_optimizer(t.lr, t.weight_decay, t.lr_anneal_steps, t.grad_clip)
  abstract, shardings = state_lib.abstract_train_state(init_params, tx, sampler, ema_rates, t.seed,
                                                       mesh, t.fsdp_min_size)
  microbatches = update.microbatch_count(t.batch_size, t.microbatch, mesh.size)
  train_step = step_lib.make_train_step(
      apply_fn, gd, sampler, tx, ema_rates, microbatches=microbatches, p_uncond=t.p_uncond,
      null_label=config.model.num_classes, class_cond=config.model.class_cond, mesh=mesh,
      state_shardings=shardings, donate=donate, model_kwargs_fn=model_kwargs_fn(config))
  return Experiment(DIFFUSION, config, mesh, model, apply_fn, gd, sampler, tx, ema_rates,
                    init_params, t.seed, t.batch_size, microbatches, abstract, shardings,
                    train_step)


def build_classifier(config: ml_collections.ConfigDict, mesh=None, *,
                     donate: bool = True) -> Experiment:
  """The noisy-image classifier of a config, trained on x_t of the config's process."""
  c = config.classifier
  mesh = mesh or shd.create_mesh(config.train.fsdp)
  model, init_params = classifier_network(config)
  apply_fn = classifier_apply_fn(model)
  gd = diffusion_process(config)
  sampler = diff.create_named_schedule_sampler(c.schedule_sampler, gd.num_timesteps)
  tx = state_lib.create_optimizer(c.lr, c.weight_decay, c.lr_anneal_steps)
  seed = config.train.seed + 7
  abstract, shardings = state_lib.abstract_train_state(init_params, tx, sampler, (), seed, mesh,
                                                       config.train.fsdp_min_size)
  microbatches = update.microbatch_count(c.batch_size, c.microbatch, mesh.size)
  steps = {train: classifier_step.make_classifier_step(
      apply_fn, gd, sampler, tx, noised=c.noised, train=train, microbatches=microbatches,
      mesh=mesh, state_shardings=shardings, donate=donate) for train in (True, False)}
  return Experiment(CLASSIFIER, config, mesh, model, apply_fn, gd, sampler, tx, (), init_params,
                    seed, c.batch_size, microbatches, abstract, shardings, steps[True],
                    eval_step=steps[False])


# ----------------------------------------------------------------------------- training runs
def sampler_spec(name: str, steps: int, respacing: str = "", eta: float = 0.0,
                 time_schedule: str = "time_uniform", thresholding: bool = False,
                 order: int = 0, variant: str = "") -> sampling.SamplerSpec:
  return sampling.SamplerSpec(name=name, steps=int(steps), timestep_respacing=str(respacing),
                              eta=float(eta), time_schedule=str(time_schedule),
                              thresholding=bool(thresholding), order=int(order),
                              variant=str(variant))


def grid_hook(exp: Experiment, workdir: str) -> Optional[loop_lib.Hook]:
  """The periodic sample grid of the slowest EMA params (classes in order when conditional)."""
  cfg, t = exp.config, exp.config.train
  if t.grid_samples <= 0:
    return None
  scale = float(t.grid_cfg_scale)
  sample_fn = sampling.make_sample_fn(
      lambda p, x, tt, y, **kw: exp.apply_fn(p, x, tt, y, **kw), exp.diffusion, exp.image_shape,
      sampler_spec(t.grid_sampler, t.grid_steps, t.grid_respacing,
                   time_schedule=t.grid_time_schedule, order=t.grid_solver_order,
                   variant=t.grid_unipc_variant),
      class_cond=cfg.model.class_cond, cfg_scale=scale, null_label=cfg.model.num_classes,
      out_shardings=shd.replicated(exp.mesh))
  kwargs_fn = model_kwargs_fn(cfg)
  names = class_names(cfg) if cfg.model.class_cond else None

  def write_grid(step, state, batch):
    n = t.grid_samples
    labels = jnp.arange(n, dtype=jnp.int32) % cfg.model.num_classes
    key = jax.random.fold_in(jax.random.PRNGKey(t.seed + 1), 0)
    extra = None
    if kwargs_fn is not None:  # a super-resolution model upsamples the batch's images
      n = min(n, batch["image"].shape[0])
      labels = batch["label"][:n]
      extra = kwargs_fn(batch["image"][:n])
    images = sample_fn(state.ema_params[-1], key, labels, None, extra)
    if jax.process_index() != 0:
      return None
    path = os.path.join(workdir, "samples", f"grid_{step:08d}.png")
    ncols = min(cfg.model.num_classes, n) if cfg.model.class_cond else None
    captions = names[:ncols] if (names and ncols and kwargs_fn is None) else None
    sampling.save_grid(path, sampling.to_uint8(jax.device_get(images)), ncols=ncols,
                       scale=max(1, 128 // cfg.model.image_size), column_names=captions)
    log.info("sample grid: %s", path)
    return None

  return loop_lib.Hook("grid", t.sample_every, write_grid, at_end=t.sample_every <= t.num_steps)


def validation_hook(exp: Experiment) -> loop_lib.Hook:
  """The classifier's validation pass over classifier.eval_batches batches of the eval split."""
  c, cfg = exp.config.classifier, exp.config

  def validate(step, state, batch):
    del batch
    val = exp.batches(step, cfg.data.eval_split, seed=cfg.train.seed + 1)
    try:
      host = [jax.device_get(exp.eval_step(state, shd.global_batch(next(val), exp.mesh)))
              for _ in range(c.eval_batches)]
    finally:
      val.close()
    summary = {f"val_{k}": v for k, v in update.summarize_metrics(host).items()}
    log.info("classifier step %d: %s", step,
             {k: round(v, 4) for k, v in summary.items() if "_q" not in k})
    return summary

  return loop_lib.Hook("validation", c.eval_every, validate)


# What changes a run's results: resuming under other values is refused (train.allow_config_change
# resumes anyway, listing them). Steps, intervals, logging, remat and data loading may change.
_IDENTITY = {
    DIFFUSION: ("model.*", "diffusion.*", "data.*", "train.seed", "train.batch_size", "train.lr",
                "train.weight_decay", "train.lr_anneal_steps", "train.grad_clip", "train.ema_rate",
                "train.p_uncond"),
    CLASSIFIER: ("classifier.*", "diffusion.*", "data.*", "train.seed"),
}
_NOT_IDENTITY = {"model.use_checkpoint", "classifier.use_checkpoint", "classifier.iterations",
                 "classifier.eval_every", "classifier.eval_batches", "classifier.log_every",
                 "classifier.checkpoint_every", "classifier.checkpoint_dir", "data.num_workers",
                 "data.prefetch", "data.on_corrupt", "data.eval_dir", "data.eval_split",
                 "diffusion.timestep_respacing", "classifier.microbatch"}


def run_identity(exp: Experiment) -> Dict[str, Any]:
  """{dotted key: value} of what makes a checkpoint this run's, plus the data source's name
  and size (installing the full Fashion-MNIST set changes the data, not the config)."""
  config = json.loads(exp.config.to_json())
  out = {}
  for pattern in _IDENTITY[exp.kind]:
    section, _, key = pattern.partition(".")
    keys = sorted(config[section]) if key == "*" else [key]
    for k in keys:
      if f"{section}.{k}" not in _NOT_IDENTITY:
        out[f"{section}.{k}"] = config[section][k]
  source = exp.source("train")
  out["data.source"] = f"{getattr(source, 'name', exp.config.data.name)} ({len(source)} images)"
  return out


def loop_spec(exp: Experiment, workdir: str) -> loop_lib.LoopSpec:
  """The training loop's view of an experiment: state, step, data, checkpoints, hooks."""
  cfg = exp.config
  config_json = json.loads(cfg.to_json())
  t = cfg.train
  common = dict(
      init_state=exp.init_state, abstract_state=exp.abstract_state, train_step=exp.train_step,
      batches=exp.batches, mesh=exp.mesh, keep_checkpoints=t.keep_checkpoints,
      async_checkpoint=t.async_checkpoint, progress=t.progress, tensorboard=t.tensorboard,
      identity=run_identity(exp), allow_identity_change=t.allow_config_change)
  if exp.kind == CLASSIFIER:
    c = cfg.classifier
    return loop_lib.LoopSpec(
        name="train_classifier", label="classifier", directory=exp.directory(workdir),
        num_steps=c.iterations, batch_size=c.batch_size, log_every=c.log_every,
        checkpoint_every=c.checkpoint_every, meta={"config": config_json, "kind": CLASSIFIER},
        hooks=[validation_hook(exp)], plot_keys=("loss", "acc1", "val_acc1"),
        postfix=lambda summary: {"loss": f"{summary.get('loss', float('nan')):.3f}",
                                 "acc1": f"{summary.get('acc1', float('nan')):.3f}"}, **common)
  return loop_lib.LoopSpec(
      name="train", label="train", directory=workdir, num_steps=t.num_steps,
      batch_size=t.batch_size, log_every=t.log_every, checkpoint_every=t.checkpoint_every,
      meta={"config": config_json, "kind": DIFFUSION, "device_count": jax.device_count(),
            "process_count": jax.process_count()},
      hooks=[h for h in (grid_hook(exp, workdir),) if h is not None],
      plot_keys=("loss", "mse", "vb"),
      postfix=lambda summary: {"loss": f"{summary.get('loss', float('nan')):.4f}",
                               "img_s": f"{summary.get('images_per_sec', 0.0):.1f}"}, **common)


# ----------------------------------------------------------------------------- trained params
def restore_params(exp: Experiment, workdir: str, use_ema: bool = True, ema_index: int = -1):
  """(params, step) of the newest checkpoint of a training workdir (EMA params by default)."""
  directory = os.path.join(exp.directory(workdir), "checkpoints")
  if not os.path.isdir(directory):
    what = "--mode=train_classifier" if exp.kind == CLASSIFIER else "--mode=train"
    raise FileNotFoundError(f"no checkpoint under {directory}: run {what} first, or set "
                            f"sample.{'classifier_path' if exp.kind == CLASSIFIER else 'checkpoint_path'} "
                            "to a converted checkpoint")
  checkpointer = ckpt_lib.Checkpointer(directory, async_save=False, create=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {directory}")
    state = checkpointer.restore(step, exp.abstract_state)
  finally:
    checkpointer.close()
  if use_ema and state.ema_params:
    return state.ema_params[ema_index], step
  return state.params, step


def config_with_checkpoint_flags(config) -> ml_collections.ConfigDict:
  """The config with model/diffusion flags taken from sample.checkpoint_path's converted
  checkpoint (its flags describe the network; the config may be a generic one)."""
  if not config.sample.checkpoint_path:
    return config
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


def load_sampling_model(config, workdir: str, mesh):
  """(config with the checkpoint's flags, UNet module, params, checkpoint step) for sampling.

  From sample.checkpoint_path (a converted reference checkpoint; step -1) or the workdir's
  newest training checkpoint (its EMA params unless sample.use_ema is off).
  """
  s = config.sample
  if s.checkpoint_path:
    model_cfg, params = convert.load_converted(s.checkpoint_path)
    return config_with_checkpoint_flags(config), models.create_model(model_cfg), params, -1
  exp = build(config, mesh, donate=False)
  params, step = restore_params(exp, workdir, s.use_ema, s.ema_index)
  return config, exp.model, params, step


def load_classifier(config, workdir: str, mesh):
  """(classifier module, params) from sample.classifier_path (converted or a workdir) or this workdir."""
  path = config.sample.classifier_path or workdir
  if convert.is_converted_checkpoint(path):
    clf_cfg, params = convert.load_converted(path)
    return models.create_classifier(clf_cfg), params
  exp = build_classifier(config, mesh, donate=False)
  params, _ = restore_params(exp, path, use_ema=False)
  return exp.model, params
