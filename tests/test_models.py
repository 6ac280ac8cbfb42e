"""The Flax networks against the reference fixtures, plus bf16, remat and config checks."""
import functools

import numpy as np
import pytest

from conftest import nchw_to_nhwc, nhwc_to_nchw

import jax
import jax.numpy as jnp

from adm_jax import convert
from adm_jax import models


@functools.lru_cache(maxsize=None)
def _network(fx, kind, pool=None):
  """(module, params) converted from the fixture set's npz weights."""
  cfg = fx.config
  if kind == "unet":
    return convert.convert(str(fx.dir / "unet_params.npz"), cfg["model"], "unet")
  if kind == "sr":
    return convert.convert(str(fx.dir / "sr_unet_params.npz"), cfg["super_res"], "sr")
  pool = pool or cfg["classifier"]["classifier_pool"]
  flags = dict(cfg["classifier"], classifier_pool=pool)
  stem = cfg["classifier_files"][pool]
  return convert.convert(str(fx.dir / f"{stem}_params.npz"), flags, "classifier")


@functools.lru_cache(maxsize=None)
def _forward(module):
  """A jitted `module.apply` taking params first (one compile per module)."""
  return jax.jit(lambda params, *args, **kw: module.apply({"params": params}, *args, **kw))


def _labels(fx):
  return jnp.asarray(fx["in_y"], jnp.int32) if fx.config["model"]["class_cond"] else None


def _x_t(fx):
  return jnp.asarray(nchw_to_nhwc(fx["out_q_sample"]))


def _sample_inputs(fx):
  """x and t of the sampler-step keys: in_x_sample at the original steps of in_sp_t."""
  t = jnp.asarray(fx["sp_timestep_map"][fx["in_sp_t"]])
  return jnp.asarray(nchw_to_nhwc(fx["in_x_sample"])), t


def test_timestep_embedding(fx):
  emb = models.timestep_embedding(jnp.asarray(fx["in_t"]), fx.config["model"]["num_channels"])
  assert emb.dtype == jnp.float32
  fx.check("temb", emb)


def test_unet_matches_reference(fx):
  model, params = _network(fx, "unet")
  forward = _forward(model)
  out = forward(params, _x_t(fx), jnp.asarray(fx["in_t"]), y=_labels(fx))
  assert out.dtype == jnp.float32
  fx.check("out_model", nhwc_to_nchw(out))
  out = forward(params, *_sample_inputs(fx), y=_labels(fx))
  fx.check("out_model_sample", nhwc_to_nchw(out))


@pytest.mark.parametrize("pool", models.POOLS)
def test_classifier_pools_match_reference(fx, pool):
  model, params = _network(fx, "classifier", pool)
  logits = _forward(model)(params, _x_t(fx), jnp.asarray(fx["in_t"]))
  assert logits.shape == (4, 1000) and logits.dtype == jnp.float32
  fx.check(f"clf_{pool}_logits", logits)
  if pool == fx.config["classifier"]["classifier_pool"]:
    fx.check("out_clf_logits", logits)


@functools.lru_cache(maxsize=None)
def _guidance_gradient_fn(fx):
  """x, t, y -> classifier_scale * d/dx sum_b log_softmax(classifier(x, t))[b, y_b]."""
  model, params = _network(fx, "classifier")
  scale = fx.config["classifier_scale"]

  def selected_log_probs(x, t, y):
    log_probs = jax.nn.log_softmax(model.apply({"params": params}, x, t))
    return jnp.take_along_axis(log_probs, y[:, None], axis=-1).sum()

  return jax.jit(lambda x, t, y: scale * jax.grad(selected_log_probs)(x, t, y))


def test_classifier_guidance_gradient(fx):
  grad_fn = _guidance_gradient_fn(fx)
  y = jnp.asarray(fx["in_y"], jnp.int32)
  fx.check("out_cond_grad", nhwc_to_nchw(grad_fn(_x_t(fx), jnp.asarray(fx["in_t"]), y)))
  fx.check("out_cond_grad_sample", nhwc_to_nchw(grad_fn(*_sample_inputs(fx), y)))


