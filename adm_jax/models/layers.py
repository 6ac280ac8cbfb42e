"""Building blocks of the ADM networks (Flax Linen, NHWC).

Submodules are named after the reference's state-dict entries with '.' replaced by
'_' (`in_layers_2` holds `in_layers.2.*`), so that converting a PyTorch checkpoint is
a renaming plus layout changes (see `adm_jax.convert`).

Parameters are always float32; `dtype` is the compute dtype (float32 or bfloat16).
GroupNorm statistics, the attention softmax and the timestep embedding are float32
whatever `dtype` is.
"""
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def timestep_embedding(t, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding of timesteps.

  Args:
    t: [B] timesteps, integer or float, used as given.
    dim: embedding width (the UNet's `model_channels`).
    max_period: the longest period, 10000 as in the reference.

  Returns:
    [B, dim] float32 `[cos(t f_k), sin(t f_k)]` with `f_k = max_period^(-k / (dim // 2))`;
    the angle `t * f_k` is rounded once in float32, as the reference does. An odd `dim`
    gets a zero last column.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def conv3x3(features: int, dtype: Dtype, name: str, stride: int = 1,
            zero_init: bool = False) -> nn.Conv:
  """3x3 convolution with one pixel of zero padding per side (also for stride 2)."""
  init = nn.initializers.zeros if zero_init else nn.initializers.lecun_normal()
  return nn.Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)),
                 dtype=dtype, kernel_init=init, name=name)


class GroupNorm(nn.Module):
  """GroupNorm over the last (channel) axis, statistics in float32.

  Per-channel sums of x and x^2 over the spatial axes are reduced per group and folded
  into one per-channel scale and shift (a single pass, fast on XLA:CPU). An optional
  per-example `scale_shift` (AdaGN: `GN(x) * (1 + scale) + shift`) is folded into the
  same affine map, and SiLU can follow.

  Attributes:
    num_groups: channel groups (32 in ADM).
    eps: added to the variance (1e-5 as torch.nn.GroupNorm).
    silu: apply SiLU to the result.
    dtype: dtype of the result.
  """
  num_groups: int = 32
  eps: float = 1e-5
  silu: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, scale_shift: Optional[tuple] = None):
    """x: [B, ..., C]; scale_shift: optional ([B, C], [B, C]). Returns x's shape."""
    channels = x.shape[-1]
    if channels % self.num_groups:
      raise ValueError(
          f"GroupNorm: {channels} channels do not split into {self.num_groups} groups")
    gamma = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    beta = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    batch, per_group = x.shape[0], channels // self.num_groups
    spatial = tuple(range(1, x.ndim - 1))
    count = math.prod(x.shape[1:-1]) * per_group

    xf = x.astype(jnp.float32)
    sum_x = jnp.sum(xf, axis=spatial)  # [B, C]
    sum_xx = jnp.sum(jnp.square(xf), axis=spatial)

    def per_group_mean(per_channel):  # [B, C] -> [B, G]
      return per_channel.reshape(batch, self.num_groups, per_group).sum(-1) / count

    mean = per_group_mean(sum_x)
    var = jnp.maximum(per_group_mean(sum_xx) - jnp.square(mean), 0.0)
    inv_std = jax.lax.rsqrt(var + self.eps)
    mul = gamma * jnp.repeat(inv_std, per_group, axis=-1)  # [B, C]
    add = beta - jnp.repeat(mean, per_group, axis=-1) * mul
    if scale_shift is not None:
      scale, shift = (s.astype(jnp.float32) for s in scale_shift)
      mul, add = mul * (1.0 + scale), add * (1.0 + scale) + shift
    bcast = (batch,) + (1,) * len(spatial) + (channels,)
    y = xf * mul.reshape(bcast) + add.reshape(bcast)
    if self.silu:
      y = nn.silu(y)
    return y.astype(self.dtype)


def avg_pool2(x):
  """[B, H, W, C] -> [B, H/2, W/2, C], 2x2 average pooling with stride 2."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).astype(x.dtype)


def nearest_up2(x):
  """[B, H, W, C] -> [B, 2H, 2W, C], nearest-neighbour upsampling."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


class Downsample(nn.Module):
  """Halves the resolution: 3x3 stride-2 conv `op` (or 2x2 average pooling)."""
  out_channels: int
  use_conv: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, H/2, W/2, out_channels]."""
    if self.use_conv:
      return conv3x3(self.out_channels, self.dtype, "op", stride=2)(x)
    return avg_pool2(x)


class Upsample(nn.Module):
  """Doubles the resolution: nearest 2x, then a 3x3 conv `conv` (optional)."""
  out_channels: int
  use_conv: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, 2H, 2W, out_channels]."""
    x = nearest_up2(x)
    if self.use_conv:
      x = conv3x3(self.out_channels, self.dtype, "conv")(x)
    return x


