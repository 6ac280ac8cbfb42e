"""Nothing lost, nothing mixed up: what happens when things go wrong (see also
experiments/fault_drill.sh for the cases that need real processes: kill -9, two trainers).

Workdir ownership, run identity on resume, damaged checkpoints, non-finite state, metric rows
after a resume, SIGTERM, an already finished run, class counts, guidance without a
classifier, settings refused before any work, 16-bit images, sampling without a checkpoint.
"""
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import dataclasses

import jax
import numpy as np
import pytest
from PIL import Image

from adm_jax import data as data_lib
from adm_jax import evaluation
from adm_jax import experiment
from adm_jax import report as report_lib
from adm_jax import training
from adm_jax import validation
from adm_jax import workdir as workdir_lib
from adm_jax.modes import evaluate
from adm_jax.modes import sample
from adm_jax.modes import train
from adm_jax.training import checkpoint as ckpt_lib
from adm_jax.training import loop as loop_lib
from adm_jax.training import metrics as metrics_lib
import tiny

MESH = tiny.MESH
tiny_config = tiny.config
steps_of = tiny.checkpoint_steps


# ----------------------------------------------------------------------------- ownership
def test_a_second_run_in_a_locked_workdir_stops_at_once(tmp_path):
  workdir = str(tmp_path / "w")
  with workdir_lib.WorkdirLock(workdir, "train"):
    start = time.perf_counter()
    with pytest.raises(workdir_lib.WorkdirInUseError,
                       match=rf"{workdir} is in use by train \(pid {os.getpid()} on "):
      train.run(tiny_config(), workdir, MESH)
    assert time.perf_counter() - start < 5
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # nothing written
  assert workdir_lib.WorkdirLock(workdir, "train").owner() is None  # released, record cleared


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  record = {"host": os.uname().nodename, "pid": dead.pid, "mode": "train", "started": "then"}
  (tmp_path / workdir_lib.LOCK_FILE).write_text(json.dumps(record))
  with caplog.at_level(logging.WARNING, logger="adm_jax"):
    with workdir_lib.WorkdirLock(str(tmp_path), "sample") as lock:
      assert lock.owner()["pid"] == os.getpid() and lock.owner()["mode"] == "sample"
  assert f"pid {dead.pid}" in caplog.text and "no longer running" in caplog.text


def test_a_file_or_read_only_workdir_fails_before_any_work(tmp_path):
  afile = tmp_path / "file"
  afile.write_text("x")
  with pytest.raises(validation.ConfigError, match="exists and is not a directory"):
    train.run(tiny_config(), str(afile), MESH)
  if os.geteuid() != 0:  # root may write anywhere
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(validation.ConfigError, match="not writable"):
      train.run(tiny_config(), str(ro / "w"), MESH)


# ----------------------------------------------------------------------------- resume
@pytest.mark.slow  # resumes
def test_resume_refuses_another_run_unless_allowed(tmp_path, caplog):
  workdir = tiny.trained_copy(tmp_path)  # steps 2 and 4, seed 0
  other = tiny_config(num_steps=5, seed=1)
  other.data.random_flip = True
  with pytest.raises(ValueError, match=r"holds a checkpoint of another run") as refused:
    train.run(other, workdir, MESH)
  assert "data.random_flip: checkpoint False != config True" in str(refused.value)
  assert "train.seed: checkpoint 0 != config 1" in str(refused.value)
  other.train.allow_config_change = True
  with caplog.at_level(logging.WARNING, logger="adm_jax"):
    report = train.run(other, workdir, MESH)  # (another seed: another build)
  assert report.step == 5 and "resuming although the run changed" in caplog.text


@pytest.fixture(scope="module")
def four_checkpoints(tmp_path_factory):
  """A workdir with checkpoints of steps 1..4 (and its config)."""
  workdir = str(tmp_path_factory.mktemp("four") / "w")
  config = tiny_config(num_steps=4, checkpoint_every=1)
  tiny.train_tiny(config, workdir)
  return workdir, config


