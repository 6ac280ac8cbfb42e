"""The diffusion training loop: `run(config, workdir)`.

Mesh → data iterator (global batches sharded on the batch axis) → model + diffusion →
sharded TrainState (restored from the workdir's latest checkpoint if any) → jitted
train step → progress bar, JSON-lines metrics, sample grids → orbax checkpoints.
"""
import json
import logging
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from adm_jax import config_base
from adm_jax import data as data_lib
from adm_jax import diffusion as diff
from adm_jax import models
from adm_jax import sample as sample_lib
from adm_jax import sharding as shd
from adm_jax.training import checkpoint as ckpt_lib
from adm_jax.training import metrics as metrics_lib
from adm_jax.training import state as state_lib
from adm_jax.training import step as step_lib

log = logging.getLogger(__name__)


def make_apply_fn(model):
  """(params, x, t, y, rng, train) -> output, the form the train step and samplers use."""

  def apply_fn(params, x, t, y=None, rng=None, train=False, **kwargs):
    rngs = {"dropout": rng} if (train and rng is not None) else None
    return model.apply({"params": params}, x, t, y=y, train=train, rngs=rngs, **kwargs)

  return apply_fn


def init_params_fn(model, config):
  image_size, channels = config.model.image_size, config.model.in_channels

  def init(key):
    x = jnp.zeros((1, image_size, image_size, channels), jnp.float32)
    t = jnp.zeros((1,), jnp.int32)
    y = jnp.zeros((1,), jnp.int32) if config.model.class_cond else None
    kw = {}
    if config.model.get("small_size", 0):
      small = config.model.small_size
      kw["low_res"] = jnp.zeros((1, small, small, channels), jnp.float32)
    return model.init({"params": key}, x, t, y=y, train=False, **kw)["params"]

  return init


def microbatch_count(config) -> int:
  return step_lib.microbatch_count(config.train.batch_size, config.train.microbatch,
                                   jax.device_count())


