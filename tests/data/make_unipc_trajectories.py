"""Writes unipc_trajectories_gd_tiny_cond.npz: whole UniPC trajectories of the official code.

The reference is the official UniPC (wl-zhao/UniPC, uni_pc.py at commit cf9de85, imported from
its checkout; nothing of it is copied into adm_jax), run on the PyTorch networks of the fixture
set `gd_tiny_cond` exactly as make_solver_trajectories.py runs the official DPM-Solver (its
`References` class is reused: the networks, the schedule, the time convention, the guidance).

usage (the reference harness's environment, see ../shared/ref-harness/README.md):
  GD_REF=/path/to/guided-diffusion DPM_SOLVER_REF=/path/to/dpm-solver \\
    UNIPC_REF=/path/to/UniPC python tests/data/make_unipc_trajectories.py

How the reference is driven:
  * UniPC(model_fn, ns, algorithm_type='data_prediction', variant='bh1' | 'bh2',
    correcting_x0_fn='dynamic_thresholding' for the thresholded runs), then
    sample(x_T, steps, order, skip_type, method='multistep', lower_order_final,
    return_intermediate=True) from t = 1 to t = 1/N: the official defaults (corrector after
    every step but the last, NFE = steps). Its per-step debug prints are silenced.
  * model_fn and ns are DPM-Solver's model_wrapper and NoiseScheduleVP('discrete') (the
    References of make_solver_trajectories.py), not UniPC's own: UniPC's NoiseScheduleVP
    does not cut the lambda < -5.1 tail (cosine, T = 1000: N = 1000 instead of 996, t = 1
    would be step 999), and its model_wrapper's classifier guidance multiplies the gradient
    [B, C, H, W] by an un-expanded sigma_t [B] (broadcast over W). Both compute the same
    functions otherwise; UniPC only calls marginal_* / inverse_lambda / total_N / T of ns.
  * network time, classifier guidance (scale [0, 1] per batch item: item 0 unguided, item 1
    guided), classifier-free guidance (s = 1 + w = 3, null label 999) and the karras grid
    (get_time_steps replaced on the instance) as in make_solver_trajectories.py.

Stored (float32, batch 2, NCHW; <run> names below):
  x_T, y                 the initial noise (numpy RandomState(0)) and labels [3, 711], the
                         same as solver_trajectories_gd_tiny_cond.npz
  times_<sched>_<steps>  the official grid of each schedule and step count used [steps + 1]
  <run>                  x after every step [steps, 2, 3, 8, 8], on the pixels [..., ::4, ::4]
                         (every 4th row and column: the whole trajectory in 2 MB)
  <run>_final            x after the last step, every pixel [2, 3, 32, 32]
Runs (classifier guidance on item 1 unless said otherwise):
  unipc_<variant>_o<order>_<sched>_<steps>     variant bh1 | bh2, order 1 | 2 | 3;
                         time_uniform at 3 (order 3 only), 5 and 10 steps; logsnr,
                         time_quadratic, karras at 10 steps
  unipc_<variant>_o<order>_cfg7                7 steps on time_uniform, classifier-free
                         guidance on both items (and the classifier on item 1), orders 2, 3
  unipc_<variant>_o<order>_logsnr_threshold    10 steps, unguided, dynamic thresholding
  unipc_<variant>_o<order>_no_lof5             5 steps on time_uniform, lower_order_final=False
"""

import contextlib
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_solver_trajectories as mst  # noqa: E402  (sets up the harness; needs GD_REF)
import torch as th  # noqa: E402

SKIP = {
  "time_uniform": "time_uniform",
  "logsnr": "logSNR",
  "time_quadratic": "time_quadratic",
  "karras": "karras",
}
VARIANTS, ORDERS, STRIDE = ("bh1", "bh2"), (1, 2, 3), 4


def import_unipc():
  path = os.environ.get("UNIPC_REF", "")
  if not os.path.isfile(os.path.join(path, "uni_pc.py")):
    raise SystemExit(
      "set UNIPC_REF to a checkout of wl-zhao/UniPC (commit cf9de85) holding "
      f"uni_pc.py; got {path!r}"
    )
  sys.path.insert(0, os.path.abspath(path))
  import uni_pc  # pylint: disable=import-outside-toplevel

  return uni_pc


def karras_time_steps(ns, t_T, t_0, steps):
  """rho = 7 between the end points' sigma = exp(-lambda), back to t by ns.inverse_lambda."""
  lam_hi, lam_lo = ns.marginal_lambda(th.tensor([t_T])), ns.marginal_lambda(th.tensor([t_0]))
  hi, lo = th.exp(-lam_hi / mst.RHO), th.exp(-lam_lo / mst.RHO)
  sigma = (hi + th.linspace(0.0, 1.0, steps + 1) * (lo - hi)) ** mst.RHO
  return ns.inverse_lambda(-th.log(sigma))


