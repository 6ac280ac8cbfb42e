"""UniPC (adm_jax.diffusion.solvers, solver 'unipc') against the official code, and its properties.

Parity: tests/data/make_unipc_trajectories.py ran the official UniPC (wl-zhao/UniPC) on the
PyTorch fixture networks of gd_tiny_cond; here the converted networks run the same plans and
every stored state (x after each step, on every 4th row and column, and the whole last x) is
compared. Properties: the predictor alone is DPM-Solver++(1) / (2M), convergence orders on the
linear-Gaussian model of test_solvers, plans and orders, SamplerSpec and config wiring, errors.
"""

import dataclasses
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
from test_solvers import CFG_W
from test_solvers import NULL_LABEL
from test_solvers import Gaussian
import tiny

from adm_jax import diffusion
from adm_jax import guidance
from adm_jax import sampling
from adm_jax import validation
from adm_jax.diffusion import solvers
from adm_jax.modes import train

DATA = pathlib.Path(__file__).parent / "data" / "unipc_trajectories_gd_tiny_cond.npz"
STRIDE, NFE_PAD = 4, 10
# Tolerances on max |ours - reference| / max(1, max |reference|) per state (see check()).
# Measured on the same grid (time_uniform, time_quadratic, logsnr / karras / thresholding on
# the official grid): <= 1.4e-6 (3.1e-6 with classifier-free guidance or on the karras grid,
# 5.7e-6 for the last step of order 3 without lower_order_final); a float32 rounding level.
# A wrong variant or no corrector is off by 3e-2 to 4e-2.
RTOL = 1e-5
# logsnr and karras on our float64 grids: <= 9.4e-5, because the official grid is off by up to
# 2.6e-4 in lambda (float32 lambda(t) and its inverse; see test_solvers.RTOL_LAMBDA_GRID).
RTOL_LAMBDA_GRID = 3e-4


class Parity:
  """The fixture process and networks, the references and one jitted loop per guidance."""

  def __init__(self):
    self.fx = load_fixture("gd_tiny_cond")
    self.ref = dict(np.load(DATA))
    x_t = np.random.RandomState(0).randn(*self.ref["x_T"].shape).astype(np.float32)
    np.testing.assert_array_equal(x_t, self.ref["x_T"])
    self.x_t = jnp.asarray(nchw_to_nhwc(x_t))
    self.gd = base_process(self.fx)
    self.kwargs = {"y": jnp.asarray(self.ref["y"], jnp.int32)}
    model_fn = model_fn_for(self.fx)
    clf, clf_params = networks(self.fx, "classifier")
    scale = self.fx.config["classifier_scale"] * jnp.array([0.0, 1.0]).reshape(2, 1, 1, 1)
    item1 = guidance.classifier_cond_fn(lambda x, t: clf.apply({"params": clf_params}, x, t), scale)

    def run(arrays, x, w, thresholding):
      fn = model_fn if thresholding else guidance.classifier_free_model_fn(model_fn, w, NULL_LABEL)
      out = solvers.run_solver_plan(
        self.gd,
        fn,
        arrays,
        x,
        cond_fn=None if thresholding else item1,
        model_kwargs=self.kwargs,
        thresholding=thresholding,
        progressive=True,
      )
      return out["states"], out["evals"]

    # One compiled loop each: classifier guidance on item 1 (with classifier-free guidance
    # when w > 0; w = 0 is the conditional eps exactly), and thresholding unguided.
    self.runners = {t: jax.jit(lambda a, x, w, t=t: run(a, x, w, t)) for t in (False, True)}

  def states(self, steps=None, cfg_w=0.0, thresholding=False, **plan_kwargs):
    """x after each step [S, B, H, W, C]. Plans are padded to NFE_PAD calls (x kept) and
    history 3, so that every run shares one compiled loop."""
    plan = solvers.solver_plan(self.gd, "unipc", steps, **plan_kwargs).with_history(3)
    arrays = {k: np.asarray(v, np.float32) for k, v in plan.arrays.items()}
    pad = NFE_PAD - plan.nfe
    arrays = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in arrays.items()}
    for k, value in (
      ("x_coef", 1.0),
      ("coefs", 0.0),
      ("push", 0.0),
      ("eval_x_coef", 1.0),
      ("eval_coefs", 0.0),
    ):
      arrays[k][plan.nfe :] = value
    states, evals = self.runners[thresholding](arrays, self.x_t, np.float32(cfg_w))
    both = np.concatenate([np.asarray(states)[: plan.nfe], np.asarray(evals)[: plan.nfe]])
    return both[plan.step_states]

  def check(self, name, mine, rtol):
    """Asserts every stored state (and the whole last one) within rtol; returns the errors.

    Relative to max(1, max |state|): the tiny untrained networks' x0 = (x - sigma eps) / alpha
    explodes near t = 1 (1 / alpha = 164), the states grow to |x| ~ 600, and float32 rounding
    scales with that, not with each pixel.
    """
    ref = np.asarray(self.ref[name]).transpose(0, 1, 3, 4, 2)  # [S, B, C, h, w] -> NHWC
    final = nchw_to_nhwc(self.ref[f"{name}_final"])
    assert mine.shape[0] == ref.shape[0] and mine.shape[1:] == (2,) + final.shape[1:]
    errors = []
    for ours, theirs in zip(list(mine[:, :, ::STRIDE, ::STRIDE]) + [mine[-1]], list(ref) + [final]):
      errors.append(np.abs(ours - theirs).max() / max(1.0, np.abs(theirs).max()))
    errors = np.array(errors)
    assert (errors < rtol).all(), f"{name}: relative errors {np.array2string(errors, precision=2)}"
    return errors


