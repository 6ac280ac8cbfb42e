"""Gaussian KL, the discretised Gaussian decoder, and the training losses of Improved DDPM.

Per-example losses are [B] float32. Terms in bits per dimension divide nats by log(2).
Functions that need the process take a `GaussianDiffusion` (gaussian.py) as their first
argument; this module imports only `core`, so the process can import it in turn.
"""

import math
from typing import Dict, Optional

import jax
import jax.numpy as jnp

from adm_jax.diffusion import core

LOG2 = math.log(2.0)


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
  return 0.5 * (
    -1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * jnp.exp(-logvar2)
  )


def approx_standard_normal_cdf(x):
  """The tanh approximation of the standard normal CDF used by the reference."""
  return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
  """Log-likelihood of images x in [-1, 1] (256 bins) under N(means, e^(2 log_scales)).

  The edge bins extend to -inf and +inf; probabilities are clamped at 1e-12. Elementwise.
  """
  centered = x - means
  inv_std = jnp.exp(-log_scales)
  cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
  cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
  return jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def vb_terms_bpd(
  diffusion,
  model_fn,
  x_start,
  x_t,
  t,
  *,
  clip_denoised: bool = True,
  model_kwargs=None,
  model_output=None,
) -> Dict:
  """One term of the variational bound in bits/dim, [B].

  Decoder NLL at t = 0, KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) otherwise. Returns
  {'output': [B], 'pred_xstart': like x}.
  """
  true_mean, _, true_log_var = diffusion.q_posterior_mean_variance(x_start, x_t, t)
  out = diffusion.p_mean_variance(
    model_fn,
    x_t,
    t,
    clip_denoised=clip_denoised,
    model_kwargs=model_kwargs,
    model_output=model_output,
  )
  kl = core.mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / LOG2
  nll = -discretized_gaussian_log_likelihood(
    x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
  )
  nll = core.mean_flat(nll) / LOG2
  return {"output": jnp.where(t == 0, nll, kl), "pred_xstart": out["pred_xstart"]}


def training_losses(
  diffusion, model_fn, x_start, t, noise, model_kwargs: Optional[Dict] = None
) -> Dict[str, jax.Array]:
  """Per-example training losses at process indices t with the given noise.

  Returns {'loss'} for KL losses; {'loss', 'mse'} and, with learned variance, 'vb' for
  MSE losses. With learned variance the mean half of the output is stop-gradiented in
  the vb term (the hybrid objective of Improved DDPM): the mean learns from mse only.
  """
  x_t = diffusion.q_sample(x_start, t, noise)
  terms = {}
  if diffusion.loss_type in (core.KL, core.RESCALED_KL):
    terms["loss"] = vb_terms_bpd(
      diffusion, model_fn, x_start, x_t, t, clip_denoised=False, model_kwargs=model_kwargs
    )["output"]
    if diffusion.loss_type == core.RESCALED_KL:
      terms["loss"] = terms["loss"] * diffusion.num_timesteps
    return terms

  model_output = diffusion.call_model(model_fn, x_t, t, model_kwargs)
  mean_out, var_values = diffusion.split_model_output(model_output, x_t)
  if var_values is not None:
    frozen = jnp.concatenate([jax.lax.stop_gradient(mean_out), var_values], axis=-1)
    vb = vb_terms_bpd(diffusion, None, x_start, x_t, t, clip_denoised=False, model_output=frozen)[
      "output"
    ]
    if diffusion.loss_type == core.RESCALED_MSE:
      vb = vb * (diffusion.num_timesteps / 1000.0)  # The reference's lambda = T/1000 scaling.
    terms["vb"] = vb
  if diffusion.model_mean_type == core.PREVIOUS_X:
    target = diffusion.q_posterior_mean_variance(x_start, x_t, t)[0]
  elif diffusion.model_mean_type == core.START_X:
    target = x_start
  else:
    target = noise
  terms["mse"] = core.mean_flat((target - mean_out) ** 2)
  terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
  return terms


def prior_bpd(diffusion, x_start):
  """KL(q(x_{T-1} | x_0) || N(0, I)) in bits/dim, [B]: the bound's prior term."""
  t = jnp.full((x_start.shape[0],), diffusion.num_timesteps - 1, dtype=jnp.int32)
  mean, _, log_var = diffusion.q_mean_variance(x_start, t)
  return core.mean_flat(normal_kl(mean, log_var, 0.0, 0.0)) / LOG2
