"""The sample / nll modes on the tiny trained workdir, and a converted reference checkpoint via
the CLI."""

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT
from conftest import load_fixture
from conftest import one_device_env
import numpy as np
import pytest
import tiny

from adm_jax import data as data_lib
from adm_jax import evaluation
from adm_jax import sampling
from adm_jax import validation
from adm_jax.modes import evaluate
from adm_jax.modes import nll
from adm_jax.modes import sample

pytestmark = pytest.mark.slow  # whole runs: each test samples (or runs the CLI)

STEP = tiny.TRAINED_STEPS[-1]  # the trained workdir's newest checkpoint


def run_sample(tmp_path, name="out", overrides=(), **sample_settings):
  """The sample mode on the shared trained workdir, output under tmp_path/name; its report."""
  config = tiny.sample_config(output_dir=str(tmp_path / name), **sample_settings)
  return sample.run(config, tiny.trained_workdir(), tiny.MESH, overrides)


def samples_of(tmp_path, name="out", **sample_settings):
  return run_sample(tmp_path, name, **sample_settings).outputs["samples"]


def test_samples_npz_grid_seed_and_resume(tmp_path):
  report = run_sample(tmp_path)
  path = report.outputs["samples"]
  with np.load(path) as d:
    first, labels = d["arr_0"], d["arr_1"]
  assert first.shape == (6, 8, 8, 1) and first.dtype == np.uint8 and labels.shape == (6,)
  assert report.outputs["grid"] == str(tmp_path / "out" / "grid.png")
  assert os.path.exists(report.outputs["grid"]) and report.next_mode == "eval"
  again = samples_of(tmp_path, "out2")
  np.testing.assert_array_equal(np.load(again)["arr_0"], first)  # the seed reproduces
  # An interrupted run: batch 0 already on disk (marked with zeros) is kept, batch 1 is made.
  config = tiny.sample_config(output_dir=str(tmp_path / "out3"))
  parts = sample.parts_directory(str(tmp_path / "out3"), sample.sampling_settings(config, STEP))
  os.makedirs(parts)
  np.savez(
    os.path.join(parts, "part_00000.npz"), arr_0=np.zeros((4, 8, 8, 1), np.uint8), arr_1=labels[:4]
  )
  resumed = np.load(samples_of(tmp_path, "out3"))["arr_0"]
  assert (resumed[:4] == 0).all()
  np.testing.assert_array_equal(resumed[4:], first[4:])


def test_other_settings_never_reuse_parts_or_overwrite_samples(tmp_path):
  # Killed after part 0, then rerun with another seed: the old part is not mixed in, and
  # the first run's samples file is kept beside the new one.
  out = str(tmp_path / "mix")
  old_path = samples_of(tmp_path, "mix", seed=1)
  parts = sample.parts_directory(
    out, sample.sampling_settings(tiny.sample_config(output_dir=out, seed=1), STEP)
  )
  os.makedirs(parts)
  np.savez(
    os.path.join(parts, "part_00000.npz"),
    arr_0=np.zeros((4, 8, 8, 1), np.uint8),
    arr_1=np.zeros(4, np.int32),
  )
  new_path = samples_of(tmp_path, "mix", seed=2)
  assert new_path != old_path and os.path.exists(old_path)
  fresh = np.load(samples_of(tmp_path, "fresh", seed=2))["arr_0"]
  np.testing.assert_array_equal(np.load(new_path)["arr_0"], fresh)  # no zeros mixed in
  assert os.path.exists(os.path.join(parts, "part_00000.npz"))  # the old part is not deleted


def test_guided_sampling_modes(tmp_path):
  base = np.load(samples_of(tmp_path, "g0", labels="3"))["arr_0"]
  for kw in (
    dict(classifier_scale=50.0),
    dict(cfg_scale=3.0),
    dict(classifier_scale=50.0, cfg_scale=3.0, sampler="ddpm"),
  ):
    name = "g_" + "_".join(f"{k}{v}" for k, v in kw.items())
    out = np.load(samples_of(tmp_path, name, labels="3", **kw))
    assert out["arr_0"].shape == base.shape and (out["arr_1"] == 3).all()
    if "classifier_scale" in kw:  # a 4-step model's conditional and null outputs are ~equal,
      assert not np.array_equal(out["arr_0"], base), kw  # so only the classifier moves pixels


