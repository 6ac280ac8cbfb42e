"""Every check of a config that can be made before minutes of work, in one place.

`validate(config, mode, workdir)` runs in seconds, before any model is built: value ranges,
divisibility by the device count, class counts of the model, classifier and data, image
channels, guidance scales, log / checkpoint intervals, float16 training, the workdir. It
raises `ConfigError` (a ValueError) naming the key, the value and what is allowed.
"""

import logging
import os
from typing import Optional

import jax

from adm_jax import data as data_lib
from adm_jax import diffusion as diff
from adm_jax import evaluation
from adm_jax import networks
from adm_jax import sampling
from adm_jax import workdir as workdir_lib
from adm_jax.training import state as state_lib
from adm_jax.training import update

log = logging.getLogger(__name__)

TRAINING_MODES = ("train", "train_classifier")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key, the value and the rule."""


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _positive(config, key: str, allow_zero: bool = False) -> None:
  section, name = key.split(".")
  value = config[section][name]
  low = 0 if allow_zero else 1
  _require(isinstance(value, int) and value >= low, f"{key}={value!r} must be an integer >= {low}")


def _check(key: str, value, fn, *args) -> None:
  """fn(*args), its ValueError (about its arguments) turned into one naming the config key."""
  try:
    fn(*args)
  except ValueError as e:
    raise ConfigError(f"{key}={value!r}: {e}") from None


def _batch_divides(key: str, batch: int, devices: int) -> None:
  _require(
    batch >= 1 and batch % devices == 0,
    f"{key}={batch} must be a positive multiple of the number of devices ({devices})",
  )


def validate(
  config, mode: str, workdir: Optional[str] = None, devices: Optional[int] = None
) -> None:
  """Raises ConfigError for the first setting of `config` that cannot work in `mode`.

  devices: the run's device count (default: all of JAX's devices).
  """
  m, s, d = config.model, config.sample, config.data
  devices = devices or jax.device_count()
  if mode == "eval":  # scores a samples file: no model, no data options are read
    _validate_eval(config)
    return
  _require(d.channels in (1, 3), f"data.channels={d.channels!r} must be 1 (grayscale) or 3 (RGB)")
  _require(
    m.in_channels == d.channels,
    f"model.in_channels={m.in_channels} must equal data.channels={d.channels}",
  )
  _require(
    d.name in data_lib.NAMES, f"data.name={d.name!r} must be one of {', '.join(data_lib.NAMES)}"
  )
  _require(
    d.on_corrupt in ("skip", "raise"), f"data.on_corrupt={d.on_corrupt!r} must be 'skip' or 'raise'"
  )
  _require(
    config.diffusion.schedule_sampler in diff.timestep_sampling.SAMPLERS,
    f"diffusion.schedule_sampler={config.diffusion.schedule_sampler!r} must be one of "
    f"{', '.join(diff.timestep_sampling.SAMPLERS)}",
  )
  try:
    networks.unet(config)  # flag checks only (channels / heads / groups); nothing is built
  except ValueError as e:
    raise ConfigError(f"model: {e}") from None
  if m.class_cond:
    _require(m.num_classes >= 1, f"model.num_classes={m.num_classes} must be >= 1")
  if mode == "train":
    _validate_training(config, devices)
  if mode == "train_classifier" or (mode == "sample" and s.classifier_scale > 0):
    try:
      networks.classifier(config)
    except ValueError as e:
      raise ConfigError(f"classifier: {e}") from None
  if mode == "train_classifier":
    _validate_classifier_training(config, devices)
  if mode in ("sample", "nll", "eval"):
    _validate_sampling(config, mode, devices)
  if workdir and mode in TRAINING_MODES + ("sample",):
    try:
      workdir_lib.check_writable(workdir)
    except (PermissionError, NotADirectoryError) as e:
      raise ConfigError(str(e)) from None


def _validate_training(config, devices: int) -> None:
  m, t = config.model, config.train
  _require(
    m.dtype != "float16",
    "model.dtype='float16' cannot train: adm_jax has no loss "
    "scaling (float16 gradients underflow); use 'bfloat16' (or 'float32')",
  )
  for key in (
    "train.log_every",
    "train.checkpoint_every",
    "train.sample_every",
    "train.keep_checkpoints",
    "train.fsdp",
  ):
    _positive(config, key)
  _positive(config, "train.num_steps", allow_zero=True)
  _positive(config, "train.grid_samples", allow_zero=True)
  _require(t.lr > 0, f"train.lr={t.lr} must be > 0")
  _require(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay} must be >= 0")
  _require(t.grad_clip >= 0, f"train.grad_clip={t.grad_clip} must be >= 0 (0: off)")
  _require(0 <= t.p_uncond < 1, f"train.p_uncond={t.p_uncond} must lie in [0, 1)")
  _require(
    t.p_uncond == 0 or m.class_cond,
    "train.p_uncond > 0 (label dropout) needs a class-conditional model (model.class_cond)",
  )
  _require(t.grid_cfg_scale >= 0, f"train.grid_cfg_scale={t.grid_cfg_scale} must be >= 0")
  _require(
    not t.grid_cfg_scale or (m.class_cond and t.p_uncond > 0),
    "train.grid_cfg_scale > 0 needs a class-conditional model trained with "
    "train.p_uncond > 0 (the null class that classifier-free guidance uses)",
  )
  _require(
    devices % t.fsdp == 0, f"train.fsdp={t.fsdp} must divide the number of devices ({devices})"
  )
  _batch_divides("train.batch_size", t.batch_size, devices)
  _check("train.ema_rate", t.ema_rate, state_lib.parse_ema_rates, t.ema_rate)
  _check(
    "train.microbatch", t.microbatch, update.microbatch_count, t.batch_size, t.microbatch, devices
  )
  if t.grid_samples:
    try:
      sampling.SamplerSpec.from_config(t, prefix="grid_").check(networks.diffusion_process(config))
    except ValueError as e:
      raise ConfigError(f"train.grid_*: {e}") from None


def _validate_classifier_training(config, devices: int) -> None:
  c = config.classifier
  for key in (
    "classifier.log_every",
    "classifier.checkpoint_every",
    "classifier.eval_every",
    "classifier.eval_batches",
    "train.keep_checkpoints",
  ):
    _positive(config, key)
  _positive(config, "classifier.iterations", allow_zero=True)
  _require(c.lr > 0, f"classifier.lr={c.lr} must be > 0")
  _require(c.num_classes >= 1, f"classifier.num_classes={c.num_classes} must be >= 1")
  _require(
    c.schedule_sampler in diff.timestep_sampling.SAMPLERS,
    f"classifier.schedule_sampler={c.schedule_sampler!r} must be one of "
    f"{', '.join(diff.timestep_sampling.SAMPLERS)}",
  )
  _batch_divides("classifier.batch_size", c.batch_size, devices)
  _check(
    "classifier.microbatch",
    c.microbatch,
    update.microbatch_count,
    c.batch_size,
    c.microbatch,
    devices,
  )


def validate_source(config, mode: str, source) -> None:
  """The training data's labels fit the network that learns them (ConfigError otherwise)."""
  classes = int(getattr(source, "num_classes", 0) or 0)
  name = getattr(source, "name", config.data.name)
  if mode == "train_classifier":
    _require(
      classes <= config.classifier.num_classes,
      f"classifier.num_classes={config.classifier.num_classes} but the data ({name}) has "
      f"{classes} classes; set classifier.num_classes >= {classes}",
    )
  elif config.model.class_cond:
    _require(
      classes <= config.model.num_classes,
      f"model.num_classes={config.model.num_classes} but the data ({name}) has {classes} "
      f"classes; set model.num_classes >= {classes}",
    )


