"""The fast solvers (adm_jax.diffusion.solvers) against their references, and their properties.

Parity: tests/data/make_solver_trajectories.py ran the official DPM-Solver (2M, 3M, 2S) and
diffusers (SDE-DPM-Solver++(2M), PLMS) on the PyTorch fixture networks of gd_tiny_cond; here
the converted networks run the same plans. Every stored state (x after each solver step) is
compared. Properties: a linear-Gaussian model whose probability-flow ODE has a closed form
(convergence at the solvers' orders), DPM-Solver++(1) == DDIM, one compilation per
(solver, steps), the error messages.
"""

import pathlib

from conftest import load_fixture
from conftest import nchw_to_nhwc
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_diffusion_networks import model_fn_for
from test_diffusion_parity import base_process
from test_models import networks

from adm_jax import diffusion
from adm_jax import guidance
from adm_jax.diffusion import solvers
from adm_jax.diffusion import time_grids

# Its tests share module-level traced programs / fixtures: one worker runs them all.
pytestmark = pytest.mark.xdist_group("solvers")

DATA = pathlib.Path(__file__).parent / "data" / "solver_trajectories_gd_tiny_cond.npz"
SOLVERS = ("dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "sde_dpmpp_2m", "plms")
NULL_LABEL, CFG_W = 999, 2.0  # the reference's guidance_scale s = 1 + w = 3
NFE_PAD = 10
# Tolerances on max |ours - reference| / max(1, max |reference|) per state (see check()).
# Measured on the same grid: <= 3.6e-6 (time_uniform, time_quadratic, the cfg runs, diffusers'
# integer grids, and logsnr / karras when fed the official grid); a float32 rounding level.
RTOL = 1e-5
# logsnr and karras on our own float64 grids: <= 9.7e-5, because the official computes
# lambda(t) and its inverse in float32 and its grid is off by up to 2.6e-4 in lambda (0.04 steps).
RTOL_LAMBDA_GRID = 3e-4


# ----------------------------------------------------------------------------- parity set-up
class Parity:
  """The fixture process and networks, the stored references and one jitted loop per guidance."""

  def __init__(self):
    self.fx = load_fixture("gd_tiny_cond")
    self.ref = dict(np.load(DATA))
    rng = np.random.RandomState(0)  # the generator's stream: x_T first, then the step noise
    x_t = rng.randn(*self.ref["x_T"].shape).astype(np.float32)
    np.testing.assert_array_equal(x_t, self.ref["x_T"])
    self.x_t = jnp.asarray(nchw_to_nhwc(x_t))
    self.noise = rng.randn(10, *x_t.shape).astype(np.float32).transpose(0, 1, 3, 4, 2)
    self.gd = base_process(self.fx)
    self.kwargs = {"y": jnp.asarray(self.ref["y"], jnp.int32)}
    model_fn = model_fn_for(self.fx)
    clf, clf_params = networks(self.fx, "classifier")
    scale = self.fx.config["classifier_scale"] * jnp.array([0.0, 1.0]).reshape(2, 1, 1, 1)
    item1 = guidance.classifier_cond_fn(lambda x, t: clf.apply({"params": clf_params}, x, t), scale)

    def guided(arrays, x, z, w):  # w = 0: (1 + 0) eps_c - 0 eps_u is the conditional eps exactly
      return solvers.run_solver_plan(
        self.gd,
        guidance.classifier_free_model_fn(model_fn, w, NULL_LABEL),
        arrays,
        x,
        step_noise=z,
        cond_fn=item1,
        model_kwargs=self.kwargs,
        progressive=True,
      )["states"]

    def thresholded(arrays, x, z, w):
      del w
      return solvers.run_solver_plan(
        self.gd,
        model_fn,
        arrays,
        x,
        step_noise=z,
        model_kwargs=self.kwargs,
        thresholding=True,
        progressive=True,
      )["states"]

    # One compiled loop each: classifier guidance on batch item 1 (and classifier-free
    # guidance with w > 0), and thresholding without guidance.
    self.runners = {"guided": jax.jit(guided), "threshold": jax.jit(thresholded)}

  def states(self, variant, solver, steps=None, cfg_w=0.0, **plan_kwargs):
    """States after each solver step, NHWC. Plans are padded to one shape (history 3, NFE_PAD
    calls: the extra calls keep x as it is) so that every run shares one compiled loop."""
    plan = solvers.solver_plan(self.gd, solver, steps, **plan_kwargs).with_history(3)
    arrays = {k: np.asarray(v, np.float32) for k, v in plan.arrays.items()}
    pad = NFE_PAD - plan.nfe
    if pad > 0:  # no-op calls: x_next = 1 * x_base, nothing pushed
      arrays = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in arrays.items()}
      for k, value in (("x_coef", 1.0), ("coefs", 0.0), ("noise_coef", 0.0), ("push", 0.0)):
        arrays[k][plan.nfe :] = value
    z = self.noise if plan.stochastic else np.zeros_like(self.noise)
    states = self.runners[variant](arrays, self.x_t, z[: max(NFE_PAD, plan.nfe)], np.float32(cfg_w))
    return np.asarray(states)[plan.step_ends]


