"""Inception-V3 as used for FID (TF's 2015 graph, as ported by pytorch-fid), in Flax, NHWC.

Weights are NOT downloaded: pass the file the common FID tools use,
`pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's release; torch.hub names files by the
first 8 hex digits of their SHA-256, so `sha256sum` must start with 6726825d), or an `.npz`
with the same tensor names (`numpy.savez(path, **torch.load(pth))`).

Outputs for images of any size (bilinearly resized to 299x299, [0, 255] → [-1, 1]):
  pool     [N, 2048]        average-pooled Mixed_7c (FID, precision/recall)
  spatial  [N, 17, 17, 192] Mixed_6d's 1x1 branch, TF's `mixed_6/conv` (sFID: first 7 channels)
  logits   [N, 1008]        (Inception Score)
FID-specific blocks: average pools exclude padding; the last block max-pools its pool branch.
"""

import os
from typing import Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adm_jax import convert

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"


class BasicConv(nn.Module):
  """conv (no bias) → BatchNorm (eps 1e-3, inference statistics) → ReLU; names `conv`, `bn`."""

  features: int
  kernel: Tuple[int, int]
  stride: int = 1
  padding: Tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(
      self.features,
      self.kernel,
      strides=self.stride,
      use_bias=False,
      padding=((self.padding[0],) * 2, (self.padding[1],) * 2),
      name="conv",
    )(x)
    bn = BatchNormParams(self.features, name="bn")
    return nn.relu(bn(x))


class BatchNormParams(nn.Module):
  """Inference BatchNorm whose statistics are plain parameters (weight, bias, running_*)."""

  features: int
  eps: float = 1e-3

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (self.features,))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    mean = self.param("running_mean", nn.initializers.zeros, (self.features,))
    var = self.param("running_var", nn.initializers.ones, (self.features,))
    mul = scale * jax.lax.rsqrt(var + self.eps)
    return x * mul + (bias - mean * mul)


def avg_pool_exclude_pad(x):
  """3x3 stride-1 average pool, padding 1, averaging only real pixels (count_include_pad=False)."""
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  sums = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  ones = jnp.ones(x.shape[:3] + (1,), x.dtype)
  counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  return sums / counts


def max_pool(x, stride, padding=0):
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((padding, padding),) * 2)


def _c(features, kernel=(1, 1), stride=1, padding=(0, 0), name=None):
  return BasicConv(features, kernel, stride, padding, name=name)


class BlockA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = _c(64, name="branch1x1")(x)
    b5 = _c(64, (5, 5), padding=(2, 2), name="branch5x5_2")(_c(48, name="branch5x5_1")(x))
    b3 = _c(64, name="branch3x3dbl_1")(x)
    b3 = _c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = _c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = _c(self.pool_features, name="branch_pool")(avg_pool_exclude_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class BlockB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _c(384, (3, 3), stride=2, name="branch3x3")(x)
    bd = _c(64, name="branch3x3dbl_1")(x)
    bd = _c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = _c(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, max_pool(x, 2)], axis=-1)


