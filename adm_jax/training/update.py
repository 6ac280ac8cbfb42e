"""What both train steps (diffusion, classifier) share: step keys, microbatched gradients, the
guarded optimizer update, t-quartile metrics, and the host-side summary / NaN check.

The guard: a non-finite loss or gradient leaves params, EMA, optimizer and sampler state as
they were for that step (reported as `nonfinite`), so the loop can stop with the last good
checkpoint; `state_nonfinite` reports a state that became non-finite (e.g. an absurd learning
rate), which the loop never saves.
"""

import os
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from adm_jax.training import state as state_lib

NUM_QUARTILES = 4


class NonFiniteLossError(FloatingPointError):
  """A step produced a NaN/inf loss, gradient or state; the last good checkpoint is kept."""


def step_keys(rng, step):
  """Independent keys of one step: timesteps, noise, dropout, label dropout."""
  return jax.random.split(jax.random.fold_in(rng, step), 4)


def quartile_sums(values, t, num_timesteps):
  """Per t-quartile sums [4] and counts [4] of per-example values [B]."""
  quartile = jnp.clip(t * NUM_QUARTILES // num_timesteps, 0, NUM_QUARTILES - 1)
  onehot = jax.nn.one_hot(quartile, NUM_QUARTILES, dtype=jnp.float32)
  return values @ onehot, jnp.sum(onehot, axis=0)


def quartile_metrics(terms: Dict[str, jax.Array], t, num_timesteps) -> Dict[str, jax.Array]:
  """{name_qsum, name_qcount, name_mean} of per-example terms [B] (summarised on the host)."""
  out = {}
  for name, values in terms.items():
    sums, counts = quartile_sums(values.astype(jnp.float32), t, num_timesteps)
    out[f"{name}_qsum"], out[f"{name}_qcount"] = sums, counts
    out[f"{name}_mean"] = jnp.mean(values)
  return out


def microbatch_count(batch: int, microbatch: Optional[int], devices: int = 1) -> int:
  """How many microbatches of size `microbatch` a global batch splits into (None, <= 0 or
  >= batch: one); each of `devices` devices' equal shares must split the same way."""
  if microbatch is None or microbatch <= 0 or microbatch >= batch:
    return 1
  if batch % microbatch:
    raise ValueError(f"a microbatch of {microbatch} must divide the batch of {batch}")
  count = batch // microbatch
  if (batch // devices) % count:
    raise ValueError(
      f"a microbatch of {microbatch}: each device's share of the batch "
      f"({batch // devices}) must split into {count} microbatches"
    )
  return count


def _split_microbatches(tree, num_micro: int):
  """[B, ...] → [num_micro, B / num_micro, ...] taking every num_micro-th row.

  Rows stay on the device that holds them (each device's contiguous block splits evenly),
  so no data moves between devices.
  """

  def split(a):
    a = a.reshape((a.shape[0] // num_micro, num_micro) + a.shape[1:])
    return jnp.swapaxes(a, 0, 1)

  return jax.tree.map(split, tree)


def value_and_grad(
  loss_fn: Callable, params, per_example, key, microbatches: int = 1, grad_shardings=None
):
  """((mean loss, per-example terms [B]), grads) of loss_fn(params, per_example, key).

  loss_fn returns (scalar mean loss, {name: [B]}). With microbatches > 1 the per-example
  inputs are split, gradients accumulated in a lax.scan (microbatch i uses fold_in(key, i))
  and averaged: the same update as one batch, less activation memory.
  grad_shardings (the parameters' shardings): gradients are constrained to them as soon as
  they exist, so that with FSDP the compiled step reduce-scatters each gradient to its shard
  (and accumulates microbatches shard by shard) instead of all-reducing full gradients.
  """
  constrain = (
    (lambda g: jax.lax.with_sharding_constraint(g, grad_shardings))
    if grad_shardings is not None
    else (lambda g: g)
  )
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches == 1:
    value, grads = grad_fn(params, per_example, key)
    return value, constrain(grads)
  batch = jax.tree.leaves(per_example)[0].shape[0]
  if batch % microbatches:
    raise ValueError(f"batch of {batch} does not split into {microbatches} microbatches")
  micro = _split_microbatches(per_example, microbatches)

  def accumulate(carry, xs):
    grads_sum, loss_sum = carry
    mb_inputs, index = xs
    (mb_loss, mb_terms), mb_grads = grad_fn(params, mb_inputs, jax.random.fold_in(key, index))
    return (jax.tree.map(jnp.add, grads_sum, constrain(mb_grads)), loss_sum + mb_loss), mb_terms

  zeros = constrain(jax.tree.map(jnp.zeros_like, params))
  (grads, loss), stacked = jax.lax.scan(
    accumulate, (zeros, jnp.zeros((), jnp.float32)), (micro, jnp.arange(microbatches))
  )
  grads = jax.tree.map(lambda g: g / microbatches, grads)
  # Undo the microbatch interleaving so per-example terms line up with the batch again.
  terms = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1).reshape((batch,)), stacked)
  return (loss / microbatches, terms), grads


def guarded_update(
  state,
  grads,
  loss,
  tx: optax.GradientTransformation,
  ema_rates: Sequence[float] = (),
  sampler_update: Optional[Callable] = None,
):
  """(new state, metrics) of one optimizer step, skipped when the loss or gradient is not finite.

  sampler_update(sampler_state) -> the timestep sampler's next state (diffusion only).
  Metrics: grad_norm, param_norm, nonfinite (1: skipped), state_nonfinite (1: the new state
  holds NaN/inf). The norm of the new params decides the latter at no extra cost: with a finite
  gradient, Adam's moments stay finite, and an EMA of finite params stays finite, so params are
  the one part of the state an update can break (e.g. an absurd learning rate); a restored state
  is checked once, on the host, by the loop.
  """
  grad_norm = state_lib.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  def apply_update(_):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    sampler_state = sampler_update(state.sampler_state) if sampler_update else state.sampler_state
    return (
      params,
      state_lib.update_ema(state.ema_params, params, ema_rates),
      opt_state,
      sampler_state,
    )

  def keep_state(_):
    return state.params, state.ema_params, state.opt_state, state.sampler_state

  # lax.cond (rather than a select between new and old values) lets XLA update the donated
  # buffers in place instead of first copying every parameter, EMA and optimizer buffer
  # (measured: -4% on the bench32 train step on 2 CPU cores, 1166 -> 16 copies).
  params, ema_params, opt_state, sampler_state = jax.lax.cond(
    finite, apply_update, keep_state, None
  )
  new = state.replace(
    step=state.step + 1,
    params=params,
    ema_params=ema_params,
    opt_state=opt_state,
    sampler_state=sampler_state,
  )
  param_norm = state_lib.global_norm(params)
  metrics = {
    "grad_norm": grad_norm,
    "param_norm": param_norm,
    "nonfinite": 1.0 - finite.astype(jnp.float32),
    "state_nonfinite": 1.0 - jnp.isfinite(param_norm).astype(jnp.float32),
  }
  return new, metrics


def summarize_metrics(history: Sequence[Dict[str, Any]]) -> Dict[str, float]:
  """Host-side average of per-step metrics (numpy) into loggable scalars.

  Means of scalars; per-quartile values as sum(sums) / sum(counts), named e.g. `mse_q0`;
  `nonfinite` / `state_nonfinite` are counts.
  """
  out: Dict[str, float] = {}
  if not history:
    return out
  for key in history[0].keys():
    if key.endswith("_qcount"):
      continue
    if key.endswith("_qsum"):
      name = key[: -len("_qsum")]
      sums = sum(h[key] for h in history)
      counts = sum(h[f"{name}_qcount"] for h in history)
      for q in range(NUM_QUARTILES):
        if counts[q] > 0:
          out[f"{name}_q{q}"] = float(sums[q] / counts[q])
    elif key.endswith("_mean"):
      out[key[: -len("_mean")]] = float(sum(h[key] for h in history) / len(history))
    elif key in ("nonfinite", "state_nonfinite"):
      out[key] = float(sum(h[key] for h in history))
    else:
      out[key] = float(sum(h[key] for h in history) / len(history))
  return out


def check_finite(history, first_step: int, last_good: Optional[int], directory: str):
  """Raises NonFiniteLossError naming the first bad step of host-side metrics `history`."""
  for i, h in enumerate(history):
    bad_loss = float(h["nonfinite"]) > 0
    if bad_loss or float(h.get("state_nonfinite", 0.0)) > 0:
      what = (
        "non-finite loss or gradient"
        if bad_loss
        else "non-finite parameters, EMA or optimizer state after the update"
      )
      where = first_step + i + 1
      kept = f"step {last_good}" if last_good is not None else "none"
      raise NonFiniteLossError(
        f"{what} at step {where}; training stopped and nothing after it was saved: the last "
        f"good checkpoint ({kept}) is kept in {os.path.join(directory, 'checkpoints')}. Lower "
        "the learning rate or set a gradient clip, then run the same command to resume."
      )
