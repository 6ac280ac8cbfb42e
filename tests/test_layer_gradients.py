"""Layers with hand-written gradients (adm_jax.models.layers.conv2d, group_norm): values and
gradients equal to plain autodiff, and convolution input gradients that stay canonical (HWIO
kernels) inside a guided sampling loop."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_bench import tiny_bench_config

from adm_jax import config_base
from adm_jax import diffusion as diff
from adm_jax import guidance
from adm_jax import networks
from adm_jax.benchmarks import timing
from adm_jax.models import layers


@pytest.mark.parametrize("size,kernel,stride", [(8, 3, 1), (8, 3, 2), (7, 3, 2), (8, 1, 1)])
def test_conv2d_gradients_equal_autodiff(size, kernel, stride):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, 4, 5))
  pad = ((kernel - 1) // 2,) * 2
  ours = lambda x, w: jnp.sum(jnp.sin(layers.conv2d(x, w, stride, (pad, pad))))
  plain = lambda x, w: jnp.sum(
    jnp.sin(
      jax.lax.conv_general_dilated(
        x, w, (stride, stride), (pad, pad), dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
    )
  )
  np.testing.assert_allclose(ours(x, w), plain(x, w), rtol=1e-6)
  for a, b in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(plain, (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _reference_group_norm(x, scale, bias, groups, eps, silu):
  b, c = x.shape[0], x.shape[-1]
  grouped = x.astype(jnp.float32).reshape(b, -1, groups, c // groups)
  mean = grouped.mean((1, 3), keepdims=True)
  var = jnp.square(grouped - mean).mean((1, 3), keepdims=True)
  y = ((grouped - mean) / jnp.sqrt(var + eps)).reshape(x.shape) * scale + bias
  return jax.nn.silu(y) if silu else y


@pytest.mark.parametrize("shape", [(2, 4, 4, 64), (3, 7, 32)])
@pytest.mark.parametrize("silu", [False, True])
def test_group_norm_values_and_gradients_equal_autodiff(shape, silu):
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = jax.random.normal(keys[0], shape) * 2 + 0.5
  scale = jax.random.normal(keys[1], shape[-1:])
  bias = jax.random.normal(keys[2], shape[-1:])
  weights = jax.random.normal(keys[3], shape)
  ours = lambda *a: jnp.sum(layers.group_norm(*a, 32, 1e-5, silu) * weights)
  plain = lambda *a: jnp.sum(_reference_group_norm(*a, 32, 1e-5, silu) * weights)
  np.testing.assert_allclose(
    layers.group_norm(x, scale, bias, 32, 1e-5, silu),
    _reference_group_norm(x, scale, bias, 32, 1e-5, silu),
    rtol=1e-5,
    atol=2e-5,
  )
  for a, b in zip(
    jax.grad(ours, (0, 1, 2))(x, scale, bias), jax.grad(plain, (0, 1, 2))(x, scale, bias)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def _assert_only_canonical_convolutions(hlo: str):
  """Every convolution of compiled HLO text is NHWC x HWIO (XLA:CPU's fast Eigen path)."""
  labels = re.findall(r"convolution\([^)]*\).*?dim_labels=([a-z0-9_>-]+)", hlo)
  assert len(labels) > 10
  assert all(lab == "b01f_01io->b01f" for lab in labels), sorted(set(labels))


@pytest.mark.slow  # compiles a guided sampling loop
def test_guided_sampling_loop_has_only_canonical_convolutions():
  # With the autodiff rule XLA:CPU kept the flipped kernel as HWOI ("01oi") inside the
  # scan body and ran those convolutions through its slow generic emitter.
  config = tiny_bench_config()
  unet, classifier = networks.unet(config), networks.classifier(config)
  size, ch = config.model.image_size, config.model.in_channels
  y = jnp.zeros((2,), jnp.int32)
  params = unet.init(jax.random.PRNGKey(0))
  clf_params = classifier.init(jax.random.PRNGKey(1))
  gd = diff.create_gaussian_diffusion(**config_base.diffusion_kwargs(config, "2"))

  def loop(p, cp, key):
    model_fn = lambda x, t, y=None: unet.apply(p, x, t, y)
    cond_fn = guidance.classifier_cond_fn(lambda x, t: classifier.apply(cp, x, t), 1.0)
    return diff.p_sample_loop(
      gd, model_fn, (2, size, size, ch), key, cond_fn=cond_fn, model_kwargs={"y": y}
    )

  hlo = jax.jit(loop).lower(params, clf_params, jax.random.PRNGKey(0)).compile().as_text()
  assert " while(" in hlo  # the loop is one scan
  _assert_only_canonical_convolutions(hlo)


@pytest.mark.slow  # compiles a microbatched train step
def test_microbatched_train_step_has_only_canonical_convolutions():
  # Gradient accumulation runs the backward pass inside a lax.scan body; with the autodiff
  # rule's weight gradient XLA:CPU kept `f01b_i01o->01bf` convolutions there and ran them
  # through its generic loop emitter (bench32 train step 19x slower with two microbatches).
  exp = timing.build_train(tiny_bench_config(), 4, microbatch=2)
  assert exp.microbatches == 2
  hlo = exp.train_step.lower(exp.abstract_state, exp.abstract_batch()).compile().as_text()
  assert " while(" in hlo  # the microbatches are one scan
  _assert_only_canonical_convolutions(hlo)