def _largest_data_file(step_dir):
  """The state's biggest data file (its array chunks; orbax does not need every file)."""
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
           if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def _delete_a_data_file(step_dir):
  os.remove(_largest_data_file(step_dir))


def _garble_a_data_file(step_dir):
  # 16 zero bytes in the middle: the chunks still decode, to other values (caught only by
  # the fingerprint saved with the checkpoint).
  path = _largest_data_file(step_dir)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 3:len(data) // 3 + 16] = bytes(16)
  open(path, "wb").write(bytes(data))


def _truncate(relative):
  def damage(step_dir):
    path = os.path.join(step_dir, relative)
    open(path, "r+b").truncate(os.path.getsize(path) // 2)
  return damage


@pytest.mark.slow  # trains the four-checkpoint workdir
@pytest.mark.xdist_group("four_checkpoints")
@pytest.mark.parametrize("damage", [_delete_a_data_file, _garble_a_data_file,
                                    _truncate("meta/metadata"), _truncate("state/_METADATA")],
                         ids=["data file deleted", "data file garbled", "meta truncated",
                              "state metadata truncated"])
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_previous_restored(
    four_checkpoints, tmp_path, damage, caplog):
  source, config = four_checkpoints
  workdir = str(tmp_path / "w")
  shutil.copytree(source, workdir)
  damage(os.path.join(workdir, "checkpoints", "4"))
  exp = tiny.diffusion_experiment()
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
  with caplog.at_level(logging.WARNING, logger="adm_jax"):
    state, step, _ = checkpointer.restore_newest(exp.abstract_state)
  checkpointer.close()
  assert step == 3 and int(state.step) == 3
  assert "checkpoint step 4" in caplog.text and "is damaged" in caplog.text
  assert steps_of(workdir) == [1, 2, 3]
  assert os.listdir(os.path.join(workdir, "checkpoints", "damaged")) == ["4"]  # kept, not deleted


@pytest.mark.slow  # trains the four-checkpoint workdir, then resumes
@pytest.mark.xdist_group("four_checkpoints")
def test_training_resumes_past_a_damaged_checkpoint_and_all_damaged_is_one_clear_error(
    four_checkpoints, tmp_path):
  source, config = four_checkpoints
  workdir = str(tmp_path / "w")
  shutil.copytree(source, workdir)
  _delete_a_data_file(os.path.join(workdir, "checkpoints", "4"))
  more = tiny_config(num_steps=5, checkpoint_every=1)
  report = tiny.train_tiny(more, workdir)  # from step 3: steps 4 and 5 trained (and saved) again
  assert report.step == 5 and steps_of(workdir) == [1, 2, 3, 4, 5]
  records = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5]  # step 4 logged again, once
  for step in (1, 2, 3, 4, 5):
    _truncate("meta/metadata")(os.path.join(workdir, "checkpoints", str(step)))
  with pytest.raises(ckpt_lib.NoUsableCheckpointError,
                     match=r"no usable checkpoint in .*step 5 \(.*step 1 \("):
    tiny.train_tiny(tiny_config(num_steps=6), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "damaged"))) == [
      "1", "2", "3", "4", "4.1", "5"]  # both damaged copies of step 4 kept


# ----------------------------------------------------------------------------- NaN / Inf
@pytest.fixture(scope="module")
def exploding():
  """The tiny model with lr = 1e39: loss and gradient stay finite, the updated parameters do not."""
  return experiment.build(tiny_config(lr=1e39), MESH)


@pytest.mark.slow  # trains
def test_an_exploding_state_is_never_saved(tmp_path, exploding):
  workdir = str(tmp_path / "w")
  with pytest.raises(training.NonFiniteLossError,
                     match=r"non-finite parameters, EMA or optimizer state after the update at "
                     r"step 1.*last good checkpoint \(none\)"):
    train.run(tiny_config(num_steps=3, lr=1e39, checkpoint_every=1), workdir, MESH,
              experiment=exploding)
  assert steps_of(workdir) == []