@pytest.fixture(scope="module")
def parity():
  return Parity()


def official_grid(parity, schedule, steps):
  return parity.ref[f"times_{schedule}_{steps}"].astype(np.float64)


MATRIX = [(v, o, "time_uniform", n) for v in ("bh1", "bh2") for o in (1, 2, 3) for n in (5, 10)]
MATRIX += [
  (v, o, s, 10)
  for v in ("bh1", "bh2")
  for o in (1, 2, 3)
  for s in ("logsnr", "time_quadratic", "karras")
]
MATRIX += [("bh1", 3, "time_uniform", 3), ("bh2", 3, "time_uniform", 3)]


@pytest.mark.parametrize("variant, order, schedule, steps", MATRIX)
def test_unipc_matches_official(parity, variant, order, schedule, steps):
  """Batch item 0 unguided, item 1 classifier-guided; our own grid of the schedule."""
  mine = parity.states(steps, variant=variant, order=order, time_schedule=schedule)
  parity.check(
    f"unipc_{variant}_o{order}_{schedule}_{steps}",
    mine,
    RTOL_LAMBDA_GRID if schedule in ("logsnr", "karras") else RTOL,
  )


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("schedule", ["logsnr", "karras"])
def test_unipc_on_official_grid(parity, variant, schedule):
  """Given the official's own float32 grid, logsnr and karras agree to float32 rounding."""
  for order in (1, 2, 3):
    mine = parity.states(
      time_grid=official_grid(parity, schedule, 10), variant=variant, order=order
    )
    parity.check(f"unipc_{variant}_o{order}_{schedule}_10", mine, RTOL)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [2, 3])
def test_classifier_free_guidance(parity, variant, order):
  """7 steps; classifier-free guidance on both items, the classifier on item 1 too."""
  mine = parity.states(7, cfg_w=CFG_W, variant=variant, order=order)
  parity.check(f"unipc_{variant}_o{order}_cfg7", mine, RTOL)


@pytest.mark.parametrize("variant, order", [("bh2", 2), ("bh1", 3)])
def test_dynamic_thresholding(parity, variant, order):
  """Unguided, on the official logsnr grid (measured <= 2.7e-6; on our float64 logsnr grid the
  thresholded steps amplify the grid difference to 1.5e-3)."""
  mine = parity.states(
    time_grid=official_grid(parity, "logsnr", 10), thresholding=True, variant=variant, order=order
  )
  parity.check(f"unipc_{variant}_o{order}_logsnr_threshold", mine, RTOL)


@pytest.mark.parametrize("variant, order", [("bh2", 3), ("bh1", 2)])
def test_without_lower_order_final(parity, variant, order):
  mine = parity.states(5, variant=variant, order=order, lower_order_final=False)
  parity.check(f"unipc_{variant}_o{order}_no_lof5", mine, RTOL)


# ----------------------------------------------------------------------------- properties
@pytest.fixture(scope="module")
def gaussian():
  return Gaussian(diffusion.create_gaussian_diffusion(steps=1000, noise_schedule="cosine"))


