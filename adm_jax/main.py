"""adm-jax: train, sample and evaluate ADM diffusion models (Dhariwal & Nichol 2021) in JAX.

usage: python -m adm_jax.main --config=CONFIG --workdir=DIR [--mode=MODE] [--config.S.K=V ...]
       (or: adm-jax ...)

modes:
  train             train (or resume) the diffusion model in DIR (the default)
  train_classifier  train (or resume) the noisy classifier for guidance in DIR/classifier
  sample            sample N images into DIR/samples (npz + grid; resumes an interrupted run)
  eval              FID, sFID, IS, precision / recall of the newest samples
  nll               bits/dim of a data split (the full variational bound)
  plan              check the config and the data; model size and state per device (no build)

flags:
  --config=CONFIG   a config name (fashion_mnist, fashion_mnist:quick, imagenet128,
                    imagenet:256, ...) or a file (configs/imagenet128.py); default fashion_mnist
  --workdir=DIR     checkpoints, metrics, samples (a gs:// path works); required
  --mode=MODE       one of the modes above
  --config.S.K=V    override a config field (e.g. --config.train.batch_size=64); an unknown
                    field is refused with the close matches
  --verbose         library INFO logs and full tracebacks

example:
  python -m adm_jax.main --config=fashion_mnist:quick --workdir=/tmp/adm_quick
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
from adm_jax import modes
from adm_jax import report as report_lib
from adm_jax import sharding
from adm_jax import xla_env

MODES = tuple(modes.MODES)
DEFAULT_CONFIG = "fashion_mnist"
HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "-helpshort", "--helpfull", "-helpfull",
              "-?")

_CONFIG = config_flags.DEFINE_config_file("config", None,
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
  return None, DEFAULT_CONFIG


def _fail(message: str, code: int = 2):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def override_keys(argv):
  """The dotted config keys set on a command line (--config.train.lr=1e-4 -> train.lr)."""
  return [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]


def parse_flags(argv):
  """absl flag parsing, after resolving a config name to its file and checking override keys.

  --help (and -h, --helpshort, --helpfull) prints the module docstring and exits 0.
  """
  argv = list(argv)
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(__doc__.strip())
    sys.exit(0)
  flags.FLAGS.unparse_flags()  # a second parse in one process starts from the defaults
  index, spec = _config_arg(argv)
  try:
    resolved = config_base.resolve_config_path(spec)
    if index is None:
      argv.insert(1, f"--config={resolved}")
    else:
      argv[index] = resolved if argv[index] == spec else f"--config={resolved}"
    config = config_base.from_config_file(resolved)
    config_base.check_keys(config, override_keys(argv))
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


def run_mode(mode: str, config, workdir: str, overrides=()):
  """Runs one mode; returns its RunReport."""
  sharding.maybe_initialize_distributed(config.distributed)
  return modes.MODES[mode](config, workdir, overrides=overrides)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_env.configure_for_cpu()
  _setup_logging(_VERBOSE.value)
  workdir = _WORKDIR.value
  if not workdir:
    _fail("--workdir is required (checkpoints, metrics and samples go there)")
  try:
    report = run_mode(_MODE.value, _CONFIG.value, workdir, override_keys(sys.argv))
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
