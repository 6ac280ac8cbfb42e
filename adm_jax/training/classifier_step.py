"""The noisy-image classifier's train and eval steps (`--mode=train_classifier`).

Each step noises the batch to x_t with t from the schedule sampler (t = 0 when not
`noised`) and minimises cross-entropy with AdamW, behind the same guarded update as the
diffusion step (a non-finite loss or gradient skips the update and is reported). Metrics:
loss, top-1 and top-5 accuracy overall and by t-quartile.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from adm_jax import diffusion as diff
from adm_jax.training import step as step_lib
from adm_jax.training import update


def classification_terms(logits, labels):
  """Per-example cross-entropy, top-1 and top-5 correctness, [B] each."""
  logits = logits.astype(jnp.float32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  k = min(5, logits.shape[-1])
  top_k = jax.lax.top_k(logits, k)[1]
  hits = top_k == labels[:, None]
  return {
    "loss": loss,
    "acc1": hits[:, 0].astype(jnp.float32),
    "acc5": jnp.any(hits, axis=-1).astype(jnp.float32),
  }


def make_classifier_step(
  apply_fn: Callable,
  gd: diff.GaussianDiffusion,
  sampler,
  tx: optax.GradientTransformation,
  *,
  noised: bool,
  train: bool,
  microbatches: int = 1,
  mesh=None,
  state_shardings=None,
  donate: bool = True,
):
  """Returns step(state, batch) -> (state, metrics) (train) or metrics (eval), jitted.

  apply_fn(params, x, t, rng, train) -> logits [B, K]; t are the network's timesteps.
  """

  def loss_fn(params, inputs, dropout_key):
    logits = apply_fn(params, inputs["image"], gd.model_timesteps(inputs["t"]), dropout_key, train)
    terms = classification_terms(logits, inputs["label"])
    return jnp.mean(terms["loss"]), terms

  def prepare(state, batch, salt):
    images = batch["image"].astype(jnp.float32)
    t_key, noise_key, dropout_key, _ = update.step_keys(
      jax.random.fold_in(state.rng, salt), state.step
    )
    if noised:
      t, _ = sampler.sample(state.sampler_state, t_key, images.shape[0])
      images = gd.q_sample(images, t, jax.random.normal(noise_key, images.shape))
    else:
      t = jnp.zeros((images.shape[0],), jnp.int32)
    return {"image": images, "label": batch["label"].astype(jnp.int32), "t": t}, dropout_key

  def train_step(state, batch):
    inputs, dropout_key = prepare(state, batch, 0)
    (loss, terms), grads = update.value_and_grad(
      loss_fn,
      state.params,
      inputs,
      dropout_key,
      microbatches,
      grad_shardings=state_shardings.params if state_shardings is not None else None,
    )
    new, metrics = update.guarded_update(state, grads, loss, tx)
    metrics.update(update.quartile_metrics(terms, inputs["t"], gd.num_timesteps))
    return new, metrics

  def eval_step(state, batch):
    inputs, _ = prepare(state, batch, 1)
    _, terms = loss_fn(state.params, inputs, None)
    return update.quartile_metrics(terms, inputs["t"], gd.num_timesteps)

  return step_lib.jit_step(
    train_step if train else eval_step, mesh, state_shardings, donate=donate, train=train
  )
