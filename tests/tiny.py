"""The tests' tiny experiment, shared: one config, its compiled experiments, one trained workdir.

Whole-run tests (train, resume, faults, sample, nll, eval) start from here instead of building
and compiling their own model:

  config = tiny.config(num_steps=2)           # 8x8 grayscale Fashion-MNIST UNet (~60k params)
  train.run(config, workdir, tiny.MESH, experiment=tiny.diffusion_experiment())
  workdir = tiny.trained_copy(tmp_path)       # checkpoints of steps 2 and 4 plus a classifier

The experiments are built once per process (pytest-xdist runs one process per core) and serve
every config that differs from `config()` only in run length, intervals, logging and data
(Experiment.serves); the trained workdir is made once per process and copied.
"""

import functools
import os
import shutil
import tempfile

import jax
import numpy as np

from adm_jax import config_base
from adm_jax import experiment
from adm_jax import sharding as shd
from adm_jax.modes import train
from adm_jax.training import checkpoint as ckpt_lib
from adm_jax.training import metrics as metrics_lib

MESH = shd.create_mesh(1, jax.devices()[:1])
TRAINED_STEPS = (2, 4)  # the trained workdir's checkpoints


def config(**train_overrides):
  """The tiny config: 8x8 images, 32 channels, two levels, label dropout 0.2 (a null class for
  classifier-free guidance), the loss-second-moment t sampler, a tiny classifier, and
  sampling settings of a few images over 3 DDIM steps."""
  # lr pinned: Adam turns float32 reduction-order differences between device counts into
  # parameter differences proportional to lr (1e-3 gives ~1.6e-5 after 4 steps).
  c = config_base.from_config_file("fashion_mnist")
  c.model.update(
    image_size=8,
    num_channels=32,
    channel_mult="1,2",
    attention_resolutions="4",
    num_heads=1,
    num_res_blocks=1,
  )
  c.train.update(
    batch_size=8,
    num_steps=4,
    lr=3e-4,
    log_every=1,
    checkpoint_every=2,
    keep_checkpoints=5,
    sample_every=10**9,
    grid_samples=0,
    progress=False,
    async_checkpoint=False,
    p_uncond=0.2,
    grid_cfg_scale=0.0,
  )
  c.diffusion.schedule_sampler = "loss-second-moment"
  c.data.num_workers = 2
  c.classifier.update(
    classifier_width=32,
    classifier_depth=1,
    channel_mult="1,2",
    classifier_attention_resolutions="4",
    iterations=2,
    batch_size=8,
    log_every=1,
    eval_every=2,
    eval_batches=1,
    checkpoint_every=2,
  )
  c.sample.update(
    num_samples=6,
    batch_size=4,
    sampler="ddim",
    timestep_respacing="ddim3",
    labels="random",
    output_dir="out",
  )
  c.train.update(train_overrides)
  return c


def sample_config(**sample_overrides):
  c = config()
  c.sample.update(sample_overrides)
  return c


@functools.lru_cache(maxsize=None)
def diffusion_experiment(devices: int = 1) -> experiment.DiffusionExperiment:
  """The tiny config's UNet experiment on the first `devices` devices (built once)."""
  return experiment.build(config(), shd.create_mesh(1, jax.devices()[:devices]))


@functools.lru_cache(maxsize=None)
def classifier_experiment() -> experiment.ClassifierExperiment:
  return experiment.build_classifier(config(), MESH)


def train_tiny(cfg, workdir: str, mesh=None):
  """train.run with the shared experiment of the mesh's device count."""
  mesh = mesh or MESH
  return train.run(cfg, workdir, mesh, experiment=diffusion_experiment(mesh.size))


@functools.lru_cache(maxsize=None)
def _trained() -> str:
  path = os.path.join(tempfile.mkdtemp(prefix="adm_tiny_trained_"), "w")
  train_tiny(config(), path)
  report = train.run_classifier(config(), path, MESH, experiment=classifier_experiment())
  assert "val_acc1" in report.metrics and "acc1" in report.metrics
  return path


def trained_copy(tmp_path) -> str:
  """A fresh copy of the trained workdir (UNet steps 2 and 4, classifier step 2)."""
  dest = os.path.join(str(tmp_path), "trained")
  shutil.copytree(_trained(), dest)
  return dest


def trained_workdir() -> str:
  """The shared trained workdir itself: read it, never write to it (use trained_copy)."""
  return _trained()


def checkpoint_steps(workdir: str):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


def final_state(workdir: str, exp=None):
  """The newest checkpoint's whole TrainState, on the host."""
  exp = exp or diffusion_experiment()
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
  try:
    state = ckpt.restore(ckpt.latest_step(), exp.abstract_state)
  finally:
    ckpt.close()
  return jax.device_get(state)


def losses(workdir: str):
  path = os.path.join(workdir, "metrics.jsonl")
  return {r["step"]: r["weighted_loss"] for r in metrics_lib.read_metrics(path)}


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
