"""Building blocks of the ADM networks (Flax Linen, NHWC).

Submodule names follow the reference's state-dict names with '.' replaced by '_'
(e.g. `in_layers_2` for `in_layers.2`), so converting a PyTorch checkpoint is a
mechanical renaming (see adm_jax.convert). Parameters are float32; `dtype` is the
compute dtype. GroupNorm statistics, attention softmax and (with a bfloat16 / float16 `dtype`)
bias gradients are float32.

Backend-specific kernels are chosen per platform when the program is lowered
(`jax.lax.platform_dependent`): on CPU the convolution and GroupNorm custom VJPs and the
heads-major attention tuned for XLA:CPU (experiments/RESULTS.md); on GPU and TPU plain
autodiff of `lax.conv_general_dilated` and of the same GroupNorm forward, and
`jax.nn.dot_product_attention` (cuDNN flash attention on a CUDA GPU where it applies).
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """Sinusoidal embedding [B, dim] = [cos(t f_k), sin(t f_k)], f_k = max_period^(-k/(dim/2)).

  Computed in float32 in the reference's order of operations (t * f_k rounded once).
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


def _conv_nhwc(x, kernel, stride: int, padding):
  return jax.lax.conv_general_dilated(
    x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def conv2d(x, kernel, stride: int, padding):
  """NHWC x HWIO convolution, [B, H, W, Cin] -> [B, H', W', Cout], `padding` ((lo, hi), (lo, hi)).

  On CPU `_conv2d_cpu` (a custom VJP whose gradients are canonical convolutions); elsewhere
  plain autodiff of `lax.conv_general_dilated`, whose gradients XLA's GPU / TPU convolution
  rewriters and layout assignment handle themselves (the CPU barriers and [Cin, H, W, B]
  copies would only get in their way).
  """
  padding = tuple(tuple(p) for p in padding)
  return jax.lax.platform_dependent(
    x,
    kernel,
    cpu=lambda a, k: _conv2d_cpu(a, k, stride, padding),
    default=lambda a, k: _conv_nhwc(a, k, stride, padding),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d_cpu(x, kernel, stride: int, padding):
  """`conv2d` for XLA:CPU: same values and gradients as `lax.conv_general_dilated`.

  Both gradients are formulated as canonical convolutions (the kernel gradient: see
  `_kernel_gradient`). For the input gradient the autodiff rule convolves with the flipped
  kernel read as HWOI. Inside a `lax.scan` body (the guided sampling loop) XLA:CPU then keeps
  that non-canonical kernel layout and runs the convolution through its slow generic loop
  emitter instead of Eigen (measured: +44% per guided sampling step). Here the flipped,
  transposed kernel is materialised as an HWIO array behind an optimisation barrier, so the
  input gradient is always a canonical convolution.
  """
  return _conv_nhwc(x, kernel, stride, padding)


def _conv2d_fwd(x, kernel, stride, padding):
  return _conv_nhwc(x, kernel, stride, padding), (x, kernel)


def _conv2d_bwd(stride, padding, residuals, grad_out):
  x, kernel = residuals
  flipped = jax.lax.optimization_barrier(jnp.swapaxes(jnp.flip(kernel, (0, 1)), 2, 3))
  transposed_padding = []
  for axis, (lo, _) in zip((1, 2), padding):
    k, n, m = kernel.shape[axis - 1], x.shape[axis], grad_out.shape[axis]
    lo_t = k - 1 - lo
    transposed_padding.append((lo_t, n + k - 2 - (m - 1) * stride - lo_t))
  grad_x = jax.lax.conv_general_dilated(
    grad_out,
    flipped,
    (1, 1),
    transposed_padding,
    lhs_dilation=(stride, stride),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  return grad_x.astype(x.dtype), _kernel_gradient(x, grad_out, kernel.shape, stride, padding)


def _kernel_gradient(x, grad_out, kernel_shape, stride: int, padding):
  """dL/dkernel [k, k, Cin, Cout] of an NHWC x HWIO convolution, as a canonical convolution.

  dK[a, b, i, o] = sum over n, h, w of x_padded[n, s*h + a, s*w + b, i] * dy[n, h, w, o]: a
  convolution of x read as [Cin, H, W, B] (channels as batch, images as features) with dy read
  as an HWIO kernel [H', W', B, Cout] dilated by the stride. XLA:CPU's fast convolution needs
  exactly these layouts; outside loops it inserts the transposes itself, but inside a
  `lax.scan` body (microbatch accumulation) it kept the autodiff rule's `f01b_i01o->01bf`
  convolution and ran it through the generic loop emitter (train step with two microbatches
  19x slower). The barrier keeps the transposes from being folded back into the convolution.
  """
  k_h, k_w = kernel_shape[0], kernel_shape[1]
  lhs = jnp.transpose(x, (3, 1, 2, 0)).astype(grad_out.dtype)
  rhs = jnp.transpose(grad_out, (1, 2, 0, 3))
  lhs, rhs = jax.lax.optimization_barrier((lhs, rhs))
  window_padding = []
  for axis, k, (lo, _) in ((1, k_h, padding[0]), (2, k_w, padding[1])):
    n, m = x.shape[axis], grad_out.shape[axis]
    # Trim the high side so that the output is exactly k wide (rows a stride skips add nothing).
    window_padding.append((lo, max(k + stride * (m - 1) - lo - n, 0)))
  grad = jax.lax.conv_general_dilated(
    lhs,
    rhs,
    (1, 1),
    window_padding,
    rhs_dilation=(stride, stride),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  return jnp.transpose(grad[:, :k_h, :k_w, :], (1, 2, 0, 3))


_conv2d_cpu.defvjp(_conv2d_fwd, _conv2d_bwd)


class Conv(nn.Module):
  """Square convolution with torch-style symmetric padding (k-1)/2; params `kernel`
  [k, k, Cin, Cout]
  and `bias` [Cout] in float32 (the layout of flax's nn.Conv), computed in `dtype`."""

  features: int
  kernel_size: int = 3
  stride: int = 1
  dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    pad = (k - 1) // 2
    y = conv2d(
      x.astype(self.dtype), kernel.astype(self.dtype), self.stride, ((pad, pad), (pad, pad))
    )
    return _add_bias(y, bias, self.dtype)


def _add_bias(y, bias, dtype):
  """y [..., C] + bias [C] (float32) in `dtype`; in bf16 / fp16 the bias gradient sums in
  float32."""
  if jnp.dtype(dtype) == jnp.float32:
    return y + bias.astype(dtype)
  return add_bias_f32_grad(y, bias)


@jax.custom_vjp
def add_bias_f32_grad(y, bias):
  """y [..., C] (bfloat16 / float16) + bias [C] (float32), rounded to y's dtype.

  Autodiff would sum the bias gradient over all B x H x W positions in y's dtype; here the
  cotangent is widened to float32 before that reduction.
  """
  return y + bias.astype(y.dtype)


def _add_bias_fwd(y, bias):
  return add_bias_f32_grad(y, bias), None


def _add_bias_bwd(_, grad):
  return grad, grad.astype(jnp.float32).sum(axis=tuple(range(grad.ndim - 1)))


add_bias_f32_grad.defvjp(_add_bias_fwd, _add_bias_bwd)


class Dense(nn.Module):
  """flax nn.Dense (same `kernel` [Cin, Cout] / `bias` [Cout] params and initialisers) computed in
  `dtype`, with the bias gradient summed in float32 when `dtype` is bfloat16 / float16."""

  features: int
  dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    y = jax.lax.dot_general(
      x.astype(self.dtype), kernel.astype(self.dtype), (((x.ndim - 1,), (0,)), ((), ()))
    )
    return _add_bias(y, bias, self.dtype)


def conv3x3(features: int, dtype: Dtype, name: str, stride: int = 1, zero: bool = False):
  """3x3 convolution padded by 1 on each side (torch padding=1), also for stride 2."""
  return Conv(
    features,
    3,
    stride,
    dtype=dtype,
    name=name,
    kernel_init=nn.initializers.zeros if zero else nn.initializers.lecun_normal(),
  )


def _group_stats(xf, groups: int, eps: float):
  """Per-(example, channel) mean and 1/std of each channel's group, [B, C] each (float32)."""
  batch, channels = xf.shape[0], xf.shape[-1]
  spatial = tuple(range(1, xf.ndim - 1))
  count = math.prod(xf.shape[1:-1]) * (channels // groups)

  def group_mean(per_channel_sum):  # [B, C] -> [B, C] (each group's mean broadcast back)
    g = per_channel_sum.reshape(batch, groups, channels // groups).sum(-1) / count
    return jnp.repeat(g, channels // groups, axis=-1)

  mean = group_mean(xf.sum(axis=spatial) if spatial else xf)
  centred = xf - _expand(mean, xf.ndim)
  sq = jnp.square(centred)
  var = group_mean(sq.sum(axis=spatial) if spatial else sq)
  return mean, jax.lax.rsqrt(var + eps), group_mean


def _expand(per_channel, ndim: int):
  """[B, C] -> [B, 1, ..., 1, C] for broadcasting against [B, ..., C]."""
  return per_channel.reshape((per_channel.shape[0],) + (1,) * (ndim - 2) + per_channel.shape[-1:])


def group_norm(x, scale, bias, groups: int, eps: float, silu: bool):
  """GroupNorm over the last axis of [B, ..., C] (+ SiLU), in float32; returns float32.

  One forward everywhere; its backward is `_group_norm_cpu`'s hand-written one on CPU and
  autodiff elsewhere (XLA:GPU / TPU fuse autodiff's reductions themselves).
  """
  return jax.lax.platform_dependent(
    x,
    scale,
    bias,
    cpu=lambda *a: _group_norm_cpu(*a, groups, eps, silu),
    default=lambda *a: _group_norm_fwd(*a, groups, eps, silu)[0],
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _group_norm_cpu(x, scale, bias, groups: int, eps: float, silu: bool):
  """`group_norm` for XLA:CPU with the backward pass written out (two passes over the
  activations: one fused reduction for the scale / bias / group terms, one elementwise pass
  for dx) instead of autodiff's chain of broadcasts and reductions."""
  return _group_norm_fwd(x, scale, bias, groups, eps, silu)[0]


def _group_norm_fwd(x, scale, bias, groups, eps, silu):
  xf = x.astype(jnp.float32)
  mean, rstd, _ = _group_stats(xf, groups, eps)
  y = (xf - _expand(mean, xf.ndim)) * _expand(rstd * scale, xf.ndim) + bias
  return (nn.silu(y) if silu else y), (x, scale, bias, mean, rstd)


def _group_norm_bwd(groups, eps, silu, residuals, grad):
  x, scale, bias, mean, rstd = residuals
  xf = x.astype(jnp.float32)
  spatial = tuple(range(1, xf.ndim - 1))
  x_hat = (xf - _expand(mean, xf.ndim)) * _expand(rstd, xf.ndim)
  grad = grad.astype(jnp.float32)
  if silu:
    y = x_hat * scale + bias
    sig = jax.nn.sigmoid(y)
    grad = grad * sig * (1 + y * (1 - sig))
  # Per-(example, channel) sums of dy and dy * x_hat: everything else derives from them.
  sum_dy = grad.sum(axis=spatial) if spatial else grad
  sum_dy_xhat = (grad * x_hat).sum(axis=spatial) if spatial else grad * x_hat
  channels = xf.shape[-1]
  count = math.prod(xf.shape[1:-1]) * (channels // groups)

  def group_mean(per_channel_sum):
    g = per_channel_sum.reshape(xf.shape[0], groups, channels // groups).sum(-1) / count
    return jnp.repeat(g, channels // groups, axis=-1)

  mean_dxhat = group_mean(sum_dy * scale)
  mean_dxhat_xhat = group_mean(sum_dy_xhat * scale)
  grad_x = _expand(rstd, xf.ndim) * (
    grad * scale - _expand(mean_dxhat, xf.ndim) - x_hat * _expand(mean_dxhat_xhat, xf.ndim)
  )
  return grad_x.astype(x.dtype), sum_dy_xhat.sum(0), sum_dy.sum(0)


_group_norm_cpu.defvjp(_group_norm_fwd, _group_norm_bwd)


class GroupNorm(nn.Module):
  """GroupNorm(32, eps 1e-5) over the last (channel) axis, statistics in float32.

  Per-channel sums over the spatial axes are reduced per group and folded into one
  per-channel scale and shift (fast on XLA:CPU). Optionally fuses the following SiLU.
  Works on [B, ..., C] (images) and [B, C] (features).
  """

  num_groups: int = 32
  eps: float = 1e-5
  silu: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    if channels % self.num_groups:
      raise ValueError(
        f"GroupNorm: {channels} channels are not divisible by {self.num_groups} groups"
      )
    scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    return group_norm(x, scale, bias, self.num_groups, self.eps, self.silu).astype(self.dtype)


def avg_pool2(x):
  """2x2 average pooling with stride 2 (torch avg_pool2d(2)); sums in float32, returns x's dtype."""
  if x.dtype != jnp.float32:
    return avg_pool2(x.astype(jnp.float32)).astype(x.dtype)
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def nearest_up2(x):
  """Nearest 2x upsampling [B, H, W, C] -> [B, 2H, 2W, C]; the gradient's 2x2 sums in float32."""
  if x.dtype != jnp.float32:
    return nearest_up2(x.astype(jnp.float32)).astype(x.dtype)
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


class Downsample(nn.Module):
  """Stride-2 3x3 conv (`op`) or, without conv, 2x2 average pooling."""

  out_channels: int
  use_conv: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.use_conv:
      return conv3x3(self.out_channels, self.dtype, "op", stride=2)(x)
    return avg_pool2(x)


class Upsample(nn.Module):
  """Nearest 2x, then (optionally) a 3x3 conv (`conv`)."""

  out_channels: int
  use_conv: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nearest_up2(x)
    if self.use_conv:
      x = conv3x3(self.out_channels, self.dtype, "conv")(x)
    return x


class ResBlock(nn.Module):
  """The ADM residual block: GN-SiLU-conv, timestep embedding (AdaGN or added),
  GN-SiLU-dropout-conv.

  up / down resample both paths between the first GN+SiLU and the first conv
  (BigGAN style). The skip path is a 1x1 conv when the channel count changes.
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
    channels = x.shape[-1]
    out = self.out_channels
    h = GroupNorm(silu=True, dtype=self.dtype, name="in_layers_0")(x)
    if self.up:
      h, x = nearest_up2(h), nearest_up2(x)
    elif self.down:
      h, x = avg_pool2(h), avg_pool2(x)
    h = conv3x3(out, self.dtype, "in_layers_2")(h)
    emb_out = Dense(
      2 * out if self.use_scale_shift_norm else out, dtype=self.dtype, name="emb_layers_1"
    )(nn.silu(emb.astype(self.dtype)))
    emb_out = emb_out.astype(jnp.float32)[:, None, None, :]
    if self.use_scale_shift_norm:
      scale, shift = jnp.split(emb_out, 2, axis=-1)
      h = GroupNorm(dtype=jnp.float32, name="out_layers_0")(h)
      h = (h * (1 + scale) + shift).astype(self.dtype)
      h = nn.silu(h)
    else:
      h = GroupNorm(silu=True, dtype=self.dtype, name="out_layers_0")(
        (h.astype(jnp.float32) + emb_out).astype(self.dtype)
      )
    h = nn.Dropout(self.dropout, deterministic=self.deterministic)(h)
    h = conv3x3(out, self.dtype, "out_layers_3", zero=True)(h)
    if out != channels:
      x = Conv(out, 1, dtype=self.dtype, name="skip_connection")(x)
    return x + h


def qkv_attention(qkv, num_heads: int, new_order: bool):
  """Softmax self-attention of packed [B, T, 3*H*d] projections -> [B, T, H*d] (head-major).

  `new_order`: ({q,k,v}, head, d) channel order, else the legacy (head, {q,k,v}, d). Logits
  scaled by 1/sqrt(d) (the reference scales q and k each by d^(-1/4)); softmax in float32.
  On CPU the heads-major `attention`; elsewhere `jax.nn.dot_product_attention` (cuDNN flash
  attention on a CUDA GPU where it applies, else its XLA implementation).
  """
  return jax.lax.platform_dependent(
    qkv,
    cpu=lambda a: attention(*split_heads(a, num_heads, new_order)),
    cuda=lambda a: _attention_xla(a, num_heads, new_order, try_cudnn=True),
    default=lambda a: _attention_xla(a, num_heads, new_order, try_cudnn=False),
  )


def split_heads(qkv, num_heads: int, new_order: bool):
  """[B, T, 3*H*d] → q, k, v [B, H, T, d] for the legacy (h,{q,k,v},d) or new ({q,k,v},h,d)
  order."""
  return tuple(jnp.transpose(a, (0, 2, 1, 3)) for a in _split_tokens(qkv, num_heads, new_order))


def _split_tokens(qkv, num_heads: int, new_order: bool):
  """[B, T, 3*H*d] → q, k, v [B, T, H, d] (the layout of jax.nn.dot_product_attention)."""
  b, t, c3 = qkv.shape
  d = c3 // (3 * num_heads)
  if new_order:
    qkv = qkv.reshape(b, t, 3, num_heads, d)
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  qkv = qkv.reshape(b, t, num_heads, 3, d)
  return qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]


def attention(q, k, v):
  """Softmax attention on heads-major [B, H, T, d]; q and k each scaled by d^(-1/4) (XLA:CPU).

  Logits and softmax in float32; returns [B, T, H*d] (head-major channels). The softmax
  normalisation is applied after the weighted sum ([T, d] instead of [T, T] divisions:
  one full pass over the attention matrix less, forward and backward).
  """
  d = q.shape[-1]
  scale = 1.0 / math.sqrt(math.sqrt(d))
  logits = jnp.matmul(
    q * scale, jnp.swapaxes(k * scale, -1, -2), preferred_element_type=jnp.float32
  )
  # Subtracting the (constant) row maximum keeps exp finite; softmax is invariant to it.
  unnormalised = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
  out = jnp.matmul(unnormalised.astype(v.dtype), v, preferred_element_type=jnp.float32)
  out = (out / unnormalised.sum(axis=-1, keepdims=True)).astype(v.dtype)  # [B, H, T, d]
  b, h, t, _ = out.shape
  return jnp.transpose(out, (0, 2, 1, 3)).reshape(b, t, h * d)


def _cudnn_may_apply(q) -> bool:
  """Whether cuDNN flash attention may run q [B, T, H, d]: a GPU, 16-bit floats, d % 8 == 0,
  d <= 128."""
  d = q.shape[-1]
  return (
    jax.default_backend() == "gpu"
    and q.dtype in (jnp.bfloat16, jnp.float16)
    and d % 8 == 0
    and d <= 128
  )


def _attention_xla(qkv, num_heads: int, new_order: bool, try_cudnn: bool):
  """`qkv_attention` by jax.nn.dot_product_attention on [B, T, H, d] (no heads-major copies)."""
  q, k, v = _split_tokens(qkv, num_heads, new_order)
  out = None
  if try_cudnn and _cudnn_may_apply(q):
    try:  # cuDNN refuses some shapes / versions while tracing; fall back to XLA then.
      out = jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    except Exception:  # pylint: disable=broad-except
      out = None
  if out is None:
    out = jax.nn.dot_product_attention(q, k, v, implementation="xla")
  b, t, h, d = out.shape
  return out.reshape(b, t, h * d)


class AttentionBlock(nn.Module):
  """Self-attention over all positions with a residual connection (`norm`, `qkv`, `proj_out`)."""

  num_heads: int
  use_new_attention_order: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hh, ww, c = x.shape
    tokens = x.reshape(b, hh * ww, c)
    h = GroupNorm(dtype=self.dtype, name="norm")(tokens)
    qkv = Dense(3 * c, dtype=self.dtype, name="qkv")(h)
    h = qkv_attention(qkv, self.num_heads, self.use_new_attention_order)
    h = Dense(c, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="proj_out")(h)
    return (tokens + h).reshape(b, hh, ww, c)


class AttentionPool(nn.Module):
  """CLIP-style attention pooling: the spatial mean attends over [mean, positions] → [B, out].

  Positional embedding [T+1, C]; heads of `head_channels`; ({q,k,v}, head, channel) order.
  """

  spatial_size: int
  head_channels: int
  out_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hh, ww, c = x.shape
    if hh != self.spatial_size or ww != self.spatial_size:
      raise ValueError(f"attention pool built for {self.spatial_size}px maps, got {hh}x{ww}")
    pos = self.param(
      "positional_embedding",
      lambda k, s, d: jax.random.normal(k, s, d) / math.sqrt(c),
      (hh * ww + 1, c),
      jnp.float32,
    )
    tokens = x.reshape(b, hh * ww, c).astype(jnp.float32)
    tokens = jnp.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1) + pos
    qkv = Dense(3 * c, dtype=self.dtype, name="qkv_proj")(tokens.astype(self.dtype))
    h = qkv_attention(qkv, c // self.head_channels, new_order=True)
    return Dense(self.out_features, dtype=self.dtype, name="c_proj")(h)[:, 0]