@pytest.mark.slow  # resumes and trains
def test_a_non_finite_state_after_resuming_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, exploding):
  # (The non-finite loss and gradient paths: tests/test_train_step.py.)
  workdir = tiny.trained_copy(tmp_path)  # steps 2 and 4
  config = tiny_config(num_steps=8, lr=1e39, allow_config_change=True)  # resume anyway
  with pytest.raises(training.NonFiniteLossError,
                     match=r"step 5.*last good checkpoint \(step 4\)"):
    train.run(config, workdir, MESH, experiment=exploding)
  assert steps_of(workdir) == [2, 4]
  state = tiny.final_state(workdir)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_a_restored_non_finite_state_counts_as_damaged(tmp_path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
  good = {"w": jnp.ones((3,))}
  checkpointer.save(1, good, {})
  checkpointer.save(2, {"w": jnp.array([1.0, jnp.inf, 0.0])}, {})
  checkpointer.wait()
  state, step, _ = checkpointer.restore_newest(good)
  checkpointer.close()
  assert step == 1 and np.all(np.asarray(state["w"]) == 1)
  assert os.listdir(tmp_path / "checkpoints" / "damaged") == ["2"]


# ----------------------------------------------------------------------------- metrics, signals
def test_metric_rows_after_the_restored_step_are_superseded(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False)
  for step in (1, 2, 3, 4):
    writer.write(step, {"loss": float(step)})
  metrics_lib.MetricWriter(str(tmp_path), tensorboard=False, resume_step=2).write(3, {"loss": 9.0})
  assert [(r["step"], r["loss"]) for r in metrics_lib.read_metrics(path)] == [(1, 1), (2, 2), (3, 9)]
  superseded = metrics_lib.read_metrics(str(tmp_path / metrics_lib.SUPERSEDED))
  assert [r["step"] for r in superseded] == [3, 4]  # moved, not deleted


@pytest.mark.slow  # trains three times
def test_sigterm_saves_a_checkpoint_and_the_run_resumes_bit_for_bit(tmp_path):
  straight = str(tmp_path / "straight")
  config = tiny_config(num_steps=5, checkpoint_every=10)
  tiny.train_tiny(config, straight)
  workdir = str(tmp_path / "w")
  exp = dataclasses.replace(tiny.diffusion_experiment(), config=config)
  spec = train.loop_spec(exp, workdir)
  terminate = lambda *_: os.kill(os.getpid(), signal.SIGTERM)
  spec.hooks = list(spec.hooks) + [loop_lib.Hook("sigterm", 2, terminate, at_end=False)]
  before = signal.getsignal(signal.SIGTERM)
  report = loop_lib.run(spec)  # the signal comes after step 2: step 3 finishes and is saved
  assert report.status == report_lib.PREEMPTED and report.step == 3
  assert steps_of(workdir) == [3] and "SIGTERM" in " ".join(report.notes)
  assert signal.getsignal(signal.SIGTERM) is before  # the loop's handler is gone again
  tiny.train_tiny(config, workdir)
  tiny.assert_trees_equal(tiny.final_state(straight), tiny.final_state(workdir))


@pytest.mark.slow  # trains
def test_a_finished_run_says_so_without_compiling(tmp_path):
  workdir = str(tmp_path / "w")
  first = tiny.train_tiny(tiny_config(num_steps=2), workdir)
  assert first.status == report_lib.FINISHED and os.path.exists(first.outputs["plot"])
  start = time.perf_counter()
  again = train.run(tiny_config(num_steps=2), workdir, MESH)  # a fresh build, never compiled
  assert again.status == report_lib.ALREADY_FINISHED and again.step == 2
  assert time.perf_counter() - start < 20  # no train-step compilation
  assert "raise the number of steps" in again.notes[0]
  assert [r["step"] for r in metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))] == [1, 2]


# ----------------------------------------------------------------------------- class counts
def test_classifier_with_fewer_classes_than_the_data_is_refused_before_training(tmp_path):
  config = tiny_config()
  config.classifier.num_classes = 5
  with pytest.raises(validation.ConfigError, match=r"classifier.num_classes=5 but the data .* "
                     r"has 10 classes"):
    train.run_classifier(config, str(tmp_path), MESH)


