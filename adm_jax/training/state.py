"""Train state as a pytree, the optimizer, EMA, and sharded (abstract-first) initialisation."""

from typing import Any, Optional, Sequence, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from adm_jax import sharding as shd


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the config and the data position (= step)."""

  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any
  ema_params: Tuple[Any, ...]  # one copy per EMA rate
  opt_state: Any
  sampler_state: Any  # timestep_sampling.LossHistory or None
  rng: jax.Array  # uint32[2]: base key; step keys are fold_in(rng, step)


def parse_ema_rates(rates) -> Tuple[float, ...]:
  """'0.9999' or '0.999,0.9999' or a sequence → tuple of floats in (0, 1)."""
  if isinstance(rates, str):
    rates = [r for r in rates.replace(" ", "").split(",") if r]
  elif isinstance(rates, (int, float)):
    rates = [rates]
  out = tuple(float(r) for r in rates)
  for r in out:
    if not 0.0 <= r < 1.0:
      raise ValueError(f"EMA rates must lie in [0, 1), got {r}")
  return out


def create_optimizer(
  lr: float,
  weight_decay: float = 0.0,
  lr_anneal_steps: int = 0,
  grad_clip: float = 0.0,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
) -> optax.GradientTransformation:
  """AdamW as the reference (torch defaults), optional linear anneal to 0 and clipping."""
  if lr <= 0:
    raise ValueError(f"the learning rate must be positive, got {lr}")
  schedule = optax.linear_schedule(lr, 0.0, lr_anneal_steps) if lr_anneal_steps > 0 else lr
  parts = []
  if grad_clip and grad_clip > 0:
    parts.append(optax.clip_by_global_norm(grad_clip))
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
  return optax.chain(*parts)


def update_ema(ema_params: Tuple[Any, ...], params: Any, rates: Sequence[float]) -> Tuple[Any, ...]:
  """ema <- rate * ema + (1 - rate) * params, for each rate (float32)."""
  return tuple(
    jax.tree.map(lambda e, p, r=rate: r * e + (1.0 - r) * p, ema, params)
    for ema, rate in zip(ema_params, rates)
  )


def abstract_train_state(
  init_params_fn,
  tx: optax.GradientTransformation,
  sampler,
  ema_rates,
  seed: int,
  mesh,
  min_fsdp_size: int = 2**14,
) -> Tuple[TrainState, Any]:
  """(ShapeDtypeStructs of the state with their shardings, the shardings), nothing allocated.

  init_params_fn(key) -> params. The abstract state is the target of a checkpoint restore
  and the input of `init_train_state`.
  """
  abstract = jax.eval_shape(
    _state_maker(init_params_fn, tx, sampler, ema_rates), jax.random.PRNGKey(seed)
  )
  shardings = state_shardings(abstract, mesh, min_fsdp_size)
  return abstract_like(abstract, shardings), shardings


def init_train_state(
  init_params_fn,
  tx: optax.GradientTransformation,
  sampler,
  ema_rates,
  seed: int,
  shardings: TrainState,
) -> TrainState:
  """The initial state, created by one jit whose out_shardings place every leaf on its devices
  (a large model is never materialised on one device first)."""
  make = _state_maker(init_params_fn, tx, sampler, ema_rates)
  return jax.jit(make, out_shardings=shardings)(jax.random.PRNGKey(seed))


def _state_maker(init_params_fn, tx, sampler, ema_rates):
  def make(seed_key):
    init_key, run_key = jax.random.split(seed_key)
    params = init_params_fn(init_key)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=tuple(params for _ in ema_rates),
      opt_state=tx.init(params),
      sampler_state=sampler.init(),
      rng=run_key,
    )

  return make


def state_shardings(abstract_state: TrainState, mesh, min_fsdp_size: int = 2**14):
  """Params, EMA and optimizer state follow the FSDP rule; the rest is replicated."""
  big = lambda tree: shd.state_shardings(tree, mesh, min_fsdp_size)
  rep = shd.replicated(mesh)
  return TrainState(
    step=rep,
    params=big(abstract_state.params),
    ema_params=big(abstract_state.ema_params),
    opt_state=big(abstract_state.opt_state),
    sampler_state=jax.tree.map(lambda _: rep, abstract_state.sampler_state),
    rng=rep,
  )


def param_count(params: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


def global_norm(tree: Any) -> jax.Array:
  """sqrt of the sum of squares of every leaf, in float32."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def abstract_like(state: TrainState, shardings: Optional[TrainState] = None):
  """ShapeDtypeStructs (with shardings) describing a state, e.g. as a restore target."""
  if shardings is None:
    return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state
    )
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings
  )
