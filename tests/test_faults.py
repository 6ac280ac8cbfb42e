"""Nothing lost, nothing mixed up: what happens when things go wrong (see also
experiments/fault_drill.sh for the cases that need real processes: kill -9, two trainers).

Workdir ownership, run identity on resume, damaged checkpoints, non-finite state, metric rows
after a resume, SIGTERM, an already finished run, class counts, guidance without a
classifier, settings refused before any work, 16-bit images, sampling without a checkpoint.
"""

import dataclasses
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
from PIL import Image
import pytest
import tiny

from adm_jax import data as data_lib
from adm_jax import evaluation
from adm_jax import experiment
from adm_jax import files
from adm_jax import report as report_lib
from adm_jax import sampling
from adm_jax import sharding as shd
from adm_jax import training
from adm_jax import validation
from adm_jax import workdir as workdir_lib
from adm_jax.modes import evaluate
from adm_jax.modes import sample
from adm_jax.modes import train
from adm_jax.training import checkpoint as ckpt_lib
from adm_jax.training import loop as loop_lib
from adm_jax.training import metrics as metrics_lib

MESH = tiny.MESH
tiny_config = tiny.config
steps_of = tiny.checkpoint_steps


# ----------------------------------------------------------------------------- ownership
def test_a_second_run_in_a_locked_workdir_stops_at_once(tmp_path):
  workdir = str(tmp_path / "w")
  with workdir_lib.WorkdirLock(workdir, "train"):
    start = time.perf_counter()
    with pytest.raises(
      workdir_lib.WorkdirInUseError, match=rf"{workdir} is in use by train \(pid {os.getpid()} on "
    ):
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
  # (another seed builds the same step: the shared one, told its new seed and config)
  exp = dataclasses.replace(tiny.diffusion_experiment(), config=other, seed=1)
  with caplog.at_level(logging.WARNING, logger="adm_jax"):
    report = train.run(other, workdir, MESH, experiment=exp)
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
  files = [
    f
    for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
    if os.path.isfile(f)
  ]
  return max(files, key=os.path.getsize)


def _delete_a_data_file(step_dir):
  os.remove(_largest_data_file(step_dir))


def _garble_a_data_file(step_dir):
  # 16 zero bytes in the middle: the chunks still decode, to other values (caught only by
  # the fingerprint saved with the checkpoint).
  path = _largest_data_file(step_dir)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 3 : len(data) // 3 + 16] = bytes(16)
  open(path, "wb").write(bytes(data))


def _truncate(relative):
  def damage(step_dir):
    path = os.path.join(step_dir, relative)
    open(path, "r+b").truncate(os.path.getsize(path) // 2)

  return damage


@pytest.mark.slow  # trains the four-checkpoint workdir
@pytest.mark.xdist_group("four_checkpoints")
@pytest.mark.parametrize(
  "damage",
  [
    _delete_a_data_file,
    _garble_a_data_file,
    _truncate("meta/metadata"),
    _truncate("state/_METADATA"),
  ],
  ids=["data file deleted", "data file garbled", "meta truncated", "state metadata truncated"],
)
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_previous_restored(
  four_checkpoints, tmp_path, damage, caplog
):
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
  four_checkpoints, tmp_path
):
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
  with pytest.raises(
    ckpt_lib.NoUsableCheckpointError, match=r"no usable checkpoint in .*step 5 \(.*step 1 \("
  ):
    tiny.train_tiny(tiny_config(num_steps=6), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "damaged"))) == [
    "1",
    "2",
    "3",
    "4",
    "4.1",
    "5",
  ]  # both damaged copies of step 4 kept


# ----------------------------------------------------------------------------- NaN / Inf
@pytest.fixture(scope="module")
def exploding():
  """The tiny model with lr = 1e39: loss and gradient stay finite, the updated parameters do not."""
  return experiment.build(tiny_config(lr=1e39), MESH)


@pytest.mark.slow  # trains
def test_an_exploding_state_is_never_saved(tmp_path, exploding):
  workdir = str(tmp_path / "w")
  with pytest.raises(
    training.NonFiniteLossError,
    match=r"non-finite parameters, EMA or optimizer state after the update at "
    r"step 1.*last good checkpoint \(none\)",
  ):
    train.run(
      tiny_config(num_steps=3, lr=1e39, checkpoint_every=1), workdir, MESH, experiment=exploding
    )
  assert steps_of(workdir) == []


