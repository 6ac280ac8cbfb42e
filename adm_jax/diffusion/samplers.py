"""Ancestral (DDPM) and DDIM sampling: single steps and whole loops over `lax.scan`.

A loop is one traced function: wrap it in `jax.jit` with the network parameters as
arguments (not closed over) and it compiles once and runs every step on device, e.g.

  @jax.jit
  def sample(params, key):
    model_fn = lambda x, t, **kw: unet.apply({'params': params}, x, t, **kw)
    return samplers.p_sample_loop(diffusion, model_fn, (16, 32, 32, 3), key)

Randomness comes from explicit keys: the noise of step i is drawn from
`fold_in(key, i)`; every single-step function also takes `noise=` so a step can be
compared to a reference given the same z. `cond_fn(x, t, **model_kwargs)` returns
the guidance gradient (see adm_jax.guidance); it is evaluated inside the scan body.
"""

from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp

from adm_jax.diffusion import gaussian as g


def _noise_like(key, noise, x):
  if noise is not None:
    return jnp.asarray(noise, x.dtype)
  if key is None:
    raise ValueError("a stochastic step needs `key` or explicit `noise`")
  return jax.random.normal(key, x.shape, x.dtype)


def _is_static_zero(value):
  return isinstance(value, (int, float)) and value == 0.0


def _nonzero_mask(t, ndim):
  return (t != 0).astype(jnp.float32).reshape((-1,) + (1,) * (ndim - 1))


def p_sample(
  diffusion: g.GaussianDiffusion,
  model_fn,
  x,
  t,
  *,
  key=None,
  noise=None,
  clip_denoised: bool = True,
  denoised_fn=None,
  cond_fn=None,
  model_kwargs=None,
) -> Dict[str, Any]:
  """One ancestral step x_t -> x_{t-1}; no noise is added where t == 0.

  With cond_fn, the mean is shifted by variance * gradient (classifier guidance).
  Returns {'sample', 'pred_xstart', 'mean', 'log_variance'}.
  """
  out = diffusion.p_mean_variance(
    model_fn, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs
  )
  mean = out["mean"]
  if cond_fn is not None:
    mean = diffusion.condition_mean(cond_fn, out, x, t, model_kwargs)
  z = _noise_like(key, noise, x)
  sample = mean + _nonzero_mask(t, x.ndim) * jnp.exp(0.5 * out["log_variance"]) * z
  return {
    "sample": sample,
    "pred_xstart": out["pred_xstart"],
    "mean": mean,
    "log_variance": out["log_variance"],
  }


def ddim_sample(
  diffusion: g.GaussianDiffusion,
  model_fn,
  x,
  t,
  *,
  key=None,
  noise=None,
  eta: float = 0.0,
  clip_denoised: bool = True,
  denoised_fn=None,
  cond_fn=None,
  model_kwargs=None,
  clip_guided: bool = False,
) -> Dict[str, Any]:
  """One DDIM step x_t -> x_{t-1} (eta = 0: deterministic; eta = 1: DDPM-like noise).

  With cond_fn, the score is shifted and x_0 recomputed (condition_score). The eps of
  the update is re-derived from the (clipped) x_0 prediction. The reference leaves the
  guided x_0 unclipped (clip_guided False); clip_guided (with clip_denoised) clips it too, as
  the solvers do: at t = T - 1 the guided x_0 carries sigma^2 / alpha times the classifier
  gradient (~156 under the cosine schedule), which unclipped saturates the samples of
  respacings that start there.
  """
  out = diffusion.p_mean_variance(
    model_fn, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs
  )
  if cond_fn is not None:
    out = diffusion.condition_score(cond_fn, out, x, t, model_kwargs)
    if clip_guided and clip_denoised:
      out = dict(out, pred_xstart=jnp.clip(out["pred_xstart"], -1.0, 1.0))
  eps = diffusion.predict_eps_from_xstart(x, t, out["pred_xstart"])
  abar = g.extract(diffusion.alphas_cumprod, t, x.ndim)
  abar_prev = g.extract(diffusion.alphas_cumprod_prev, t, x.ndim)
  sigma = eta * jnp.sqrt((1 - abar_prev) / (1 - abar)) * jnp.sqrt(1 - abar / abar_prev)
  mean = out["pred_xstart"] * jnp.sqrt(abar_prev) + jnp.sqrt(1 - abar_prev - sigma**2) * eps
  if _is_static_zero(eta) and noise is None:
    sample = mean  # sigma == 0: no noise to draw.
  else:
    sample = mean + _nonzero_mask(t, x.ndim) * sigma * _noise_like(key, noise, x)
  return {"sample": sample, "pred_xstart": out["pred_xstart"]}


def ddim_reverse_sample(
  diffusion: g.GaussianDiffusion,
  model_fn,
  x,
  t,
  *,
  clip_denoised: bool = True,
  denoised_fn=None,
  model_kwargs=None,
) -> Dict[str, Any]:
  """One deterministic reverse-DDIM step x_t -> x_{t+1} (an ODE step towards noise)."""
  out = diffusion.p_mean_variance(
    model_fn, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs
  )
  eps = diffusion.predict_eps_from_xstart(x, t, out["pred_xstart"])
  abar_next = g.extract(diffusion.alphas_cumprod_next, t, x.ndim)
  sample = out["pred_xstart"] * jnp.sqrt(abar_next) + jnp.sqrt(1 - abar_next) * eps
  return {"sample": sample, "pred_xstart": out["pred_xstart"]}