def test_guidance_by_a_classifier_with_too_few_classes_is_refused():
  config = tiny_config()
  config.sample.update(classifier_scale=1.0)
  config.classifier.num_classes = 5
  with pytest.raises(validation.ConfigError, match="cannot guide every class"):
    validation.validate(config, "sample", devices=1)


def test_guidance_without_a_trained_classifier_says_so(tmp_path):
  workdir = tiny.trained_copy(tmp_path)
  shutil.rmtree(os.path.join(workdir, "classifier"))
  config = tiny_config()
  config.sample.update(classifier_scale=1.0, num_samples=2, batch_size=2, steps=2)
  with pytest.raises(FileNotFoundError, match=r"no checkpoint under .*classifier/checkpoints: "
                     r"run --mode=train_classifier first"):
    sample.run(config, workdir, MESH)


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize("key, value, message", [
    ("sample.classifier_scale", -1.0, "sample.classifier_scale=-1.0 must be >= 0"),
    ("sample.cfg_scale", -2.0, "sample.cfg_scale=-2.0 must be >= 0"),
    ("train.log_every", 0, "train.log_every=0 must be an integer >= 1"),
    ("train.checkpoint_every", 0, "train.checkpoint_every=0 must be an integer >= 1"),
    ("train.batch_size", 7, r"train.batch_size=7 must be a positive multiple of the number of devices \(2\)"),
    ("data.channels", 2, "data.channels=2 must be 1 .grayscale. or 3 .RGB."),
    ("model.dtype", "float16", "float16' cannot train: adm_jax has no loss scaling"),
])
def test_bad_values_fail_with_the_key_and_the_rule(key, value, message):
  config = tiny_config()
  section, name = key.split(".")
  config[section][name] = value
  mode = "sample" if section == "sample" else "train"
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate(config, mode, devices=2)


def test_sixteen_bit_images_are_scaled_not_saturated(tmp_path):
  ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
  path = str(tmp_path / "x_0.png")
  Image.fromarray(ramp).save(path)
  out = data_lib.preprocess(path, 64, channels=1)[..., 0].astype(np.int64)
  expected = np.round(ramp / 257.0).astype(np.int64)
  assert np.abs(out - expected).max() <= 1 and (out == 255).mean() < 0.01


def test_loader_stops_decoding_when_the_data_is_all_corrupt(tmp_path):
  for i in range(40):
    (tmp_path / f"c_{i}.png").write_bytes(b"not a png")
  source = data_lib.FolderSource(str(tmp_path))
  loader = data_lib.BatchIterator(source, global_batch_size=8, image_size=8, seed=0,
                                  num_workers=2, channels=1)
  with pytest.raises(data_lib.CorruptImageError, match="unreadable images in a row"):
    next(loader)
  assert loader._pool._shutdown  # pylint: disable=protected-access
  loader.close()


def test_sampling_a_workdir_without_checkpoint_creates_nothing(tmp_path):
  config = tiny_config()
  config.sample.update(num_samples=2, batch_size=2, steps=2, output_dir=str(tmp_path / "out"))
  with pytest.raises(FileNotFoundError, match="no checkpoint under"):
    sample.run(config, str(tmp_path / "w"), MESH)
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_eval_takes_the_newest_samples_and_warns_below_a_thousand(tmp_path):
  config = tiny_config()
  config.model.image_size = 32
  config.sample.output_dir = "ev"
  os.makedirs(tmp_path / "ev")
  big = str(tmp_path / "ev" / "samples_40x32x32x1.npz")
  new = str(tmp_path / "ev" / "samples_6x32x32x1.npz")
  evaluation.write_reference_batch(big, config.data, "train", 40, 32)
  evaluation.write_reference_batch(new, config.data, "train", 6, 32)
  os.utime(big, (time.time() - 60, time.time() - 60))  # samples_40x... sorts last but is older
  report = evaluate.run(config, str(tmp_path))
  assert report.outputs["evaluated"] == new and report.metrics["n_samples"] == 6
  assert "only 6 samples" in report.notes[0]
