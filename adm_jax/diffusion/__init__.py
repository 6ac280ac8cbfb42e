"""Improved-DDPM diffusion maths on arrays (no Flax): schedules, process, losses, samplers.

from adm_jax import diffusion
gd = diffusion.create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="cosine")
losses = gd.training_losses(model_fn, x0, t, noise)          # {'loss', 'mse', 'vb'} [B]
fast = diffusion.create_gaussian_diffusion(..., timestep_respacing="ddim25")
x0 = diffusion.ddim_sample_loop(fast, model_fn, (8, 32, 32, 3), jax.random.key(0))
"""

from adm_jax.diffusion.gaussian import EPSILON  # noqa: F401
from adm_jax.diffusion.gaussian import FIXED_LARGE  # noqa: F401
from adm_jax.diffusion.gaussian import FIXED_SMALL  # noqa: F401
from adm_jax.diffusion.gaussian import KL  # noqa: F401
from adm_jax.diffusion.gaussian import LEARNED  # noqa: F401
from adm_jax.diffusion.gaussian import LEARNED_RANGE  # noqa: F401
from adm_jax.diffusion.gaussian import MSE  # noqa: F401
from adm_jax.diffusion.gaussian import PREVIOUS_X  # noqa: F401
from adm_jax.diffusion.gaussian import RESCALED_KL  # noqa: F401
from adm_jax.diffusion.gaussian import RESCALED_MSE  # noqa: F401
from adm_jax.diffusion.gaussian import START_X  # noqa: F401
from adm_jax.diffusion.gaussian import GaussianDiffusion  # noqa: F401
from adm_jax.diffusion.gaussian import create_gaussian_diffusion  # noqa: F401
from adm_jax.diffusion.gaussian import extract  # noqa: F401
from adm_jax.diffusion.gaussian import mean_flat  # noqa: F401
from adm_jax.diffusion.gaussian import respaced  # noqa: F401
from adm_jax.diffusion.losses import approx_standard_normal_cdf  # noqa: F401
from adm_jax.diffusion.losses import discretized_gaussian_log_likelihood  # noqa: F401
from adm_jax.diffusion.losses import normal_kl  # noqa: F401
from adm_jax.diffusion.losses import prior_bpd  # noqa: F401
from adm_jax.diffusion.losses import training_losses  # noqa: F401
from adm_jax.diffusion.losses import vb_terms_bpd  # noqa: F401
from adm_jax.diffusion.nll import calc_bpd_loop  # noqa: F401
from adm_jax.diffusion.samplers import ddim_reverse_sample  # noqa: F401
from adm_jax.diffusion.samplers import ddim_reverse_sample_loop  # noqa: F401
from adm_jax.diffusion.samplers import ddim_sample  # noqa: F401
from adm_jax.diffusion.samplers import ddim_sample_loop  # noqa: F401
from adm_jax.diffusion.samplers import p_sample  # noqa: F401
from adm_jax.diffusion.samplers import p_sample_loop  # noqa: F401
from adm_jax.diffusion.schedules import NOISE_SCHEDULES  # noqa: F401
from adm_jax.diffusion.schedules import betas_from_alpha_bar  # noqa: F401
from adm_jax.diffusion.schedules import get_named_beta_schedule  # noqa: F401
from adm_jax.diffusion.schedules import respace_betas  # noqa: F401
from adm_jax.diffusion.schedules import space_timesteps  # noqa: F401
from adm_jax.diffusion.solvers import SOLVERS  # noqa: F401
from adm_jax.diffusion.solvers import TIME_SCHEDULES  # noqa: F401
from adm_jax.diffusion.solvers import UNIPC_VARIANT  # noqa: F401
from adm_jax.diffusion.solvers import UNIPC_VARIANTS  # noqa: F401
from adm_jax.diffusion.solvers import SolverPlan  # noqa: F401
from adm_jax.diffusion.solvers import dynamic_threshold  # noqa: F401
from adm_jax.diffusion.solvers import run_solver_plan  # noqa: F401
from adm_jax.diffusion.solvers import solver_plan  # noqa: F401
from adm_jax.diffusion.solvers import solver_sample_loop  # noqa: F401
from adm_jax.diffusion.solvers import unipc_default_order  # noqa: F401
from adm_jax.diffusion.time_grids import DiscreteTimeSchedule  # noqa: F401
from adm_jax.diffusion.time_grids import time_grid  # noqa: F401
from adm_jax.diffusion.timestep_sampling import LossHistory  # noqa: F401
from adm_jax.diffusion.timestep_sampling import ScheduleSampler  # noqa: F401
from adm_jax.diffusion.timestep_sampling import create_named_schedule_sampler  # noqa: F401
