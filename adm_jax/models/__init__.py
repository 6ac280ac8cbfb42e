"""ADM networks in Flax Linen (NHWC): UNet, super-resolution UNet, noisy-image classifier."""

from adm_jax.models.config import DEFAULT_CHANNEL_MULT  # noqa: F401
from adm_jax.models.config import RELEASED  # noqa: F401
from adm_jax.models.config import create_classifier  # noqa: F401
from adm_jax.models.config import create_model  # noqa: F401
from adm_jax.models.config import create_sr_model  # noqa: F401
from adm_jax.models.config import released_config  # noqa: F401
from adm_jax.models.config import released_kind  # noqa: F401
from adm_jax.models.layers import GroupNorm  # noqa: F401
from adm_jax.models.layers import timestep_embedding  # noqa: F401
from adm_jax.models.unet import POOLS  # noqa: F401
from adm_jax.models.unet import REMAT_POLICIES  # noqa: F401
from adm_jax.models.unet import EncoderClassifier  # noqa: F401
from adm_jax.models.unet import SuperResUNet  # noqa: F401
from adm_jax.models.unet import UNet  # noqa: F401