@pytest.fixture(scope="module")
def parity():
  return Parity()


def check(mine, ref, rtol=RTOL):
  """Asserts every state within rtol of the reference; returns the per-state errors.

  Errors are relative to max(1, max |state|): the tiny untrained networks' x0 = (x - sigma eps) /
  alpha explodes (1 / alpha = 164 at t = 1), so the states grow to |x| ~ 600 (median ~100) and
  float32 rounding scales with that, not with each pixel.
  """
  expected = np.asarray(ref).transpose(0, 1, 3, 4, 2)  # [S, B, C, H, W] -> [S, B, H, W, C]
  assert mine.shape == expected.shape, f"{mine.shape} != {expected.shape}"
  axes = tuple(range(1, mine.ndim))
  err = np.abs(mine - expected).max(axis=axes) / np.maximum(1.0, np.abs(expected).max(axis=axes))
  assert (err < rtol).all(), (
    f"relative errors per state {np.array2string(err, precision=2)} > {rtol}"
  )
  return err


@pytest.mark.parametrize("schedule", solvers.TIME_SCHEDULES)
def test_time_grids_match_official(parity, schedule):
  sch = time_grids.DiscreteTimeSchedule(parity.gd.betas)
  assert sch.num_steps == 996  # cosine, T = 1000: lambda < -5.1 cut
  grid, official = time_grids.time_grid(sch, schedule, 10), parity.ref[f"times_{schedule}"]
  if schedule in ("time_uniform", "time_quadratic"):  # measured rtol 1.1e-7
    np.testing.assert_allclose(grid, official, rtol=5e-7, atol=0)
  else:  # measured 2.6e-4 in lambda: the official's float32 lambda(1/N) (see RTOL_LAMBDA_GRID)
    np.testing.assert_allclose(
      sch.lam(grid), sch.lam(official.astype(np.float64)), rtol=0, atol=5e-4
    )


@pytest.mark.parametrize("schedule", solvers.TIME_SCHEDULES)
@pytest.mark.parametrize("solver", SOLVERS)
def test_solver_matches_reference(parity, solver, schedule):
  """10 network calls; batch item 0 unguided, item 1 with classifier guidance."""
  check(
    parity.states("guided", solver, 10, time_schedule=schedule),
    parity.ref[f"{solver}_{schedule}"],
    RTOL_LAMBDA_GRID if schedule in ("logsnr", "karras") else RTOL,
  )


@pytest.mark.parametrize("schedule", ["logsnr", "karras"])
@pytest.mark.parametrize("solver", ["dpmpp_2m", "dpmpp_3m", "sde_dpmpp_2m"])
def test_solver_on_official_grid(parity, solver, schedule):
  """Given the official's own float32 grid, the multistep solvers agree to float32 rounding."""
  grid = parity.ref[f"times_{schedule}"].astype(np.float64)
  check(parity.states("guided", solver, time_grid=grid), parity.ref[f"{solver}_{schedule}"])


@pytest.mark.parametrize("solver", SOLVERS)
def test_classifier_free_guidance_with_lower_order_final_steps(parity, solver):
  """7 calls (lower orders at the end; 2S ends with a first-order step); item 1 also
  classifier-guided."""
  check(parity.states("guided", solver, 7, cfg_w=CFG_W), parity.ref[f"{solver}_cfg7"])


def test_dynamic_thresholding_matches_reference(parity):
  """Unguided, on the official logsnr grid (measured 1.6e-6; on our float64 logsnr grid the
  grid difference grows to 1.3e-3 through the thresholded steps)."""
  grid = parity.ref["times_logsnr"].astype(np.float64)
  check(
    parity.states("threshold", "dpmpp_2m", time_grid=grid), parity.ref["dpmpp_2m_logsnr_threshold"]
  )


