"""Network constructors from the reference's flag names, their validation, released flags.

`create_model(cfg)`, `create_sr_model(cfg)` and `create_classifier(cfg)` take an
ml_collections.ConfigDict or a mapping. Missing flags take the reference's defaults
(guided_diffusion.script_util); flags they do not use are ignored, so a whole config
section (or a fixture's config.json section) can be passed. Impossible settings raise
a ValueError that names the flag.
"""
from typing import Any, Dict, Mapping, Tuple

import jax.numpy as jnp

from adm_jax.models.classifier import POOLS, EncoderClassifier
from adm_jax.models.unet import SuperResUNet, UNet

DEFAULT_CHANNEL_MULT = {
    32: (1, 2, 2, 2), 64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4),
    512: (0.5, 1, 1, 2, 2, 4, 4),
}
# sr_create_model's own defaults, keyed by large_size.
SR_DEFAULT_CHANNEL_MULT = {64: (1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4), 512: (1, 1, 2, 2, 4, 4)}
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
GROUPS = 32
CLASSIFIER_HEAD_CHANNELS = 64

UNET_DEFAULTS = dict(
    image_size=64, in_channels=3, num_channels=128, num_res_blocks=2, channel_mult="",
    attention_resolutions="16,8", num_heads=4, num_head_channels=-1, num_heads_upsample=-1,
    dropout=0.0, class_cond=False, num_classes=1000, use_checkpoint=False,
    use_scale_shift_norm=True, resblock_updown=False, use_new_attention_order=False,
    learn_sigma=False, out_channels=0, use_fp16=False, dtype="float32")
SR_DEFAULTS = dict(UNET_DEFAULTS, large_size=256, small_size=64)
CLASSIFIER_DEFAULTS = dict(
    image_size=64, in_channels=3, classifier_width=128, classifier_depth=2,
    classifier_attention_resolutions="32,16,8", classifier_use_scale_shift_norm=True,
    classifier_resblock_updown=True, classifier_pool="attention", channel_mult="",
    num_classes=1000, use_checkpoint=False, classifier_use_fp16=False, dtype="float32")


def _with_defaults(cfg, defaults: Mapping[str, Any]) -> Dict[str, Any]:
  """A plain dict of the flags in `defaults`, taken from cfg where it sets them."""
  given = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  return {k: given.get(k, v) for k, v in defaults.items()}


def parse_channel_mult(value, image_size: int, flag: str = "channel_mult",
                       defaults=DEFAULT_CHANNEL_MULT) -> Tuple[float, ...]:
  """'1,2,2' / a sequence / '' (the default for image_size) -> a tuple of multipliers."""
  if value in (None, "", ()):
    if image_size not in defaults:
      raise ValueError(f"{flag} is empty and there is no default for image_size={image_size} "
                       f"(defaults exist for {sorted(defaults)}); set {flag}")
    return tuple(defaults[image_size])
  items = value.split(",") if isinstance(value, str) else list(value)
  try:
    mult = tuple(float(m) if "." in str(m) else int(m) for m in items if str(m).strip())
  except ValueError:
    raise ValueError(f"{flag}={value!r}: expected comma-separated numbers") from None
  if not mult or any(m <= 0 for m in mult):
    raise ValueError(f"{flag}={value!r}: expected one or more positive multipliers")
  return mult


