"""Trained networks for sampling and evaluation: parameters from a checkpoint, no training objects.

  config, unet, params, step = restore.sampling_model(config, workdir, mesh, overrides)
  clf, clf_params = restore.guidance_classifier(config, workdir, mesh, overrides)

A workdir's checkpoint records the config it was trained with; the network is built from
those settings (model, diffusion, label dropout; the classifier's flags), whatever the
sampling command's config file says, so a model trained with `--config.model.num_channels=64`
samples without repeating the flag. The command's own sampling settings (sample.*, the
respacing of diffusion.timestep_respacing, compute dtype and remat) apply. A setting given
explicitly on the command line (`overrides`) that contradicts the checkpoint is refused in
one line. Only the parameters are read (the EMA copy by default): no optimizer state, no
optimizer and no train step are built.
"""

import json
import logging
import os
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import jax
import ml_collections

from adm_jax import config_base
from adm_jax import convert
from adm_jax import networks
from adm_jax import sharding as shd
from adm_jax import validation
from adm_jax.training import checkpoint as ckpt_lib
from adm_jax.training import state as state_lib

log = logging.getLogger(__name__)

# Settings that decide a network's parameters (taken from the checkpoint's config). Compute
# dtype, remat and the sampling respacing are the sampling command's choice.
_RUNTIME = ("dtype", "use_checkpoint", "remat_policy")
UNET_KEYS = ("model.*", "diffusion.*", "train.p_uncond")
UNET_EXCLUDED = tuple(f"model.{k}" for k in _RUNTIME) + (
  "diffusion.timestep_respacing",
  "diffusion.schedule_sampler",
)
CLASSIFIER_KEYS = (
  "classifier.classifier_width",
  "classifier.classifier_depth",
  "classifier.classifier_attention_resolutions",
  "classifier.classifier_use_scale_shift_norm",
  "classifier.classifier_resblock_updown",
  "classifier.classifier_pool",
  "classifier.channel_mult",
  "classifier.num_classes",
  "model.image_size",
  "model.in_channels",
)


def checkpoint_directory(directory: str, what: str, setting: str) -> str:
  """DIR/checkpoints of a training directory, or FileNotFoundError saying what to run."""
  path = os.path.join(directory, "checkpoints")
  if not os.path.isdir(path):
    raise FileNotFoundError(
      f"no checkpoint under {path}: run {what} first, or set {setting} to a converted checkpoint"
    )
  return path


def newest_checkpoint(directory: str) -> Tuple[ckpt_lib.Checkpointer, int, Dict[str, Any]]:
  """(an open Checkpointer, the newest step, its meta) of a checkpoints/ directory."""
  checkpointer = ckpt_lib.Checkpointer(directory, async_save=False, create=False)
  step = checkpointer.latest_step()
  if step is None:
    checkpointer.close()
    raise FileNotFoundError(f"no checkpoint under {directory}")
  try:
    return checkpointer, step, checkpointer.restore_meta(step)
  except Exception:
    checkpointer.close()
    raise


def trained_config(
  config,
  saved: Optional[Dict[str, Any]],
  keys: Sequence[str],
  overrides: Iterable[str],
  source: str,
) -> ml_collections.ConfigDict:
  """`config` with the values of `keys` from a checkpoint's saved config.

  A key in `overrides` (set on the command line) whose value differs from the checkpoint's
  raises ConfigError; other differences take the checkpoint's value (logged).
  """
  if not saved:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  overrides = set(overrides)
  conflicts, taken = [], []
  for key in keys:
    section, name = key.split(".")
    if section not in saved or name not in saved[section]:
      continue
    mine, theirs = config_base.lookup(config, key), saved[section][name]
    if json.dumps(mine, sort_keys=True) == json.dumps(theirs, sort_keys=True):
      continue
    if key in overrides:
      conflicts.append(f"{key}={mine!r} (command line) but {theirs!r} in training")
    else:
      config[section][name] = theirs
      taken.append(key)
  if conflicts:
    raise validation.ConfigError(
      f"{source} was trained with other settings: {'; '.join(conflicts)}; drop the flag"
      f"{'s' if len(conflicts) > 1 else ''} (the checkpoint's settings are used) or sample "
      "another checkpoint"
    )
  if taken:
    log.info(
      "network settings from %s: %s",
      source,
      ", ".join(f"{k}={config_base.lookup(config, k)!r}" for k in taken),
    )
  return config


def restore_params(
  directory: str,
  network: networks.Network,
  mesh,
  ema_rates: Sequence[float],
  use_ema: bool = True,
  ema_index: int = -1,
  step: Optional[int] = None,
):
  """(params, step) of a checkpoints/ directory (the newest step unless given), replicated on
  the mesh: EMA copy `ema_index` when use_ema and the run kept EMA copies, else the raw params."""
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=shd.replicated(mesh)),
    network.abstract_params(),
  )
  checkpointer, newest, _ = newest_checkpoint(directory)
  step = newest if step is None else step
  try:
    if use_ema and ema_rates:
      index = range(len(ema_rates))[ema_index]
      restored = checkpointer.restore_part(step, {"ema_params": {str(index): abstract}})
      return restored["ema_params"][str(index)], step
    return checkpointer.restore_part(step, {"params": abstract})["params"], step
  finally:
    checkpointer.close()


def sampling_model(config, workdir: str, mesh, overrides: Iterable[str] = ()):
  """(config with the network's settings, its Network, params, checkpoint step) for sampling.

  From sample.checkpoint_path (a converted reference checkpoint; step -1) or the workdir's
  newest training checkpoint (its EMA params unless sample.use_ema is off).
  """
  s = config.sample
  if s.checkpoint_path:
    flags, params = convert.load_converted(s.checkpoint_path)
    config = config_base.with_network_flags(config, flags)
    return config, networks.from_flags(flags["_kind"], flags), params, -1
  directory = checkpoint_directory(workdir, "--mode=train", "sample.checkpoint_path")
  checkpointer, _, meta = newest_checkpoint(directory)
  checkpointer.close()
  saved = meta.get("config")
  config = trained_config(
    config, saved, config_base.dotted_keys(config, UNET_KEYS, UNET_EXCLUDED), overrides, workdir
  )
  rates = state_lib.parse_ema_rates(saved["train"]["ema_rate"] if saved else config.train.ema_rate)
  network = networks.unet(config)
  params, step = restore_params(directory, network, mesh, rates, s.use_ema, s.ema_index)
  return config, network, params, step


def guidance_classifier(config, workdir: str, mesh, overrides: Iterable[str] = ()):
  """(classifier Network, params) from sample.classifier_path (a converted checkpoint or a
  workdir) or this workdir's classifier, built with the settings it was trained with."""
  path = config.sample.classifier_path or workdir
  if convert.is_converted_checkpoint(path):
    flags, params = convert.load_converted(path)
    return networks.from_flags("classifier", flags), params
  directory = checkpoint_directory(
    os.path.join(path, config.classifier.checkpoint_dir),
    "--mode=train_classifier",
    "sample.classifier_path",
  )
  checkpointer, _, meta = newest_checkpoint(directory)
  checkpointer.close()
  config = trained_config(
    config, meta.get("config"), CLASSIFIER_KEYS, overrides, os.path.dirname(directory)
  )
  network = networks.classifier(config)
  params, _ = restore_params(directory, network, mesh, (), use_ema=False)
  return network, params
