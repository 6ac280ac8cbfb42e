"""Training: train state, the sharded train step, the loop, checkpoints and metrics.

`run(config, workdir)` is the diffusion loop, `classifier.run` the classifier loop.
"""
from adm_jax.training.step import NonFiniteLossError  # noqa: F401


def run(config, workdir, mesh=None):
  """Trains (or resumes) the diffusion model of `config` in `workdir`."""
  from adm_jax.training import loop  # pylint: disable=g-import-not-at-top
  return loop.run(config, workdir, mesh)