class ResBlock(nn.Module):
  """ADM residual block conditioned on an embedding.

  GN-SiLU-[resample]-conv, then the embedding (added, or AdaGN scale and shift), then
  GN-SiLU-dropout-conv (zero-initialised), plus the skip path (1x1 conv when the width
  changes). `up` / `down` (BigGAN style) resample both paths between the first
  GN+SiLU and the first conv.
  """
  out_channels: int
  dropout: float = 0.0
  use_scale_shift_norm: bool = False
  up: bool = False
  down: bool = False
  deterministic: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb):
    """x: [B, H, W, C], emb: [B, E] -> [B, H', W', out_channels]."""
    out = self.out_channels
    h = GroupNorm(silu=True, dtype=self.dtype, name="in_layers_0")(x)
    if self.up:
      h, x = nearest_up2(h), nearest_up2(x)
    elif self.down:
      h, x = avg_pool2(h), avg_pool2(x)
    h = conv3x3(out, self.dtype, "in_layers_2")(h)

    emb_width = 2 * out if self.use_scale_shift_norm else out
    emb_out = nn.Dense(emb_width, dtype=self.dtype, name="emb_layers_1")(
        nn.silu(emb.astype(self.dtype))).astype(jnp.float32)
    out_norm = GroupNorm(silu=True, dtype=self.dtype, name="out_layers_0")
    if self.use_scale_shift_norm:
      h = out_norm(h, scale_shift=jnp.split(emb_out, 2, axis=-1))
    else:
      h = out_norm(h.astype(jnp.float32) + emb_out[:, None, None, :])
    h = nn.Dropout(self.dropout, deterministic=self.deterministic)(h)
    h = conv3x3(out, self.dtype, "out_layers_3", zero_init=True)(h)

    if x.shape[-1] != out:
      x = nn.Conv(out, (1, 1), dtype=self.dtype, name="skip_connection")(x)
    return x.astype(self.dtype) + h


def split_heads(qkv, num_heads: int, new_order: bool):
  """Splits [B, T, 3*H*d] into q, k, v, each heads-major [B, H, T, d].

  Channel order: legacy (head, {q,k,v}, d); new ({q,k,v}, head, d).
  """
  b, t, width = qkv.shape
  d = width // (3 * num_heads)
  if new_order:
    qkv = qkv.reshape(b, t, 3, num_heads, d).transpose(2, 0, 3, 1, 4)
  else:
    qkv = qkv.reshape(b, t, num_heads, 3, d).transpose(3, 0, 2, 1, 4)
  return qkv[0], qkv[1], qkv[2]


def dot_product_attention(q, k, v):
  """Softmax attention over keys; q, k, v: [B, H, T, d] -> [B, T, H*d].

  q and k are each scaled by d^(-1/4) (as the reference, for fp16 headroom); logits
  and softmax are float32, the weighted sum is in v's dtype.
  """
  d = q.shape[-1]
  scale = d ** -0.25
  logits = jnp.matmul(q * scale, jnp.swapaxes(k * scale, -1, -2),
                      preferred_element_type=jnp.float32)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.matmul(weights, v)  # [B, H, T, d]
  b, h, t, _ = out.shape
  return out.transpose(0, 2, 1, 3).reshape(b, t, h * d)


class AttentionBlock(nn.Module):
  """Residual multi-head self-attention over all positions (`norm`, `qkv`, `proj_out`)."""
  num_heads: int
  use_new_attention_order: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, H, W, C]."""
    b, height, width, c = x.shape
    tokens = x.reshape(b, height * width, c)
    h = GroupNorm(dtype=self.dtype, name="norm")(tokens)
    qkv = nn.Dense(3 * c, dtype=self.dtype, name="qkv")(h)
    h = dot_product_attention(*split_heads(qkv, self.num_heads, self.use_new_attention_order))
    h = nn.Dense(c, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="proj_out")(h)
    return (tokens.astype(self.dtype) + h).reshape(b, height, width, c)


class AttentionPool(nn.Module):
  """CLIP-style attention pooling of a feature map to one vector.

  The spatial mean is prepended as an extra token, a learned positional embedding
  [S*S + 1, C] is added, one multi-head attention ({q,k,v}, head, d order) runs over
  the tokens, and the mean token's output is projected to `out_features`.
  """
  spatial_size: int
  head_channels: int
  out_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [B, S, S, C] -> [B, out_features] float32."""
    b, height, width, c = x.shape
    if (height, width) != (self.spatial_size, self.spatial_size):
      raise ValueError(f"attention pool built for {self.spatial_size}px feature maps, "
                       f"got {height}x{width}")
    pos_init = lambda key, shape, dtype: jax.random.normal(key, shape, dtype) / math.sqrt(c)
    pos = self.param("positional_embedding", pos_init, (height * width + 1, c), jnp.float32)
    tokens = x.reshape(b, height * width, c).astype(jnp.float32)
    tokens = jnp.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1) + pos
    qkv = nn.Dense(3 * c, dtype=self.dtype, name="qkv_proj")(tokens.astype(self.dtype))
    h = dot_product_attention(*split_heads(qkv, c // self.head_channels, new_order=True))
    out = nn.Dense(self.out_features, dtype=self.dtype, name="c_proj")(h[:, :1])
    return out[:, 0].astype(jnp.float32)
