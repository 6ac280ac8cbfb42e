"""Model constructors from flags with the reference's names, validation, released configs.

`create_model(cfg)`, `create_classifier(cfg)` and `create_sr_model(cfg)` take an
ml_collections.ConfigDict or a dict (unknown keys are ignored, so a full experiment
section or a reference config.json section works). Impossible settings raise
ValueError naming the flag.
"""

from typing import Any, Dict, Mapping, Tuple

import jax.numpy as jnp

from adm_jax.models import paper
from adm_jax.models.unet import POOLS
from adm_jax.models.unet import REMAT_POLICIES
from adm_jax.models.unet import EncoderClassifier
from adm_jax.models.unet import SuperResUNet
from adm_jax.models.unet import UNet

DEFAULT_CHANNEL_MULT = {
  32: (1, 2, 2, 2),
  64: (1, 2, 3, 4),
  128: (1, 1, 2, 3, 4),
  256: (1, 1, 2, 2, 4, 4),
  512: (0.5, 1, 1, 2, 2, 4, 4),
}

# The reference's super-resolution constructor has its own defaults (by the large size).
SR_DEFAULT_CHANNEL_MULT = {64: (1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4), 512: (1, 1, 2, 2, 4, 4)}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _get(cfg, key, default):
  if isinstance(cfg, Mapping):
    return cfg.get(key, default)
  return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def parse_channel_mult(value, image_size: int, flag: str = "channel_mult") -> Tuple[float, ...]:
  if value in (None, "", ()):
    if image_size not in DEFAULT_CHANNEL_MULT:
      raise ValueError(
        f"{flag} is empty and there is no default for image_size={image_size} "
        f"(defaults exist for {sorted(DEFAULT_CHANNEL_MULT)}); set {flag}"
      )
    return DEFAULT_CHANNEL_MULT[image_size]
  if isinstance(value, str):
    try:
      return tuple(float(v) if "." in v else int(v) for v in value.split(",") if v.strip())
    except ValueError:
      raise ValueError(f"{flag}={value!r}: expected comma-separated numbers") from None
  return tuple(value)