def test_predictor_alone_is_dpm_solver_pp(gaussian):
  """Without the corrector, UniP-1 is DPM-Solver++(1) (= DDIM, test_solvers) and UniP-2 with
  bh2 (B(h) = e^-h - 1) is DPM-Solver++(2M); bh1 and the corrector change the samples."""
  x_t = np.linspace(-3, 3, 13, dtype=np.float32).reshape(13, 1)
  run = lambda solver, n, **kw: gaussian.run(solver, n, x_t, time_schedule="logsnr", **kw)
  for variant in ("bh1", "bh2"):
    np.testing.assert_allclose(
      run("unipc", 8, order=1, variant=variant, corrector=False),
      run("dpmpp_1", 8),
      rtol=0,
      atol=1e-6,
    )
  for steps, lof in ((8, True), (12, False)):  # orders 1, 2, .., 2(, 1) in both
    np.testing.assert_allclose(
      run("unipc", steps, order=2, variant="bh2", corrector=False, lower_order_final=lof),
      run("dpmpp_2m", steps, lower_order_final=lof),
      rtol=0,
      atol=1e-6,
    )
  unip_bh1 = run("unipc", 8, order=2, variant="bh1", corrector=False)
  unipc_bh2 = run("unipc", 8, order=2, variant="bh2")
  for other in (unip_bh1, unipc_bh2):
    assert np.abs(other - run("dpmpp_2m", 8)).max() > 1e-3


# Global orders on logsnr grids (cosine, T = 1000): UniC raises the predictor's order by one,
# so UniPC-1 converges at order 2 and UniPC-2 at 3; UniPC-3 also at 3 (its first step is
# UniPC-1, local error O(h^3)). lower_order_final's first-order last step (local O(h^2)) does
# not show here: at t = 1/N this model's x0 prediction barely moves. Measured slopes
# log2(err(n) / err(2n)) for n = 20, 40: bh1 2.19 2.11, 3.12 3.08, 3.50 2.97;
# bh2 1.93 1.98, 2.85 2.97, 3.39 2.93; the predictor alone (UniP-p): 0.96 0.98, 2.19 2.09
# (bh1), 3.93 4.09.
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order, expected", [(1, 2), (2, 3), (3, 3)])
def test_linear_gaussian_convergence(gaussian, variant, order, expected):
  error = lambda n, **kw: gaussian.error(
    "unipc", n, time_schedule="logsnr", order=order, variant=variant, **kw
  )
  errors = np.array([error(n) for n in (20, 40, 80)])
  slopes = np.log2(errors[:-1] / errors[1:])
  assert (slopes > expected - 0.3).all() and (slopes < expected + 0.6).all(), (errors, slopes)
  # The corrector pays off (measured error ratios 0.08 - 0.67 at 20 and 40 steps; at 80 steps
  # UniP-3's own order 4 catches up with UniPC-3's: 0.75).
  predictor_alone = np.array([error(n, corrector=False) for n in (20, 40)])
  assert (errors[:2] < 0.75 * predictor_alone).all(), (errors, predictor_alone)


def test_plans_orders_and_nfe(gaussian):
  gd = gaussian.gd
  plan = lambda *a, **k: solvers.solver_plan(gd, "unipc", *a, **k)
  orders = lambda *a, **k: plan(*a, **k).orders.tolist()
  # lower_order_final at every step count (DPM-Solver: only below 10 steps)
  assert orders(12, order=3) == [1, 2] + [3] * 8 + [2, 1]
  assert orders(12, order=3, lower_order_final=False) == [1, 2] + [3] * 10
  assert orders(3, order=3) == [1, 2, 1] and orders(4, order=2) == [1, 2, 2, 1]
  assert orders(1) == [1] and orders(2) == [1, 1]  # the default order is capped at steps
  assert orders(6) == [1, 2, 3, 3, 2, 1]  # the default order: 3
  for steps in (1, 2, 7):
    p = plan(steps)
    assert p.nfe == steps and p.times.size == steps + 1  # NFE = steps: no corrector call
    # step k ends at call k (corrected x_k); the last step at the last call's prediction
    assert p.step_ends.tolist() == list(range(1, steps)) + [steps - 1]
    assert p.step_states.tolist() == list(range(1, steps)) + [2 * steps - 1]
  p = plan(7, denoise_to_zero=True)
  assert p.nfe == 8 and p.step_states.tolist() == [1, 2, 3, 4, 5, 6, 6 + 8, 7]
  # the first call predicts only; the corrector's new point enters from the second call on
  p = plan(5, order=2)
  assert p.arrays["advance"].tolist() == [0, 1, 1, 1, 1]
  assert p.arrays["coefs"][0].tolist() == [0, 0, 0] and (p.arrays["coefs"][1:, 0] != 0).all()
  assert (plan(5, order=2, corrector=False).arrays["coefs"][:, 0] == 0).all()
  np.testing.assert_allclose(p.arrays["t_model"], np.linspace(995, 0, 6)[:-1], atol=1e-9)
  full = plan(995, order=2)  # every kept step
  assert full.nfe == 995 and np.isfinite(full.arrays["eval_coefs"]).all()


