"""ADM networks in Flax Linen (NHWC): UNet, super-resolution UNet, noisy-image classifier.

Build them from the reference's flag names (`create_model`, `create_sr_model`,
`create_classifier`) or from a released checkpoint's name (`released_config`,
`create_released`); convert reference weights with `adm_jax.convert`.
"""
from adm_jax.models.classifier import POOLS, EncoderClassifier
from adm_jax.models.config import (
    DEFAULT_CHANNEL_MULT, RELEASED, RELEASED_CLASSIFIER_SCALE, SR_DEFAULT_CHANNEL_MULT,
    create_classifier, create_model, create_released, create_sr_model, released_config,
    released_kind)
from adm_jax.models.layers import (
    AttentionBlock, AttentionPool, Downsample, GroupNorm, ResBlock, Upsample,
    timestep_embedding)
from adm_jax.models.unet import SuperResUNet, UNet, UNetTrunk, upsample_bilinear

__all__ = [
    "POOLS", "EncoderClassifier", "DEFAULT_CHANNEL_MULT", "RELEASED",
    "RELEASED_CLASSIFIER_SCALE", "SR_DEFAULT_CHANNEL_MULT", "create_classifier", "create_model",
    "create_released", "create_sr_model", "released_config", "released_kind", "AttentionBlock",
    "AttentionPool", "Downsample", "GroupNorm", "ResBlock", "Upsample", "timestep_embedding",
    "SuperResUNet", "UNet", "UNetTrunk", "upsample_bilinear",
]
