"""The sampling library's sampler choice: names, steps and schedules, clear errors, one
compilation per sampler and step count, and the solvers inside make_sample_fn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adm_jax import diffusion
from adm_jax import sampling

BASE = diffusion.create_gaussian_diffusion(steps=1000, noise_schedule="cosine", learn_sigma=True)


@pytest.mark.parametrize(
  "spec, message",
  [
    (dict(name="dpm"), "unknown sampler 'dpm'; expected one of ddpm, ddim, dpmpp_1, dpmpp_2m"),
    (dict(name="dpmpp_2m", steps=0), "needs steps >= 1"),
    (dict(name="ddpm", steps=-3), "steps must be an integer >= 1"),
    (
      dict(name="plms", steps=10, time_schedule="cosine"),
      "unknown time_schedule 'cosine'; expected one of time_uniform, logsnr",
    ),
    (dict(name="ddpm", steps=10, eta=0.5), "eta=0.5 is DDIM's noise"),
    (dict(name="ddim", steps=10, thresholding=True), "thresholding is an option of the solvers"),
    (dict(name="dpmpp_2m", steps=10, clip_guided=False), "is an option of sampler 'ddim'"),
  ],
)
def test_bad_sampler_specs_are_refused(spec, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    sampling.SamplerSpec(**spec)


@pytest.mark.parametrize(
  "spec, message",
  [
    (dict(name="dpmpp_3m", steps=2), r"needs steps >= 3"),
    (dict(name="dpmpp_2m", steps=2000), r"only 995"),  # more than the usable steps
    (dict(name="ddpm", steps=2000), r"cannot give 2000"),  # more than T
  ],
)
def test_steps_that_the_process_cannot_give_are_refused(spec, message):
  with pytest.raises(ValueError, match=message):
    sampling.SamplerSpec(**spec).check(BASE)


def test_network_evaluations_per_sampler():
  nfe = lambda **kw: sampling.SamplerSpec(**kw).nfe(BASE)
  assert nfe(name="ddpm", steps=50) == 50 and nfe(name="ddim", timestep_respacing="ddim25") == 25
  for name in ("dpmpp_1", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "sde_dpmpp_2m", "plms"):
    assert nfe(name=name, steps=12) == 12, name


def _toy_apply(params, x, t, y, **kw):
  """A stand-in network with learned-sigma outputs: eps = params * x (and zero variance)."""
  del y, kw
  return jnp.concatenate(
    [params * x * jnp.cos(t[:, None, None, None] / 300.0), jnp.zeros_like(x)], axis=-1
  )


@pytest.mark.parametrize("name", ["dpmpp_2m", "sde_dpmpp_2m", "plms"])
def test_solver_sample_fn_compiles_once_and_uses_the_key(name):
  spec = sampling.SamplerSpec(name=name, steps=6, time_schedule="logsnr")
  fn = sampling.make_sample_fn(_toy_apply, BASE, (4, 4, 1), spec, class_cond=False)
  labels = jnp.zeros((2,), jnp.int32)
  a = fn(jnp.float32(0.3), jax.random.PRNGKey(0), labels)
  b = fn(jnp.float32(0.5), jax.random.PRNGKey(1), labels)
  again = fn(jnp.float32(0.3), jax.random.PRNGKey(0), labels)
  assert fn._cache_size() == 1  # pylint: disable=protected-access
  np.testing.assert_array_equal(a, again)
  assert a.shape == (2, 4, 4, 1) and not np.allclose(a, b)


def test_solver_sample_fn_equals_the_solver_loop():
  spec = sampling.SamplerSpec(name="dpmpp_3m", steps=8, time_schedule="karras", thresholding=True)
  fn = sampling.make_sample_fn(
    _toy_apply, BASE, (4, 4, 1), spec, class_cond=False, clip_denoised=False
  )
  key = jax.random.PRNGKey(3)
  ours = fn(jnp.float32(0.4), key, jnp.zeros((2,), jnp.int32))
  direct = diffusion.solver_sample_loop(
    BASE,
    lambda x, t, **kw: _toy_apply(0.4, x, t, None),
    (2, 4, 4, 1),
    key,
    solver="dpmpp_3m",
    steps=8,
    time_schedule="karras",
    thresholding=True,
  )
  np.testing.assert_allclose(ours, direct, rtol=1e-6, atol=1e-6)


def test_guided_ddim_takes_clip_guided_from_its_spec():
  """SamplerSpec.clip_guided reaches DDIM's loop: the default clips the guided x_0, False
  gives the reference's unclipped one (the step itself: test_diffusion_properties)."""
  from adm_jax import guidance  # pylint: disable=g-import-not-at-top

  def classifier_fn(scale, x, t):
    del t
    total = x.sum((1, 2, 3))
    return jnp.stack([scale * total, -scale * total], -1)

  labels, key = jnp.zeros((2,), jnp.int32), jax.random.PRNGKey(0)
  process = diffusion.respaced(BASE, "10")
  images = {}
  for clip_guided in (True, False):
    spec = sampling.SamplerSpec(name="ddim", steps=10, clip_guided=clip_guided)
    fn = sampling.make_sample_fn(
      _toy_apply, BASE, (4, 4, 1), spec, classifier_fn=classifier_fn, classifier_scale=1.0
    )
    images[clip_guided] = fn(jnp.float32(0.3), key, labels, 0.01)
    direct = diffusion.ddim_sample_loop(
      process,
      lambda x, t, **kw: _toy_apply(0.3, x, t, None),
      (2, 4, 4, 1),
      key,
      cond_fn=guidance.classifier_cond_fn(lambda x, t: classifier_fn(0.01, x, t), 1.0),
      model_kwargs={"y": labels},
      clip_guided=clip_guided,
    )
    np.testing.assert_allclose(images[clip_guided], direct, rtol=1e-5, atol=1e-5)
  assert not np.allclose(images[True], images[False], atol=1e-3)
  assert "guided x_0 unclipped" in sampling.SamplerSpec("ddim", 10, clip_guided=False).describe()
