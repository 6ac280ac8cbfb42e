"""Names of the process's mean / variance / loss types, and two array helpers.

The lowest module of adm_jax.diffusion: gaussian.py (the process) and losses.py (its
losses, which take a process as their first argument) both build on it, so neither needs
the other's import at load time.
"""

import jax.numpy as jnp

# Model mean types: what the network's first C channels predict.
EPSILON, START_X, PREVIOUS_X = "epsilon", "start_x", "previous_x"
MEAN_TYPES = (EPSILON, START_X, PREVIOUS_X)
# Model variance types.
FIXED_SMALL, FIXED_LARGE, LEARNED, LEARNED_RANGE = (
  "fixed_small",
  "fixed_large",
  "learned",
  "learned_range",
)
VAR_TYPES = (FIXED_SMALL, FIXED_LARGE, LEARNED, LEARNED_RANGE)
# Loss types.
MSE, RESCALED_MSE, KL, RESCALED_KL = "mse", "rescaled_mse", "kl", "rescaled_kl"
LOSS_TYPES = (MSE, RESCALED_MSE, KL, RESCALED_KL)


def extract(table, t, ndim: int):
  """table[t] as float32, shaped [B, 1, ..., 1] to broadcast against an ndim-array."""
  values = jnp.asarray(table, dtype=jnp.float32)[t]
  return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def mean_flat(x):
  """Mean over every axis but the batch axis: [B, ...] -> [B]."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))
