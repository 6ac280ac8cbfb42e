"""The training loop end to end with a tiny model on the embedded data: resume, devices, errors."""
import json
import os

import numpy as np
import pytest

import jax

from adm_jax import config_base
from adm_jax import experiment
from adm_jax import sharding as shd
from adm_jax import train
from adm_jax import training
from adm_jax.training import checkpoint as ckpt_lib
from adm_jax.training import metrics as metrics_lib

pytestmark = pytest.mark.slow  # whole runs: each test trains, samples or runs a notebook

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**train):
  # lr pinned: Adam turns float32 reduction-order differences between device counts into
  # parameter differences proportional to lr (the default's 1e-3 gives ~1.6e-5 after 4 steps).
  c = config_base.from_config_file(os.path.join(REPO, "configs", "fashion_mnist.py"))
  c.model.update(image_size=8, num_channels=32, channel_mult="1,2", attention_resolutions="4",
                 num_heads=1, num_res_blocks=1)
  c.train.update(batch_size=8, num_steps=4, lr=3e-4, log_every=1, checkpoint_every=2,
                 sample_every=10 ** 9, grid_samples=0, progress=False, async_checkpoint=False,
                 p_uncond=0.0, grid_cfg_scale=0.0)
  c.diffusion.schedule_sampler = "loss-second-moment"
  c.data.num_workers = 2
  c.train.update(train)
  return c


def losses(workdir):
  return {r["step"]: r["weighted_loss"] for r in metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))}


def final_params(workdir, config):
  exp = experiment.build(config, shd.create_mesh(1, jax.devices()[:1]))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
  state = ckpt.restore(ckpt.latest_step(), exp.abstract_state)
  ckpt.close()
  return jax.device_get(state)


def test_interrupted_run_resumes_bit_for_bit(tmp_path):
  one_mesh = shd.create_mesh(1, jax.devices()[:1])
  straight = str(tmp_path / "straight")
  train.run(tiny_config(), straight, one_mesh)
  resumed = str(tmp_path / "resumed")
  train.run(tiny_config(num_steps=2), resumed, one_mesh)   # "killed" after step 2
  assert sorted(os.listdir(os.path.join(resumed, "checkpoints"))) == ["2"]
  train.run(tiny_config(), resumed, one_mesh)              # restarted: continues at 3
  a, b = losses(straight), losses(resumed)
  assert sorted(a) == [1, 2, 3, 4] and sorted(b) == [1, 2, 3, 4]
  assert [a[s] for s in (3, 4)] == [b[s] for s in (3, 4)]     # the same losses, bit for bit
  sa, sb = final_params(straight, tiny_config()), final_params(resumed, tiny_config())
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
    np.testing.assert_array_equal(x, y)
  assert int(sa.step) == 4 and int(sa.sampler_state.counts.sum()) == 4 * 8


def test_restore_with_another_device_count(tmp_path):
  workdir = str(tmp_path / "w")
  train.run(tiny_config(num_steps=2), workdir, shd.create_mesh(1))      # 8 devices
  train.run(tiny_config(), workdir, shd.create_mesh(1, jax.devices()[:1]))  # resumed on 1
  reference = str(tmp_path / "ref")
  train.run(tiny_config(), reference, shd.create_mesh(1, jax.devices()[:1]))
  a, b = final_params(workdir, tiny_config()), final_params(reference, tiny_config())
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_workdir_of_another_config_is_refused(tmp_path):
  workdir = str(tmp_path / "w")
  mesh = shd.create_mesh(1, jax.devices()[:1])
  train.run(tiny_config(num_steps=2), workdir, mesh)
  other = tiny_config()
  other.model.num_channels = 64
  with pytest.raises(ValueError, match="model.num_channels: checkpoint 32 != config 64"):
    train.run(other, workdir, mesh)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "w")
  mesh = shd.create_mesh(1, jax.devices()[:1])
  config = tiny_config(num_steps=6)
  train.run(tiny_config(num_steps=2), workdir, mesh)
  config.train.lr = 1e12  # the first steps after resuming blow the parameters up
  config.train.log_every = 1
  config.train.allow_config_change = True  # another lr is another run: resume anyway
  with pytest.raises(training.NonFiniteLossError, match=r"step \d+.*last good checkpoint \(step \d+\)"):
    train.run(config, workdir, mesh)
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")))
  state = final_params(workdir, tiny_config())
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
  assert steps[-1] < 6


def test_sample_grid_and_config_written(tmp_path):
  workdir = str(tmp_path / "w")
  train.run(tiny_config(num_steps=2, sample_every=2, grid_samples=4, grid_respacing="ddim2",
                           p_uncond=0.2, grid_cfg_scale=1.5),
               workdir, shd.create_mesh(1, jax.devices()[:1]))
  assert os.path.exists(os.path.join(workdir, "samples", "grid_00000002.png"))
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["model"]["num_channels"] == 32
  record = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))[-1]
  for key in ("loss", "mse", "vb", "mse_q0", "grad_norm", "param_norm", "steps_per_sec", "images_per_sec"):
    assert key in record, key


def test_grid_guidance_needs_the_null_class(tmp_path):
  with pytest.raises(ValueError, match="grid_cfg_scale > 0 needs"):
    train.run(tiny_config(num_steps=1, grid_cfg_scale=2.0, p_uncond=0.0), str(tmp_path / "w"),
                 shd.create_mesh(1, jax.devices()[:1]))


def test_microbatch_config_validated():
  with pytest.raises(ValueError, match="train.microbatch=3 must divide"):
    experiment.build(tiny_config(microbatch=3), shd.create_mesh(1, jax.devices()[:1]))


def test_super_resolution_training_runs(tmp_path):
  config = tiny_config(num_steps=2, sample_every=2, grid_samples=2, grid_respacing="ddim2")
  config.model.update(small_size=4)
  train.run(config, str(tmp_path / "sr"), shd.create_mesh(1, jax.devices()[:1]))
  record = metrics_lib.read_metrics(str(tmp_path / "sr" / "metrics.jsonl"))[-1]
  assert np.isfinite(record["loss"])
  assert os.path.exists(tmp_path / "sr" / "samples" / "grid_00000002.png")
