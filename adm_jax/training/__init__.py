"""Training machinery: train state, the diffusion and classifier steps, the one loop,
checkpoints and metric writing. The training modes themselves are adm_jax.train."""

from adm_jax.training.update import NonFiniteLossError  # noqa: F401
