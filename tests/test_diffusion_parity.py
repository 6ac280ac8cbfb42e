"""Diffusion maths against the PyTorch reference fixtures (stored network outputs stand in for
networks)."""

from conftest import nchw_to_nhwc
from conftest import nhwc_to_nchw
import jax.numpy as jnp
import numpy as np
import pytest

from adm_jax import diffusion

SCHEDULE_KEYS = (
  "betas",
  "alphas_cumprod",
  "alphas_cumprod_prev",
  "posterior_variance",
  "posterior_log_variance_clipped",
  "posterior_mean_coef1",
  "posterior_mean_coef2",
)


def base_process(fx, **overrides):
  """The set's own un-respaced diffusion (the one losses and p_mean_variance use)."""
  m = fx.config["model"]
  kw = dict(
    steps=m["diffusion_steps"],
    learn_sigma=m["learn_sigma"],
    sigma_small=False,
    noise_schedule=m["noise_schedule"],
    use_kl=m["use_kl"],
    predict_xstart=m["predict_xstart"],
    rescale_timesteps=m["rescale_timesteps"],
    rescale_learned_sigmas=m["rescale_learned_sigmas"],
    timestep_respacing="",
  )
  kw.update(overrides)
  return diffusion.create_gaussian_diffusion(**kw)


def sampler_process(fx):
  return base_process(fx, timestep_respacing=fx.config["fixture"]["respacing"])


def constant_model(fx, key, expected_t=None):
  """A model_fn returning a stored network output; checks the timesteps it is called with."""
  out = jnp.asarray(nchw_to_nhwc(fx[key]))

  def model_fn(x, t, **kwargs):
    assert x.shape == out.shape[:-1] + (3,)
    if expected_t is not None:
      np.testing.assert_array_equal(np.asarray(t), expected_t)
    return out

  return model_fn


def stored_cond_fn(fx, key, expected_t):
  grad = jnp.asarray(nchw_to_nhwc(fx[key]))

  def cond_fn(x, t, **kwargs):
    np.testing.assert_array_equal(np.asarray(t), expected_t)
    assert "y" in kwargs or not fx.config["model"]["class_cond"]
    return grad

  return cond_fn


def model_kwargs(fx):
  return {"y": jnp.asarray(fx["in_y"], jnp.int32)}


@pytest.mark.parametrize("name", SCHEDULE_KEYS)
def test_schedules(fx, name):
  gd = base_process(fx)
  np.testing.assert_allclose(getattr(gd, name), fx[f"sched_{name}"], rtol=1e-12, atol=0)
  sp = sampler_process(fx)
  np.testing.assert_allclose(getattr(sp, name), fx[f"sp_sched_{name}"], rtol=1e-12, atol=0)


def test_respaced_timestep_map(fx):
  sp = sampler_process(fx)
  np.testing.assert_array_equal(sp.timestep_map, fx["sp_timestep_map"])
  bpd = base_process(fx, timestep_respacing=fx.config["fixture"]["bpd_respacing"])
  np.testing.assert_array_equal(bpd.timestep_map, fx["bpd_timestep_map"])


def test_q_sample(fx):
  gd = base_process(fx)
  x_t = gd.q_sample(
    jnp.asarray(nchw_to_nhwc(fx["in_x_start"])),
    jnp.asarray(fx["in_t"]),
    jnp.asarray(nchw_to_nhwc(fx["in_noise"])),
  )
  fx.check("out_q_sample", nhwc_to_nchw(x_t))


def test_p_mean_variance(fx):
  gd = base_process(fx)
  out = gd.p_mean_variance(
    constant_model(fx, "out_model", fx["in_t"]),
    jnp.asarray(nchw_to_nhwc(fx["out_q_sample"])),
    jnp.asarray(fx["in_t"]),
    clip_denoised=True,
    model_kwargs=model_kwargs(fx),
  )
  for name in ("mean", "variance", "log_variance", "pred_xstart"):
    fx.check(f"pmv_{name}", nhwc_to_nchw(out[name]))


def _losses(fx, gd):
  return gd.training_losses(
    constant_model(fx, "out_model", fx["in_t"]),
    jnp.asarray(nchw_to_nhwc(fx["in_x_start"])),
    jnp.asarray(fx["in_t"]),
    jnp.asarray(nchw_to_nhwc(fx["in_noise"])),
    model_kwargs=model_kwargs(fx),
  )


def test_training_losses_own_type(fx):
  terms = _losses(fx, base_process(fx))
  keys = [k[len("loss_") :] for k in fx.ref if k.startswith("loss_")]
  assert keys and set(keys) == set(terms), (keys, list(terms))
  for k in keys:
    fx.check(f"loss_{k}", terms[k])


