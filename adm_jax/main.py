"""Command line: `python -m adm_jax.main --config=CONFIG --workdir=DIR --mode=MODE`.

Flags and mode dispatch only; every mode is a library function taking (config, workdir).
CONFIG is a file (`configs/imagenet128.py`, `configs/imagenet.py:128`) or a name from
configs/ (`imagenet128`, `fashion_mnist:quick`). Override any config field with
`--config.section.field=value`; an undeclared field is refused with the close matches.
"""
import logging
import os
import sys
import traceback

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
from ml_collections import config_flags

from adm_jax import config_base
from adm_jax import evaluation
from adm_jax import memory_plan
from adm_jax import report as report_lib
from adm_jax import sample
from adm_jax import sharding
from adm_jax import train
from adm_jax import xla_env

MODES = ("train", "train_classifier", "sample", "eval", "nll", "plan")

_CONFIG = config_flags.DEFINE_config_file("config", "configs/fashion_mnist.py",
                                          "Experiment config: a file or a name in configs/.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to run (plan: check the config and the "
                          "data, print model size and memory per device; nothing is built).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show library INFO logs (orbax, jax) too, and "
                             "full tracebacks of expected errors.")


def _config_arg(argv):
  """(index, value) of the --config flag in argv (None, default) when absent."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return i, arg[len("--config="):]
    if arg == "--config" and i + 1 < len(argv):
      return i + 1, argv[i + 1]
  return None, "configs/fashion_mnist.py"


def _fail(message: str, code: int = 2):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def parse_flags(argv):
  """absl flag parsing, after resolving a config name to its file and checking override keys."""
  argv = list(argv)
  index, spec = _config_arg(argv)
  try:
    resolved = config_base.resolve_config_path(spec)
    if index is not None:
      argv[index] = resolved if argv[index] == spec else f"--config={resolved}"
    config = config_base.from_config_file(resolved)
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    config_base.check_keys(config, overrides)
  except (FileNotFoundError, KeyError, ValueError) as e:
    _fail(str(e.args[0]) if e.args else str(e))
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))


def _setup_logging(verbose: bool):
  # adm_jax's own messages at INFO; the libraries' (orbax logs every save step) at WARNING.
  absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
  adm_logger = logging.getLogger("adm_jax")
  adm_logger.setLevel(logging.INFO)
  adm_logger.addHandler(handler)
  adm_logger.propagate = False


def _raised_by_adm_jax(error: BaseException) -> bool:
  """An error raised by adm_jax's own checks (a clear message), not deep inside a library."""
  frames = traceback.extract_tb(error.__traceback__)
  package = os.path.dirname(os.path.abspath(__file__))
  return bool(frames) and os.path.abspath(frames[-1].filename).startswith(package)


# The figures each mode's summary shows, when present.
FIGURES = {
    "train": ("loss", "mse", "vb", "steps_per_sec", "images_per_sec"),
    "train_classifier": ("loss", "acc1", "val_acc1", "val_acc5"),
    "sample": ("num_samples", "nfe_per_image"),
    "eval": ("fid", "sfid", "inception_score", "precision", "recall", "classifier_accuracy"),
    "nll": ("bits_per_dim", "num_images", "steps"),
    "plan": ("parameters_M", "devices", "per_device_batch", "microbatches", "state_GiB_per_device",
             "estimated_GiB_per_device"),
}


def next_command(report, argv) -> str:
  """The command of the mode to run next, with this run's --config and overrides."""
  keep = [a for a in argv[1:] if a.startswith(("--config", "--workdir")) and
          not a.startswith("--config.sample.sample_npz")]
  return " ".join(["python -m adm_jax.main"] + keep + [f"--mode={report.next_mode}"] +
                  list(report.next_overrides))


def print_report(report, argv) -> None:
  """The run's summary on stdout (process 0): status, figures, files, the next command."""
  if jax.process_index() != 0:
    return
  lines = report.lines(FIGURES.get(report.mode, ()))
  if report.next_mode and report.status != report_lib.PREEMPTED:
    lines.append(f"  next: {next_command(report, argv)}")
  print("\n".join(lines), flush=True)


def run_mode(mode: str, config, workdir: str):
  """Runs one mode; returns its RunReport."""
  sharding.maybe_initialize_distributed(config.distributed)
  runs = {"train": train.run, "train_classifier": train.run_classifier, "sample": sample.run,
          "nll": sample.run_nll, "eval": evaluation.run}
  if mode == "plan":
    return memory_plan.dry_run(config, workdir, _config_name(sys.argv))
  return runs[mode](config, workdir)


def _config_name(argv) -> str:
  """The config's name as given (imagenet128, imagenet:128), for the stored memory fits."""
  _, spec = _config_arg(argv)
  return os.path.splitext(os.path.basename(spec.split(":")[0]))[0] + (
      ":" + spec.split(":")[1] if ":" in spec else "")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_env.configure_for_cpu()
  _setup_logging(_VERBOSE.value)
  workdir = _WORKDIR.value
  if not workdir:
    _fail("--workdir is required (checkpoints, metrics and samples go there)")
  try:
    report = run_mode(_MODE.value, _CONFIG.value, workdir)
    print_report(report, sys.argv)
  except (ValueError, KeyError, FileNotFoundError, FileExistsError, PermissionError,
          ImportError, FloatingPointError, RuntimeError) as e:
    if _VERBOSE.value or not _raised_by_adm_jax(e):
      raise
    _fail(str(e.args[0]) if e.args else repr(e), code=1)


def cli():
  """The `adm-jax` console script: the same as python -m adm_jax.main."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  cli()