@pytest.mark.slow  # resumes and trains
def test_a_non_finite_state_after_resuming_stops_and_keeps_the_last_good_checkpoint(
  tmp_path, exploding
):
  # (The non-finite loss and gradient paths: tests/test_train_step.py.)
  workdir = tiny.trained_copy(tmp_path)  # steps 2 and 4
  config = tiny_config(num_steps=8, lr=1e39, allow_config_change=True)  # resume anyway
  with pytest.raises(training.NonFiniteLossError, match=r"step 5.*last good checkpoint \(step 4\)"):
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
  assert [(r["step"], r["loss"]) for r in metrics_lib.read_metrics(path)] == [
    (1, 1),
    (2, 2),
    (3, 9),
  ]
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
  assert [r["step"] for r in metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))] == [
    1,
    2,
  ]


# ----------------------------------------------------------------------------- class counts
def test_classifier_with_fewer_classes_than_the_data_is_refused_before_training(tmp_path):
  config = tiny_config()
  config.classifier.num_classes = 5
  with pytest.raises(
    validation.ConfigError,
    match=r"classifier.num_classes=5 but the data .* "
    r"has 10 classes",
  ):
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
  with pytest.raises(
    FileNotFoundError,
    match=r"no checkpoint under .*classifier/checkpoints: "
    r"run --mode=train_classifier first",
  ):
    sample.run(config, workdir, MESH)
  assert not os.path.exists(os.path.join(workdir, config.sample.output_dir))  # nothing created


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
  "key, value, message",
  [
    ("sample.classifier_scale", -1.0, "sample.classifier_scale=-1.0 must be >= 0"),
    ("sample.cfg_scale", -2.0, "sample.cfg_scale=-2.0 must be >= 0"),
    ("train.log_every", 0, "train.log_every=0 must be an integer >= 1"),
    ("train.checkpoint_every", 0, "train.checkpoint_every=0 must be an integer >= 1"),
    (
      "train.batch_size",
      7,
      r"train.batch_size=7 must be a positive multiple of the number of devices \(2\)",
    ),
    ("data.channels", 2, "data.channels=2 must be 1 .grayscale. or 3 .RGB."),
    ("model.dtype", "float16", "float16' cannot train: adm_jax has no loss scaling"),
  ],
)
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
  loader = data_lib.BatchIterator(
    source, global_batch_size=8, image_size=8, seed=0, num_workers=2, channels=1
  )
  with pytest.raises(data_lib.CorruptImageError, match="unreadable images in a row"):
    next(loader)
  assert loader._pool._shutdown  # pylint: disable=protected-access
  loader.close()


def test_sampling_a_workdir_without_checkpoint_creates_nothing(tmp_path):
  config = tiny_config()
  config.sample.update(num_samples=2, batch_size=2, steps=2, output_dir=str(tmp_path / "out"))
  with pytest.raises(FileNotFoundError, match="no checkpoint under"):
    sample.run(config, str(tmp_path / "w"), MESH)
  assert not os.path.exists(tmp_path / "w") and not os.path.exists(tmp_path / "out")


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


# ----------------------------------------------------------------------------- exit statuses
def test_exit_status_tells_how_a_mode_ended():
  report = report_lib.RunReport("train")
  assert report.exit_code() == 0
  report.status = report_lib.ALREADY_FINISHED
  assert report.exit_code() == 0
  report.status, report.stopped_by = report_lib.PREEMPTED, "SIGTERM"
  assert report.exit_code() == 143  # what a shell reports for a process killed by SIGTERM
  report.stopped_by = "SIGINT"
  assert report.exit_code() == 130
  report.stopped_by = "preemption notice"
  assert report.exit_code() == 143
  report.status = "data not available"
  assert report.exit_code() == 1


# ----------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
  """A real filesystem that fills: a 64 MiB tmpfs mounted for the test (needs root; the fault
  drill covers other machines with RLIMIT_FSIZE). fill(leave) leaves `leave` bytes free."""
  mount = tmp_path / "disk"
  mount.mkdir()
  if (
    os.geteuid() != 0
    or subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    ).returncode
  ):
    pytest.skip("mounting a tmpfs needs root (experiments/fault_drill.sh uses RLIMIT_FSIZE)")
  filler = mount / "filler"

  def fill(leave: int) -> None:
    if filler.exists():
      filler.unlink()
    size = max(0, shutil.disk_usage(mount).free - leave)
    with open(filler, "wb") as f:
      f.write(b"\0" * size)

  def free() -> None:
    if filler.exists():
      filler.unlink()

  yield mount, fill, free
  subprocess.run(["umount", "-l", str(mount)], check=False)