def test_sample_loop_progressive_ends_at_the_sample(gaussian):
  """samples[-1] is the sample (the last step's prediction); samples[:-1] the corrected x."""
  out = jax.jit(
    lambda x: solvers.solver_sample_loop(
      gaussian.gd,
      gaussian.model_fn,
      x.shape,
      None,
      noise=x,
      solver="unipc",
      steps=5,
      progressive=True,
    )
  )(jnp.linspace(-2.0, 2.0, 8).reshape(2, 2, 2, 1))
  assert out["samples"].shape == (5, 2, 2, 2, 1) and out["times"].shape == (5,)
  np.testing.assert_array_equal(out["samples"][-1], out["sample"])
  assert out["pred_xstarts"].shape == (5, 2, 2, 2, 1)


def test_clear_errors(gaussian):
  gd, shape, key = gaussian.gd, (2, 4, 4, 1), jax.random.key(0)
  loop = lambda **k: solvers.solver_sample_loop(gd, gaussian.model_fn, shape, key, **k)
  with pytest.raises(ValueError, match=r"UniPC order must be one of \(1, 2, 3\), got 4"):
    loop(solver="unipc", steps=5, order=4)
  with pytest.raises(ValueError, match=r"unknown UniPC variant 'bh3'; expected one of \('bh1',"):
    loop(solver="unipc", steps=5, variant="bh3")
  with pytest.raises(ValueError, match=r"'unipc' with order=3 needs steps >= 3 .*1..3.*steps=2"):
    loop(solver="unipc", steps=2, order=3)
  with pytest.raises(
    ValueError, match=r"order=2, variant='bh1': options of solver 'unipc', not of 'dpmpp_2m'"
  ):
    loop(solver="dpmpp_2m", steps=5, order=2, variant="bh1")
  with pytest.raises(ValueError, match=r"corrector=False: options of solver 'unipc', not of 'plms"):
    loop(solver="plms", steps=5, corrector=False)


# ----------------------------------------------------------------------------- SamplerSpec
BASE = diffusion.create_gaussian_diffusion(steps=1000, noise_schedule="cosine", learn_sigma=True)


