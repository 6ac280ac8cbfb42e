"""The training loop end to end with the tiny model on the embedded data: resume, devices,
errors."""

import json
import os

import jax
import numpy as np
import pytest
import tiny

from adm_jax import experiment
from adm_jax import sharding as shd
from adm_jax import validation
from adm_jax.modes import train
from adm_jax.training import metrics as metrics_lib

pytestmark = pytest.mark.slow  # whole runs: each test trains


def test_interrupted_run_resumes_bit_for_bit(tmp_path):
  straight = tiny.trained_workdir()  # 4 steps in one go
  resumed = str(tmp_path / "resumed")
  tiny.train_tiny(tiny.config(num_steps=2), resumed)  # "killed" after step 2
  assert tiny.checkpoint_steps(resumed) == [2]
  tiny.train_tiny(tiny.config(), resumed)  # restarted: continues at 3
  a, b = tiny.losses(straight), tiny.losses(resumed)
  assert sorted(a) == [1, 2, 3, 4] and sorted(b) == [1, 2, 3, 4]
  assert [a[s] for s in (3, 4)] == [b[s] for s in (3, 4)]  # the same losses, bit for bit
  sa, sb = tiny.final_state(straight), tiny.final_state(resumed)
  tiny.assert_trees_equal(sa, sb)
  assert int(sa.step) == 4 and int(sa.sampler_state.counts.sum()) == 4 * 8


def test_restore_with_another_device_count(tmp_path):
  workdir = str(tmp_path / "w")
  two = shd.create_mesh(1, jax.devices()[:2])
  tiny.train_tiny(tiny.config(num_steps=2), workdir, two)  # 2 devices
  tiny.train_tiny(tiny.config(), workdir)  # resumed on 1
  a, b = tiny.final_state(workdir), tiny.final_state(tiny.trained_workdir())  # the 1-device run
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_workdir_of_another_config_is_refused(tmp_path):
  workdir = tiny.trained_copy(tmp_path)
  other = tiny.config(num_steps=6)
  other.model.num_channels = 64
  with pytest.raises(ValueError, match="model.num_channels: checkpoint 32 != config 64"):
    train.run(other, workdir, tiny.MESH)


def test_sample_grid_and_config_written(tmp_path):
  workdir = str(tmp_path / "w")
  tiny.train_tiny(
    tiny.config(
      num_steps=2,
      sample_every=2,
      grid_samples=4,
      grid_timestep_respacing="ddim2",
      grid_cfg_scale=1.5,
    ),
    workdir,
  )
  assert os.path.exists(os.path.join(workdir, "samples", "grid_00000002.png"))
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["model"]["num_channels"] == 32
  record = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))[-1]
  for key in (
    "loss",
    "mse",
    "vb",
    "mse_q0",
    "grad_norm",
    "param_norm",
    "steps_per_sec",
    "images_per_sec",
  ):
    assert key in record, key


def test_grid_guidance_needs_the_null_class(tmp_path):
  with pytest.raises(ValueError, match="grid_cfg_scale > 0 needs"):
    train.run(
      tiny.config(num_steps=1, grid_cfg_scale=2.0, p_uncond=0.0), str(tmp_path / "w"), tiny.MESH
    )


def test_microbatch_that_does_not_divide_the_batch_is_refused():
  with pytest.raises(
    validation.ConfigError, match="train.microbatch=3: a microbatch of 3 must divide the batch of 8"
  ):
    validation.validate(tiny.config(microbatch=3), "train", devices=1)
  with pytest.raises(ValueError, match="a microbatch of 3 must divide the batch of 8"):
    experiment.build(tiny.config(microbatch=3), tiny.MESH)  # the library says it in its terms


def test_a_prebuilt_experiment_serves_only_its_own_model(tmp_path):
  other = tiny.config()
  other.model.num_channels = 64
  with pytest.raises(ValueError, match="built with other settings: model.num_channels"):
    train.run(other, str(tmp_path / "w"), tiny.MESH, experiment=tiny.diffusion_experiment())
  assert tiny.diffusion_experiment().serves(tiny.config(num_steps=9, log_every=3)) == []


def test_super_resolution_training_runs(tmp_path):
  config = tiny.config(num_steps=2, sample_every=2, grid_samples=2, grid_timestep_respacing="ddim2")
  config.model.update(small_size=4)
  train.run(config, str(tmp_path / "sr"), tiny.MESH)
  record = metrics_lib.read_metrics(str(tmp_path / "sr" / "metrics.jsonl"))[-1]
  assert np.isfinite(record["loss"])
  assert os.path.exists(tmp_path / "sr" / "samples" / "grid_00000002.png")
