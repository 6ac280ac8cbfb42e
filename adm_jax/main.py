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

exit status:
  0 the mode finished its work; 143 / 130 stopped by SIGTERM / SIGINT after saving a checkpoint
  (run the same command to resume: requeue on these); 1 an error said in one line (a setting,
  missing data or checkpoint, a full disk, a non-finite loss, a lost peer process); 2 a bad
  command line

example:
  python -m adm_jax.main --config=fashion_mnist:quick --workdir=/tmp/adm_quick
"""

import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
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
HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "-helpshort", "--helpfull", "-helpfull", "-?")

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config: a file or a name in configs/."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
_MODE = flags.DEFINE_enum(
  "mode",
  "train",
  MODES,
  "What to run (plan: check the config and the "
  "data, print model size and memory per device; nothing is built).",
)
_VERBOSE = flags.DEFINE_bool(
  "verbose",
  False,
  "Show library INFO logs (orbax, jax) too, and full tracebacks of expected errors.",
)


def _config_arg(argv):
  """(index, value) of the --config flag in argv (None, default) when absent."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return i, arg[len("--config=") :]
    if arg == "--config" and i + 1 < len(argv):
      return i + 1, argv[i + 1]
  return None, DEFAULT_CONFIG


# Set by the command line (cli): a failed mode leaves at once after its one line, without the
# interpreter's teardown (where a failed background checkpoint write prints its own traces).
_EXIT_AT_ONCE = False


def _fail(message: str, code: int = report_lib.EXIT_USAGE):
  print(f"error: {message}", file=sys.stderr, flush=True)
  if _EXIT_AT_ONCE:
    sys.stdout.flush()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


def override_keys(argv):
  """The dotted config keys set on a command line (--config.train.lr=1e-4 -> train.lr)."""
  return [a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")]


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
  # adm_jax's own messages at INFO; the libraries' (orbax logs every save step) at WARNING, and
  # those of absl-logging libraries (orbax: its background writes' errors, which the modes
  # report themselves in one line) only with --verbose.
  absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
  logging.getLogger("absl").setLevel(logging.INFO if verbose else logging.CRITICAL)
  if not verbose:
    sys.unraisablehook = _without_closed_loop_errors(sys.unraisablehook)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
  adm_logger = logging.getLogger("adm_jax")
  adm_logger.setLevel(logging.INFO)
  adm_logger.addHandler(handler)
  adm_logger.propagate = False


def _without_closed_loop_errors(unraisablehook):
  """sys.unraisablehook less the "Event loop is closed" errors that the still-pending
  background writes of a failed checkpoint save (a full disk) raise, one per array, when they
  complete after orbax closed its event loop; the failure itself is reported in one line."""

  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      return
    unraisablehook(unraisable)

  return hook


# Errors adm_jax raises with a message meant for the user (printed as one line).
EXPECTED_ERRORS = (ValueError, KeyError, OSError, ImportError, FloatingPointError, RuntimeError)


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
  "plan": (
    "parameters_M",
    "devices",
    "per_device_batch",
    "microbatches",
    "state_GiB_per_device",
    "estimated_GiB_per_device",
  ),
}


def next_command(report, argv) -> str:
  """The command of the mode to run next, with this run's --config and overrides."""
  keep = [
    a
    for a in argv[1:]
    if a.startswith(("--config", "--workdir")) and not a.startswith("--config.sample.sample_npz")
  ]
  return " ".join(
    ["python -m adm_jax.main"] + keep + [f"--mode={report.next_mode}"] + list(report.next_overrides)
  )


def print_report(report, argv) -> None:
  """The run's summary on stdout (process 0): status, figures, files, the next command."""
  if jax.process_index() != 0:
    return
  lines = report.lines(FIGURES.get(report.mode, ()))
  if report.next_mode and report.status != report_lib.PREEMPTED:
    lines.append(f"  next: {next_command(report, argv)}")
  if report.status == report_lib.PREEMPTED:
    lines.append(f"  resume: {' '.join(['python -m adm_jax.main'] + list(argv[1:]))}")
  print("\n".join(lines), flush=True)


