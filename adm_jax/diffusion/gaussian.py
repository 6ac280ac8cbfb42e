"""The Gaussian diffusion process: coefficients as arrays, q(x_t | x_0), posterior,
p(x_{t-1} | x_t).

A `GaussianDiffusion` is an immutable pytree: float64 numpy coefficient tables (cast to
float32 when indexed, as the reference does) plus static settings. It knows nothing of
Flax: the network is any function `model_fn(x, t, **model_kwargs) -> output`, channels
last, called with the ORIGINAL timesteps of a respaced process (optionally rescaled).

Shapes: x is [B, ..., C] (NHWC for images), t is [B] int32 indices of this process.
"""

from typing import Any, Callable, Dict, Optional

import flax.struct
import jax.numpy as jnp
import numpy as np

from adm_jax.diffusion import losses
from adm_jax.diffusion import schedules
from adm_jax.diffusion.core import EPSILON  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import FIXED_LARGE  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import FIXED_SMALL  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import KL  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import LEARNED  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import LEARNED_RANGE  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import LOSS_TYPES  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import MEAN_TYPES  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import MSE  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import PREVIOUS_X  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import RESCALED_KL  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import RESCALED_MSE  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import START_X  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import VAR_TYPES  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import extract  # noqa: F401  (re-exported: the process's type names)
from adm_jax.diffusion.core import mean_flat  # noqa: F401  (re-exported: the process's type names)

ModelFn = Callable[..., Any]


def _check(name, value, allowed):
  if value not in allowed:
    raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")