@pytest.mark.parametrize("solver", ["sde_dpmpp_2m", "plms"])
def test_diffusers_integer_grids(parity, solver):
  """diffusers' own integer timesteps, fed to solver_plan as time_grid=times_of_steps(...);
  classifier guidance on batch item 1."""
  key = {"sde_dpmpp_2m": "sde_native", "plms": "plms_native"}[solver]
  grid = time_grids.DiscreteTimeSchedule(parity.gd.betas).times_of_steps(parity.ref[f"{key}_steps"])
  check(parity.states("guided", solver, time_grid=grid), parity.ref[key])


# ----------------------------------------------------------------------------- DDIM
def test_dpmpp_1_on_integer_steps_is_ddim(parity):
  """DPM-Solver++(1) on the grid t = (n + 1)/N of respacing 'ddim25' (plus denoise_to_zero for
  DDIM's last step to abar = 1) is adm_jax's DDIM (eta 0) and, clipped, the reference's."""
  gd, x_t, kw = parity.gd, parity.x_t, parity.kwargs
  sp = diffusion.respaced(gd, "ddim25")
  grid = time_grids.DiscreteTimeSchedule(gd.betas).times_of_steps(np.asarray(sp.timestep_map)[::-1])
  model_fn = model_fn_for(parity.fx)

  @jax.jit
  def both(x):
    ddim = diffusion.ddim_sample_loop(
      sp,
      model_fn,
      x.shape,
      None,
      noise=x,
      eta=0.0,
      clip_denoised=False,
      model_kwargs=kw,
      progressive=True,
    )
    ours = solvers.solver_sample_loop(
      gd,
      model_fn,
      x.shape,
      None,
      solver="dpmpp_1",
      noise=x,
      time_grid=grid,
      denoise_to_zero=True,
      model_kwargs=kw,
      progressive=True,
    )
    clipped = solvers.solver_sample_loop(
      gd,
      model_fn,
      x.shape,
      None,
      solver="dpmpp_1",
      noise=x,
      time_grid=grid,
      denoise_to_zero=True,
      model_kwargs=kw,
      clip_denoised=True,
    )
    return ddim["samples"], ours["samples"], clipped

  ddim, ours, clipped = (np.asarray(a) for a in both(x_t))
  assert ours.shape == ddim.shape == (25,) + x_t.shape
  # Measured: <= 5.5e-7 relative over the 25 states (float32 rounding of two formulas).
  err = np.abs(ours - ddim).max(axis=(1, 2, 3, 4)) / np.maximum(
    1, np.abs(ddim).max(axis=(1, 2, 3, 4))
  )
  assert err.max() < 1e-5, err
  loops = dict(np.load(DATA.parent / "sampling_loops_gd_tiny_cond.npz"))
  np.testing.assert_array_equal(loops["x_T"], parity.ref["x_T"])
  # Measured 3.7e-5 against the PyTorch DDIM (test_sampling_loops measured 6e-5 for ours).
  np.testing.assert_allclose(clipped, nchw_to_nhwc(loops["ddim_ddim25"]), rtol=0, atol=1.5e-4)


# ----------------------------------------------------------------------------- linear Gaussian
MU, STD = 0.3, 0.5  # data ~ N(MU, STD^2) per pixel


