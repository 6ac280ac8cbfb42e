"""Diffusion + guidance driven by the real (converted) networks, against the reference."""

from conftest import nchw_to_nhwc
from conftest import nhwc_to_nchw
import jax
import jax.numpy as jnp
import pytest
from test_diffusion_parity import base_process
from test_diffusion_parity import sampler_process
from test_models import labels
from test_models import networks

from adm_jax import diffusion
from adm_jax import guidance


def unet_fn(fx):
  model, params = networks(fx, "unet")
  return lambda x, t, y=None: model.apply({"params": params}, x, t, y=y)


def cond_fn(fx):
  model, params = networks(fx, "classifier")
  return guidance.classifier_cond_fn(
    lambda x, t: model.apply({"params": params}, x, t), fx.config["classifier_scale"]
  )


def kwargs(fx):
  y = labels(fx)
  return {"y": y if y is not None else jnp.asarray(fx["in_y"], jnp.int32)}


def model_fn_for(fx):
  fn = unet_fn(fx)
  cond = fx.config["model"]["class_cond"]
  return lambda x, t, y=None: fn(x, t, y if cond else None)


def test_bits_per_dim_loop(fx):
  gd = base_process(fx, timestep_respacing=fx.config["fixture"]["bpd_respacing"])
  x0 = jnp.asarray(nchw_to_nhwc(fx["in_x_start"]))
  noise = jnp.asarray(fx["bpd_noise"]).transpose(0, 1, 3, 4, 2)  # [T, B, C, H, W] -> NHWC
  model_fn, kw = model_fn_for(fx), kwargs(fx)  # built outside jit: params stay concrete
  out = jax.jit(lambda x: diffusion.calc_bpd_loop(gd, model_fn, x, noise=noise, model_kwargs=kw))(
    x0
  )
  for key in ("total_bpd", "prior_bpd", "vb", "xstart_mse", "mse"):
    fx.check(f"bpd_{key}", out[key])


@pytest.mark.slow  # guided steps of both fixture networks with their classifiers
def test_guided_steps_with_real_networks(fx):
  sp = sampler_process(fx)
  x = jnp.asarray(nchw_to_nhwc(fx["in_x_sample"]))
  t = jnp.asarray(fx["in_sp_t"])
  z = jnp.asarray(nchw_to_nhwc(fx["in_step_noise"]))
  out = diffusion.p_sample(
    sp, model_fn_for(fx), x, t, noise=z, cond_fn=cond_fn(fx), model_kwargs=kwargs(fx)
  )
  fx.check("gpsample_sample", nhwc_to_nchw(out["sample"]))
  fx.check("gpsample_mean", nhwc_to_nchw(out["mean"]))
  out = diffusion.ddim_sample(
    sp, model_fn_for(fx), x, t, eta=0.0, cond_fn=cond_fn(fx), model_kwargs=kwargs(fx)
  )
  fx.check("gddim0_sample", nhwc_to_nchw(out["sample"]))
  fx.check("gddim0_pred_xstart", nhwc_to_nchw(out["pred_xstart"]))


def test_training_losses_with_real_network(fx):
  gd = base_process(fx)
  terms = gd.training_losses(
    model_fn_for(fx),
    jnp.asarray(nchw_to_nhwc(fx["in_x_start"])),
    jnp.asarray(fx["in_t"]),
    jnp.asarray(nchw_to_nhwc(fx["in_noise"])),
    model_kwargs=kwargs(fx),
  )
  for k in terms:
    fx.check(f"loss_{k}", terms[k])
