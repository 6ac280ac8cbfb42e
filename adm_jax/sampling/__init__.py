"""The sampling library: jitted sampling functions and image grids (below training and the CLI)."""
from adm_jax.sampling.images import image_grid, save_grid, to_uint8  # noqa: F401
from adm_jax.sampling.sample_fn import SAMPLERS, SamplerSpec, make_sample_fn  # noqa: F401