def _no_partial_files(directory):
  left = [
    os.path.join(root, n)
    for root, dirs, names in os.walk(directory)
    for n in names + dirs
    if ".tmp" in n or "orbax-checkpoint-tmp" in n
  ]
  assert not left, left


@pytest.mark.slow  # trains
def test_a_full_disk_during_a_checkpoint_keeps_the_newest_complete_one(small_disk):
  mount, fill, free = small_disk
  workdir = str(mount / "w")
  tiny.train_tiny(tiny_config(num_steps=2), workdir)  # checkpoint 2 fits
  fill(leave=64 * 1024)  # rows fit, a checkpoint not
  with pytest.raises(files.OutOfSpaceError) as full:
    tiny.train_tiny(tiny_config(num_steps=4), workdir)
  message = str(full.value)
  assert "writing checkpoint step 4" in message and "free" in message and "needed" in message
  assert "resumes from checkpoint step 2" in message and "\n" not in message
  assert steps_of(workdir) == [2]
  _no_partial_files(workdir)
  assert int(tiny.final_state(workdir).step) == 2  # the newest complete checkpoint reads
  free()
  report = tiny.train_tiny(tiny_config(num_steps=4), workdir)  # the same command resumes
  assert report.step == 4 and steps_of(workdir) == [2, 4]
  tiny.assert_trees_equal(tiny.final_state(workdir), tiny.final_state(tiny.trained_workdir()))


def test_a_full_disk_during_a_metrics_row_leaves_no_half_line(small_disk):
  mount, fill, free = small_disk
  writer = metrics_lib.MetricWriter(str(mount / "w"), tensorboard=False)
  writer.write(1, {"loss": 1.0})
  fill(leave=0)  # what is left of the file's last page, no more
  wide = {f"metric_{i}": float(i) for i in range(2000)}  # a row longer than that
  with pytest.raises(files.OutOfSpaceError, match=r"writing a metrics row .*metrics.jsonl"):
    writer.write(2, wide)
  path = str(mount / "w" / "metrics.jsonl")
  assert open(path).read().endswith("\n") and [
    r["step"] for r in metrics_lib.read_metrics(path)
  ] == [1]
  free()
  writer.write(2, wide)
  assert [r["step"] for r in metrics_lib.read_metrics(path)] == [1, 2]


@pytest.mark.slow  # samples
def test_a_full_disk_during_sampling_keeps_the_finished_parts(small_disk, tmp_path):
  mount, fill, free = small_disk
  settings = dict(num_samples=12, batch_size=4)
  reference = np.load(
    sample.run(
      tiny.sample_config(output_dir=str(tmp_path / "ref"), **settings), tiny.trained_workdir(), MESH
    ).outputs["samples"]
  )["arr_0"]
  out = str(mount / "out")
  config = tiny.sample_config(output_dir=out, **settings)
  parts = sample.parts_directory(out, sample.sampling_settings(config, tiny.TRAINED_STEPS[-1]))
  real = sample.compiled_sampler

  def fill_after_first_part(*args):
    fn = real(*args)

    def run(*a):
      if os.path.exists(os.path.join(parts, "part_00000.npz")):
        fill(leave=0)
      return fn(*a)

    return run

  sample.compiled_sampler = fill_after_first_part
  try:
    with pytest.raises(files.OutOfSpaceError, match=r"writing sample part 1 .*resumes at part 1"):
      sample.run(config, tiny.trained_workdir(), MESH)
  finally:
    sample.compiled_sampler = real
  assert sorted(os.listdir(parts)) == ["part_00000.npz", "settings.json"]
  _no_partial_files(out)
  free()
  again = sample.run(config, tiny.trained_workdir(), MESH)
  np.testing.assert_array_equal(np.load(again.outputs["samples"])["arr_0"], reference)


def test_a_full_disk_during_a_grid_leaves_nothing(small_disk):
  mount, fill, _ = small_disk
  fill(leave=0)
  with pytest.raises(files.OutOfSpaceError, match=r"writing an image grid .*grid.png"):
    sampling.save_grid(str(mount / "grid.png"), np.zeros((4, 64, 64, 3), np.uint8))
  assert sorted(os.listdir(mount)) == ["filler"]