def test_super_resolution_matches_reference(fx):
  model, params = _network(fx, "sr")
  low_res = jnp.asarray(nchw_to_nhwc(fx["sr_in_low_res"]))
  upsampled = models.upsample_bilinear(low_res, fx.config["super_res"]["large_size"])
  fx.check("sr_upsampled_low_res", nhwc_to_nchw(upsampled))
  out = _forward(model)(params, _x_t(fx), jnp.asarray(fx["in_t"]), y=_labels(fx),
                        low_res=low_res)
  fx.check("sr_out_model", nhwc_to_nchw(out))


# bfloat16 compute (params, GroupNorm statistics, softmax and the output head in
# float32): bf16 keeps 8 significant bits, a rounding of ~2^-9 = 2e-3 per operation.
# Through the ~40 layers of the fixture UNets, whose zero-initialised output layers
# hold random weights (so every block really contributes), the output moves by
# 1.5-3% RMS of the float32 output and by at most ~0.1 on values up to 2.7 (measured
# on both sets). Documented bound, with headroom for other CPUs and XLA versions:
# relative RMS error < 5% and max abs error < 0.25; it must also be > 0 (bf16 used).
BF16_REL_RMS, BF16_MAX_ABS = 0.05, 0.25


def test_bfloat16_compute_stays_close(fx):
  model, params = _network(fx, "unet")
  args = (_x_t(fx), jnp.asarray(fx["in_t"]))
  ref = _forward(model)(params, *args, y=_labels(fx))
  out = _forward(model.clone(dtype=jnp.bfloat16))(params, *args, y=_labels(fx))
  assert out.dtype == jnp.float32
  max_abs = float(jnp.abs(out - ref).max())
  rel_rms = float(jnp.sqrt(jnp.mean((out - ref) ** 2) / jnp.mean(ref ** 2)))
  assert 0 < max_abs < BF16_MAX_ABS, max_abs
  assert rel_rms < BF16_REL_RMS, rel_rms


TINY_FLAGS = dict(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                  attention_resolutions="4", num_heads=2, learn_sigma=True, class_cond=True,
                  num_classes=10, resblock_updown=True, dropout=0.1)


def test_remat_gives_same_outputs_and_gradients():
  plain = models.create_model(TINY_FLAGS)
  remat = models.create_model(dict(TINY_FLAGS, use_checkpoint=True))
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  t, y = jnp.array([3.0, 700.0]), jnp.array([1, 2])
  params = jax.jit(plain.init)(jax.random.PRNGKey(1), x, t, y=y)["params"]

  def loss(p, module):
    out = module.apply({"params": p}, x, t, y=y, train=True,
                       rngs={"dropout": jax.random.PRNGKey(2)})
    return jnp.sum(out ** 2)

  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  loss_plain, grads_plain = value_and_grad(params, plain)
  loss_remat, grads_remat = value_and_grad(params, remat)
  np.testing.assert_allclose(loss_plain, loss_remat, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads_plain), jax.tree.leaves(grads_remat)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert "remat" in str(jax.make_jaxpr(lambda p: loss(p, remat))(params))
  # Dropout is live in training (the 'dropout' rng) and off in evaluation.
  eval_loss = jax.jit(lambda p: jnp.sum(plain.apply({"params": p}, x, t, y=y) ** 2))(params)
  assert abs(float(eval_loss) - float(loss_plain)) > 1e-6


# Parameter counts of the reference networks (PyTorch, millions, rounded to 0.1M).
RELEASED_COUNTS = {
    "64x64_diffusion": 295.9, "128x128_diffusion": 421.5, "256x256_diffusion": 553.8,
    "256x256_diffusion_uncond": 552.8, "512x512_diffusion": 559.0, "64_256_upsampler": 311.8,
    "128_512_upsampler": 308.8, "64x64_classifier": 65.4, "128x128_classifier": 42.6,
    "256x256_classifier": 54.1, "512x512_classifier": 54.4, "lsun_bedroom": 552.8,
}