# ------------------------------------------------------------------------- loops
def _scan_loop(step_fn, x_init, indices, key, progressive: bool):
  """Runs step_fn(x, t_index, key_i) -> dict over `indices` in one lax.scan."""
  batch = x_init.shape[0]

  def body(x, i):
    t = jnp.full((batch,), i, dtype=jnp.int32)
    out = step_fn(x, t, jax.random.fold_in(key, i) if key is not None else None)
    extra = (out["sample"], out["pred_xstart"]) if progressive else None
    return out["sample"], extra

  final, stacked = jax.lax.scan(body, x_init, jnp.asarray(indices, dtype=jnp.int32))
  if progressive:
    return {"sample": final, "samples": stacked[0], "pred_xstarts": stacked[1]}
  return final


def _initial_noise(key, shape, noise, dtype=jnp.float32):
  """(x_T, key for the steps): x_T is `noise` if given, else drawn from `key`."""
  if key is None:
    if noise is None:
      raise ValueError("sampling needs `key` or the initial `noise`")
    return jnp.asarray(noise, dtype), None
  init_key, step_key = jax.random.split(key)
  if noise is not None:
    return jnp.asarray(noise, dtype), step_key
  return jax.random.normal(init_key, tuple(shape), dtype), step_key


def p_sample_loop(
  diffusion: g.GaussianDiffusion,
  model_fn,
  shape: Sequence[int],
  key,
  *,
  noise=None,
  clip_denoised: bool = True,
  denoised_fn: Optional[Callable] = None,
  cond_fn: Optional[Callable] = None,
  model_kwargs=None,
  progressive: bool = False,
  step_noise=None,
):
  """Ancestral sampling from x_T ~ N(0, I) (or `noise`) down to x_0.

  Each step's noise is drawn from `key`, or, with `step_noise` [T, *shape], is
  step_noise[i] for the i-th step visited (t = T-1 first; the t = 0 slice is unused),
  which reproduces a trajectory of another implementation exactly.
  Returns x_0 [shape]; with progressive=True a dict with 'sample' and the per-step
  'samples' and 'pred_xstarts' [T, *shape] in the order visited (t = T-1 ... 0).
  """
  if step_noise is not None:
    step_noise = jnp.asarray(step_noise, jnp.float32)
    expected = (diffusion.num_timesteps,) + tuple(shape)
    if step_noise.shape != expected:
      raise ValueError(f"step_noise has shape {step_noise.shape}, expected {expected}")
  x_init, step_key = _initial_noise(key, shape, noise)

  def step(x, t, k):
    z = None
    if step_noise is not None:
      k, z = None, step_noise[diffusion.num_timesteps - 1 - t[0]]
    return p_sample(
      diffusion,
      model_fn,
      x,
      t,
      key=k,
      noise=z,
      clip_denoised=clip_denoised,
      denoised_fn=denoised_fn,
      cond_fn=cond_fn,
      model_kwargs=model_kwargs,
    )

  indices = jnp.arange(diffusion.num_timesteps - 1, -1, -1)
  return _scan_loop(step, x_init, indices, step_key, progressive)


def ddim_sample_loop(
  diffusion: g.GaussianDiffusion,
  model_fn,
  shape: Sequence[int],
  key,
  *,
  noise=None,
  eta: float = 0.0,
  clip_denoised: bool = True,
  denoised_fn: Optional[Callable] = None,
  cond_fn: Optional[Callable] = None,
  model_kwargs=None,
  progressive: bool = False,
  clip_guided: bool = False,
):
  """DDIM sampling from x_T (with eta = 0 the key is used only for x_T); clip_guided: see
  ddim_sample."""
  x_init, step_key = _initial_noise(key, shape, noise)
  if _is_static_zero(eta):
    step_key = None

  def step(x, t, k):
    return ddim_sample(
      diffusion,
      model_fn,
      x,
      t,
      key=k,
      eta=eta,
      clip_denoised=clip_denoised,
      denoised_fn=denoised_fn,
      cond_fn=cond_fn,
      model_kwargs=model_kwargs,
      clip_guided=clip_guided,
    )

  indices = jnp.arange(diffusion.num_timesteps - 1, -1, -1)
  return _scan_loop(step, x_init, indices, step_key, progressive)


def ddim_reverse_sample_loop(
  diffusion: g.GaussianDiffusion,
  model_fn,
  x_start,
  *,
  clip_denoised: bool = True,
  denoised_fn: Optional[Callable] = None,
  model_kwargs=None,
  progressive: bool = False,
):
  """Deterministic DDIM encoding of x_0 into x_T (t = 0 ... T-1)."""

  def step(x, t, _):
    return ddim_reverse_sample(
      diffusion,
      model_fn,
      x,
      t,
      clip_denoised=clip_denoised,
      denoised_fn=denoised_fn,
      model_kwargs=model_kwargs,
    )

  return _scan_loop(
    step, jnp.asarray(x_start, jnp.float32), jnp.arange(diffusion.num_timesteps), None, progressive
  )
