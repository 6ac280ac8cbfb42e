"""The command line: help from anywhere, refusals in one line (in-process, through the real flag
parser and main), and every mode once through the real command line on the tiny model."""

import json
import logging
import os
import shutil
import subprocess
import sys

from conftest import one_device_env
import pytest
import tiny

from adm_jax import config_base
from adm_jax import evaluation
from adm_jax import main
from adm_jax import report as report_lib


@pytest.fixture
def cli(monkeypatch, tmp_path):
  """run(args) -> (exit code, stderr) of adm_jax.main in this process, with main's logging set-up
  undone afterwards (it stops adm_jax's logs from propagating)."""
  logger, absl_logger = logging.getLogger("adm_jax"), logging.getLogger("absl")
  saved = (
    logger.handlers[:],
    logger.propagate,
    logger.level,
    absl_logger.level,
    sys.unraisablehook,
  )

  def run(args, capsys):
    monkeypatch.setattr(sys, "argv", ["adm-jax"] + args)
    with pytest.raises(SystemExit) as stopped:
      main.main(main.parse_flags(sys.argv))
    return stopped.value.code, capsys.readouterr()

  yield run
  logger.handlers[:], logger.propagate = saved[0], saved[1]
  logger.setLevel(saved[2])
  absl_logger.setLevel(saved[3])
  sys.unraisablehook = saved[4]


def test_help_from_any_directory_says_what_and_how_and_exits_0(tmp_path):
  commands = [[sys.executable, "-m", "adm_jax.main", "--help"]]
  if shutil.which("adm-jax"):
    commands.append(["adm-jax", "--help"])
  for command in commands:
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.startswith("adm-jax: train, sample and evaluate ADM")
    for mode in main.MODES:
      assert f"\n  {mode} " in out, mode
    for flag in ("--config=CONFIG", "--workdir=DIR", "--mode=MODE", "--config.S.K=V"):
      assert flag in out


def test_the_default_config_is_a_name_that_resolves_anywhere(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  argv = main.parse_flags(["adm-jax", f"--workdir={tmp_path}"])
  assert argv[1:] == []
  assert main._CONFIG.value.model.image_size == 32  # pylint: disable=protected-access
  assert main.DEFAULT_CONFIG == "fashion_mnist"


def test_an_unknown_config_key_is_refused_in_one_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as stopped:
    main.parse_flags(
      ["adm-jax", "--config=fashion_mnist", f"--workdir={tmp_path}", "--config.train.nmu_steps=3"]
    )
  err = capsys.readouterr().err
  assert stopped.value.code == 2
  assert err.startswith(
    "error: unknown config key train.nmu_steps; did you mean train.num_steps or "
  )
  assert len(err.strip().splitlines()) == 1
  assert not os.listdir(tmp_path)  # nothing written


def test_an_unknown_sampler_is_refused_in_one_line(tmp_path, capsys, cli):
  code, out = cli(
    [
      "--config=fashion_mnist",
      f"--workdir={tmp_path}",
      "--mode=sample",
      "--config.sample.batch_size=8",
      "--config.sample.sampler=dpm_solver",
    ],
    capsys,
  )
  assert code == 1
  assert out.err.startswith(
    "error: sample: unknown sampler 'dpm_solver'; expected one of ddpm, ddim,"
  )
  assert len(out.err.strip().splitlines()) == 1 and "Traceback" not in out.err
  assert not os.listdir(tmp_path)


def test_a_missing_workdir_is_refused_in_one_line(capsys, cli):
  code, out = cli(["--config=fashion_mnist"], capsys)
  assert code == 2 and out.err.strip() == (
    "error: --workdir is required (checkpoints, metrics and samples go there)"
  )


def tiny_flags():
  """--config.S.K=V flags that turn the fashion_mnist config into tests/tiny.py's config."""
  base = json.loads(config_base.from_config_file("fashion_mnist").to_json())
  want = json.loads(tiny.config().to_json())
  flags = []
  for section, values in want.items():
    for key, value in values.items() if isinstance(values, dict) else ():
      if base[section][key] != value:
        flags.append(f"--config.{section}.{key}={value}")
  return flags


@pytest.mark.slow  # six processes, each tracing and compiling its programs
def test_every_mode_through_the_real_command_line(tmp_path):
  # What a user types, on the tiny model: train, the classifier, guided sampling (the command
  # that training prints next), eval, nll and plan; each exits 0 and says what comes next.
  env = one_device_env()
  workdir = str(tmp_path / "w")
  common = [
    sys.executable,
    "-m",
    "adm_jax.main",
    "--config=fashion_mnist",
    f"--workdir={workdir}",
  ] + tiny_flags()

  def run(*extra):
    result = subprocess.run(
      common + list(extra), cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout

  out = run("--mode=train")
  assert out.startswith(f"train: {report_lib.FINISHED} at step 4") and "--mode=sample" in out
  out = run("--mode=train_classifier")
  assert "val_acc1" in out and "--config.sample.classifier_scale=1.0" in out
  # (test_sample's guided scale: the compilation cache serves the program it compiled)
  out = run("--mode=sample", "--config.sample.classifier_scale=50.0")
  assert "samples: " in out and "--mode=eval" in out
  samples = [line.split(": ", 1)[1] for line in out.splitlines() if "samples: " in line][0]
  assert os.path.exists(samples)
  # fmnist_cnn_v1 scores 32x32 images: six training images stand in for 8x8 samples.
  real = str(tmp_path / "real_6x32x32x1.npz")
  evaluation.write_reference_batch(real, tiny.config().data, "train", 6, 32)
  out = run("--mode=eval", "--config.model.image_size=32", f"--config.sample.sample_npz={real}")
  assert "fid" in out and "only 6 samples" in out
  out = run("--mode=nll", "--config.sample.batch_size=8")
  assert "bits_per_dim" in out
  out = run("--mode=plan")
  assert out.startswith("plan: ") and "parameters_M" in out
