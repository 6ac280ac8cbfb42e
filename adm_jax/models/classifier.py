"""The noisy-image classifier: the UNet's encoder half and middle block, then a pool head.

  EncoderClassifier: apply(vars, x [B,H,W,C], t [B], train=False) -> logits [B, out_channels]

Logits are float32 whatever the compute dtype. Heads (module names as the reference):
  adaptive    GroupNorm, SiLU, global mean, 1x1 conv (`out_0`, `out_3`)
  attention   GroupNorm, SiLU, CLIP-style attention pool (`out_0`, `out_2`)
  spatial     spatial means of every input block and the middle block, concatenated;
              Linear 2048, ReLU, Linear (`out_0`, `out_2`)
  spatial_v2  the same features; Linear 2048, GroupNorm(32), SiLU, Linear
              (`out_0`, `out_1`, `out_3`)
"""
import flax.linen as nn
import jax.numpy as jnp

from adm_jax.models import layers
from adm_jax.models.unet import UNetTrunk

POOLS = ("adaptive", "attention", "spatial", "spatial_v2")
SPATIAL_HIDDEN = 2048


class EncoderClassifier(UNetTrunk):
  """Classifier of noisy images x_t at timestep t (build it with `create_classifier`).

  `out_channels` is the number of classes; the attention blocks and the attention pool
  use `num_head_channels` channels per head (64 in the reference).
  """
  pool: str = "adaptive"

  @nn.compact
  def __call__(self, x, t, train: bool = False):
    """x: [B, H, W, in_channels], t: [B] -> logits [B, out_channels] float32."""
    if self.pool not in POOLS:
      raise ValueError(f"unknown classifier_pool {self.pool!r}; expected one of {POOLS}")
    emb = self.embed_time(t)
    h, block_outputs = self.encode(x, emb, train)
    h = self.middle(h, emb, train)

    if self.pool.startswith("spatial"):
      features = jnp.concatenate(
          [o.astype(jnp.float32).mean(axis=(1, 2)) for o in block_outputs + [h]], axis=-1)
      hidden = nn.Dense(SPATIAL_HIDDEN, name="out_0")(features)
      if self.pool == "spatial":
        return nn.Dense(self.out_channels, name="out_2")(nn.relu(hidden))
      hidden = layers.GroupNorm(silu=True, name="out_1")(hidden)
      return nn.Dense(self.out_channels, name="out_3")(hidden)

    h = layers.GroupNorm(silu=True, name="out_0")(h)  # float32 from here on
    if self.pool == "adaptive":
      pooled = h.mean(axis=(1, 2), keepdims=True)
      logits = nn.Conv(self.out_channels, (1, 1), kernel_init=nn.initializers.zeros,
                       name="out_3")(pooled)
      return logits[:, 0, 0, :]
    deepest = self.image_size // 2 ** (len(self.channel_mult) - 1)
    return layers.AttentionPool(spatial_size=deepest, head_channels=self.num_head_channels,
                                out_features=self.out_channels, dtype=self.dtype,
                                name="out_2")(h)
