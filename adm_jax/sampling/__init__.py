"""The sampling library: jitted sampling functions and image grids (below training and the CLI)."""

from adm_jax.sampling.images import image_grid  # noqa: F401
from adm_jax.sampling.images import save_grid  # noqa: F401
from adm_jax.sampling.images import to_uint8  # noqa: F401
from adm_jax.sampling.sample_fn import RESPACED_SAMPLERS  # noqa: F401
from adm_jax.sampling.sample_fn import SAMPLERS  # noqa: F401
from adm_jax.sampling.sample_fn import SOLVERS  # noqa: F401
from adm_jax.sampling.sample_fn import TIME_SCHEDULES  # noqa: F401
from adm_jax.sampling.sample_fn import SamplerSpec  # noqa: F401
from adm_jax.sampling.sample_fn import make_sample_fn  # noqa: F401