class Gaussian:
  """Exact eps / x0 of Gaussian data on a process, and the exact ODE map x_T -> x(1/N)."""

  def __init__(self, gd):
    self.gd = gd
    self.sch = time_grids.DiscreteTimeSchedule(gd.betas)
    self.t_table = jnp.asarray(self.sch.t_table, jnp.float32)
    self.log_alpha = jnp.asarray(self.sch.log_alpha_table, jnp.float32)
    self.scale = 1000.0 / gd.original_num_steps if gd.rescale_timesteps else 1.0
    self.runners = {}

  def alpha(self, t_model, ndim):
    t = (t_model.astype(jnp.float32) / self.scale + 1.0) / self.sch.num_steps
    return jnp.exp(jnp.interp(t, self.t_table, self.log_alpha)).reshape((-1,) + (1,) * (ndim - 1))

  def model_fn(self, x, t, mu=MU, **unused):
    del unused
    alpha = self.alpha(t, x.ndim)
    var = 1.0 - alpha**2
    if self.gd.model_mean_type == diffusion.START_X:
      return mu + alpha * STD**2 / (alpha**2 * STD**2 + var) * (x - alpha * mu)
    return jnp.sqrt(var) * (x - alpha * mu) / (alpha**2 * STD**2 + var)

  def marginal(self, t):
    alpha = self.sch.alpha(t)
    return alpha * MU, np.sqrt(alpha**2 * STD**2 + 1 - alpha**2)

  def exact(self, x_t):
    (m_hi, r_hi), (m_lo, r_lo) = self.marginal(1.0), self.marginal(self.sch.t_end)
    return m_lo + r_lo / r_hi * (np.asarray(x_t, np.float64) - m_hi)

  def run(self, solver, steps, x, z=None, **plan_kwargs):
    plan = solvers.solver_plan(self.gd, solver, steps, **plan_kwargs).with_history(3)
    if plan.nfe not in self.runners:  # one compile per NFE for every solver
      self.runners[plan.nfe] = jax.jit(
        lambda a, x, z: solvers.run_solver_plan(self.gd, self.model_fn, a, x, step_noise=z)
      )
    z = np.zeros((plan.nfe,) + x.shape, np.float32) if z is None else z
    arrays = {k: np.asarray(v, np.float32) for k, v in plan.arrays.items()}
    return np.asarray(self.runners[plan.nfe](arrays, jnp.asarray(x, jnp.float32), z), np.float64)

  def error(self, solver, steps, **plan_kwargs):
    x_t = np.linspace(-3, 3, 13, dtype=np.float32).reshape(13, 1)
    return np.abs(self.run(solver, steps, x_t, **plan_kwargs) - self.exact(x_t)).max()


@pytest.fixture(scope="module")
def gaussian():
  return Gaussian(diffusion.create_gaussian_diffusion(steps=1000, noise_schedule="cosine"))


# Global orders: the multistep solvers start with a first-order step, so 3M (local order 3)
# converges at order 2 like 2M (as the official, whose float64 errors these match to 4 digits);
# PLMS's constant-step Adams-Bashforth weights on a non-uniform grid make it order 2.
# Measured slopes log2(err(n) / err(2n)) for n = 20, 40 on logsnr grids (cosine T = 1000):
# dpmpp_1 0.96 0.98; dpmpp_2m 1.88 1.98; dpmpp_3m 2.45 2.16; dpmpp_2s 1.82 1.92; plms 2.18 2.10.
@pytest.mark.parametrize(
  "solver,order", [("dpmpp_1", 1), ("dpmpp_2m", 2), ("dpmpp_3m", 2), ("dpmpp_2s", 2), ("plms", 2)]
)
def test_linear_gaussian_convergence(gaussian, solver, order):
  errors = np.array([gaussian.error(solver, n, time_schedule="logsnr") for n in (20, 40, 80)])
  slopes = np.log2(errors[:-1] / errors[1:])
  assert (slopes > order - 0.3).all() and (slopes < order + 0.6).all(), (errors, slopes)
  if solver == "dpmpp_3m":  # its third-order steps still beat 2M at every step count
    errors_2m = [gaussian.error("dpmpp_2m", n, time_schedule="logsnr") for n in (20, 40, 80)]
    assert (errors < 0.7 * np.array(errors_2m)).all(), (errors, errors_2m)


def test_sde_marginal_converges(gaussian):
  """The SDE solver is affine in (x_T, z_1..z_n): its output law N(c, A^2 + sum B_i^2) is read
  off exactly from n + 2 batch items and must approach the marginal at t = 1/N."""
  mean, std = gaussian.marginal(gaussian.sch.t_end)
  mean_errors, std_errors = [], []
  for n in (20, 40, 80):
    x_t = np.zeros((n + 2, 1), np.float32)
    x_t[1] = 1.0
    z = np.zeros((n, n + 2, 1), np.float32)
    z[np.arange(n), np.arange(n) + 2] = 1.0
    out = gaussian.run("sde_dpmpp_2m", n, x_t, z, time_schedule="logsnr")[:, 0]
    c, a, b = out[0], out[1] - out[0], out[2:] - out[0]
    mean_errors.append(abs(c - mean))
    std_errors.append(abs(np.sqrt(a**2 + np.sum(b**2)) - std))
  # Measured: mean exact to 3e-6 (float32); std errors 1.67e-2, 5.09e-3, 1.32e-3 (slopes 1.7,
  # 1.95; 3.3e-4 at 160 steps). Without the noise term the std would be off by ~0.5.
  slopes = np.log2(np.array(std_errors[:-1]) / np.array(std_errors[1:]))
  assert max(mean_errors) < 2e-5 and (slopes > 1.5).all() and std_errors[-1] < 2e-3, (
    mean_errors,
    std_errors,
  )


