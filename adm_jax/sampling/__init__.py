"""The sampling library: jitted sampling functions and image grids (below training and the CLI)."""
from adm_jax.sampling.images import image_grid, save_grid, to_uint8  # noqa: F401
from adm_jax.sampling.sample_fn import (  # noqa: F401
    RESPACED_SAMPLERS, SAMPLERS, SOLVERS, TIME_SCHEDULES, SamplerSpec, make_sample_fn)