class Trainer:
  """Builds everything `run` needs from a config; usable piecemeal from tests and notebooks."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, mesh=None):
    self.config = config
    self.workdir = workdir
    self.mesh = mesh or shd.create_mesh(config.train.fsdp)
    self.model_config = config_base.model_config_for_training(config)
    self.model = models.create_model(self.model_config)
    self.apply_fn = make_apply_fn(self.model)
    self.diffusion = diff.create_gaussian_diffusion(**config_base.diffusion_kwargs(config, ""))
    self.sampler = diff.create_named_schedule_sampler(config.diffusion.schedule_sampler,
                                                      self.diffusion.num_timesteps)
    self.ema_rates = state_lib.parse_ema_rates(config.train.ema_rate)
    self.tx = state_lib.create_optimizer(config.train.lr, config.train.weight_decay,
                                         config.train.lr_anneal_steps, config.train.grad_clip)
    self.null_label = config.model.num_classes
    self.grid_cfg_scale()  # fail before training, not at the first grid
    self.state, self.state_shardings = state_lib.init_train_state(
        init_params_fn(self.model, config), self.tx, self.sampler, self.ema_rates,
        config.train.seed, self.mesh)
    self.train_step = step_lib.make_train_step(
        self.apply_fn, self.diffusion, self.sampler, self.tx, self.ema_rates,
        microbatches=microbatch_count(config), p_uncond=config.train.p_uncond,
        null_label=self.null_label, class_cond=config.model.class_cond, mesh=self.mesh,
        state_shardings=self.state_shardings, model_kwargs_fn=self.model_kwargs_fn())
    self._grid_fn = None

  def model_kwargs_fn(self):
    """Super-resolution models see the area-downsampled clean image as low_res."""
    small = self.config.model.get("small_size", 0)
    if not small:
      return None
    return lambda images: {"low_res": step_lib.area_downsample(images, small)}

  # ------------------------------------------------------------------ checkpoints
  def checkpointer(self) -> ckpt_lib.Checkpointer:
    return ckpt_lib.Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                 keep=self.config.train.keep_checkpoints,
                                 async_save=self.config.train.async_checkpoint)

  def meta(self) -> Dict[str, Any]:
    return {"config": json.loads(self.config.to_json()), "device_count": jax.device_count(),
            "process_count": jax.process_count()}

  def restore_latest(self, checkpointer) -> Optional[int]:
    step = checkpointer.latest_step()
    if step is None:
      return None
    saved = checkpointer.restore_meta(step).get("config", {})
    diffs = ckpt_lib.config_mismatches(saved, json.loads(self.config.to_json()))
    if diffs:
      raise ValueError(
          f"{checkpointer.directory} holds a checkpoint of another configuration "
          f"({'; '.join(diffs[:5])}); use a new --workdir or the same config")
    target = state_lib.abstract_like(self.state, self.state_shardings)
    self.state = checkpointer.restore(step, target)
    ckpt_lib.log_restore(step, checkpointer.directory)
    return step

  # ------------------------------------------------------------------ data
  def data_iterator(self, start_step: int, split: str = "train"):
    cfg = self.config
    shd.local_batch_size(cfg.train.batch_size)  # validates the batch against the devices
    return data_lib.create_data_iterator(
        cfg.data, global_batch_size=cfg.train.batch_size, image_size=cfg.model.image_size,
        seed=cfg.train.seed, start_step=start_step, process_index=jax.process_index(),
        process_count=jax.process_count(), split=split,
        num_classes=cfg.model.num_classes if cfg.model.class_cond else None)

  # ------------------------------------------------------------------ sample grids
  def grid_cfg_scale(self) -> float:
    """train.grid_cfg_scale, checked: classifier-free guidance needs the learned null class."""
    scale = float(self.config.train.grid_cfg_scale)
    if scale < 0:
      raise ValueError(f"train.grid_cfg_scale must be >= 0, got {scale}")
    if scale and not (self.config.model.class_cond and self.config.train.p_uncond > 0):
      raise ValueError("train.grid_cfg_scale > 0 needs a class-conditional model trained with "
                       "train.p_uncond > 0 (the null class that classifier-free guidance uses)")
    return scale

  def sample_grid(self, step: int, batch=None) -> Optional[str]:
    """Samples a PNG grid from the slowest EMA params (classes in order when conditional).

    A super-resolution model upsamples the (area-downsampled) images of `batch`.
    """
    cfg = self.config
    n = cfg.train.grid_samples
    if n <= 0:
      return None
    if self._grid_fn is None:
      gd = diff.create_gaussian_diffusion(**config_base.diffusion_kwargs(cfg, cfg.train.grid_respacing))
      shape = (cfg.model.image_size, cfg.model.image_size, cfg.model.in_channels)
      self._grid_fn = sample_lib.make_sample_fn(
          lambda p, x, t, y, **kw: self.apply_fn(p, x, t, y, **kw), gd, shape,
          sampler=cfg.train.grid_sampler, class_cond=cfg.model.class_cond,
          cfg_scale=self.grid_cfg_scale(), null_label=self.null_label,
          out_shardings=shd.replicated(self.mesh))
    labels = jnp.arange(n, dtype=jnp.int32) % cfg.model.num_classes
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.train.seed + 1), 0)
    extra = None
    if self.model_kwargs_fn() is not None:
      if batch is None:
        return None
      n = min(n, batch["image"].shape[0])
      labels = batch["label"][:n]
      extra = self.model_kwargs_fn()(batch["image"][:n])
    images = self._grid_fn(self.state.ema_params[-1], key, labels, None, extra)
    if jax.process_index() != 0:
      return None
    path = os.path.join(self.workdir, "samples", f"grid_{step:08d}.png")
    ncols = min(cfg.model.num_classes, n) if cfg.model.class_cond else None
    return sample_lib.save_grid(path, sample_lib.to_uint8(jax.device_get(images)), ncols=ncols,
                                scale=max(1, 128 // cfg.model.image_size))


def run(config: ml_collections.ConfigDict, workdir: str, mesh=None) -> Dict[str, float]:
  """Trains (or resumes) the diffusion model of `config` in `workdir`; returns last metrics."""
  os.makedirs(workdir, exist_ok=True)
  trainer = Trainer(config, workdir, mesh)
  cfg = config.train
  checkpointer = trainer.checkpointer()
  start = trainer.restore_latest(checkpointer) or 0
  last_saved = checkpointer.latest_step()
  n_params = state_lib.param_count(trainer.state.params)
  log.info("model: %.2fM parameters; %d devices, %d processes; starting at step %d",
               n_params / 1e6, jax.device_count(), jax.process_count(), start)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))
  writer = metrics_lib.MetricWriter(workdir, tensorboard=cfg.tensorboard)
  batches = trainer.data_iterator(start)
  history, summary = [], {}
  window_start, window_step = time.perf_counter(), start
  bar = tqdm.tqdm(total=cfg.num_steps, initial=start, desc="train", unit="step",
                  disable=not cfg.progress or jax.process_index() != 0, dynamic_ncols=True)
  try:
    for step in range(start, cfg.num_steps):
      batch = shd.global_batch(next(batches), trainer.mesh)
      trainer.state, metrics = trainer.train_step(trainer.state, batch)
      if history:  # wait for the previous step: keeps the bar honest, one step in flight
        jax.block_until_ready(history[-1]["weighted_loss"])
      history.append(metrics)
      bar.update(1)
      done = step + 1
      is_last = done == cfg.num_steps
      save_now = done % cfg.checkpoint_every == 0 or is_last
      if done % cfg.log_every == 0 or save_now or done % cfg.sample_every == 0:
        host = jax.device_get(history)
        step_lib.check_finite(host, done - len(host), last_saved, workdir)
        elapsed = time.perf_counter() - window_start
        summary = step_lib.summarize_metrics(host)
        summary["steps_per_sec"] = (done - window_step) / max(elapsed, 1e-9)
        summary["images_per_sec"] = summary["steps_per_sec"] * cfg.batch_size
        summary["corrupt_images_skipped"] = float(getattr(batches, "num_skipped", 0))
        writer.write(done, summary)
        bar.set_postfix(loss=f"{summary.get('loss', float('nan')):.4f}",
                        img_s=f"{summary['images_per_sec']:.1f}")
        history, window_start, window_step = [], time.perf_counter(), done
      if save_now:
        checkpointer.save(done, trainer.state, trainer.meta())
        last_saved = done
      if done % cfg.sample_every == 0 or (is_last and cfg.sample_every <= cfg.num_steps):
        path = trainer.sample_grid(done, batch)
        if path:
          log.info("sample grid: %s", path)
  finally:
    bar.close()
    close = getattr(batches, "close", None)
    if close:
      close()
    checkpointer.close()
    writer.flush()
  return summary
