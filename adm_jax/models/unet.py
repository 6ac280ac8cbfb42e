"""The ADM diffusion UNet and its super-resolution variant (Flax Linen, NHWC).

Call signatures (other code relies on them):
  UNet:          apply(vars, x [B,H,W,C], t [B], y=None, train=False) -> [B,H,W,out_channels]
  SuperResUNet:  apply(vars, x, t, y=None, low_res=[B,h,w,C], train=False) -> the same
Timesteps are used as given (int or float); y are int class labels, given exactly when
the model is class-conditional. Outputs are float32 whatever the compute dtype.
Dropout (train=True) draws from the 'dropout' rng.
"""
from typing import Any, List, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from adm_jax.models import layers

Dtype = Any


class UNetTrunk(nn.Module):
  """Flags and the parts shared by the UNet and the encoder classifier.

  Attributes mirror the reference's constructor; `attention_resolutions` are
  downsampling factors (image_size // pixels), `channel_mult` the per-level widths in
  units of `model_channels`. Submodule names mirror the reference's state dict.
  """
  image_size: int
  in_channels: int
  model_channels: int
  out_channels: int
  num_res_blocks: int
  attention_resolutions: Tuple[int, ...]
  channel_mult: Tuple[float, ...] = (1, 2, 4, 8)
  dropout: float = 0.0
  num_classes: Optional[int] = None
  use_checkpoint: bool = False
  num_heads: int = 1
  num_head_channels: int = -1
  num_heads_upsample: int = -1
  use_scale_shift_norm: bool = False
  resblock_updown: bool = False
  use_new_attention_order: bool = False
  dtype: Dtype = jnp.float32

  def level_channels(self, mult) -> int:
    return int(mult * self.model_channels)

  def heads_for(self, channels: int, decoder: bool = False) -> int:
    """Heads of an attention block on `channels` (num_head_channels wins if set)."""
    if self.num_head_channels != -1:
      return channels // self.num_head_channels
    if decoder and self.num_heads_upsample != -1:
      return self.num_heads_upsample
    return self.num_heads

  def res_block(self, name: str, out_channels: int, train: bool, up=False, down=False):
    block_cls = nn.remat(layers.ResBlock) if self.use_checkpoint else layers.ResBlock
    return block_cls(out_channels=out_channels, dropout=self.dropout,
                     use_scale_shift_norm=self.use_scale_shift_norm, up=up, down=down,
                     deterministic=not train, dtype=self.dtype, name=name)

  def attention_block(self, name: str, channels: int, decoder: bool = False):
    block_cls = nn.remat(layers.AttentionBlock) if self.use_checkpoint else layers.AttentionBlock
    return block_cls(num_heads=self.heads_for(channels, decoder),
                     use_new_attention_order=self.use_new_attention_order,
                     dtype=self.dtype, name=name)

  def embed_time(self, t):
    """t: [B] -> [B, 4 * model_channels] float32 (sinusoid, Linear, SiLU, Linear)."""
    width = 4 * self.model_channels
    emb = layers.timestep_embedding(t, self.model_channels)
    emb = nn.Dense(width, name="time_embed_0")(emb)
    return nn.Dense(width, name="time_embed_2")(nn.silu(emb))

  def encode(self, x, emb, train: bool) -> Tuple[jax.Array, List[jax.Array]]:
    """Input blocks. Returns the deepest features and every block's output (stem first)."""
    h = layers.conv3x3(self.level_channels(self.channel_mult[0]), self.dtype,
                       "input_blocks_0_0")(x.astype(self.dtype))
    outputs = [h]
    ds = 1
    for level, mult in enumerate(self.channel_mult):
      channels = self.level_channels(mult)
      for _ in range(self.num_res_blocks):
        name = f"input_blocks_{len(outputs)}"
        h = self.res_block(f"{name}_0", channels, train)(h, emb)
        if ds in self.attention_resolutions:
          h = self.attention_block(f"{name}_1", channels)(h)
        outputs.append(h)
      if level != len(self.channel_mult) - 1:
        name = f"input_blocks_{len(outputs)}_0"
        if self.resblock_updown:
          h = self.res_block(name, channels, train, down=True)(h, emb)
        else:
          h = layers.Downsample(channels, dtype=self.dtype, name=name)(h)
        outputs.append(h)
        ds *= 2
    return h, outputs

  def middle(self, h, emb, train: bool):
    """ResBlock, attention, ResBlock at the deepest resolution."""
    channels = h.shape[-1]
    h = self.res_block("middle_block_0", channels, train)(h, emb)
    h = self.attention_block("middle_block_1", channels)(h)
    return self.res_block("middle_block_2", channels, train)(h, emb)