def test_start_x_and_rescaled_timesteps(gaussian):
  """An x0-predicting model gives the eps model's samples; with rescale_timesteps on a T = 500
  process the network sees (t - 1/N) N * 1000 / T (a wrong time would break the exact model)."""
  x_t = np.linspace(-3, 3, 13, dtype=np.float32).reshape(13, 1)
  gd_x0 = diffusion.create_gaussian_diffusion(
    steps=1000, noise_schedule="cosine", predict_xstart=True
  )
  # Measured max differences: <= 3e-6 (DPM-Solver++), 2.7e-5 (plms: its eps is re-derived from
  # x0 near t = 1, where 1/alpha = 164); the solvers' own errors here are 0.05-0.3.
  for solver, atol in (("dpmpp_2m", 1e-5), ("dpmpp_2s", 1e-5), ("plms", 5e-5)):
    np.testing.assert_allclose(
      Gaussian(gd_x0).run(solver, 12, x_t), gaussian.run(solver, 12, x_t), rtol=0, atol=atol
    )
  rescaled = Gaussian(
    diffusion.create_gaussian_diffusion(steps=500, noise_schedule="linear", rescale_timesteps=True)
  )
  assert rescaled.sch.num_steps == 500
  plan = solvers.solver_plan(rescaled.gd, "dpmpp_2m", 4)
  np.testing.assert_allclose(plan.arrays["t_model"], np.linspace(499, 0, 5)[:-1] * 2.0, atol=1e-9)
  # Measured 2.0e-3; feeding the unscaled step index instead gives 0.18.
  assert rescaled.error("dpmpp_3m", 40, time_schedule="logsnr") < 5e-3


# ----------------------------------------------------------------------------- compilation, NFE
@pytest.mark.parametrize("solver", solvers.SOLVERS)
def test_one_compilation_per_solver_and_steps(gaussian, solver):
  """jit(params, key) compiles once; the network is traced once (the scan body) and called
  exactly NFE times at the times of the plan."""
  traces, calls = [], []

  def model_fn(params, x, t):
    traces.append(1)
    jax.debug.callback(lambda t_now: calls.append(float(np.asarray(t_now)[0])), t)
    return gaussian.model_fn(x, t, mu=params["mu"])

  @jax.jit
  def sample(params, key):
    return solvers.solver_sample_loop(
      gaussian.gd,
      lambda x, t: model_fn(params, x, t),
      (3, 4, 4, 1),
      key,
      solver=solver,
      steps=7,
      progressive=True,
    )

  first = sample({"mu": jnp.float32(0.3)}, jax.random.key(0))
  second = sample({"mu": jnp.float32(-0.2)}, jax.random.key(1))
  jax.effects_barrier()
  assert sample._cache_size() == 1 and len(traces) == 1
  plan = solvers.solver_plan(gaussian.gd, solver, 7)
  assert plan.nfe == 7 and calls[:7] == pytest.approx(list(plan.arrays["t_model"]), abs=1e-3)
  assert len(calls) == 14
  steps = {"dpmpp_2s": 4, "plms": 6}.get(solver, 7)
  assert first["samples"].shape == (steps, 3, 4, 4, 1) and first["times"].shape == (steps,)
  assert first["pred_xstarts"].shape == (7, 3, 4, 4, 1)
  np.testing.assert_array_equal(first["samples"][-1], first["sample"])
  assert not np.allclose(first["sample"], second["sample"])


def test_plans_orders_and_nfe(gaussian):
  gd = gaussian.gd
  orders = lambda *a, **k: solvers.solver_plan(gd, *a, **k).orders.tolist()
  assert orders("dpmpp_3m", 10) == [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]  # no lower order at 10 steps
  assert orders("dpmpp_3m", 6) == [1, 2, 3, 3, 2, 1]
  assert orders("dpmpp_3m", 6, lower_order_final=False) == [1, 2, 3, 3, 3, 3]
  assert orders("sde_dpmpp_2m", 5) == [1, 2, 2, 2, 1]
  assert orders("dpmpp_2s", 7) == [2, 2, 2, 1]
  assert orders("plms", 7) == [2, 2, 3, 4, 4, 4]  # 6 steps, the first costs 2 calls
  plan = solvers.solver_plan(gd, "dpmpp_2s", 7, time_schedule="logsnr", denoise_to_zero=True)
  assert plan.nfe == 8 and plan.step_ends.tolist() == [1, 3, 5, 6, 7]
  lam = gaussian.sch.lam(plan.times[:5])
  np.testing.assert_allclose(
    np.diff(lam), np.diff(lam)[0], rtol=1e-9
  )  # outer grid uniform in lambda
  full = solvers.solver_plan(gd, "dpmpp_1", 995)  # every kept step: t_model 995, 994, ..., 1
  np.testing.assert_allclose(full.arrays["t_model"], np.arange(995, 0, -1), atol=1e-9)