def attention_ds(resolutions, image_size: int, channel_mult, flag: str) -> Tuple[int, ...]:
  """Attention resolutions in pixels → downsampling factors, checked to be reached."""
  if isinstance(resolutions, str):
    resolutions = [int(r) for r in resolutions.split(",") if r.strip()]
  reached = {image_size // 2**level for level in range(len(channel_mult))}
  out = []
  for res in resolutions:
    if res not in reached:
      raise ValueError(
        f"{flag}: resolution {res} is never reached by a {image_size}px network "
        f"with {len(channel_mult)} levels (feature maps: {sorted(reached)})"
      )
    out.append(image_size // res)
  return tuple(out)


def _check_channels(
  model_channels, channel_mult, num_heads, num_head_channels, attn_ds, flag_prefix=""
):
  """Every level's width must split into 32 groups; attention levels (and the middle
  block, at the last level) into heads."""
  for level, mult in enumerate(channel_mult):
    ch = int(mult * model_channels)
    if ch % 32:
      raise ValueError(
        f"{flag_prefix}num_channels={model_channels} x channel_mult {mult} = {ch} "
        "channels is not divisible by the 32 GroupNorm groups"
      )
    if 2**level not in attn_ds and level != len(channel_mult) - 1:
      continue
    if num_head_channels != -1:
      if ch % num_head_channels:
        raise ValueError(
          f"{flag_prefix}num_head_channels={num_head_channels} does not divide {ch} channels"
        )
    elif num_heads < 1 or ch % num_heads:
      raise ValueError(f"num_heads={num_heads} does not divide {ch} channels")


def _dtype(cfg):
  name = _get(cfg, "dtype", "float32")
  if _get(cfg, "use_fp16", False):
    name = "float16"
  if name not in DTYPES:
    raise ValueError(f"dtype {name!r}: expected one of {sorted(DTYPES)}")
  return DTYPES[name]


def _remat_policy(cfg) -> str:
  """The `remat_policy` flag ("" = the default policy when use_checkpoint, else none)."""
  policy = str(_get(cfg, "remat_policy", "") or "")
  if policy and policy not in REMAT_POLICIES:
    raise ValueError(f"remat_policy={policy!r}: expected one of {sorted(REMAT_POLICIES)}")
  return policy


def unet_kwargs(cfg) -> Dict[str, Any]:
  """UNet constructor arguments from reference-named flags."""
  image_size = int(_get(cfg, "image_size", 64))
  channels = int(_get(cfg, "num_channels", 128))
  mult = parse_channel_mult(_get(cfg, "channel_mult", ""), image_size)
  heads = int(_get(cfg, "num_heads", 4))
  head_channels = int(_get(cfg, "num_head_channels", -1))
  heads_up = int(_get(cfg, "num_heads_upsample", -1))
  attn = attention_ds(
    _get(cfg, "attention_resolutions", "16,8"), image_size, mult, "attention_resolutions"
  )
  _check_channels(channels, mult, heads, head_channels, attn)
  if head_channels == -1 and heads_up != -1:
    _check_channels(channels, mult, heads_up, -1, attn)
  in_channels = int(_get(cfg, "in_channels", 3))
  learn_sigma = bool(_get(cfg, "learn_sigma", False))
  out_channels = int(
    _get(cfg, "out_channels", 0) or (2 * in_channels if learn_sigma else in_channels)
  )
  class_cond = bool(_get(cfg, "class_cond", False))
  dropout = float(_get(cfg, "dropout", 0.0))
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f"dropout={dropout} must lie in [0, 1)")
  return dict(
    image_size=image_size,
    in_channels=in_channels,
    model_channels=channels,
    out_channels=out_channels,
    num_res_blocks=int(_get(cfg, "num_res_blocks", 2)),
    attention_resolutions=attn,
    channel_mult=mult,
    dropout=dropout,
    num_classes=int(_get(cfg, "num_classes", 1000)) if class_cond else None,
    use_checkpoint=bool(_get(cfg, "use_checkpoint", False)),
    remat_policy=_remat_policy(cfg),
    num_heads=heads,
    num_head_channels=head_channels,
    num_heads_upsample=heads_up,
    use_scale_shift_norm=bool(_get(cfg, "use_scale_shift_norm", True)),
    resblock_updown=bool(_get(cfg, "resblock_updown", False)),
    use_new_attention_order=bool(_get(cfg, "use_new_attention_order", False)),
    dtype=_dtype(cfg),
  )


def create_model(cfg) -> UNet:
  """The diffusion UNet (a SuperResUNet when cfg.small_size > 0 or cfg.large_size is set)."""
  if _get(cfg, "large_size", 0) or _get(cfg, "small_size", 0):
    return create_sr_model(cfg)
  return UNet(**unet_kwargs(cfg))


def create_sr_model(cfg) -> SuperResUNet:
  """The super-resolution UNet; image size from large_size (or image_size)."""
  flags = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
  size = int(flags.get("large_size") or flags.get("image_size"))
  flags["image_size"] = size
  if flags.get("channel_mult") in (None, "", ()):
    if size not in SR_DEFAULT_CHANNEL_MULT:
      raise ValueError(
        f"channel_mult is empty and there is no super-resolution default for "
        f"large_size={size} (defaults: {sorted(SR_DEFAULT_CHANNEL_MULT)})"
      )
    flags["channel_mult"] = SR_DEFAULT_CHANNEL_MULT[size]
  small = int(flags.get("small_size") or 0)
  if small <= 0 or size % small:
    raise ValueError(f"small_size={small} must be a positive divisor of the image size {size}")
  kwargs = unet_kwargs(flags)
  image_channels = kwargs["in_channels"]
  kwargs["in_channels"] = 2 * image_channels  # x_t and the upsampled low-res image
  learn_sigma = bool(flags.get("learn_sigma", False))
  kwargs["out_channels"] = int(
    flags.get("out_channels") or (2 * image_channels if learn_sigma else image_channels)
  )
  return SuperResUNet(**kwargs)


def create_classifier(cfg) -> EncoderClassifier:
  """The noisy-image classifier from classifier_* flags (64 channels per attention head)."""
  image_size = int(_get(cfg, "image_size", 64))
  width = int(_get(cfg, "classifier_width", 128))
  mult = parse_channel_mult(_get(cfg, "channel_mult", ""), image_size)
  attn = attention_ds(
    _get(cfg, "classifier_attention_resolutions", "32,16,8"),
    image_size,
    mult,
    "classifier_attention_resolutions",
  )
  _check_channels(width, mult, 1, 64, attn, "classifier_")
  pool = _get(cfg, "classifier_pool", "attention")
  if pool not in POOLS:
    raise ValueError(f"unknown classifier_pool {pool!r}; expected one of {POOLS}")
  dtype = _dtype(cfg)
  if _get(cfg, "classifier_use_fp16", False):
    dtype = jnp.float16
  return EncoderClassifier(
    image_size=image_size,
    in_channels=int(_get(cfg, "in_channels", 3)),
    model_channels=width,
    out_channels=int(_get(cfg, "num_classes", 1000)),
    num_res_blocks=int(_get(cfg, "classifier_depth", 2)),
    attention_resolutions=attn,
    channel_mult=mult,
    num_head_channels=64,
    use_scale_shift_norm=bool(_get(cfg, "classifier_use_scale_shift_norm", True)),
    resblock_updown=bool(_get(cfg, "classifier_resblock_updown", True)),
    use_checkpoint=bool(_get(cfg, "use_checkpoint", False)),
    remat_policy=_remat_policy(cfg),
    pool=pool,
    dtype=dtype,
  )


# The released checkpoints' flags (adm_jax.models.paper holds the paper's table).
RELEASED = paper.NETWORKS


def released_config(name: str) -> Dict[str, Any]:
  """Flags of a released checkpoint, e.g. '256x256_diffusion' or '64x64_classifier'."""
  name = name[:-3] if name.endswith(".pt") else name
  if name not in RELEASED:
    raise ValueError(f"unknown released checkpoint {name!r}; known: {sorted(RELEASED)}")
  return dict(RELEASED[name])


def released_kind(name: str) -> str:
  name = name[:-3] if name.endswith(".pt") else name
  if "classifier" in name:
    return "classifier"
  return "sr" if "upsampler" in name else "unet"