class UNet(UNetTrunk):
  """The ADM diffusion UNet (build it from reference flags with `models.create_model`)."""

  @nn.compact
  def __call__(self, x, t, y=None, train: bool = False):
    """x: [B, H, W, in_channels], t: [B], y: [B] int or None -> [B, H, W, out] float32."""
    return self.denoise(x, t, y, train)

  def denoise(self, x, t, y, train: bool):
    """The network body; called from a compact `__call__`."""
    if (y is None) != (self.num_classes is None):
      raise ValueError(
          "pass class labels y exactly when the model is class-conditional "
          f"(num_classes={self.num_classes}, y given: {y is not None})")
    emb = self.embed_time(t)
    if y is not None:
      emb = emb + nn.Embed(self.num_classes, 4 * self.model_channels, name="label_emb")(y)
    h, skips = self.encode(x, emb, train)
    h = self.middle(h, emb, train)

    ds = 2 ** (len(self.channel_mult) - 1)
    block = 0
    for level in reversed(range(len(self.channel_mult))):
      channels = self.level_channels(self.channel_mult[level])
      for i in range(self.num_res_blocks + 1):
        name = f"output_blocks_{block}"
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = self.res_block(f"{name}_0", channels, train)(h, emb)
        index = 1
        if ds in self.attention_resolutions:
          h = self.attention_block(f"{name}_1", channels, decoder=True)(h)
          index = 2
        if level > 0 and i == self.num_res_blocks:
          if self.resblock_updown:
            h = self.res_block(f"{name}_{index}", channels, train, up=True)(h, emb)
          else:
            h = layers.Upsample(channels, dtype=self.dtype, name=f"{name}_{index}")(h)
          ds //= 2
        block += 1

    h = layers.GroupNorm(silu=True, name="out_0")(h)
    return layers.conv3x3(self.out_channels, jnp.float32, "out_2", zero_init=True)(h)


def upsample_bilinear(images, size):
  """[B, h, w, C] -> [B, H, W, C] float32 (size = H or (H, W)), bilinear, half-pixel centres.

  Matches torch `interpolate(mode='bilinear', align_corners=False)` without
  antialiasing (edge samples clamp to the border).
  """
  height, width = (size, size) if isinstance(size, int) else size
  b, _, _, c = images.shape
  return jax.image.resize(images.astype(jnp.float32), (b, height, width, c), method="bilinear",
                          antialias=False)


class SuperResUNet(UNet):
  """UNet on [x_t, bilinear-upsampled low_res]; `in_channels` counts both (2x image)."""

  @nn.compact
  def __call__(self, x, t, y=None, low_res=None, train: bool = False):
    """x: [B, H, W, C], low_res: [B, h, w, C] -> [B, H, W, out_channels] float32."""
    if low_res is None:
      raise ValueError("SuperResUNet needs the low-resolution images: pass low_res=[B,h,w,C]")
    upsampled = upsample_bilinear(low_res, x.shape[1:3])
    x = jnp.concatenate([x.astype(jnp.float32), upsampled], axis=-1)
    return self.denoise(x, t, y, train)