# ----------------------------------------------------------------------------- errors
def test_clear_errors(gaussian):
  gd, shape, key = gaussian.gd, (2, 4, 4, 1), jax.random.key(0)
  loop = lambda **k: solvers.solver_sample_loop(gd, gaussian.model_fn, shape, key, **k)
  with pytest.raises(ValueError, match=r"unknown solver 'dpm'; expected one of \('dpmpp_1'"):
    loop(solver="dpm", steps=5)
  with pytest.raises(
    ValueError, match=r"unknown time_schedule 'logSNR'; expected one of .*'logsnr'"
  ):
    loop(solver="dpmpp_2m", steps=5, time_schedule="logSNR")
  with pytest.raises(ValueError, match=r"'dpmpp_3m' needs steps >= 3 .*orders 1, 2, 3.*steps=2"):
    loop(solver="dpmpp_3m", steps=2)
  with pytest.raises(ValueError, match=r"'plms' needs steps >= 2 .*2 network calls.*steps=1"):
    loop(solver="plms", steps=1)
  with pytest.raises(ValueError, match=r"needs steps >= 1.*steps=0"):
    loop(solver="dpmpp_2s", steps=0)
  with pytest.raises(ValueError, match="steps must be an integer number of network calls, got 2.5"):
    loop(solver="dpmpp_2m", steps=2.5)
  with pytest.raises(ValueError, match=r"asks for 996 intervals .* has only 995 \(996 of 1000"):
    loop(solver="dpmpp_2m", steps=996)
  with pytest.raises(ValueError, match="un-respaced process .* 25 of 1000 steps"):
    solvers.solver_plan(diffusion.respaced(gd, "ddim25"), "dpmpp_2m", 5)
  prev = diffusion.GaussianDiffusion.from_betas(gd.betas, model_mean_type=diffusion.PREVIOUS_X)
  with pytest.raises(ValueError, match="model_mean_type 'previous_x' is not supported"):
    solvers.solver_plan(prev, "dpmpp_2m", 5)
  with pytest.raises(ValueError, match="strictly decreasing"):
    loop(solver="dpmpp_2m", time_grid=[0.5, 0.9, 0.1])
  with pytest.raises(ValueError, match=r"time_grid must lie in \[1/N, 1\]"):
    loop(solver="dpmpp_2m", time_grid=[1.0, 0.5, 0.0001])
  with pytest.raises(ValueError, match="steps=4 does not match the time_grid of 3 points"):
    loop(solver="dpmpp_2m", steps=4, time_grid=[1.0, 0.5, 0.1])
  with pytest.raises(ValueError, match=r"steps must lie in \[0, 995\]"):
    gaussian.sch.times_of_steps([999, 0])
  with pytest.raises(ValueError, match="step_noise is only for sde_dpmpp_2m"):
    loop(solver="dpmpp_2m", steps=3, step_noise=np.zeros((3,) + shape))
  with pytest.raises(ValueError, match=r"step_noise has shape \(2, 2, 4, 4, 1\), expected \(3,"):
    loop(solver="sde_dpmpp_2m", steps=3, step_noise=np.zeros((2,) + shape))
  with pytest.raises(ValueError, match="'sde_dpmpp_2m' is stochastic: pass `key` or `step_noise`"):
    solvers.solver_sample_loop(
      gd, gaussian.model_fn, shape, None, noise=np.zeros(shape), solver="sde_dpmpp_2m", steps=3
    )
  with pytest.raises(ValueError, match="needs 2 output channels"):
    solvers.solver_sample_loop(
      diffusion.create_gaussian_diffusion(learn_sigma=True),
      gaussian.model_fn,
      shape,
      key,
      solver="dpmpp_1",
      steps=2,
    )
