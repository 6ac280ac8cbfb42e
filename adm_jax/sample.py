"""Sampling from trained networks: jitted sampling functions, uint8 conversion, PNG grids.

`make_sample_fn` returns ONE jitted function (params, key, labels) -> images in [-1, 1]
that runs a whole sampler loop on device; the training loop uses it for periodic
sample grids from the EMA parameters.
"""
import math
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from adm_jax import diffusion as diff
from adm_jax import guidance

SAMPLERS = ("ddpm", "ddim")


def make_sample_fn(apply_fn: Callable, gd: diff.GaussianDiffusion, image_shape, *,
                   sampler: str = "ddim", eta: float = 0.0, class_cond: bool = False,
                   cfg_scale: float = 0.0, null_label: int = -1,
                   classifier_fn: Optional[Callable] = None, classifier_scale: float = 0.0,
                   clip_denoised: bool = True, out_shardings=None):
  """A jitted sampler fn(params, key, labels[, classifier_params]) -> [B, H, W, C] float32.

  apply_fn(params, x, t, y) -> network output. `gd` is the (respaced) sampling process.
  cfg_scale > 0 turns on classifier-free guidance (needs class_cond and null_label);
  classifier_fn(classifier_params, x, t) -> logits turns on classifier guidance.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
  if cfg_scale and not class_cond:
    raise ValueError("classifier-free guidance (cfg_scale > 0) needs a class-conditional model")

  def run(params, key, labels, classifier_params=None):
    def model_fn(x, t, y=None):
      return apply_fn(params, x, t, y if class_cond else None)
    if cfg_scale:
      model_fn = guidance.classifier_free_model_fn(model_fn, cfg_scale, null_label)
    cond_fn = None
    if classifier_fn is not None and classifier_scale:
      cond_fn = guidance.classifier_cond_fn(
          lambda x, t: classifier_fn(classifier_params, x, t), classifier_scale)
    shape = (labels.shape[0],) + tuple(image_shape)
    kwargs = dict(clip_denoised=clip_denoised, cond_fn=cond_fn, model_kwargs={"y": labels})
    if sampler == "ddim":
      return diff.ddim_sample_loop(gd, model_fn, shape, key, eta=eta, **kwargs)
    return diff.p_sample_loop(gd, model_fn, shape, key, **kwargs)

  return jax.jit(run, out_shardings=out_shardings)


def to_uint8(images) -> np.ndarray:
  """[-1, 1] float images → uint8 [0, 255], rounded like the reference ((x + 1) * 127.5)."""
  images = np.asarray(images, dtype=np.float32)
  return np.clip((images + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def image_grid(images: np.ndarray, ncols: Optional[int] = None, pad: int = 2) -> np.ndarray:
  """Tiles uint8 images [N, H, W, C] into one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] image."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  ncols = ncols or int(math.ceil(math.sqrt(n)))
  nrows = int(math.ceil(n / ncols))
  grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, ncols)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = images[i]
  return grid


def save_grid(path: str, images_uint8: np.ndarray, ncols: Optional[int] = None,
              scale: int = 1) -> str:
  """Writes a PNG grid (optionally enlarged by an integer factor) and returns its path."""
  grid = image_grid(images_uint8, ncols)
  if grid.shape[-1] == 1:
    grid = grid[..., 0]
  img = Image.fromarray(grid)
  if scale > 1:
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return path
