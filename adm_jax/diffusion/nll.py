"""Negative log-likelihood in bits/dim: the full variational bound over every step."""

from typing import Dict, Optional

import jax
import jax.numpy as jnp

from adm_jax.diffusion import core
from adm_jax.diffusion import losses


def calc_bpd_loop(
  diffusion,
  model_fn,
  x_start,
  *,
  key=None,
  noise=None,
  clip_denoised: bool = True,
  model_kwargs: Optional[Dict] = None,
) -> Dict[str, jax.Array]:
  """The variational bound of x_start [B, ...] in bits/dim, one lax.scan over steps.

  x_t at step k is q_sample(x_start, k, noise[k]); `noise` is [T, B, ...] or drawn
  from fold_in(key, k). Returns per-example 'total_bpd', 'prior_bpd' [B] and per-step
  'vb', 'xstart_mse', 'mse' [B, T] whose column j is step T-1-j (the reference's
  order: from the last step down to 0).
  """
  if noise is None and key is None:
    raise ValueError("calc_bpd_loop needs `key` or `noise` [T, B, ...]")
  batch = x_start.shape[0]

  def body(_, k):
    t = jnp.full((batch,), k, dtype=jnp.int32)
    eps = (
      noise[k]
      if noise is not None
      else jax.random.normal(jax.random.fold_in(key, k), x_start.shape, x_start.dtype)
    )
    x_t = diffusion.q_sample(x_start, t, eps)
    out = losses.vb_terms_bpd(
      diffusion, model_fn, x_start, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs
    )
    pred_eps = diffusion.predict_eps_from_xstart(x_t, t, out["pred_xstart"])
    return None, (
      out["output"],
      core.mean_flat((out["pred_xstart"] - x_start) ** 2),
      core.mean_flat((pred_eps - eps) ** 2),
    )

  if noise is not None:
    noise = jnp.asarray(noise, jnp.float32)
  steps = jnp.arange(diffusion.num_timesteps - 1, -1, -1, dtype=jnp.int32)
  _, (vb, xstart_mse, mse) = jax.lax.scan(body, None, steps)
  vb, xstart_mse, mse = vb.T, xstart_mse.T, mse.T  # [T, B] -> [B, T]
  prior = losses.prior_bpd(diffusion, x_start)
  return {
    "total_bpd": vb.sum(axis=1) + prior,
    "prior_bpd": prior,
    "vb": vb,
    "xstart_mse": xstart_mse,
    "mse": mse,
  }
