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
from ml_collections import config_flags

from adm_jax import config_base
from adm_jax import evaluation
from adm_jax import sample
from adm_jax import sharding
from adm_jax import train
from adm_jax import xla_env

MODES = ("train", "train_classifier", "sample", "eval", "nll")

_CONFIG = config_flags.DEFINE_config_file("config", "configs/fashion_mnist.py",
                                          "Experiment config: a file or a name in configs/.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to run.")
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


def run_mode(mode: str, config, workdir: str):
  """Runs one mode; returns what its library function returns."""
  sharding.maybe_initialize_distributed(config.distributed)
  runs = {"train": train.run, "train_classifier": train.run_classifier, "sample": sample.run,
          "nll": sample.run_nll, "eval": evaluation.run}
  return runs[mode](config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_env.configure_for_cpu()
  _setup_logging(_VERBOSE.value)
  workdir = _WORKDIR.value
  if not workdir:
    _fail("--workdir is required (checkpoints, metrics and samples go there)")
  try:
    run_mode(_MODE.value, _CONFIG.value, workdir)
  except (ValueError, KeyError, FileNotFoundError, FileExistsError, PermissionError,
          ImportError, FloatingPointError, RuntimeError) as e:
    if _VERBOSE.value or not _raised_by_adm_jax(e):
      raise
    _fail(str(e.args[0]) if e.args else repr(e), code=1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
