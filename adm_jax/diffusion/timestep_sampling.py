"""Samplers of training timesteps t: uniform, and loss-second-moment importance sampling.

The loss-aware sampler's memory is a pytree (`LossHistory`) that a jitted train step
carries and updates with the global batch's losses; nothing lives on the Python side.
`sample` returns t [B] and the importance weights [B] that make the loss unbiased.
"""

from typing import Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp

SAMPLERS = ("uniform", "loss-second-moment")


@flax.struct.dataclass
class LossHistory:
  """The last `history` losses of every timestep: losses [T, history], counts [T]."""

  losses: jax.Array
  counts: jax.Array


@flax.struct.dataclass
class ScheduleSampler:
  """Static description of a timestep sampler; its state is a LossHistory or None."""

  name: str = flax.struct.field(pytree_node=False)
  num_timesteps: int = flax.struct.field(pytree_node=False)
  history: int = flax.struct.field(pytree_node=False, default=10)
  uniform_prob: float = flax.struct.field(pytree_node=False, default=0.001)

  def init(self) -> Optional[LossHistory]:
    if self.name == "uniform":
      return None
    return LossHistory(
      losses=jnp.zeros((self.num_timesteps, self.history), jnp.float32),
      counts=jnp.zeros((self.num_timesteps,), jnp.int32),
    )

  def weights(self, state: Optional[LossHistory]) -> jax.Array:
    """Unnormalised sampling weights [T]: uniform until every t has a full history."""
    uniform = jnp.ones((self.num_timesteps,), jnp.float32)
    if self.name == "uniform":
      return uniform
    rms = jnp.sqrt(jnp.mean(state.losses**2, axis=-1))
    probs = rms / jnp.sum(rms)
    probs = probs * (1 - self.uniform_prob) + self.uniform_prob / self.num_timesteps
    warmed_up = jnp.all(state.counts >= self.history)
    return jnp.where(warmed_up, probs, uniform)

  def sample(
    self, state: Optional[LossHistory], key, batch_size: int
  ) -> Tuple[jax.Array, jax.Array]:
    """t [B] int32 drawn with p_t ∝ weights, and weights 1 / (T p_t) [B] float32."""
    w = self.weights(state)
    p = w / jnp.sum(w)
    t = jax.random.choice(key, self.num_timesteps, shape=(batch_size,), p=p)
    return t.astype(jnp.int32), 1.0 / (self.num_timesteps * p[t])

  def update(self, state: Optional[LossHistory], t, losses) -> Optional[LossHistory]:
    """Appends each (t_i, loss_i) in batch order, dropping the oldest of a full history."""
    if self.name == "uniform":
      return state

    def add(s, item):
      ti, li = item
      count = s.counts[ti]
      row = s.losses[ti]
      shifted = jnp.roll(row, -1).at[-1].set(li)
      appended = row.at[jnp.minimum(count, self.history - 1)].set(li)
      row = jnp.where(count >= self.history, shifted, appended)
      return LossHistory(
        losses=s.losses.at[ti].set(row),
        counts=s.counts.at[ti].set(jnp.minimum(count + 1, self.history)),
      ), None

    state, _ = jax.lax.scan(
      add,
      state,
      (jnp.asarray(t, jnp.int32), jax.lax.stop_gradient(jnp.asarray(losses, jnp.float32))),
    )
    return state


def create_named_schedule_sampler(name: str, num_timesteps: int) -> ScheduleSampler:
  """'uniform' or 'loss-second-moment' (the reference's names)."""
  if name not in SAMPLERS:
    raise ValueError(f"unknown schedule_sampler {name!r}; expected one of {SAMPLERS}")
  return ScheduleSampler(name=name, num_timesteps=int(num_timesteps))