@pytest.mark.parametrize("loss_kind", ["mse", "rescaled_mse", "rescaled_kl"])
def test_training_losses_each_type(fx, loss_kind):
  overrides = {
    "mse": dict(use_kl=False, rescale_learned_sigmas=False),
    "rescaled_mse": dict(use_kl=False, rescale_learned_sigmas=True),
    "rescaled_kl": dict(use_kl=True),
  }[loss_kind]
  terms = _losses(fx, base_process(fx, **overrides))
  keys = [k for k in fx.extra if k.startswith(f"losses_{loss_kind}_")]
  assert keys
  for key in keys:
    fx.check(key, terms[key[len(f"losses_{loss_kind}_") :]])


def _sample_inputs(fx):
  sp = sampler_process(fx)
  t = jnp.asarray(fx["in_sp_t"])
  expected_t = fx["sp_timestep_map"][fx["in_sp_t"]]
  x = jnp.asarray(nchw_to_nhwc(fx["in_x_sample"]))
  z = jnp.asarray(nchw_to_nhwc(fx["in_step_noise"]))
  return sp, x, t, expected_t, z


def test_p_sample_unguided(fx):
  sp, x, t, expected_t, z = _sample_inputs(fx)
  out = diffusion.p_sample(
    sp,
    constant_model(fx, "out_model_sample", expected_t),
    x,
    t,
    noise=z,
    model_kwargs=model_kwargs(fx),
  )
  fx.check("psample_sample", nhwc_to_nchw(out["sample"]))
  fx.check("psample_pred_xstart", nhwc_to_nchw(out["pred_xstart"]))


def test_p_sample_classifier_guided(fx):
  sp, x, t, expected_t, z = _sample_inputs(fx)
  out = diffusion.p_sample(
    sp,
    constant_model(fx, "out_model_sample", expected_t),
    x,
    t,
    noise=z,
    model_kwargs=model_kwargs(fx),
    cond_fn=stored_cond_fn(fx, "out_cond_grad_sample", expected_t),
  )
  fx.check("gpsample_mean", nhwc_to_nchw(out["mean"]))
  fx.check("gpsample_sample", nhwc_to_nchw(out["sample"]))
  fx.check("gpsample_pred_xstart", nhwc_to_nchw(out["pred_xstart"]))


def test_ddim_steps(fx):
  sp, x, t, expected_t, z = _sample_inputs(fx)
  model_fn = constant_model(fx, "out_model_sample", expected_t)
  out0 = diffusion.ddim_sample(sp, model_fn, x, t, eta=0.0, model_kwargs=model_kwargs(fx))
  fx.check("ddim0_sample", nhwc_to_nchw(out0["sample"]))
  fx.check("ddim0_pred_xstart", nhwc_to_nchw(out0["pred_xstart"]))
  out1 = diffusion.ddim_sample(sp, model_fn, x, t, eta=1.0, noise=z, model_kwargs=model_kwargs(fx))
  fx.check("ddim1_sample", nhwc_to_nchw(out1["sample"]))


def test_ddim_step_classifier_guided(fx):
  sp, x, t, expected_t, _ = _sample_inputs(fx)
  out = diffusion.ddim_sample(
    sp,
    constant_model(fx, "out_model_sample", expected_t),
    x,
    t,
    eta=0.0,
    model_kwargs=model_kwargs(fx),
    cond_fn=stored_cond_fn(fx, "out_cond_grad_sample", expected_t),
  )
  fx.check("gddim0_sample", nhwc_to_nchw(out["sample"]))
  fx.check("gddim0_pred_xstart", nhwc_to_nchw(out["pred_xstart"]))


def test_ddim_reverse_step(fx):
  sp, x, t, expected_t, _ = _sample_inputs(fx)
  out = diffusion.ddim_reverse_sample(
    sp, constant_model(fx, "out_model_sample", expected_t), x, t, model_kwargs=model_kwargs(fx)
  )
  fx.check("ddim_rev_sample", nhwc_to_nchw(out["sample"]))
  fx.check("ddim_rev_pred_xstart", nhwc_to_nchw(out["pred_xstart"]))


def test_prior_bpd(fx):
  bpd = base_process(fx, timestep_respacing=fx.config["fixture"]["bpd_respacing"])
  fx.check("bpd_prior_bpd", bpd.prior_bpd(jnp.asarray(nchw_to_nhwc(fx["in_x_start"]))))
