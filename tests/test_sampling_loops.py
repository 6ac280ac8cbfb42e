"""Whole sampling loops against the PyTorch reference (tests/data/make_sampling_loops.py).

The shared fixtures check one sampler step at one timestep; these compare complete
trajectories of the converted fixture networks: every respaced timestep, the order of the
steps, and classifier guidance inside the jitted loop.
"""

import pathlib

from conftest import load_fixture
from conftest import nchw_to_nhwc
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_diffusion_networks import cond_fn
from test_diffusion_networks import model_fn_for
from test_diffusion_parity import base_process

from adm_jax import diffusion

# Its tests share module-level traced programs / fixtures: one worker runs them all.
pytestmark = pytest.mark.xdist_group("sampling_loops")

DATA = pathlib.Path(__file__).parent / "data" / "sampling_loops_gd_tiny_cond.npz"
# Float32 trajectories of 25 network evaluations: measured differences <= 6e-5.
ATOL = 3e-4
# Respacing "50" starts at t = 999, where the cosine schedule's alpha_bar is 2.4e-9: the first
# x_0 prediction amplifies rounding by 1/sqrt(alpha_bar) = 2e4. Measured: the reference's own
# output moves by 4e-4 when x_T is scaled by 1 + 1e-7; ours differs from it by <= 1.6e-3.
# A wrong timestep map or step order differs by O(1) (ddim_50 vs ddim_ddim25: 1.46).
ATOL_FROM_T999 = 5e-3


@pytest.fixture(scope="module")
def loops():
  ref = dict(np.load(DATA))
  rng = np.random.RandomState(0)  # the generator's stream: x_T first, then the step noise
  x_t = rng.randn(*ref["x_T"].shape).astype(np.float32)
  np.testing.assert_array_equal(x_t, ref["x_T"])
  step_noise = rng.randn(25, *ref["x_T"].shape).astype(np.float32)
  return ref, jnp.asarray(nchw_to_nhwc(x_t)), jnp.asarray(step_noise.transpose(0, 1, 3, 4, 2))


def check(mine, ref, key, atol=ATOL):
  mine = np.asarray(mine)
  expected = nchw_to_nhwc(ref[key])
  err = np.abs(mine - expected).max()
  assert err < atol, f"{key}: max |ours - reference| = {err:.3g} > {atol}"


@pytest.mark.parametrize(
  "respacing,guided,key",
  [("ddim25", False, "ddim_ddim25"), ("50", False, "ddim_50"), ("ddim25", True, "gddim_ddim25")],
)
def test_ddim_loop_matches_reference(loops, respacing, guided, key):
  ref, x_t, _ = loops
  fx = load_fixture("gd_tiny_cond")
  gd = base_process(fx, timestep_respacing=respacing)
  kwargs = {"y": jnp.asarray(ref["y"], jnp.int32)}
  cond = cond_fn(fx) if guided else None
  model_fn = model_fn_for(fx)
  sample = jax.jit(
    lambda x: diffusion.ddim_sample_loop(
      gd, model_fn, x.shape, None, noise=x, eta=0.0, cond_fn=cond, model_kwargs=kwargs
    )
  )(x_t)
  check(sample, ref, key, ATOL_FROM_T999 if respacing == "50" else ATOL)


def test_guided_ancestral_loop_matches_reference(loops):
  ref, x_t, step_noise = loops
  fx = load_fixture("gd_tiny_cond")
  gd = base_process(fx, timestep_respacing="25")
  kwargs = {"y": jnp.asarray(ref["y"], jnp.int32)}
  model_fn, cond = model_fn_for(fx), cond_fn(fx)
  sample = jax.jit(
    lambda x, z: diffusion.p_sample_loop(
      gd, model_fn, x.shape, None, noise=x, step_noise=z, cond_fn=cond, model_kwargs=kwargs
    )
  )(x_t, step_noise)
  check(sample, ref, "gancestral_25")
  with pytest.raises(ValueError, match="step_noise has shape"):
    diffusion.p_sample_loop(gd, model_fn, x_t.shape, None, noise=x_t, step_noise=step_noise[:3])
