"""The sample / nll modes on a tiny trained workdir, and a converted reference checkpoint via the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jax

from adm_jax import data as data_lib
from adm_jax import evaluation
from adm_jax import sample
from adm_jax import sharding as shd
from adm_jax import train
from conftest import REPO_ROOT, load_fixture
from test_training_loop import tiny_config

pytestmark = pytest.mark.slow  # whole runs: each test trains, samples or runs a notebook

MESH = shd.create_mesh(1, jax.devices()[:1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("trained"))
  config = tiny_classifier(tiny_config(num_steps=2, p_uncond=0.2))
  mesh = shd.create_mesh(1, jax.devices()[:1])
  train.run(config, path, mesh)
  summary = train.run_classifier(config, path, mesh).metrics
  assert "val_acc1" in summary and "val_acc5" in summary and "acc1" in summary
  return path


def tiny_classifier(config):
  config.classifier.update(classifier_width=32, classifier_depth=1, channel_mult="1,2",
                           classifier_attention_resolutions="4", iterations=2, batch_size=8,
                           log_every=1, eval_every=2, eval_batches=1, checkpoint_every=2)
  return config


def sample_config(**kw):
  config = tiny_classifier(tiny_config(p_uncond=0.2))
  config.sample.update(num_samples=6, batch_size=4, sampler="ddim", timestep_respacing="ddim3",
                       labels="random", output_dir="out")
  config.sample.update(kw)
  return config


def samples_of(config, workdir):
  """Runs the sample mode; returns the samples npz it reports."""
  return sample.run(config, workdir, MESH).outputs["samples"]


def test_samples_npz_grid_seed_and_resume(workdir):
  report = sample.run(sample_config(), workdir, MESH)
  path = report.outputs["samples"]
  with np.load(path) as d:
    first, labels = d["arr_0"], d["arr_1"]
  assert first.shape == (6, 8, 8, 1) and first.dtype == np.uint8 and labels.shape == (6,)
  assert report.outputs["grid"] == os.path.join(workdir, "out", "grid.png")
  assert os.path.exists(report.outputs["grid"]) and report.next_mode == "eval"
  again = samples_of(sample_config(output_dir="out2"), workdir)
  np.testing.assert_array_equal(np.load(again)["arr_0"], first)  # the seed reproduces
  # An interrupted run: batch 0 already on disk (marked with zeros) is kept, batch 1 is made.
  config = sample_config(output_dir="out3")
  parts = sample.parts_directory(os.path.join(workdir, "out3"), sample.sampling_settings(config, 2))
  os.makedirs(parts)
  np.savez(os.path.join(parts, "part_00000.npz"), arr_0=np.zeros((4, 8, 8, 1), np.uint8),
           arr_1=labels[:4])
  resumed = np.load(samples_of(config, workdir))["arr_0"]
  assert (resumed[:4] == 0).all()
  np.testing.assert_array_equal(resumed[4:], first[4:])


def test_other_settings_never_reuse_parts_or_overwrite_samples(workdir):
  # Killed after part 0, then rerun with another seed: the old part is not mixed in, and
  # the first run's samples file is kept beside the new one.
  out = os.path.join(workdir, "mix")
  old = sample_config(output_dir="mix", seed=1)
  old_path = samples_of(old, workdir)
  parts = sample.parts_directory(out, sample.sampling_settings(old, 2))
  os.makedirs(parts)
  np.savez(os.path.join(parts, "part_00000.npz"), arr_0=np.zeros((4, 8, 8, 1), np.uint8),
           arr_1=np.zeros(4, np.int32))
  new_path = samples_of(sample_config(output_dir="mix", seed=2), workdir)
  assert new_path != old_path and os.path.exists(old_path)
  fresh = np.load(samples_of(sample_config(output_dir="fresh", seed=2), workdir))["arr_0"]
  np.testing.assert_array_equal(np.load(new_path)["arr_0"], fresh)  # no zeros mixed in
  assert os.path.exists(os.path.join(parts, "part_00000.npz"))  # the old part is not deleted


def test_guided_sampling_modes(workdir):
  base = np.load(samples_of(sample_config(output_dir="g0", labels="3"), workdir))["arr_0"]
  for kw in (dict(classifier_scale=50.0), dict(cfg_scale=3.0),
             dict(classifier_scale=50.0, cfg_scale=3.0, sampler="ddpm")):
    name = "g_" + "_".join(f"{k}{v}" for k, v in kw.items())
    out = np.load(samples_of(sample_config(output_dir=name, labels="3", **kw), workdir))
    assert out["arr_0"].shape == base.shape and (out["arr_1"] == 3).all()
    if "classifier_scale" in kw:  # a 2-step model's conditional and null outputs are ~equal,
      assert not np.array_equal(out["arr_0"], base), kw  # so only the classifier moves pixels


def test_unipc_sampler(workdir):
  """sample.sampler=unipc with sample.solver_order / unipc_variant; the variant keys the parts."""
  kw = dict(sampler="unipc", steps=3, solver_order=2, labels="3")
  config = sample_config(output_dir="unipc", unipc_variant="bh1", **kw)
  spec = sample.sampler_spec(config)
  assert (spec.name, spec.steps, spec.order, spec.variant) == ("unipc", 3, 2, "bh1")
  bh1_path = samples_of(config, workdir)
  bh2_path = samples_of(sample_config(output_dir="unipc", unipc_variant="bh2", **kw), workdir)
  # another variant is another file (a 2-step model's uint8 images may not tell them apart)
  assert bh1_path != bh2_path
  for path in (bh1_path, bh2_path):
    with np.load(path) as out:
      assert out["arr_0"].shape == (6, 8, 8, 1) and (out["arr_1"] == 3).all()


def test_eval_mode_logs_writes_json_and_names_its_reference(tmp_path, caplog):
  # fmnist_cnn_v1 takes 32x32 images: six real training images stand in for samples.
  config = sample_config(output_dir="ev")
  config.model.image_size = 32
  os.makedirs(tmp_path / "ev")
  evaluation.write_reference_batch(str(tmp_path / "ev" / "samples_6x32x32x1.npz"), config.data,
                                   "train", 6, 32)
  with caplog.at_level("INFO", logger="adm_jax"):
    evaluation.run(config, str(tmp_path))
  assert "[fmnist_cnn_v1] FID" in caplog.text
  with open(tmp_path / "ev" / "eval_fmnist_cnn_v1.json") as f:
    saved = json.load(f)
  assert saved["feature_net"] == "fmnist_cnn_v1" and saved["n_samples"] == saved["n_reference"] == 6
  for key in ("fid", "sfid", "inception_score", "precision", "recall", "classifier_accuracy"):
    assert np.isfinite(saved[key]), key
  # The cached reference batch's name says where it came from (full set or embedded subset, split).
  name = data_lib.create_source(config.data, config.data.eval_split).name
  assert os.path.basename(saved["reference"]) == f"reference_{evaluation.api.source_tag(name)}_6.npz"
  assert "test" in os.path.basename(saved["reference"])


def test_bad_labels_raise():
  with pytest.raises(ValueError, match="label 12 is out of range"):
    sample.parse_labels("1,12", 4, 10, 0)


def test_nll_mode(workdir):
  result = sample.run_nll(sample_config(nll_batches=1, batch_size=8), workdir, MESH).metrics
  assert np.isfinite(result["bits_per_dim"]) and result["bits_per_dim"] > 0
  assert len(result["vb_per_step_bpd"]) == 1000


def test_converted_reference_checkpoint_samples_through_cli(tmp_path):
  fx = load_fixture("gd_tiny_cond")
  ckpt = tmp_path / "ckpt"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  run = lambda args: subprocess.run([sys.executable, "-m"] + args, cwd=REPO_ROOT, text=True,
                                    capture_output=True, timeout=600, env=env)
  result = run(["adm_jax.convert", "--checkpoint", str(fx.dir / "unet_params.npz"),
                "--config", str(fx.dir / "config.json"), "--out", str(ckpt)])
  assert result.returncode == 0, result.stderr[-2000:]
  result = run(["adm_jax.main", "--config=configs/fashion_mnist.py", f"--workdir={tmp_path}",
                "--mode=sample", f"--config.sample.checkpoint_path={ckpt}",
                "--config.sample.num_samples=2", "--config.sample.batch_size=2",
                "--config.sample.sampler=ddim", "--config.sample.timestep_respacing=ddim2",
                "--config.sample.labels=1,999"])
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(tmp_path / "samples" / "samples_2x32x32x3.npz") as d:
    assert d["arr_0"].shape == (2, 32, 32, 3) and d["arr_1"].tolist() == [1, 999]
