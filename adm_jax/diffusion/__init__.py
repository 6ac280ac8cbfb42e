"""Improved-DDPM diffusion maths on arrays (no Flax): schedules, process, losses, samplers.

  from adm_jax import diffusion
  gd = diffusion.create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="cosine")
  losses = gd.training_losses(model_fn, x0, t, noise)          # {'loss', 'mse', 'vb'} [B]
  fast = diffusion.create_gaussian_diffusion(..., timestep_respacing="ddim25")
  x0 = diffusion.ddim_sample_loop(fast, model_fn, (8, 32, 32, 3), jax.random.key(0))
"""
from adm_jax.diffusion.gaussian import (  # noqa: F401
    EPSILON, START_X, PREVIOUS_X, FIXED_SMALL, FIXED_LARGE, LEARNED, LEARNED_RANGE,
    MSE, RESCALED_MSE, KL, RESCALED_KL, GaussianDiffusion, create_gaussian_diffusion,
    extract, mean_flat, respaced)
from adm_jax.diffusion.losses import (  # noqa: F401
    approx_standard_normal_cdf, discretized_gaussian_log_likelihood, normal_kl, prior_bpd,
    training_losses, vb_terms_bpd)
from adm_jax.diffusion.nll import calc_bpd_loop  # noqa: F401
from adm_jax.diffusion.samplers import (  # noqa: F401
    ddim_reverse_sample, ddim_reverse_sample_loop, ddim_sample, ddim_sample_loop, p_sample,
    p_sample_loop)
from adm_jax.diffusion.schedules import (  # noqa: F401
    NOISE_SCHEDULES, betas_from_alpha_bar, get_named_beta_schedule, respace_betas,
    space_timesteps)
from adm_jax.diffusion.solvers import (  # noqa: F401
    SOLVERS, TIME_SCHEDULES, UNIPC_VARIANT, UNIPC_VARIANTS, SolverPlan, dynamic_threshold,
    run_solver_plan, solver_plan, solver_sample_loop, unipc_default_order)
from adm_jax.diffusion.time_grids import DiscreteTimeSchedule, time_grid  # noqa: F401
from adm_jax.diffusion.timestep_sampling import (  # noqa: F401
    LossHistory, ScheduleSampler, create_named_schedule_sampler)
