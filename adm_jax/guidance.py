"""Guidance for sampling: classifier guidance (Dhariwal & Nichol) and classifier-free guidance.

Both produce plain functions for the samplers in adm_jax.diffusion:
  * `classifier_cond_fn` gives cond_fn(x, t, y=...) = s * d/dx log softmax(classifier(x, t))[y],
    computed with jax.grad, traced into the sampling loop's scan body. p_sample applies it
    as a mean shift, ddim_sample as a score shift.
  * `classifier_free_model_fn` wraps a class-conditional network so one batched call
    returns (1 + w) eps(x, y) - w eps(x, null); a learned variance comes from the
    conditional half.
They compose: sample with model_fn=classifier_free_model_fn(...) and
cond_fn=classifier_cond_fn(...).
"""

from typing import Callable

import jax
import jax.numpy as jnp


def classifier_log_prob(classifier_fn: Callable, x, t, y):
  """Sum over the batch of log softmax(classifier_fn(x, t))[b, y_b] (float32)."""
  logits = jnp.asarray(classifier_fn(x, t)).astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return jnp.sum(jnp.take_along_axis(log_probs, jnp.asarray(y)[:, None], axis=-1))


def classifier_cond_fn(classifier_fn: Callable, scale) -> Callable:
  """cond_fn(x, t, y, **unused) -> scale * grad_x log p(y | x_t), shaped like x.

  classifier_fn(x, t) -> logits [B, K] sees the same (original, maybe rescaled)
  timesteps as the diffusion network. Extra keyword arguments (e.g. low_res) are ignored.
  """

  def cond_fn(x, t, y=None, **unused):
    del unused
    if y is None:
      raise ValueError("classifier guidance needs class labels: pass model_kwargs={'y': labels}")
    grad = jax.grad(lambda x_in: classifier_log_prob(classifier_fn, x_in, t, y))(
      jnp.asarray(x, jnp.float32)
    )
    return grad * scale

  return cond_fn


def classifier_free_model_fn(model_fn: Callable, guidance_scale, null_label: int) -> Callable:
  """Wraps model_fn(x, t, y=..., **kw) into classifier-free guided predictions.

  Runs conditional and unconditional (y = null_label) halves in ONE batched call and
  returns [(1 + w) eps_cond - w eps_uncond, conditional variance channels (if any)].
  w = 0 gives the conditional model.
  """

  def guided(x, t, y=None, **kwargs):
    if y is None:
      raise ValueError("classifier-free guidance needs class labels: model_kwargs={'y': labels}")
    y = jnp.asarray(y)
    both = lambda a: jnp.concatenate([a, a], axis=0)
    kwargs = {k: both(v) for k, v in kwargs.items()}
    out = model_fn(
      both(x), both(jnp.asarray(t)), y=jnp.concatenate([y, jnp.full_like(y, null_label)]), **kwargs
    )
    out = jnp.asarray(out).astype(jnp.float32)
    cond, uncond = jnp.split(out, 2, axis=0)
    channels = x.shape[-1]
    eps = (1 + guidance_scale) * cond[..., :channels] - guidance_scale * uncond[..., :channels]
    return jnp.concatenate([eps, cond[..., channels:]], axis=-1)

  return guided