def validate_labels(config, mode: str, source_of) -> None:
  """Refuses, before any work, a mode that needs labels on a split without them (imagenet2012's
  test split: label -1). source_of(split) -> the data source of 'train' or 'test' (the eval
  split). Unlabelled splits stay usable where no label is read (FID reference statistics)."""
  if mode == "train_classifier":
    needs = ["train", "test"]  # its training batches and its validation pass
  elif mode == "train" and config.model.class_cond:
    needs = ["train"]
  elif mode == "nll" and config.model.class_cond:
    needs = ["train" if config.sample.nll_split == "train" else "test"]
  else:
    needs = []
  for split in needs:
    source = source_of(split)
    _require(
      data_lib.split_is_labelled(source), data_lib.unlabelled_message(config.data, split, source)
    )


def _validate_sampling(config, mode: str, devices: int) -> None:
  s, m = config.sample, config.model
  _require(s.classifier_scale >= 0, f"sample.classifier_scale={s.classifier_scale} must be >= 0")
  _require(s.cfg_scale >= 0, f"sample.cfg_scale={s.cfg_scale} must be >= 0")
  _require(
    not s.cfg_scale or m.class_cond,
    "sample.cfg_scale > 0 (classifier-free guidance) needs a class-conditional model",
  )
  _positive(config, "sample.num_samples")
  _batch_divides("sample.batch_size", s.batch_size, devices)
  if mode == "sample":
    try:
      sampling.SamplerSpec.from_config(s).check(networks.diffusion_process(config))
    except ValueError as e:
      raise ConfigError(f"sample: {e}") from None
    if s.classifier_scale and m.class_cond and not s.classifier_path:
      _require(
        config.classifier.num_classes >= m.num_classes,
        f"classifier.num_classes={config.classifier.num_classes} is below "
        f"model.num_classes={m.num_classes}: the classifier cannot guide every class",
      )
  if mode == "nll":
    _positive(config, "sample.nll_batches")


def _validate_eval(config) -> None:
  s = config.sample
  _require(
    s.feature_net in evaluation.FEATURE_NETS,
    f"sample.feature_net={s.feature_net!r} must be one of {', '.join(evaluation.FEATURE_NETS)}",
  )
  if s.feature_net == "inception_v3":
    _require(
      bool(s.inception_weights),
      "sample.feature_net='inception_v3' needs sample.inception_weights: the path of "
      "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (nothing is downloaded)",
    )
    _require(
      os.path.isfile(s.inception_weights),
      f"sample.inception_weights={s.inception_weights!r} is not a file",
    )