def parse_attention_resolutions(value, image_size: int, channel_mult,
                                flag: str) -> Tuple[int, ...]:
  """Resolutions in pixels ('32,16,8') -> downsampling factors, each one reached."""
  if isinstance(value, str):
    try:
      value = [int(r) for r in value.split(",") if r.strip()]
    except ValueError:
      raise ValueError(f"{flag}={value!r}: expected comma-separated integers") from None
  reached = [image_size // 2 ** level for level in range(len(channel_mult))]
  factors = []
  for res in value:
    if int(res) not in reached:
      raise ValueError(f"{flag}: resolution {res} is never reached by a {image_size}px "
                       f"network with {len(channel_mult)} levels (feature maps: {reached})")
    factors.append(image_size // int(res))
  return tuple(factors)


def _check_geometry(image_size: int, width: int, channel_mult, width_flag: str) -> None:
  levels = len(channel_mult)
  if image_size < 1 or image_size % 2 ** (levels - 1):
    raise ValueError(f"image_size={image_size} must be divisible by 2^{levels - 1} for "
                     f"channel_mult with {levels} levels")
  for mult in channel_mult:
    channels = int(mult * width)
    if channels < GROUPS or channels % GROUPS:
      raise ValueError(f"{width_flag}={width} x channel_mult {mult} = {channels} channels: "
                       f"not divisible by the {GROUPS} GroupNorm groups")


def _check_heads(width: int, channel_mult, attention_ds, heads: int, head_channels: int,
                 heads_flag: str, head_channels_flag: str, include_middle: bool = True) -> None:
  """Every attention block's width must split into its heads."""
  last = len(channel_mult) - 1
  for level, mult in enumerate(channel_mult):
    if 2 ** level not in attention_ds and not (include_middle and level == last):
      continue
    channels = int(mult * width)
    if head_channels != -1:
      if head_channels < 1 or channels % head_channels:
        raise ValueError(f"{head_channels_flag}={head_channels} does not divide the "
                         f"{channels} channels of an attention block")
    elif heads < 1 or channels % heads:
      raise ValueError(f"{heads_flag}={heads} does not divide the {channels} channels of an "
                       "attention block")


def _compute_dtype(flags: Mapping[str, Any], fp16_flag: str):
  if flags.get(fp16_flag):
    return jnp.float16
  name = flags.get("dtype") or "float32"
  name = name if isinstance(name, str) else jnp.dtype(name).name
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"dtype={name!r}: expected one of {sorted(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[name]


def _check_common(flags: Mapping[str, Any], depth_flag: str) -> None:
  if int(flags[depth_flag]) < 1:
    raise ValueError(f"{depth_flag}={flags[depth_flag]} must be at least 1")
  if not 0.0 <= float(flags.get("dropout", 0.0)) < 1.0:
    raise ValueError(f"dropout={flags['dropout']} must lie in [0, 1)")
  if int(flags["num_classes"]) < 1:
    raise ValueError(f"num_classes={flags['num_classes']} must be positive")


def unet_kwargs(cfg, channel_mult_defaults=DEFAULT_CHANNEL_MULT) -> Dict[str, Any]:
  """UNet constructor arguments from reference-named flags (validated)."""
  flags = _with_defaults(cfg, UNET_DEFAULTS)
  _check_common(flags, "num_res_blocks")
  size, width = int(flags["image_size"]), int(flags["num_channels"])
  mult = parse_channel_mult(flags["channel_mult"], size, defaults=channel_mult_defaults)
  _check_geometry(size, width, mult, "num_channels")
  attention_ds = parse_attention_resolutions(flags["attention_resolutions"], size, mult,
                                             "attention_resolutions")
  heads, head_channels = int(flags["num_heads"]), int(flags["num_head_channels"])
  heads_up = int(flags["num_heads_upsample"])
  _check_heads(width, mult, attention_ds, heads, head_channels, "num_heads",
               "num_head_channels")
  if heads_up != -1:
    _check_heads(width, mult, attention_ds, heads_up, head_channels, "num_heads_upsample",
                 "num_head_channels", include_middle=False)
  in_channels = int(flags["in_channels"])
  out_channels = int(flags["out_channels"]) or in_channels * (2 if flags["learn_sigma"] else 1)
  return dict(
      image_size=size, in_channels=in_channels, model_channels=width,
      out_channels=out_channels, num_res_blocks=int(flags["num_res_blocks"]),
      attention_resolutions=attention_ds, channel_mult=mult, dropout=float(flags["dropout"]),
      num_classes=int(flags["num_classes"]) if flags["class_cond"] else None,
      use_checkpoint=bool(flags["use_checkpoint"]), num_heads=heads,
      num_head_channels=head_channels, num_heads_upsample=heads_up,
      use_scale_shift_norm=bool(flags["use_scale_shift_norm"]),
      resblock_updown=bool(flags["resblock_updown"]),
      use_new_attention_order=bool(flags["use_new_attention_order"]),
      dtype=_compute_dtype(flags, "use_fp16"))


def create_model(cfg) -> UNet:
  """The diffusion UNet; a SuperResUNet when cfg sets large_size or small_size > 0."""
  get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
  if get("large_size", 0) or get("small_size", 0):
    return create_sr_model(cfg)
  return UNet(**unet_kwargs(cfg))


def create_sr_model(cfg) -> SuperResUNet:
  """The super-resolution UNet: image size `large_size` (else `image_size`), low-res
  inputs of `small_size`; x_t and the upsampled low-res image are concatenated."""
  given = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  flags = _with_defaults(given, SR_DEFAULTS)
  size = int(given.get("large_size") or given.get("image_size") or flags["large_size"])
  small = int(flags["small_size"])
  if not 0 < small <= size:
    raise ValueError(f"small_size={small} must lie in [1, large_size={size}]")
  flags["image_size"] = size
  kwargs = unet_kwargs(flags, channel_mult_defaults=SR_DEFAULT_CHANNEL_MULT)
  image_channels = kwargs["in_channels"]
  kwargs["in_channels"] = 2 * image_channels
  kwargs["out_channels"] = int(flags["out_channels"]) or image_channels * (
      2 if flags["learn_sigma"] else 1)
  return SuperResUNet(**kwargs)


def create_classifier(cfg) -> EncoderClassifier:
  """The noisy-image classifier from classifier_* flags (64 channels per attention head)."""
  flags = _with_defaults(cfg, CLASSIFIER_DEFAULTS)
  _check_common(flags, "classifier_depth")
  size, width = int(flags["image_size"]), int(flags["classifier_width"])
  mult = parse_channel_mult(flags["channel_mult"], size)
  _check_geometry(size, width, mult, "classifier_width")
  attention_ds = parse_attention_resolutions(flags["classifier_attention_resolutions"], size,
                                             mult, "classifier_attention_resolutions")
  pool = flags["classifier_pool"]
  if pool not in POOLS:
    raise ValueError(f"unknown classifier_pool {pool!r}; expected one of {POOLS}")
  # Attention blocks, the middle block and the attention pool (on the deepest features,
  # like the middle block) all use 64 channels per head.
  for level, m in enumerate(mult):
    channels = int(m * width)
    if (2 ** level in attention_ds or level == len(mult) - 1) and (
        channels % CLASSIFIER_HEAD_CHANNELS):
      raise ValueError(
          f"classifier_width={width} x channel_mult {m} = {channels} channels: an attention "
          f"level needs a multiple of {CLASSIFIER_HEAD_CHANNELS} (channels per head)")
  return EncoderClassifier(
      image_size=size, in_channels=int(flags["in_channels"]), model_channels=width,
      out_channels=int(flags["num_classes"]), num_res_blocks=int(flags["classifier_depth"]),
      attention_resolutions=attention_ds, channel_mult=mult,
      num_head_channels=CLASSIFIER_HEAD_CHANNELS,
      use_scale_shift_norm=bool(flags["classifier_use_scale_shift_norm"]),
      resblock_updown=bool(flags["classifier_resblock_updown"]),
      use_checkpoint=bool(flags["use_checkpoint"]), pool=pool,
      dtype=_compute_dtype(flags, "classifier_use_fp16"))


# The released checkpoints' flags (guided-diffusion README, commit 22e0df8). use_fp16 is
# left out: choose the compute dtype with the `dtype` flag.
_IMAGENET_BIG = dict(num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
                     num_head_channels=64, learn_sigma=True, use_scale_shift_norm=True,
                     resblock_updown=True, diffusion_steps=1000, noise_schedule="linear")
_LSUN = dict(_IMAGENET_BIG, image_size=256, class_cond=False, dropout=0.1)
_UPSAMPLER = dict(num_channels=192, num_res_blocks=2, class_cond=True, learn_sigma=True,
                  use_scale_shift_norm=True, resblock_updown=True, diffusion_steps=1000,
                  noise_schedule="linear")
_CLASSIFIER = dict(classifier_width=128, classifier_depth=2,
                   classifier_attention_resolutions="32,16,8", classifier_pool="attention",
                   classifier_resblock_updown=True, classifier_use_scale_shift_norm=True)

RELEASED = {
    "64x64_diffusion": dict(
        image_size=64, num_channels=192, num_res_blocks=3, attention_resolutions="32,16,8",
        num_head_channels=64, dropout=0.1, class_cond=True, learn_sigma=True,
        use_new_attention_order=True, use_scale_shift_norm=True, resblock_updown=True,
        diffusion_steps=1000, noise_schedule="cosine"),
    "128x128_diffusion": dict(
        image_size=128, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
        num_heads=4, class_cond=True, learn_sigma=True, use_scale_shift_norm=True,
        resblock_updown=True, diffusion_steps=1000, noise_schedule="linear"),
    "256x256_diffusion": dict(_IMAGENET_BIG, image_size=256, class_cond=True),
    "256x256_diffusion_uncond": dict(_IMAGENET_BIG, image_size=256, class_cond=False),
    "512x512_diffusion": dict(_IMAGENET_BIG, image_size=512, class_cond=True),
    "lsun_bedroom": dict(_LSUN),
    "lsun_cat": dict(_LSUN),
    "lsun_horse": dict(_LSUN),
    "lsun_horse_nodropout": dict(_LSUN, dropout=0.0),
    "64_256_upsampler": dict(_UPSAMPLER, large_size=256, small_size=64,
                             attention_resolutions="32,16,8", num_heads=4),
    "128_512_upsampler": dict(_UPSAMPLER, large_size=512, small_size=128,
                              attention_resolutions="32,16", num_head_channels=64),
    "64x64_classifier": dict(_CLASSIFIER, image_size=64, classifier_depth=4),
    "128x128_classifier": dict(_CLASSIFIER, image_size=128),
    "256x256_classifier": dict(_CLASSIFIER, image_size=256),
    "512x512_classifier": dict(_CLASSIFIER, image_size=512),
}

# classifier_scale of the reference's guided sampling commands, per diffusion model.
RELEASED_CLASSIFIER_SCALE = {
    "64x64_diffusion": 1.0, "128x128_diffusion": 0.5, "256x256_diffusion": 1.0,
    "256x256_diffusion_uncond": 10.0, "512x512_diffusion": 4.0,
}


def _released_name(name: str) -> str:
  name = name[:-3] if name.endswith(".pt") else name
  if name not in RELEASED:
    raise ValueError(f"unknown released checkpoint {name!r}; known: {sorted(RELEASED)}")
  return name


def released_config(name: str) -> Dict[str, Any]:
  """Flags of a released checkpoint, e.g. '256x256_diffusion' or '64x64_classifier.pt'."""
  return dict(RELEASED[_released_name(name)])


def released_kind(name: str) -> str:
  """'unet', 'sr' or 'classifier': which constructor a released checkpoint needs."""
  name = _released_name(name)
  if name.endswith("classifier"):
    return "classifier"
  return "sr" if name.endswith("upsampler") else "unet"


def create_released(name: str, **overrides):
  """The network of a released checkpoint (flags overridable, e.g. dtype='bfloat16')."""
  flags = dict(released_config(name), **overrides)
  kind = released_kind(name)
  if kind == "classifier":
    return create_classifier(flags)
  return create_sr_model(flags) if kind == "sr" else create_model(flags)