# ----------------------------------------------------------------------------- multi-process runs
# In a cluster (sharding.cluster_environment) each launched process supervises a child that
# runs the mode: the C++ runtime aborts a process whose peer is gone (the coordination
# service's heartbeat) with a stack dump, which Python cannot intercept; the supervisor turns
# that into one line, exit status 1, and the native messages into a log file.
SUPERVISED = "ADM_JAX_SUPERVISED"  # set in the child that runs the mode
NATIVE_LOG = "ADM_JAX_NATIVE_LOG"  # where the child's C++ runtime messages go
_CLEAN_EXITS = (
  report_lib.EXIT_OK,
  report_lib.EXIT_ERROR,
  report_lib.EXIT_USAGE,
  *report_lib.EXIT_SIGNAL.values(),
)


def native_log_path(argv) -> str:
  """WORKDIR/logs/process_<i>.log for a local workdir, else a file in the temp directory."""
  workdir = next((a.split("=", 1)[1] for a in argv if a.startswith("--workdir=")), "")
  index = sharding.process_id_from_environment()
  if workdir and "://" not in workdir:
    return os.path.join(workdir, "logs", f"process_{index}.log")
  return os.path.join(tempfile.gettempdir(), f"adm_jax_process_{index}_{os.getpid()}.log")


def _die_with_parent() -> None:
  """In the child: SIGKILL when the supervisor dies (a scheduler's kill -9 takes both)."""
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def supervise(argv) -> int:
  """Runs this command in a child process, forwarding SIGTERM / SIGINT; returns its exit
  status, or 1 with one line when it died of a lost peer (or any other abort)."""
  log_path = native_log_path(argv)
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  env = dict(os.environ, **{SUPERVISED: "1", NATIVE_LOG: log_path})
  child = subprocess.Popen(
    [sys.executable, "-m", "adm_jax.main"] + list(argv[1:]), env=env, preexec_fn=_die_with_parent
  )
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda signum, frame: child.send_signal(signum))
  code = child.wait()
  if code in _CLEAN_EXITS:
    return code
  print(f"error: {sharding.aborted_message(log_path, code)}", file=sys.stderr, flush=True)
  return report_lib.EXIT_ERROR


def _peer_lost(detail) -> None:
  """A process of a multi-process run is gone: one line, and out at once (a normal exit would
  wait on the coordination service, then abort with a C++ stack dump)."""
  print(f"error: {sharding.peer_loss_message(detail)}", file=sys.stderr, flush=True)
  os._exit(report_lib.EXIT_ERROR)  # pylint: disable=protected-access


def _native_logs_to_file(path: str) -> None:
  """The C++ runtime's messages (collectives, coordination service) go to `path` instead of
  the terminal; Python's own output (progress, reports, one-line errors) stays there."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sys.stderr.flush()
  terminal = os.dup(2)
  log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(log_fd, 2)
  os.close(log_fd)
  sys.stderr = os.fdopen(terminal, "w", buffering=1)
  for handler in logging.getLogger("adm_jax").handlers:
    if isinstance(handler, logging.StreamHandler):
      handler.setStream(sys.stderr)
  logging.getLogger("adm_jax").info("native (C++) logs of this process: %s", path)


def run_mode(mode: str, config, workdir: str, overrides=()):
  """Runs one mode; returns its RunReport."""
  if sharding.maybe_initialize_distributed(config.distributed):
    _native_logs_to_file(
      os.environ.get(NATIVE_LOG) or native_log_path(["", f"--workdir={workdir}"])
    )
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
    if report.exit_code():
      sys.exit(report.exit_code())
  except Exception as e:  # pylint: disable=broad-except
    if sharding.is_peer_loss(e):
      _peer_lost(e)
    if _VERBOSE.value or not isinstance(e, EXPECTED_ERRORS) or not _raised_by_adm_jax(e):
      raise
    _fail(str(e.args[0]) if e.args else repr(e), code=report_lib.EXIT_ERROR)


def cli():
  """The `adm-jax` console script: the same as python -m adm_jax.main."""
  global _EXIT_AT_ONCE
  if sharding.cluster_environment() and not os.environ.get(SUPERVISED):
    sys.exit(supervise(sys.argv))
  _EXIT_AT_ONCE = True
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  cli()