@pytest.mark.parametrize("name", sorted(RELEASED_COUNTS))
def test_released_configs_build_abstractly_with_reference_counts(name):
  _, abstract = convert.build(models.released_kind(name), models.released_config(name))
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(abstract))
  assert abs(count / 1e6 - RELEASED_COUNTS[name]) < 0.05 + 1e-9, count


def test_released_names_and_kinds():
  assert models.released_config("lsun_cat") == models.released_config("lsun_bedroom")
  assert models.released_config("lsun_horse_nodropout")["dropout"] == 0.0
  assert models.released_kind("64_256_upsampler.pt") == "sr"
  assert models.released_kind("512x512_classifier") == "classifier"
  assert isinstance(models.create_released("128_512_upsampler"), models.SuperResUNet)
  assert models.create_released("64x64_diffusion", dtype="bfloat16").dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="unknown released checkpoint"):
    models.released_config("1024x1024_diffusion")


@pytest.mark.parametrize("flags, match", [
    (dict(image_size=48), "no default for image_size=48"),
    (dict(image_size=40, channel_mult="1,2,2,2"), r"image_size=40 must be divisible by 2\^3"),
    (dict(num_channels=100), "num_channels=100 .* 32 GroupNorm groups"),
    (dict(num_channels=128, num_heads=3), "num_heads=3 does not divide"),
    (dict(num_channels=128, num_head_channels=48), "num_head_channels=48 does not divide"),
    (dict(num_channels=128, num_heads_upsample=3), "num_heads_upsample=3 does not divide"),
    (dict(attention_resolutions="4"), "attention_resolutions: resolution 4 is never reached"),
    (dict(channel_mult="1,a"), "channel_mult='1,a'"),
    (dict(num_res_blocks=0), "num_res_blocks=0"),
    (dict(dropout=1.5), "dropout=1.5"),
    (dict(dtype="float8"), "dtype='float8'"),
])
def test_unet_config_errors_name_the_flag(flags, match):
  with pytest.raises(ValueError, match=match):
    models.create_model(dict(dict(image_size=64), **flags))


@pytest.mark.parametrize("flags, match", [
    (dict(classifier_pool="max"), "unknown classifier_pool 'max'"),
    (dict(classifier_attention_resolutions="128"), "classifier_attention_resolutions"),
    (dict(classifier_width=32, channel_mult="1,1", classifier_attention_resolutions="64"),
     "classifier_width=32 .* multiple of 64"),
    (dict(classifier_depth=0), "classifier_depth=0"),
])
def test_classifier_config_errors_name_the_flag(flags, match):
  with pytest.raises(ValueError, match=match):
    models.create_classifier(dict(dict(image_size=64), **flags))


def test_sr_config_and_call_errors():
  with pytest.raises(ValueError, match="small_size=128"):
    models.create_sr_model(dict(large_size=64, small_size=128))
  with pytest.raises(ValueError, match="no default for image_size=32"):
    models.create_sr_model(dict(large_size=32, small_size=16))
  sr = models.create_sr_model(dict(TINY_FLAGS, large_size=8, small_size=4, class_cond=False))
  with pytest.raises(ValueError, match="low_res"):
    jax.eval_shape(sr.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,)))


def test_labels_given_exactly_for_class_conditional_models():
  x, t = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,))
  uncond = models.create_model(dict(TINY_FLAGS, class_cond=False))
  with pytest.raises(ValueError, match="class-conditional"):
    jax.eval_shape(uncond.init, jax.random.PRNGKey(0), x, t, y=jnp.zeros((1,), jnp.int32))
  with pytest.raises(ValueError, match="class-conditional"):
    jax.eval_shape(models.create_model(TINY_FLAGS).init, jax.random.PRNGKey(0), x, t)
