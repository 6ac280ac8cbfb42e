"""What `python -m adm_jax.main --mode=MODE` runs: one function per mode, each
run(config, workdir, mesh=None, overrides=()) -> RunReport (`overrides`: the config keys
set on the command line, for the modes that read a trained model's own settings)."""

from adm_jax.modes import evaluate
from adm_jax.modes import nll
from adm_jax.modes import plan
from adm_jax.modes import sample
from adm_jax.modes import train

MODES = {
  "train": train.run,
  "train_classifier": train.run_classifier,
  "sample": sample.run,
  "eval": evaluate.run,
  "nll": nll.run,
  "plan": plan.run,
}
