"""Command line: `python -m adm_jax.main --config=configs/X.py --workdir=DIR --mode=MODE`.

Flags and mode dispatch only; every mode is a library function taking (config, workdir).
Override any config field with --config.section.field=value.
"""
from adm_jax import xla_env  # noqa: F401  (XLA flags before jax starts)

import logging

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

MODES = ("train", "train_classifier", "sample", "eval", "nll")

_CONFIG = config_flags.DEFINE_config_file("config", "configs/fashion_mnist.py",
                                          "Experiment config file (ml-collections).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to run.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show library INFO logs (orbax, jax) too.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # adm_jax's own messages at INFO; the libraries' (orbax logs every save step) at WARNING.
  absl_logging.set_verbosity(absl_logging.INFO if _VERBOSE.value else absl_logging.WARNING)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
  adm_logger = logging.getLogger("adm_jax")
  adm_logger.setLevel(logging.INFO)
  adm_logger.addHandler(handler)
  adm_logger.propagate = False
  config = _CONFIG.value
  workdir = _WORKDIR.value
  if not workdir:
    raise app.UsageError("--workdir is required (checkpoints, metrics and samples go there)")
  from adm_jax import sharding  # pylint: disable=g-import-not-at-top
  sharding.maybe_initialize_distributed(config.get("distributed", "auto"))
  mode = _MODE.value
  if mode == "train":
    from adm_jax import training  # pylint: disable=g-import-not-at-top
    training.run(config, workdir)
  elif mode == "train_classifier":
    from adm_jax.training import classifier  # pylint: disable=g-import-not-at-top
    classifier.run(config, workdir)
  elif mode == "sample":
    from adm_jax import sample  # pylint: disable=g-import-not-at-top
    sample.run(config, workdir)
  elif mode == "eval":
    from adm_jax import evaluation  # pylint: disable=g-import-not-at-top
    evaluation.run(config, workdir)
  elif mode == "nll":
    from adm_jax import sample  # pylint: disable=g-import-not-at-top
    sample.run_nll(config, workdir)


if __name__ == "__main__":
  app.run(main)
