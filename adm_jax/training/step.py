"""The diffusion train step: one jax.jit over the mesh, donated state, microbatch accumulation.

Per step: t from the timestep sampler (its loss-history state is updated from the global
batch), noise, optional label dropout for classifier-free guidance, the Improved-DDPM
losses, gradients accumulated over microbatches, AdamW, EMA, all behind the shared guard
of `update.guarded_update` (a non-finite loss or gradient skips the update and is reported).
"""

from typing import Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from adm_jax import diffusion as diff
from adm_jax import sharding as shd
from adm_jax.training import update
from adm_jax.training.state import TrainState


def make_train_step(
  apply_fn: Callable,
  diffusion: diff.GaussianDiffusion,
  sampler,
  tx: optax.GradientTransformation,
  ema_rates: Sequence[float],
  *,
  microbatches: int = 1,
  p_uncond: float = 0.0,
  null_label: int = -1,
  class_cond: bool = False,
  mesh=None,
  state_shardings=None,
  donate: bool = True,
  model_kwargs_fn: Optional[Callable] = None,
):
  """Returns train_step(state, batch) -> (state, metrics), jitted over the mesh.

  apply_fn(params, x, t, y, rng, train, **kw) -> network output [B, H, W, C_out]. batch
  is {'image': [B, H, W, C] in [-1, 1], 'label': [B] int32}, sharded on the batch axis.
  model_kwargs_fn(images) -> extra network inputs (e.g. the super-resolution low_res).
  """
  ema_rates = tuple(ema_rates)

  def loss_fn(params, inputs, dropout_key):
    y = inputs["label"] if class_cond else None
    extra = model_kwargs_fn(inputs["image"]) if model_kwargs_fn else {}
    model_fn = lambda x, tt, **kw: apply_fn(params, x, tt, y, dropout_key, True, **extra)
    terms = diffusion.training_losses(model_fn, inputs["image"], inputs["t"], inputs["noise"])
    return jnp.mean(terms["loss"] * inputs["weights"]), terms

  def train_step(state: TrainState, batch: Dict[str, jax.Array]):
    images = batch["image"].astype(jnp.float32)
    global_batch = images.shape[0]
    t_key, noise_key, dropout_key, uncond_key = update.step_keys(state.rng, state.step)
    t, weights = sampler.sample(state.sampler_state, t_key, global_batch)
    noise = jax.random.normal(noise_key, images.shape, jnp.float32)
    labels = batch["label"].astype(jnp.int32)
    if class_cond and p_uncond > 0:
      drop = jax.random.bernoulli(uncond_key, p_uncond, labels.shape)
      labels = jnp.where(drop, null_label, labels)
    # t and noise are drawn for the global batch before any microbatch split, so each
    # example sees the same ones whatever the split.
    inputs = {"image": images, "label": labels, "t": t, "weights": weights, "noise": noise}
    (loss, terms), grads = update.value_and_grad(
      loss_fn,
      state.params,
      inputs,
      dropout_key,
      microbatches,
      grad_shardings=state_shardings.params if state_shardings is not None else None,
    )
    new, metrics = update.guarded_update(
      state,
      grads,
      loss,
      tx,
      ema_rates,
      sampler_update=lambda s: sampler.update(s, t, terms["loss"]),
    )
    metrics["weighted_loss"] = loss
    metrics.update(update.quartile_metrics(terms, t, diffusion.num_timesteps))
    return new, metrics

  return jit_step(train_step, mesh, state_shardings, donate)


def jit_step(step_fn: Callable, mesh, state_shardings, donate: bool = True, train: bool = True):
  """jax.jit of step(state, batch) over the mesh: batch split on the batch axis, state as
  `state_shardings`, metrics replicated; the train step donates its state."""
  donate_argnums = (0,) if (donate and train) else ()
  if mesh is None:
    return jax.jit(step_fn, donate_argnums=donate_argnums)
  batch_sh = shd.batch_sharding(mesh)
  in_shardings = (state_shardings, {"image": batch_sh, "label": batch_sh})
  out = (state_shardings, shd.replicated(mesh)) if train else shd.replicated(mesh)
  return jax.jit(
    step_fn, in_shardings=in_shardings, out_shardings=out, donate_argnums=donate_argnums
  )