@pytest.mark.parametrize(
  "spec, message",
  [
    (
      dict(name="dpmpp_2m", steps=10, variant="bh1"),
      "variant='bh1' is an option of sampler 'unipc', not of 'dpmpp_2m'",
    ),
    (dict(name="ddim", steps=10, order=2), "order=2 is an option of sampler 'unipc', not of 'ddim"),
    (
      dict(name="unipc", steps=10, order=4),
      "sampler 'unipc' order must be 1, 2 or 3 (0: its default), got 4",
    ),
    (dict(name="unipc", steps=10, order=-1), "order must be 1, 2 or 3"),
    (
      dict(name="unipc", steps=10, variant="BH2"),
      "unknown UniPC variant 'BH2'; expected one of bh1, bh2",
    ),
  ],
)
def test_bad_unipc_specs_are_refused(spec, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
    sampling.SamplerSpec(**spec)
  assert "\n" not in str(info.value)


def test_spec_defaults_check_and_describe():
  spec = sampling.SamplerSpec(name="unipc", steps=10)
  assert spec.solver_options() == {"order": 3, "variant": "bh2"}
  assert spec.solver_options(guided=True) == {"order": 2, "variant": "bh2"}
  assert sampling.SamplerSpec(name="unipc", steps=2).solver_options()["order"] == 2  # <= steps
  chosen = sampling.SamplerSpec(name="unipc", steps=10, order=1, variant="bh1")
  assert chosen.solver_options(guided=True) == {"order": 1, "variant": "bh1"}
  assert spec.nfe(BASE) == 10
  assert sampling.SamplerSpec(name="dpmpp_2m", steps=4).solver_options() == {}
  assert spec.describe().startswith("unipc bh2 order 3 (guided: 2), 10 network evaluations")
  with pytest.raises(ValueError, match="'unipc' with order=3 needs steps >= 3"):
    sampling.SamplerSpec(name="unipc", steps=2, order=3).check(BASE)


def _toy_apply(params, x, t, y, **kw):
  """A class-conditional stand-in network with learned-sigma outputs (zero variance)."""
  del kw
  scale = params * jnp.cos(t / 300.0) * (1.0 + 0.1 * y)
  return jnp.concatenate([scale[:, None, None, None] * x, jnp.zeros_like(x)], axis=-1)


def test_sample_fn_takes_the_guided_default_order():
  """make_sample_fn runs UniPC-bh2 of order 3 unguided and of order 2 with classifier-free
  guidance (the recommended defaults), as the solver loop with those orders does."""
  labels, key, shape = jnp.array([0, 1]), jax.random.key(3), (2, 4, 4, 1)
  spec = sampling.SamplerSpec(name="unipc", steps=6, time_schedule="logsnr")
  for cfg_scale, order in ((0.0, 3), (1.5, 2)):
    fn = sampling.make_sample_fn(
      _toy_apply,
      BASE,
      shape[1:],
      spec,
      class_cond=True,
      cfg_scale=cfg_scale,
      null_label=2,
      clip_denoised=False,
    )
    model_fn = lambda x, t, y=None: _toy_apply(jnp.float32(0.5), x, t, y)
    if cfg_scale:
      model_fn = guidance.classifier_free_model_fn(model_fn, cfg_scale, 2)
    expected = {
      o: np.asarray(
        diffusion.solver_sample_loop(
          BASE,
          model_fn,
          shape,
          key,
          solver="unipc",
          steps=6,
          time_schedule="logsnr",
          order=o,
          variant="bh2",
          model_kwargs={"y": labels},
        )
      )
      for o in (2, 3)
    }
    got = np.asarray(fn(jnp.float32(0.5), key, labels))
    np.testing.assert_allclose(got, expected[order], rtol=0, atol=1e-6)
    assert np.abs(got - expected[5 - order]).max() > 1e-4


# ----------------------------------------------------------------------------- config wiring
@pytest.mark.parametrize(
  "key, value, message",
  [
    (
      "sample.unipc_variant",
      "bh3",
      "sample: unknown UniPC variant 'bh3'; expected one of bh1, bh2",
    ),
    ("sample.solver_order", 2, "sample: order=2 is an option of sampler 'unipc', not of 'ddim'"),
    ("train.grid_solver_order", 5, "sampler 'unipc' order must be 1, 2 or 3"),
    ("train.grid_unipc_variant", "bh1", "variant='bh1' is an option of sampler 'unipc', not of"),
  ],
)
def test_config_keys_are_validated_in_one_line(key, value, message):
  config = tiny.config(grid_samples=2, grid_sampler="unipc", grid_steps=3)
  config.sample.update(sampler="unipc" if key != "sample.solver_order" else "ddim", steps=4)
  section, name = key.split(".")
  if name == "grid_unipc_variant":
    config.train.grid_sampler = "ddim"
  config[section][name] = value
  with pytest.raises(validation.ConfigError, match=message) as info:
    validation.validate(config, "sample" if section == "sample" else "train", devices=1)
  assert "\n" not in str(info.value)


@pytest.mark.slow  # builds and samples a tiny model
def test_training_grid_with_unipc(tmp_path, monkeypatch):
  """train.grid_sampler=unipc with its order and variant writes a grid from the EMA params."""
  specs, make = [], sampling.make_sample_fn
  monkeypatch.setattr(
    sampling, "make_sample_fn", lambda *a, **k: specs.append(a[3]) or make(*a, **k)
  )
  config = tiny.config(
    grid_samples=2,
    grid_sampler="unipc",
    grid_steps=3,
    grid_solver_order=2,
    grid_unipc_variant="bh1",
    grid_time_schedule="logsnr",
  )
  validation.validate(config, "train", devices=1)
  exp = dataclasses.replace(tiny.diffusion_experiment(), config=config)  # the same network
  hook = train.grid_hook(exp, str(tmp_path))
  (spec,) = specs
  assert (spec.name, spec.steps, spec.time_schedule, spec.order, spec.variant) == (
    "unipc",
    3,
    "logsnr",
    2,
    "bh1",
  )
  hook.fn(5, exp.init_state(), None)
  assert (tmp_path / "samples" / "grid_00000005.png").exists()