@flax.struct.dataclass
class GaussianDiffusion:
  """Coefficient tables of one (possibly respaced) diffusion process, all [T] float64."""

  betas: np.ndarray
  alphas_cumprod: np.ndarray
  alphas_cumprod_prev: np.ndarray
  alphas_cumprod_next: np.ndarray
  sqrt_alphas_cumprod: np.ndarray
  sqrt_one_minus_alphas_cumprod: np.ndarray
  log_one_minus_alphas_cumprod: np.ndarray
  sqrt_recip_alphas_cumprod: np.ndarray
  sqrt_recipm1_alphas_cumprod: np.ndarray
  posterior_variance: np.ndarray
  posterior_log_variance_clipped: np.ndarray
  posterior_mean_coef1: np.ndarray
  posterior_mean_coef2: np.ndarray
  log_betas: np.ndarray
  fixed_large_variance: np.ndarray
  fixed_large_log_variance: np.ndarray
  timestep_map: np.ndarray  # [T] int: original step of each step of this process.
  model_mean_type: str = flax.struct.field(pytree_node=False, default=EPSILON)
  model_var_type: str = flax.struct.field(pytree_node=False, default=FIXED_LARGE)
  loss_type: str = flax.struct.field(pytree_node=False, default=MSE)
  rescale_timesteps: bool = flax.struct.field(pytree_node=False, default=False)
  original_num_steps: int = flax.struct.field(pytree_node=False, default=1000)

  @classmethod
  def from_betas(
    cls,
    betas,
    *,
    model_mean_type=EPSILON,
    model_var_type=FIXED_LARGE,
    loss_type=MSE,
    rescale_timesteps=False,
    timestep_map=None,
    original_num_steps=None,
  ) -> "GaussianDiffusion":
    """Builds every coefficient table in float64 from betas [T]."""
    _check("model_mean_type", model_mean_type, MEAN_TYPES)
    _check("model_var_type", model_var_type, VAR_TYPES)
    _check("loss_type", loss_type, LOSS_TYPES)
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0:
      raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not ((betas > 0).all() and (betas <= 1).all()):
      raise ValueError("betas must lie in (0, 1]")
    num_steps = betas.shape[0]
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    abar_next = np.append(abar[1:], 0.0)
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    # log of the posterior variance is -inf at t = 0; the reference uses t = 1's value there.
    first = post_var[1] if num_steps > 1 else betas[0]
    post_log_var = np.log(np.append(first, post_var[1:]))
    large_var = np.append(first, betas[1:])
    if timestep_map is None:
      timestep_map = np.arange(num_steps)
    return cls(
      betas=betas,
      alphas_cumprod=abar,
      alphas_cumprod_prev=abar_prev,
      alphas_cumprod_next=abar_next,
      sqrt_alphas_cumprod=np.sqrt(abar),
      sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - abar),
      log_one_minus_alphas_cumprod=np.log(1.0 - abar),
      sqrt_recip_alphas_cumprod=np.sqrt(1.0 / abar),
      sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / abar - 1.0),
      posterior_variance=post_var,
      posterior_log_variance_clipped=post_log_var,
      posterior_mean_coef1=betas * np.sqrt(abar_prev) / (1.0 - abar),
      posterior_mean_coef2=(1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
      log_betas=np.log(betas),
      fixed_large_variance=large_var,
      fixed_large_log_variance=np.log(large_var),
      timestep_map=np.asarray(timestep_map, dtype=np.int32),
      model_mean_type=model_mean_type,
      model_var_type=model_var_type,
      loss_type=loss_type,
      rescale_timesteps=bool(rescale_timesteps),
      original_num_steps=int(original_num_steps or num_steps),
    )

  # ---------------------------------------------------------------- basics
  @property
  def num_timesteps(self) -> int:
    return int(np.shape(self.betas)[0])

  @property
  def learns_sigma(self) -> bool:
    return self.model_var_type in (LEARNED, LEARNED_RANGE)

  def model_timesteps(self, t):
    """What the network sees for indices t of this process: original steps, maybe rescaled."""
    mapped = jnp.asarray(self.timestep_map)[t]
    if self.rescale_timesteps:
      return mapped.astype(jnp.float32) * (1000.0 / self.original_num_steps)
    return mapped

  def call_model(self, model_fn: ModelFn, x, t, model_kwargs: Optional[Dict] = None):
    """Runs the network at process indices t; returns its output as float32."""
    out = model_fn(x, self.model_timesteps(t), **(model_kwargs or {}))
    return jnp.asarray(out).astype(jnp.float32)

  # ---------------------------------------------------------------- forward process
  def q_mean_variance(self, x_start, t):
    """Mean, variance and log-variance of q(x_t | x_0)."""
    n = x_start.ndim
    mean = extract(self.sqrt_alphas_cumprod, t, n) * x_start
    variance = extract(1.0 - self.alphas_cumprod, t, n)
    log_variance = extract(self.log_one_minus_alphas_cumprod, t, n)
    return mean, variance, log_variance

  def q_sample(self, x_start, t, noise):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
    n = x_start.ndim
    return (
      extract(self.sqrt_alphas_cumprod, t, n) * x_start
      + extract(self.sqrt_one_minus_alphas_cumprod, t, n) * noise
    )

  def q_posterior_mean_variance(self, x_start, x_t, t):
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
    n = x_t.ndim
    mean = (
      extract(self.posterior_mean_coef1, t, n) * x_start
      + extract(self.posterior_mean_coef2, t, n) * x_t
    )
    variance = extract(self.posterior_variance, t, n)
    log_variance = extract(self.posterior_log_variance_clipped, t, n)
    return mean, variance, log_variance

  # ---------------------------------------------------------------- conversions
  def predict_xstart_from_eps(self, x_t, t, eps):
    n = x_t.ndim
    return (
      extract(self.sqrt_recip_alphas_cumprod, t, n) * x_t
      - extract(self.sqrt_recipm1_alphas_cumprod, t, n) * eps
    )

  def predict_eps_from_xstart(self, x_t, t, pred_xstart):
    n = x_t.ndim
    return (extract(self.sqrt_recip_alphas_cumprod, t, n) * x_t - pred_xstart) / extract(
      self.sqrt_recipm1_alphas_cumprod, t, n
    )

  def predict_xstart_from_xprev(self, x_t, t, xprev):
    n = x_t.ndim
    return (
      extract(1.0 / self.posterior_mean_coef1, t, n) * xprev
      - extract(self.posterior_mean_coef2 / self.posterior_mean_coef1, t, n) * x_t
    )

  # ---------------------------------------------------------------- reverse process
  def split_model_output(self, model_output, x):
    """(mean part [..., C], variance part [..., C] or None) of a raw network output."""
    channels = x.shape[-1]
    if self.learns_sigma:
      if model_output.shape[-1] != 2 * channels:
        raise ValueError(
          f"model_var_type {self.model_var_type!r} needs {2 * channels} output channels, "
          f"the model gave {model_output.shape[-1]}"
        )
      return model_output[..., :channels], model_output[..., channels:]
    if model_output.shape[-1] != channels:
      raise ValueError(f"model output has {model_output.shape[-1]} channels, expected {channels}")
    return model_output, None

  def model_variance(self, var_values, x, t):
    """Variance and log-variance of p(x_{t-1} | x_t) for this process's variance type."""
    n = x.ndim
    if self.model_var_type == LEARNED:
      return jnp.exp(var_values), var_values
    if self.model_var_type == LEARNED_RANGE:
      min_log = extract(self.posterior_log_variance_clipped, t, n)
      max_log = extract(self.log_betas, t, n)
      frac = (var_values + 1) / 2  # v in [-1, 1] -> interpolation weight.
      log_variance = frac * max_log + (1 - frac) * min_log
      return jnp.exp(log_variance), log_variance
    if self.model_var_type == FIXED_LARGE:
      table, log_table = self.fixed_large_variance, self.fixed_large_log_variance
    else:
      table, log_table = self.posterior_variance, self.posterior_log_variance_clipped
    shape = x.shape
    return (
      jnp.broadcast_to(extract(table, t, n), shape),
      jnp.broadcast_to(extract(log_table, t, n), shape),
    )

  def p_mean_variance(
    self,
    model_fn: ModelFn,
    x,
    t,
    *,
    clip_denoised: bool = True,
    denoised_fn: Optional[Callable] = None,
    model_kwargs=None,
    model_output=None,
  ) -> Dict[str, Any]:
    """Applies the network to get p(x_{t-1} | x_t) and the prediction of x_0.

    Returns a dict with `mean`, `variance`, `log_variance`, `pred_xstart` (all like x)
    and `model_output` (the raw float32 network output). Pass `model_output` to reuse
    an output already computed (then model_fn is not called).
    """
    if model_output is None:
      model_output = self.call_model(model_fn, x, t, model_kwargs)
    mean_out, var_values = self.split_model_output(model_output, x)
    variance, log_variance = self.model_variance(var_values, x, t)

    def process_xstart(x0):
      if denoised_fn is not None:
        x0 = denoised_fn(x0)
      return jnp.clip(x0, -1, 1) if clip_denoised else x0

    if self.model_mean_type == PREVIOUS_X:
      pred_xstart = process_xstart(self.predict_xstart_from_xprev(x, t, mean_out))
      mean = mean_out
    else:
      if self.model_mean_type == START_X:
        pred_xstart = process_xstart(mean_out)
      else:
        pred_xstart = process_xstart(self.predict_xstart_from_eps(x, t, mean_out))
      mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
    return {
      "mean": mean,
      "variance": variance,
      "log_variance": log_variance,
      "pred_xstart": pred_xstart,
      "model_output": model_output,
    }

  # ---------------------------------------------------------------- guidance
  def condition_mean(self, cond_fn, out, x, t, model_kwargs=None):
    """Classifier guidance for ancestral sampling: mean + variance * grad log p(y|x_t)."""
    gradient = cond_fn(x, self.model_timesteps(t), **(model_kwargs or {}))
    return out["mean"] + out["variance"] * jnp.asarray(gradient, jnp.float32)

  def condition_score(self, cond_fn, out, x, t, model_kwargs=None):
    """Classifier guidance for DDIM: shift the score, recompute x_0 (not clipped) and mean."""
    abar = extract(self.alphas_cumprod, t, x.ndim)
    eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
    gradient = cond_fn(x, self.model_timesteps(t), **(model_kwargs or {}))
    eps = eps - jnp.sqrt(1 - abar) * jnp.asarray(gradient, jnp.float32)
    pred_xstart = self.predict_xstart_from_eps(x, t, eps)
    mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
    return dict(out, pred_xstart=pred_xstart, mean=mean)

  # ---------------------------------------------------------------- conveniences
  def training_losses(self, model_fn, x_start, t, noise, model_kwargs=None):
    """Per-example Improved-DDPM losses (see losses.training_losses)."""
    return losses.training_losses(self, model_fn, x_start, t, noise, model_kwargs)

  def prior_bpd(self, x_start):
    """The variational bound's prior term in bits/dim, [B] (see losses.prior_bpd)."""
    return losses.prior_bpd(self, x_start)


