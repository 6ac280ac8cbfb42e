"""The training modes: `run` (--mode=train, the diffusion model) and `run_classifier`
(--mode=train_classifier, the noisy classifier for guidance).

Both check the config and the data first (seconds), take ownership of their directory (a
second run there stops at once, naming the first), build their objects with
adm_jax.experiment (or take a prebuilt experiment of the same model) and run the one loop of
adm_jax.training.loop, in `workdir` (the classifier in WORKDIR/<classifier.checkpoint_dir>).
This module adds what a training run needs around the experiment: the run's identity (what a
resumed checkpoint must share), the periodic sample grid and the classifier's validation pass.
They return a RunReport.
"""

import dataclasses
import json
import logging
import os
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp

from adm_jax import config_base
from adm_jax import experiment as experiment_lib
from adm_jax import files
from adm_jax import networks
from adm_jax import report as report_lib
from adm_jax import sampling
from adm_jax import sharding as shd
from adm_jax import validation
from adm_jax import workdir as workdir_lib
from adm_jax.training import loop as loop_lib
from adm_jax.training import state as state_lib
from adm_jax.training import update

log = logging.getLogger(__name__)


def run(
  config,
  workdir: str,
  mesh=None,
  overrides: Sequence[str] = (),
  experiment: Optional[experiment_lib.DiffusionExperiment] = None,
) -> report_lib.RunReport:
  """Trains (or resumes) the diffusion model of `config` in `workdir`.

  experiment: a prebuilt DiffusionExperiment of the same model, optimizer and batch (its
  compiled step is reused); steps, intervals and hooks come from `config`. overrides: unused
  (a training run's settings are its config, whatever set them).
  """
  del overrides
  report = _train(config, workdir, mesh, experiment, experiment_lib.DiffusionExperiment)
  report.outputs.setdefault("samples", os.path.join(workdir, "samples"))
  report.next_mode = "sample"
  return report


def run_classifier(
  config,
  workdir: str,
  mesh=None,
  overrides: Sequence[str] = (),
  experiment: Optional[experiment_lib.ClassifierExperiment] = None,
) -> report_lib.RunReport:
  """Trains (or resumes) the noisy classifier of `config` in WORKDIR/<classifier.checkpoint_dir>
  (arguments as `run`)."""
  del overrides
  report = _train(config, workdir, mesh, experiment, experiment_lib.ClassifierExperiment)
  report.next_mode = "sample"
  report.next_overrides = ["--config.sample.classifier_scale=1.0"]
  return report


def _train(config, workdir, mesh, exp, kind) -> report_lib.RunReport:
  mesh = mesh or (exp.mesh if exp is not None else None)
  validation.validate(config, kind.mode, workdir, devices=mesh.size if mesh else None)
  directory = (
    os.path.join(workdir, config.classifier.checkpoint_dir)
    if kind is experiment_lib.ClassifierExperiment
    else workdir
  )
  with workdir_lib.WorkdirLock(directory, kind.mode, jax.process_index()):
    validation.validate_source(config, kind.mode, experiment_lib.data_source(config.data, "train"))
    validation.validate_labels(
      config, kind.mode, lambda split: experiment_lib.data_source(config.data, split)
    )
    if exp is None:
      exp = experiment_lib.builder(kind.mode)(config, mesh)
    else:
      exp = _with_run_config(exp, config, kind)
    log_size(exp)
    if kind.mode == "train" and jax.process_index() == 0:
      files.write_text(
        os.path.join(workdir, "config.json"), config.to_json(indent=2), "the run's config"
      )
    return loop_lib.run(loop_spec(exp, workdir))


def _with_run_config(exp, config, kind):
  """The prebuilt experiment with this run's config, if it was built for the same model."""
  if not isinstance(exp, kind):
    raise TypeError(f"a {type(exp).__name__} cannot run --mode={kind.mode}")
  differ = exp.serves(config)
  if differ:
    raise ValueError(f"the prebuilt experiment was built with other settings: {', '.join(differ)}")
  return dataclasses.replace(exp, config=config)


def log_size(exp) -> None:
  log.info(
    "%s: %.2fM parameters; %d devices, %d processes",
    exp.network.kind,
    state_lib.param_count(exp.abstract_state.params) / 1e6,
    jax.device_count(),
    jax.process_count(),
  )


# ----------------------------------------------------------------------------- run identity
def run_identity(exp: experiment_lib.Experiment) -> Dict[str, Any]:
  """{dotted key: value} of what makes a checkpoint this run's, plus the data source's name
  and size (installing the full Fashion-MNIST set changes the data, not the config)."""
  config = json.loads(exp.config.to_json())
  out = {key: config_base.lookup(config, key) for key in exp.identity_keys()}
  source = exp.source("train")
  out["data.source"] = f"{getattr(source, 'name', exp.config.data.name)} ({len(source)} images)"
  return out