class Runner:
  """The official UniPC over the reference networks; returns the states after every step."""

  def __init__(self, unipc, ref, x_t, y):
    self.unipc, self.ref, self.x_t = unipc, ref, x_t
    self.model_fns = {
      "guided": ref.model_fn(y, True),
      "cfg": ref.model_fn(y, True, cfg=True),
      "plain": ref.model_fn(y, False),
    }

  def solver(self, variant, guidance="guided", thresholding=False):
    solver = self.unipc.UniPC(
      self.model_fns[guidance],
      self.ref.ns,
      algorithm_type="data_prediction",
      variant=variant,
      correcting_x0_fn="dynamic_thresholding" if thresholding else None,
    )
    original, ns = solver.get_time_steps, self.ref.ns

    def get_time_steps(skip_type, t_T, t_0, N, device):
      if skip_type != "karras":
        return original(skip_type, t_T, t_0, N, device)
      return karras_time_steps(ns, t_T, t_0, N).to(device)

    solver.get_time_steps = get_time_steps
    return solver

  def times(self, schedule, steps):
    return self.solver("bh2").get_time_steps(SKIP[schedule], 1.0, 1.0 / self.ref.n, steps, "cpu")

  def states(self, variant, order, schedule, steps, lower_order_final=True, **kw):
    solver = self.solver(variant, **kw)
    with contextlib.redirect_stdout(io.StringIO()):  # the official prints at every step
      _, states = solver.sample(
        self.x_t.clone(),
        steps=steps,
        order=order,
        skip_type=SKIP[schedule],
        method="multistep",
        lower_order_final=lower_order_final,
        return_intermediate=True,
      )
    assert len(states) == steps + 1  # x_T, then x after each step
    return th.stack(states[1:])


def main():
  th.set_num_threads(2)
  ref = mst.References(mst.import_dpm_solver())
  rng = np.random.RandomState(0)
  x_np = rng.randn(2, 3, 32, 32).astype(np.float32)
  x_t, y = th.from_numpy(x_np), th.tensor([3, 711])
  runner = Runner(import_unipc(), ref, x_t, y)
  out = {"x_T": x_np, "y": y.numpy()}
  runs = {}  # name -> (variant, order, schedule, steps, options)
  for variant in VARIANTS:
    runs[f"unipc_{variant}_o3_time_uniform_3"] = (variant, 3, "time_uniform", 3, {})
    for order in ORDERS:
      for schedule in SKIP:
        for steps in (5, 10) if schedule == "time_uniform" else (10,):
          name = f"unipc_{variant}_o{order}_{schedule}_{steps}"
          runs[name] = (variant, order, schedule, steps, {})
    for order in (2, 3):
      runs[f"unipc_{variant}_o{order}_cfg7"] = (
        variant,
        order,
        "time_uniform",
        7,
        {"guidance": "cfg"},
      )
  runs["unipc_bh2_o2_logsnr_threshold"] = (
    "bh2",
    2,
    "logsnr",
    10,
    {"guidance": "plain", "thresholding": True},
  )
  runs["unipc_bh1_o3_logsnr_threshold"] = (
    "bh1",
    3,
    "logsnr",
    10,
    {"guidance": "plain", "thresholding": True},
  )
  runs["unipc_bh2_o3_no_lof5"] = ("bh2", 3, "time_uniform", 5, {"lower_order_final": False})
  runs["unipc_bh1_o2_no_lof5"] = ("bh1", 2, "time_uniform", 5, {"lower_order_final": False})
  with th.no_grad():
    for name, (variant, order, schedule, steps, options) in runs.items():
      out.setdefault(f"times_{schedule}_{steps}", runner.times(schedule, steps).numpy())
      states = runner.states(variant, order, schedule, steps, **options)
      out[name] = states[..., ::STRIDE, ::STRIDE]
      out[f"{name}_final"] = states[-1]
      print(name, tuple(states.shape), float(states.abs().max()), flush=True)
  out = {
    k: (v.numpy().astype(np.float32) if isinstance(v, th.Tensor) else v) for k, v in out.items()
  }
  path = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "unipc_trajectories_gd_tiny_cond.npz"
  )
  np.savez_compressed(path, **out)
  print("wrote", path, os.path.getsize(path) // 1024, "KiB")


if __name__ == "__main__":
  main()