class BlockC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = _c(192, name="branch1x1")(x)
    b7 = _c(c7, name="branch7x7_1")(x)
    b7 = _c(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = _c(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = _c(c7, name="branch7x7dbl_1")(x)
    bd = _c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = _c(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = _c(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = _c(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = _c(192, name="branch_pool")(avg_pool_exclude_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1), b1


class BlockD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _c(320, (3, 3), stride=2, name="branch3x3_2")(_c(192, name="branch3x3_1")(x))
    b7 = _c(192, name="branch7x7x3_1")(x)
    b7 = _c(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = _c(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = _c(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, max_pool(x, 2)], axis=-1)


class BlockE(nn.Module):
  max_pool_branch: bool = False  # the FID graph's last block max-pools its pool branch

  @nn.compact
  def __call__(self, x):
    b1 = _c(320, name="branch1x1")(x)
    b3 = _c(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate(
      [
        _c(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        _c(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
      ],
      axis=-1,
    )
    bd = _c(448, name="branch3x3dbl_1")(x)
    bd = _c(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate(
      [
        _c(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
        _c(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
      ],
      axis=-1,
    )
    pooled = max_pool(x, 1, 1) if self.max_pool_branch else avg_pool_exclude_pad(x)
    bp = _c(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """FID Inception-V3; module names follow pytorch-fid's state dict."""

  @nn.compact
  def __call__(self, images) -> Dict[str, jax.Array]:
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    x = jax.image.resize(x, (x.shape[0], 299, 299, 3), method="bilinear", antialias=False)
    x = x / 127.5 - 1.0
    x = _c(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
    x = _c(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = _c(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = max_pool(x, 2)
    x = _c(80, name="Conv2d_3b_1x1")(x)
    x = _c(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = max_pool(x, 2)
    x = BlockA(32, name="Mixed_5b")(x)
    x = BlockA(64, name="Mixed_5c")(x)
    x = BlockA(64, name="Mixed_5d")(x)
    x = BlockB(name="Mixed_6a")(x)
    x, _ = BlockC(128, name="Mixed_6b")(x)
    x, _ = BlockC(160, name="Mixed_6c")(x)
    x, spatial = BlockC(160, name="Mixed_6d")(x)
    x, _ = BlockC(192, name="Mixed_6e")(x)
    x = BlockD(name="Mixed_7a")(x)
    x = BlockE(name="Mixed_7b")(x)
    x = BlockE(max_pool_branch=True, name="Mixed_7c")(x)
    pool = x.mean(axis=(1, 2))
    logits = nn.Dense(1008, name="fc")(pool)
    return {"pool": pool, "spatial": spatial, "logits": logits}


def _torch_name(path: Sequence[str]) -> str:
  leaf = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
  return ".".join(list(path[:-1]) + [leaf])


def abstract_params():
  return jax.eval_shape(
    lambda: InceptionV3().init(jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3)))
  )["params"]


def load_inception_params(path: str):
  """Flax params from the FID Inception weights file (.pth via torch, or .npz)."""
  if not path:
    raise ValueError(
      f"inception_v3 needs its weights file: set sample.inception_weights to "
      f"{WEIGHTS_NAME} (pytorch-fid's release; nothing is downloaded)"
    )
  state = convert.load_state_dict(path)
  state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_params())
  leaves, used = [], set()
  for keypath, spec in flat:
    names = tuple(getattr(k, "key", str(k)) for k in keypath)
    name = _torch_name(names)
    if name not in state:
      raise ValueError(f"tensor {name!r} is missing from {os.path.basename(path)}")
    tensor = np.asarray(state[name], np.float32)
    if names[-1] == "kernel":
      tensor = tensor.transpose(2, 3, 1, 0) if tensor.ndim == 4 else tensor.T
    if tensor.shape != spec.shape:
      raise ValueError(f"tensor {name!r}: shape {tensor.shape} != expected {spec.shape}")
    leaves.append(jnp.asarray(tensor))
    used.add(name)
  extra = sorted(set(state) - used)
  if extra:
    raise ValueError(
      f"{os.path.basename(path)} has unexpected tensor {extra[0]!r}: not the FID Inception weights?"
    )
  return jax.tree_util.tree_unflatten(treedef, leaves)


def params_to_state_dict(params) -> Dict[str, np.ndarray]:
  """The inverse of load_inception_params (torch layouts), e.g. to write an .npz."""
  out = {}
  for keypath, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = tuple(getattr(k, "key", str(k)) for k in keypath)
    tensor = np.asarray(leaf)
    if names[-1] == "kernel":
      tensor = tensor.transpose(3, 2, 0, 1) if tensor.ndim == 4 else tensor.T
    out[_torch_name(names)] = tensor
  return out


def make_feature_fn(params):
  """jitted fn(uint8 or [0, 255] images [N, H, W, C]) -> {'pool', 'spatial', 'logits'}."""
  model = InceptionV3()
  return jax.jit(lambda x: model.apply({"params": params}, jnp.asarray(x, jnp.float32)))
