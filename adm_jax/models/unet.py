"""The ADM UNet, its super-resolution variant, and the noisy-image classifier (encoder + pool).

All NHWC. Call signatures (other code relies on them):
  UNet:            apply(vars, x [B,H,W,C], t [B], y=None, train=False) -> [B,H,W,out_channels]
  SuperResUNet:    apply(vars, x, t, y=None, low_res=[B,h,w,C], train=False)
  EncoderClassifier: apply(vars, x, t, train=False) -> logits [B, num_classes]
Outputs are float32 whatever the compute dtype.
"""

import functools
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from adm_jax.models import layers

Dtype = Any

_conv_saveable = lambda prim, *_, **__: prim.name == "conv_general_dilated"

# Remat policies by flag value (model flag `remat_policy`): which values of a residual or attention
# block its backward pass may keep from the forward pass instead of recomputing them.
REMAT_POLICIES = {
  "none": None,  # no remat
  "nothing_saveable": jax.checkpoint_policies.nothing_saveable,  # keep only each block's inputs
  "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  "convs_saveable": _conv_saveable,  # keep convolution outputs, recompute norms / attention
  "dots_saveable": jax.checkpoint_policies.dots_saveable,  # convolutions and all matmuls
}
# What use_checkpoint=True means. Train step of a 64x64, 64-channel UNet, bf16, batch 8
# (XLA:CPU memory_analysis): temp 1025 MiB without remat; convs_saveable 274 MiB at +2% FLOPs,
# nothing_saveable 232 MiB at +19% (it recomputes the first convolution of every ResBlock).
DEFAULT_REMAT_POLICY = "convs_saveable"