# ----------------------------------------------------------------------------- hooks
def grid_hook(exp: experiment_lib.DiffusionExperiment, workdir: str) -> Optional[loop_lib.Hook]:
  """The periodic sample grid of the slowest EMA params (classes in order when conditional)."""
  cfg, t = exp.config, exp.config.train
  if t.grid_samples <= 0:
    return None
  sample_fn = sampling.make_sample_fn(
    exp.network.inference_fn(),
    exp.diffusion,
    exp.image_shape,
    sampling.SamplerSpec.from_config(t, prefix="grid_"),
    class_cond=cfg.model.class_cond,
    cfg_scale=float(t.grid_cfg_scale),
    null_label=cfg.model.num_classes,
    out_shardings=shd.replicated(exp.mesh),
  )
  low_res_fn = networks.low_res_fn(cfg)
  names = experiment_lib.class_names(cfg) if cfg.model.class_cond else None

  def write_grid(step, state, batch):
    n = t.grid_samples
    labels = jnp.arange(n, dtype=jnp.int32) % cfg.model.num_classes
    key = jax.random.fold_in(jax.random.PRNGKey(t.seed + 1), 0)
    extra = None
    if low_res_fn is not None:  # a super-resolution model upsamples the batch's images
      n = min(n, batch["image"].shape[0])
      labels = batch["label"][:n]
      extra = low_res_fn(batch["image"][:n])
    images = sample_fn(state.ema_params[-1], key, labels, None, extra)
    if jax.process_index() != 0:
      return None
    path = os.path.join(workdir, "samples", f"grid_{step:08d}.png")
    ncols = min(cfg.model.num_classes, n) if cfg.model.class_cond else None
    captions = names[:ncols] if (names and ncols and low_res_fn is None) else None
    sampling.save_grid(
      path,
      sampling.to_uint8(jax.device_get(images)),
      ncols=ncols,
      scale=max(1, 128 // cfg.model.image_size),
      column_names=captions,
    )
    log.info("sample grid: %s", path)
    return None

  return loop_lib.Hook("grid", t.sample_every, write_grid, at_end=t.sample_every <= t.num_steps)


def validation_hook(exp: experiment_lib.ClassifierExperiment) -> loop_lib.Hook:
  """The classifier's validation pass over classifier.eval_batches batches of the eval split."""
  c, cfg = exp.config.classifier, exp.config

  def validate(step, state, batch):
    del batch
    val = exp.batches(step, cfg.data.eval_split, seed=cfg.train.seed + 1)
    try:
      host = [
        jax.device_get(exp.eval_step(state, shd.global_batch(next(val), exp.mesh)))
        for _ in range(c.eval_batches)
      ]
    finally:
      val.close()
    summary = {f"val_{k}": v for k, v in update.summarize_metrics(host).items()}
    log.info(
      "classifier step %d: %s", step, {k: round(v, 4) for k, v in summary.items() if "_q" not in k}
    )
    return summary

  return loop_lib.Hook("validation", c.eval_every, validate)


def loop_spec(exp: experiment_lib.Experiment, workdir: str) -> loop_lib.LoopSpec:
  """The training loop's view of an experiment: state, step, data, checkpoints, hooks."""
  cfg, t = exp.config, exp.config.train
  config_json = json.loads(cfg.to_json())
  common = dict(
    init_state=exp.init_state,
    abstract_state=exp.abstract_state,
    train_step=exp.train_step,
    batches=exp.batches,
    mesh=exp.mesh,
    keep_checkpoints=t.keep_checkpoints,
    async_checkpoint=t.async_checkpoint,
    progress=t.progress,
    tensorboard=t.tensorboard,
    identity=run_identity(exp),
    allow_identity_change=t.allow_config_change,
    directory=exp.directory(workdir),
    name=exp.mode,
  )
  if isinstance(exp, experiment_lib.ClassifierExperiment):
    c = cfg.classifier
    return loop_lib.LoopSpec(
      label="classifier",
      num_steps=c.iterations,
      batch_size=c.batch_size,
      log_every=c.log_every,
      checkpoint_every=c.checkpoint_every,
      meta={"config": config_json, "kind": "classifier"},
      hooks=[validation_hook(exp)],
      plot_keys=("loss", "acc1", "val_acc1"),
      postfix=lambda summary: {
        "loss": f"{summary.get('loss', float('nan')):.3f}",
        "acc1": f"{summary.get('acc1', float('nan')):.3f}",
      },
      **common,
    )
  return loop_lib.LoopSpec(
    label="train",
    num_steps=t.num_steps,
    batch_size=t.batch_size,
    log_every=t.log_every,
    checkpoint_every=t.checkpoint_every,
    meta={
      "config": config_json,
      "kind": "diffusion",
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
    },
    hooks=[h for h in (grid_hook(exp, workdir),) if h is not None],
    plot_keys=("loss", "mse", "vb"),
    postfix=lambda summary: {
      "loss": f"{summary.get('loss', float('nan')):.4f}",
      "img_s": f"{summary.get('images_per_sec', 0.0):.1f}",
    },
    **common,
  )
