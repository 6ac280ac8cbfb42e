"""ADM networks in Flax Linen (NHWC): UNet, super-resolution UNet, noisy-image classifier."""
from adm_jax.models.config import (  # noqa: F401
    DEFAULT_CHANNEL_MULT, RELEASED, create_classifier, create_model, create_sr_model,
    released_config, released_kind)
from adm_jax.models.layers import GroupNorm, timestep_embedding  # noqa: F401
from adm_jax.models.unet import (  # noqa: F401
    POOLS, REMAT_POLICIES, EncoderClassifier, SuperResUNet, UNet)