def _after(tree, grad):
  """tree's float leaves + 0 computed from `grad` (same values), so that XLA cannot schedule
  what is computed from them before `grad` exists."""
  g = grad.ravel()[0].astype(jnp.float32)
  zero = jnp.where(g == g, jnp.minimum(jnp.abs(g), 0.0), 0.0)  # 0.0 also for inf / NaN
  return jax.tree.map(
    lambda a: a + zero.astype(a.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
  )


def remat_call(module: nn.Module, policy: str, *args):
  """module(*args), recomputed in the backward pass under REMAT_POLICIES[policy].

  jax.checkpoint alone does not cut memory on XLA:CPU: its optimisation barrier only stops
  CSE, and the scheduler then ran every block's recomputation during the forward pass
  (measured), keeping all of it alive. Here the saved values enter the recomputation only
  through a zero that depends on the block's output cotangent.
  """
  # No CSE barrier needed (or wanted: it would be the only optimisation barrier on GPU / TPU):
  # the recomputation's inputs are new values (`_after`), which XLA cannot merge with the forward.
  checkpointed = nn.checkpoint(
    lambda mdl, *a: mdl(*a), policy=REMAT_POLICIES[policy], prevent_cse=False
  )

  def fwd(mdl, *a):
    return nn.vjp(checkpointed, mdl, *a)

  def bwd(vjp_fn, grad):
    return _after(vjp_fn, grad)(grad)

  return nn.custom_vjp(lambda mdl, *a: mdl(*a), forward_fn=fwd, backward_fn=bwd)(module, *args)


class _Torso(nn.Module):
  """Shared encoder/decoder construction; module names mirror the reference's state dict."""

  image_size: int
  in_channels: int
  model_channels: int
  out_channels: int
  num_res_blocks: int
  attention_resolutions: Tuple[int, ...]  # as downsampling factors ds = image_size // res
  channel_mult: Tuple[float, ...]
  dropout: float = 0.0
  num_classes: Optional[int] = None
  use_checkpoint: bool = False
  remat_policy: str = ""  # a REMAT_POLICIES key; "" means DEFAULT_REMAT_POLICY if use_checkpoint
  num_heads: int = 1
  num_head_channels: int = -1
  num_heads_upsample: int = -1
  use_scale_shift_norm: bool = False
  resblock_updown: bool = False
  use_new_attention_order: bool = False
  dtype: Dtype = jnp.float32

  def heads(self, channels, upsample=False):
    if self.num_head_channels != -1:
      return channels // self.num_head_channels
    return (
      self.num_heads_upsample if (upsample and self.num_heads_upsample != -1) else self.num_heads
    )

  def policy(self) -> str:
    policy = self.remat_policy or (DEFAULT_REMAT_POLICY if self.use_checkpoint else "none")
    if policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy={policy!r}: expected one of {sorted(REMAT_POLICIES)}")
    return policy

  def rematted(self, module):
    """module, or module recomputed in the backward pass (see remat_call)."""
    policy = self.policy()
    return module if policy == "none" else functools.partial(remat_call, module, policy)

  def res_block(self, name, out, train, up=False, down=False):
    return self.rematted(
      layers.ResBlock(
        out_channels=out,
        dropout=self.dropout,
        use_scale_shift_norm=self.use_scale_shift_norm,
        up=up,
        down=down,
        deterministic=not train,
        dtype=self.dtype,
        name=name,
      )
    )

  def attn_block(self, name, channels, upsample=False):
    return self.rematted(
      layers.AttentionBlock(
        num_heads=self.heads(channels, upsample),
        use_new_attention_order=self.use_new_attention_order,
        dtype=self.dtype,
        name=name,
      )
    )

  def time_embedding(self, t):
    emb = layers.timestep_embedding(t, self.model_channels)
    emb = nn.Dense(4 * self.model_channels, name="time_embed_0")(emb)
    return nn.Dense(4 * self.model_channels, name="time_embed_2")(nn.silu(emb))

  def encode(self, x, emb, train, collect_means=False):
    """Input blocks; returns (h, skip activations, spatial means if asked)."""
    ch = int(self.channel_mult[0] * self.model_channels)
    h = layers.conv3x3(ch, self.dtype, "input_blocks_0_0")(x.astype(self.dtype))
    skips, means = [h], [h.astype(jnp.float32).mean(axis=(1, 2))] if collect_means else []
    block, ds = 1, 1
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        ch = int(mult * self.model_channels)
        h = self.res_block(f"input_blocks_{block}_0", ch, train)(h, emb)
        if ds in self.attention_resolutions:
          h = self.attn_block(f"input_blocks_{block}_1", ch)(h)
        skips.append(h)
        if collect_means:
          means.append(h.astype(jnp.float32).mean(axis=(1, 2)))
        block += 1
      if level != len(self.channel_mult) - 1:
        name = f"input_blocks_{block}_0"
        if self.resblock_updown:
          h = self.res_block(name, ch, train, down=True)(h, emb)
        else:
          h = layers.Downsample(ch, use_conv=True, dtype=self.dtype, name=name)(h)
        skips.append(h)
        if collect_means:
          means.append(h.astype(jnp.float32).mean(axis=(1, 2)))
        block += 1
        ds *= 2
    return h, skips, means, ch, ds

  def middle(self, h, emb, train, ch):
    h = self.res_block("middle_block_0", ch, train)(h, emb)
    h = self.attn_block("middle_block_1", ch)(h)
    return self.res_block("middle_block_2", ch, train)(h, emb)


class UNet(_Torso):
  """The ADM diffusion UNet (reference flags; see adm_jax.models.config for constructors)."""

  @nn.compact
  def __call__(self, x, t, y=None, train: bool = False):
    return self.forward(x, t, y, train)

  def forward(self, x, t, y, train):
    """The network body (called from a compact __call__)."""
    if (y is not None) != (self.num_classes is not None):
      raise ValueError(
        "pass class labels y if and only if the model is class-conditional "
        f"(num_classes={self.num_classes}, y given: {y is not None})"
      )
    emb = self.time_embedding(t)
    if y is not None:
      emb = emb + nn.Embed(self.num_classes, 4 * self.model_channels, name="label_emb")(y)
    h, skips, _, ch, ds = self.encode(x, emb, train)
    h = self.middle(h, emb, train, ch)
    block = 0
    for level, mult in list(enumerate(self.channel_mult))[::-1]:
      for i in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        ch = int(self.model_channels * mult)
        h = self.res_block(f"output_blocks_{block}_0", ch, train)(h, emb)
        sub = 1
        if ds in self.attention_resolutions:
          h = self.attn_block(f"output_blocks_{block}_1", ch, upsample=True)(h)
          sub = 2
        if level and i == self.num_res_blocks:
          name = f"output_blocks_{block}_{sub}"
          if self.resblock_updown:
            h = self.res_block(name, ch, train, up=True)(h, emb)
          else:
            h = layers.Upsample(ch, use_conv=True, dtype=self.dtype, name=name)(h)
          ds //= 2
        block += 1
    h = layers.GroupNorm(silu=True, dtype=jnp.float32, name="out_0")(h.astype(jnp.float32))
    return layers.conv3x3(self.out_channels, jnp.float32, "out_2", zero=True)(h)


def upsample_bilinear(images, size: int):
  """Bilinear resize to size x size with half-pixel centres, no antialiasing (torch default)."""
  b, _, _, c = images.shape
  return jax.image.resize(
    images.astype(jnp.float32), (b, size, size, c), method="bilinear", antialias=False
  )


class SuperResUNet(UNet):
  """UNet on [x_t, bilinear-upsampled low_res] (in_channels is the image's, doubled inside)."""

  @nn.compact
  def __call__(self, x, t, y=None, low_res=None, train: bool = False):
    if low_res is None:
      raise ValueError("the super-resolution model needs low_res images")
    up = upsample_bilinear(low_res, x.shape[1])
    return self.forward(jnp.concatenate([x.astype(jnp.float32), up], axis=-1), t, y, train)


POOLS = ("adaptive", "attention", "spatial", "spatial_v2")


class EncoderClassifier(_Torso):
  """Noisy-image classifier: the UNet encoder and middle block, then a pool head."""

  pool: str = "adaptive"

  @nn.compact
  def __call__(self, x, t, train: bool = False):
    emb = self.time_embedding(t)
    spatial = self.pool.startswith("spatial")
    h, _, means, ch, ds = self.encode(x, emb, train, collect_means=spatial)
    h = self.middle(h, emb, train, ch)
    out = self.out_channels
    if spatial:
      features = jnp.concatenate(means + [h.astype(jnp.float32).mean(axis=(1, 2))], axis=-1)
      f = nn.Dense(2048, name="out_0")(features)
      if self.pool == "spatial":
        return nn.Dense(out, name="out_2")(nn.relu(f))
      f = layers.GroupNorm(silu=True, name="out_1")(f)
      return nn.Dense(out, name="out_3")(f)
    h = layers.GroupNorm(silu=True, dtype=jnp.float32, name="out_0")(h.astype(jnp.float32))
    if self.pool == "adaptive":
      pooled = h.mean(axis=(1, 2), keepdims=True)
      logits = nn.Conv(out, (1, 1), kernel_init=nn.initializers.zeros, name="out_3")(pooled)
      return logits[:, 0, 0, :]
    if self.pool == "attention":
      return layers.AttentionPool(self.image_size // ds, self.num_head_channels, out, name="out_2")(
        h
      ).astype(jnp.float32)
    raise ValueError(f"unknown classifier_pool {self.pool!r}; expected one of {POOLS}")