def test_sampling_builds_the_networks_it_was_trained_with(tmp_path):
  # The sampling command's config says 64 channels (a config file's value, not a flag): the
  # checkpoint's 32 are used. A flag that contradicts the checkpoint is refused in one line.
  config = tiny.sample_config(output_dir=str(tmp_path / "a"), classifier_scale=1.0)
  config.model.num_channels = 64
  config.classifier.classifier_width = 64
  report = sample.run(config, tiny.trained_workdir(), tiny.MESH)
  assert np.load(report.outputs["samples"])["arr_0"].shape == (6, 8, 8, 1)
  for key in ("model.num_channels", "classifier.classifier_width"):
    with pytest.raises(validation.ConfigError) as refused:
      sample.run(config, tiny.trained_workdir(), tiny.MESH, overrides=[key])
    message = str(refused.value)
    assert f"{key}=64 (command line) but 32 in training" in message and "\n" not in message
  assert os.listdir(tmp_path) == ["a"]  # the refused runs created nothing


def test_unipc_sampler(tmp_path):
  """sample.sampler=unipc with sample.solver_order / unipc_variant; the variant keys the parts."""
  kw = dict(sampler="unipc", steps=3, solver_order=2, labels="3")
  config = tiny.sample_config(unipc_variant="bh1", **kw)
  spec = sampling.SamplerSpec.from_config(config.sample)
  assert (spec.name, spec.steps, spec.order, spec.variant) == ("unipc", 3, 2, "bh1")
  bh1_path = samples_of(tmp_path, "unipc", unipc_variant="bh1", **kw)
  bh2_path = samples_of(tmp_path, "unipc", unipc_variant="bh2", **kw)
  # another variant is another file (a 4-step model's uint8 images may not tell them apart)
  assert bh1_path != bh2_path
  for path in (bh1_path, bh2_path):
    with np.load(path) as out:
      assert out["arr_0"].shape == (6, 8, 8, 1) and (out["arr_1"] == 3).all()


def test_eval_mode_logs_writes_json_and_names_its_reference(tmp_path, caplog):
  # fmnist_cnn_v1 takes 32x32 images: six real training images stand in for samples.
  config = tiny.sample_config(output_dir="ev")
  config.model.image_size = 32
  os.makedirs(tmp_path / "ev")
  evaluation.write_reference_batch(
    str(tmp_path / "ev" / "samples_6x32x32x1.npz"), config.data, "train", 6, 32
  )
  with caplog.at_level("INFO", logger="adm_jax"):
    evaluate.run(config, str(tmp_path))
  assert "[fmnist_cnn_v1] FID" in caplog.text
  with open(tmp_path / "ev" / "eval_fmnist_cnn_v1.json") as f:
    saved = json.load(f)
  assert saved["feature_net"] == "fmnist_cnn_v1" and saved["n_samples"] == saved["n_reference"] == 6
  for key in ("fid", "sfid", "inception_score", "precision", "recall", "classifier_accuracy"):
    assert np.isfinite(saved[key]), key
  # The cached reference batch's name says where it came from (full set or embedded subset, split).
  name = data_lib.create_source(config.data, config.data.eval_split).name
  assert os.path.basename(saved["reference"]) == f"reference_{evaluation.source_tag(name)}_6.npz"
  assert "test" in os.path.basename(saved["reference"])


def test_bad_labels_raise():
  with pytest.raises(ValueError, match="label 12 is out of range"):
    sample.parse_labels("1,12", 4, 10, 0)


def test_nll_mode(tmp_path):
  config = tiny.sample_config(nll_batches=1, batch_size=8, output_dir=str(tmp_path / "nll"))
  result = nll.run(config, tiny.trained_workdir(), tiny.MESH).metrics
  assert np.isfinite(result["bits_per_dim"]) and result["bits_per_dim"] > 0
  assert len(result["vb_per_step_bpd"]) == 1000


def test_converted_reference_checkpoint_samples_through_cli(tmp_path):
  fx = load_fixture("gd_tiny_cond")
  ckpt = tmp_path / "ckpt"
  env = one_device_env()
  run = lambda args: subprocess.run(
    [sys.executable, "-m"] + args,
    cwd=REPO_ROOT,
    text=True,
    capture_output=True,
    timeout=600,
    env=env,
  )
  result = run(
    [
      "adm_jax.convert",
      "--checkpoint",
      str(fx.dir / "unet_params.npz"),
      "--config",
      str(fx.dir / "config.json"),
      "--out",
      str(ckpt),
    ]
  )
  assert result.returncode == 0, result.stderr[-2000:]
  result = run(
    [
      "adm_jax.main",
      "--config=configs/fashion_mnist.py",
      f"--workdir={tmp_path}",
      "--mode=sample",
      f"--config.sample.checkpoint_path={ckpt}",
      "--config.sample.num_samples=2",
      "--config.sample.batch_size=2",
      "--config.sample.sampler=ddim",
      "--config.sample.timestep_respacing=ddim2",
      "--config.sample.labels=1,999",
    ]
  )
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(tmp_path / "samples" / "samples_2x32x32x3.npz") as d:
    assert d["arr_0"].shape == (2, 32, 32, 3) and d["arr_1"].tolist() == [1, 999]
