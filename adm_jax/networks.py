"""Config -> the diffusion process, the networks and their apply functions.

The one place a network is built: training (adm_jax.experiment), sampling and evaluation
(adm_jax.restore), checkpoint conversion (adm_jax.convert), the benchmark and the tests.

  gd = networks.diffusion_process(config)    # the un-respaced process the UNet trains on
  unet = networks.unet(config)                # Network: module, init, apply, sample_fn
  clf = networks.classifier(config)
  net = networks.from_flags("sr", flags)      # a released / converted checkpoint's network

A `Network` knows the inputs that initialise its module (image shape, class labels, the
super-resolution model's low-resolution image) and offers two apply functions: `apply` for
training (dropout from an explicit key) and `inference_fn` in the form the sampling library
takes (unet: fn(params, x, t, y, **kw); classifier: fn(params, x, t) -> logits).
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

from adm_jax import config_base
from adm_jax import diffusion as diff
from adm_jax import models

KINDS = ("unet", "sr", "classifier")


@dataclasses.dataclass(frozen=True)
class Network:
  """A Flax module of one kind with what initialises it (see the module docstring)."""

  kind: str  # unet | sr | classifier
  module: Any
  image_shape: Tuple[int, int, int]  # (H, W, C) of x_t
  class_cond: bool = False  # the UNet takes labels y
  low_res_size: int = 0  # sr: side of its low-resolution input

  def init(self, key) -> Any:
    """Parameters from a key (jit it, or use abstract_params for shapes only)."""
    x = jnp.zeros((1,) + self.image_shape, jnp.float32)
    t = jnp.zeros((1,), jnp.int32)
    if self.kind == "classifier":
      return self.module.init({"params": key}, x, t, train=False)["params"]
    kwargs = {"y": jnp.zeros((1,), jnp.int32) if self.class_cond else None}
    if self.low_res_size:
      size, channels = self.low_res_size, self.image_shape[-1]
      kwargs["low_res"] = jnp.zeros((1, size, size, channels), jnp.float32)
    return self.module.init({"params": key}, x, t, train=False, **kwargs)["params"]

  def abstract_params(self) -> Any:
    """ShapeDtypeStructs of the parameters (nothing is allocated)."""
    return jax.eval_shape(self.init, jax.random.PRNGKey(0))

  def apply(self, params, x, t, y=None, rng=None, train=False, **kwargs):
    """The network output; dropout only when training with a key. The classifier ignores y."""
    rngs = {"dropout": rng} if (train and rng is not None) else None
    if self.kind == "classifier":
      return self.module.apply({"params": params}, x, t, train=train, rngs=rngs)
    return self.module.apply({"params": params}, x, t, y=y, train=train, rngs=rngs, **kwargs)

  def inference_fn(self) -> Callable:
    """unet / sr: fn(params, x, t, y, **kw) -> output; classifier: fn(params, x, t) -> logits."""
    if self.kind == "classifier":
      return lambda params, x, t: self.apply(params, x, t)
    return lambda params, x, t, y, **kw: self.apply(params, x, t, y, **kw)


# ----------------------------------------------------------------------------- from a config
def diffusion_process(config) -> diff.GaussianDiffusion:
  """The un-respaced process of a config (the one its network is trained on; samplers respace)."""
  return diff.create_gaussian_diffusion(**config_base.diffusion_kwargs(config, ""))


def unet(config) -> Network:
  """The diffusion UNet of a config, with the null class when trained with label dropout."""
  m = config.model
  flags = config_base.model_config_for_training(config)
  return Network(
    "sr" if m.small_size else "unet",
    models.create_model(flags),
    (m.image_size, m.image_size, m.in_channels),
    class_cond=bool(m.class_cond),
    low_res_size=int(m.small_size),
  )


def classifier(config) -> Network:
  """The noisy-image classifier of a config (its image size and channels are the model's)."""
  m = config.model
  return Network(
    "classifier",
    models.create_classifier(config_base.classifier_model_config(config)),
    (m.image_size, m.image_size, m.in_channels),
  )


def low_res_fn(config) -> Optional[Callable]:
  """images -> {'low_res': ...} for a super-resolution config (None otherwise): the network's
  extra input while training, the area-downsampled clean image."""
  small = config.model.small_size
  if not small:
    return None
  return lambda images: {"low_res": area_downsample(images, small)}


def area_downsample(images, size: int):
  """[B, H, W, C] -> [B, size, size, C] by averaging blocks (torch 'area' for integer factors)."""
  b, h, w, c = images.shape
  if h % size or w % size:
    raise ValueError(f"cannot area-downsample {h}x{w} to {size}x{size}")
  fh, fw = h // size, w // size
  return images.reshape(b, size, fh, size, fw, c).mean(axis=(2, 4))


# ----------------------------------------------------------------------------- from flags
def from_flags(kind: str, flags: Mapping[str, Any]) -> Network:
  """The network of reference-named flags (a released checkpoint's, a converted one's)."""
  if kind not in KINDS:
    raise ValueError(f"unknown network kind {kind!r}; expected one of {', '.join(KINDS)}")
  if kind == "classifier":
    module = models.create_classifier(flags)
    return Network(kind, module, (module.image_size, module.image_size, module.in_channels))
  module = models.create_sr_model(flags) if kind == "sr" else models.create_model(flags)
  channels = module.in_channels // (2 if kind == "sr" else 1)
  small = int(flags["small_size"]) if kind == "sr" else 0
  return Network(
    kind,
    module,
    (module.image_size, module.image_size, channels),
    class_cond=module.num_classes is not None,
    low_res_size=small,
  )