# ----------------------------------------------------------------------------- device counts
@pytest.mark.slow  # samples on one and on eight devices
@pytest.mark.parametrize("first, then", [(1, 8), (8, 1)])
def test_sampling_resumed_on_another_device_count_gives_the_same_samples(tmp_path, first, then):
  settings = dict(num_samples=16, batch_size=8)
  straight = sample.run(
    tiny.sample_config(output_dir=str(tmp_path / "straight"), **settings),
    tiny.trained_workdir(),
    shd.create_mesh(1, jax.devices()[:first]),
  )
  config = tiny.sample_config(output_dir=str(tmp_path / "resumed"), **settings)
  real, calls = sample.compiled_sampler, []

  def stop_at_second_batch(*args):
    fn = real(*args)

    def run(*a):
      calls.append(1)
      if len(calls) == 2:
        raise KeyboardInterrupt  # interrupted after part 0 was written
      return fn(*a)

    return run

  sample.compiled_sampler = stop_at_second_batch
  try:
    with pytest.raises(KeyboardInterrupt):
      sample.run(config, tiny.trained_workdir(), shd.create_mesh(1, jax.devices()[:first]))
  finally:
    sample.compiled_sampler = real
  resumed = sample.run(config, tiny.trained_workdir(), shd.create_mesh(1, jax.devices()[:then]))
  np.testing.assert_array_equal(
    np.load(resumed.outputs["samples"])["arr_0"], np.load(straight.outputs["samples"])["arr_0"]
  )


# ----------------------------------------------------------------------------- damaged eval inputs
def _eval_inputs(tmp_path):
  config = tiny_config()
  config.model.image_size = 32
  real = str(tmp_path / "real.npz")
  evaluation.write_reference_batch(real, config.data, "train", 6, 32)
  return config, real


@pytest.mark.parametrize(
  "damage, message",
  [
    ("truncated", r"samples.npz is not a readable npz \(truncated, damaged or another format"),
    ("text", r"samples.npz is not a readable npz"),
    ("nan", r"samples.npz: arr_0 holds NaN or inf"),
    ("range", r"samples.npz: arr_0 must be uint8 in 0..255, got int64 with values 0..300"),
  ],
)
def test_damaged_samples_are_refused_in_one_line_before_any_feature(
  tmp_path, monkeypatch, damage, message
):
  config, real = _eval_inputs(tmp_path)
  path = tmp_path / "samples.npz"
  images = np.load(real)["arr_0"]
  if damage == "truncated":
    data = open(real, "rb").read()
    path.write_bytes(data[: len(data) // 2])
  elif damage == "text":
    path.write_text("not an npz")
  elif damage == "nan":
    np.savez(path, arr_0=np.full(images.shape, np.nan, np.float32))
  else:
    np.savez(path, arr_0=np.linspace(0, 300, images.size).astype(np.int64).reshape(images.shape))
  monkeypatch.setattr(evaluation.api, "_extractor", lambda *a: pytest.fail("features computed"))
  config.sample.update(sample_npz=str(path), reference_batch=real)
  with pytest.raises(ValueError, match=message) as refused:
    evaluate.run(config, str(tmp_path))
  assert "\n" not in str(refused.value)


def test_reference_statistics_of_another_feature_network_are_refused_before_any_feature(
  tmp_path, monkeypatch
):
  config, real = _eval_inputs(tmp_path)
  stats = str(tmp_path / "stats.npz")
  np.savez(
    stats,
    feature_net="inception_v3",
    mu=np.zeros(4),
    sigma=np.eye(4),
    spatial_mu=np.zeros(4),
    spatial_sigma=np.eye(4),
    pool=np.zeros((6, 4)),
  )
  monkeypatch.setattr(evaluation.api, "_extractor", lambda *a: pytest.fail("features computed"))
  config.sample.update(sample_npz=real, reference_batch=stats)
  with pytest.raises(
    ValueError,
    match=r"stats.npz are of the feature network inception_v3, not "
    r"fmnist_cnn_v1 \(sample.feature_net\)",
  ):
    evaluate.run(config, str(tmp_path))


# ----------------------------------------------------------------------------- a dead peer
def test_an_aborted_process_is_explained_from_its_native_log(tmp_path, monkeypatch):
  # (The real case, two processes and kill -9: experiments/fault_drill.sh.) What the
  # supervisor prints when the coordination service aborted a process whose peer is gone.
  log = tmp_path / "process_0.log"
  log.write_text(
    "E1204 coordination_service.cc:1549] Use error polling to propagate the following error "
    "to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending "
    "heartbeats):\n1\nThe tasks have crashed.\nF1204 client.h:80] Terminating process\n"
    "*** Check failure stack trace: ***\n"
  )
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "0")
  message = shd.aborted_message(str(log), -6)
  assert message.startswith("process 1 of this 2-process run stopped answering")
  assert f"details in {log}" in message and "start all 2 again with the same command" in message
  assert "\n" not in message
  log.write_text("E1204 Polled an error from the coordination service\n")
  assert "lost the coordination service" in shd.aborted_message(str(log), -6)