def create_gaussian_diffusion(
  *,
  steps: int = 1000,
  learn_sigma: bool = False,
  sigma_small: bool = False,
  noise_schedule: str = "linear",
  use_kl: bool = False,
  predict_xstart: bool = False,
  rescale_timesteps: bool = False,
  rescale_learned_sigmas: bool = False,
  timestep_respacing: Any = "",
) -> GaussianDiffusion:
  """The reference's factory: same keyword names, same meaning.

  The returned process has the respaced steps (all T when timestep_respacing is "");
  its network sees the original steps through `timestep_map`.
  """
  betas = schedules.get_named_beta_schedule(noise_schedule, steps)
  if use_kl:
    loss_type = RESCALED_KL
  elif rescale_learned_sigmas:
    loss_type = RESCALED_MSE
  else:
    loss_type = MSE
  # Like the reference, betas are always re-derived from the kept alpha_bar (even when
  # every step is kept), so the tables agree with it to the last bits.
  betas, timestep_map = schedules.respace_betas(
    betas, schedules.space_timesteps(steps, timestep_respacing)
  )
  if learn_sigma:
    var_type = LEARNED_RANGE
  else:
    var_type = FIXED_SMALL if sigma_small else FIXED_LARGE
  return GaussianDiffusion.from_betas(
    betas,
    model_mean_type=START_X if predict_xstart else EPSILON,
    model_var_type=var_type,
    loss_type=loss_type,
    rescale_timesteps=rescale_timesteps,
    timestep_map=timestep_map,
    original_num_steps=steps,
  )


def respaced(diffusion: GaussianDiffusion, timestep_respacing: Any) -> GaussianDiffusion:
  """The same process (types, rescaling) visiting only the steps of a respacing spec.

  `diffusion` must be un-respaced (its timestep_map the identity).
  """
  if not np.array_equal(np.asarray(diffusion.timestep_map), np.arange(diffusion.num_timesteps)):
    raise ValueError(
      "respaced() needs an un-respaced process; build it with create_gaussian_diffusion"
    )
  kept = schedules.space_timesteps(diffusion.num_timesteps, timestep_respacing)
  betas, timestep_map = schedules.respace_betas(diffusion.betas, kept)
  return GaussianDiffusion.from_betas(
    betas,
    model_mean_type=diffusion.model_mean_type,
    model_var_type=diffusion.model_var_type,
    loss_type=diffusion.loss_type,
    rescale_timesteps=diffusion.rescale_timesteps,
    timestep_map=timestep_map,
    original_num_steps=diffusion.original_num_steps,
  )
