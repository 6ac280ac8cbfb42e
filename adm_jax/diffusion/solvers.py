"""Fast samplers for a discrete-time process: DPM-Solver++ (1, 2M, 3M, 2S),
SDE-DPM-Solver++(2M), PLMS, UniPC (bh1, bh2; orders 1-3).

Each solver is ONE sampling loop over `lax.scan`. What it does at each network call (where
the network is evaluated, which earlier predictions it combines with which weights, whether
the call ends a step) is precomputed on the host in float64 from static Python values (the
solver, `steps`, the time grid) into a `SolverPlan`; the scan body is the same for all
solvers, so nothing branches on traced values and no call is wasted at the first or last
steps. Times and the discrete-to-continuous schedule are those of time_grids.py.

Network time. The network is called with the fractional training step (t - 1/N) * N of
the continuous time t (times 1000/T when `rescale_timesteps`), so t_n = (n + 1)/N gives
exactly step n, the noise level alpha_t was taken from: ADM checkpoints were trained on the
step index. The official DPM-Solver wrapper feeds (t - 1/N) * 1000 instead, which is the same
only when N = T = 1000 (not for the cosine schedule, whose clipped N is 996; see
tests/data/make_solver_trajectories.py for how the reference was driven).

Solvers and what `steps` means (NFE = network calls; with `cond_fn` each call also costs one
classifier forward and backward; `denoise_to_zero=True` adds one call):
  dpmpp_1       multistep DPM-Solver++ of order 1 (= DDIM, eta 0): steps calls, steps steps.
  dpmpp_2m/3m   multistep DPM-Solver++ order 2/3 (data prediction, 'dpmsolver' update): steps
                calls; orders 1, 2(, 3) at the start and, when steps < 10 and
                lower_order_final, lower orders at the last steps (as the official).
  dpmpp_2s      singlestep DPM-Solver++(2S): steps calls in ceil(steps/2) steps; an odd steps
                makes the last step first order. Midpoints as the official 'singlestep'.
  sde_dpmpp_2m  SDE-DPM-Solver++(2M) (midpoint; diffusers' 'sde-dpmsolver++'): steps calls and
                steps noisy steps, the same order rule as dpmpp_2m.
  plms          pseudo linear multistep (PNDM's PLMS as latent-diffusion / diffusers with
                skip_prk_steps): steps calls over steps - 1 steps; the first step is an
                improved-Euler warm-up costing 2 calls, then Adams-Bashforth 2, 3, 4 on eps.
  unipc         UniPC (Zhao et al. 2023): multistep, data prediction, variant bh1 or bh2 (the
                paper's B(h) = h or e^h - 1), order 1-3, UniC corrector (see "UniPC" below):
                steps calls, steps steps.
Every call: eps_hat = eps - sigma_t cond_fn(x, t), x0 = (x - sigma_t eps_hat) / alpha_t, then
the x0 corrections (dynamic thresholding, clipping); PLMS combines the eps re-derived from the
corrected x0 (as ADM's DDIM). Grids end at t = 1/N (step 0), without a jump to sigma = 0
unless `denoise_to_zero`. The SDE's last step also adds noise (sigma_{1/N} > 0).

UniPC, as the official wl-zhao/UniPC `uni_pc.py` (multistep, algorithm_type 'data_prediction').
A step s -> t of the grid t_0 > ... > t_n, h = lambda_t - lambda_s, m = x0 predictions:
  predictor UniP-p: x_t = sigma_t/sigma_s x_s + alpha_t (1 - e^-h) m_s
                          - alpha_t B sum_k rho_k (m_{s_k} - m_s) / r_k
  over the p - 1 earlier points s_k, r_k = (lambda_{s_k} - lambda_s) / h, B = -h (bh1) or
  e^-h - 1 (bh2); corrector UniC-p: the same with the new point t (r = 1, m_t taken at the
  predicted x_t) among the nodes. rho solves sum_k rho_k r_k^(i-1) = i! (-h) phi_{i+1}(-h) / B,
  i = 1 .. #nodes (phi_1(z) = (e^z - 1)/z, phi_{i+1}(z) = (phi_i(z) - 1/i!)/z), except the
  official's fixed rho = 1/2 of the order-2 predictor and of the order-1 corrector.
  The call at t_j evaluates the network at the predicted x_j; its x0 corrects x_j (the state)
  and predicts x_{j+1} (the next call's input), so NFE = steps: the first call only predicts,
  and the last step is not corrected (the official default).
  Orders: step k runs min(order, k), and with lower_order_final also <= n + 1 - k for EVERY n
  (not only below 10 steps as DPM-Solver), so the last step is always first order.
  Default order (None here, 0 in SamplerSpec): UNIPC_ORDER (3), UNIPC_GUIDED_ORDER (2) when
  guided (the authors' advice), at most steps. corrector=False runs the predictor UniP alone:
  order 1 is then DPM-Solver++(1) (DDIM), order 2 with bh2 DPM-Solver++(2M).
"""

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adm_jax.diffusion import gaussian as g
from adm_jax.diffusion import time_grids as tg
from adm_jax.diffusion.samplers import _initial_noise

SOLVERS = ("dpmpp_1", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "sde_dpmpp_2m", "plms", "unipc")
TIME_SCHEDULES = tg.TIME_SCHEDULES
UNIPC_VARIANTS, UNIPC_ORDERS = ("bh1", "bh2"), (1, 2, 3)
# Defaults: the authors' advice (UniPC paper; diffusers' UniPCMultistepScheduler, which they
# wrote): order 3 for unconditional and 2 for guided sampling, B(h) = e^h - 1.
UNIPC_ORDER, UNIPC_GUIDED_ORDER, UNIPC_VARIANT = 3, 2, "bh2"
_MIN_STEPS = {
  "dpmpp_1": 1,
  "dpmpp_2m": 2,
  "dpmpp_3m": 3,
  "dpmpp_2s": 1,
  "sde_dpmpp_2m": 2,
  "plms": 2,
  "unipc": 1,
}
_WHY_MIN = {
  "dpmpp_2m": "its multistep warm-up uses orders 1, 2",
  "dpmpp_3m": "its multistep warm-up uses orders 1, 2, 3",
  "sde_dpmpp_2m": "its multistep warm-up uses orders 1, 2",
  "plms": "its first step is an improved-Euler step of 2 network calls",
}
THRESHOLD_RATIO, THRESHOLD_MAX = 0.995, 1.0
# Adams-Bashforth weights of PLMS by the number of earlier eps it can use.
_ADAMS_BASHFORTH = (
  (1.0,),
  (1.5, -0.5),
  (23 / 12, -16 / 12, 5 / 12),
  (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)
_ARRAY_KEYS = (
  "t_model",
  "alpha",
  "sigma",
  "x_coef",
  "coefs",
  "noise_coef",
  "advance",
  "push",
  "eps_mode",
  "eval_x_coef",
  "eval_coefs",
)


@dataclasses.dataclass(frozen=True)
class SolverPlan:
  """What a solver does at each of its `nfe` network calls (host numpy, float64).

  arrays: per call i, the eval point (t_model, alpha, sigma [nfe]); the update
    x_next = x_coef x_base + sum_k coefs[i, k] P_k + noise_coef z_i, where P_0 is this call's
    prediction (x0, or eps where eps_mode) and P_1.. the earlier pushed ones ([nfe, 1 + H]);
    advance (x_base <- x_next: the call ends a solver step) and push (P_0 enters the history);
    the next call's input x_eval = eval_x_coef x_next + sum_k eval_coefs[i, k] P_k (x_next
    itself except for UniPC, whose x_next is the corrected state and x_eval its prediction;
    x_eval after the last call is the sample).
  times [S + 1]: t at the start and after each of the S solver steps; orders [S];
  step_ends [S]: the call that ends each step; step_states [S]: where each step's x is among
  the calls' x_next (i < nfe) and x_eval (nfe + i), e.g. the last step of UniPC: 2 nfe - 1.
  """

  solver: str
  steps: int
  times: np.ndarray
  orders: np.ndarray
  step_ends: np.ndarray
  step_states: np.ndarray
  arrays: Dict[str, np.ndarray]

  @property
  def nfe(self) -> int:
    return int(self.arrays["t_model"].shape[0])

  @property
  def stochastic(self) -> bool:
    return bool(np.any(self.arrays["noise_coef"] != 0))

  def with_history(self, history: int) -> "SolverPlan":
    """The same plan with `history` earlier predictions kept (zero weights pad), so plans of
    different solvers have the same array shapes and can share one compiled loop."""
    width = self.arrays["coefs"].shape[1]
    if history < width - 1:
      raise ValueError(f"history={history} is below this plan's {width - 1}")
    padded = {}
    for key in ("coefs", "eval_coefs"):
      padded[key] = np.zeros((self.nfe, history + 1))
      padded[key][:, :width] = self.arrays[key]
    return dataclasses.replace(self, arrays=dict(self.arrays, **padded))


class _Calls:
  """Collects the rows of a plan, one per network call."""

  def __init__(self):
    self.rows = []

  def add(
    self,
    t,
    x_coef,
    coefs,
    *,
    advance,
    push=True,
    eps_mode=False,
    noise=0.0,
    eval_x_coef=1.0,
    eval_coefs=(),
    eval_ends_step=False,
  ):
    self.rows.append(
      dict(
        t=float(t),
        x_coef=float(x_coef),
        coefs=np.asarray(coefs, np.float64),
        noise_coef=float(noise),
        advance=float(advance),
        push=float(push),
        eps_mode=float(eps_mode),
        eval_x_coef=float(eval_x_coef),
        eval_coefs=np.asarray(eval_coefs, np.float64),
        eval_ends_step=bool(eval_ends_step),
      )
    )

  def arrays(self, schedule: tg.DiscreteTimeSchedule, time_scale: float):
    t = np.array([r["t"] for r in self.rows])
    width = max(
      np.flatnonzero(r[k]).max(initial=0) + 1 for r in self.rows for k in ("coefs", "eval_coefs")
    )
    out = {
      "t_model": schedule.step_index(t) * time_scale,
      "alpha": schedule.alpha(t),
      "sigma": schedule.sigma(t),
    }
    for key in ("coefs", "eval_coefs"):
      out[key] = np.zeros((len(self.rows), width))
      for i, r in enumerate(self.rows):
        out[key][i, : min(width, r[key].size)] = r[key][:width]
    for key in ("x_coef", "noise_coef", "advance", "push", "eps_mode", "eval_x_coef"):
      out[key] = np.array([r[key] for r in self.rows])
    return out

  def step_ends_and_states(self):
    """(step_ends, step_states) of SolverPlan: a call's x_next ends a step where it advances,
    its x_eval where eval_ends_step, in that order."""
    nfe, ends, states = len(self.rows), [], []
    for i, r in enumerate(self.rows):
      if r["advance"]:
        ends.append(i)
        states.append(i)
      if r["eval_ends_step"]:
        ends.append(i)
        states.append(nfe + i)
    return np.asarray(ends, np.int64), np.asarray(states, np.int64)


def _multistep(schedule, grid, order, lower_order_final, sde, calls):
  """DPM-Solver++ (order 1..3) or SDE-DPM-Solver++ (order 1..2) over every grid interval."""
  n = grid.size - 1
  lam, alpha, sigma = schedule.lam(grid), schedule.alpha(grid), schedule.sigma(grid)
  m0, m1, m2 = np.eye(3)  # the current and the two previous data predictions
  orders = []
  for i in range(n):
    o = min(order, i + 1)
    if lower_order_final and n < 10:
      o = min(o, n - i)
    h = lam[i + 1] - lam[i]
    if sde:
      x_coef = sigma[i + 1] / sigma[i] * np.exp(-h)
      base, noise = alpha[i + 1] * -np.expm1(-2 * h), sigma[i + 1] * np.sqrt(-np.expm1(-2 * h))
    else:
      x_coef, base, noise = sigma[i + 1] / sigma[i], -alpha[i + 1] * np.expm1(-h), 0.0
    if o == 1:
      c = base * m0
    elif o == 2:
      r0 = (lam[i] - lam[i - 1]) / h
      c = base * m0 + 0.5 * base * (m0 - m1) / r0
    else:
      r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
      d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
      d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
      d2 = (d1_0 - d1_1) / (r0 + r1)
      phi1 = np.expm1(-h)
      phi2 = phi1 / h + 1.0
      phi3 = phi2 / h - 0.5
      c = -alpha[i + 1] * phi1 * m0 + alpha[i + 1] * phi2 * d1 - alpha[i + 1] * phi3 * d2
    calls.add(grid[i], x_coef, c, advance=True, noise=noise)
    orders.append(o)
  return grid, orders


def _singlestep(schedule, steps, time_schedule, time_grid, calls):
  """DPM-Solver++(2S): order-2 steps with a midpoint call, a first-order last step if odd."""
  orders = [2] * (steps // 2) + [1] * (steps % 2)
  bounds = np.cumsum([0] + orders)
  if time_grid is None and time_schedule == "logsnr":  # outer grid uniform in lambda
    outer = tg.time_grid(schedule, "logsnr", len(orders))
    lam_outer = schedule.lam(outer)
    mids = schedule.inverse_lambda(0.5 * (lam_outer[:-1] + lam_outer[1:]))
  else:  # every other point of the steps-interval grid; the skipped ones are the midpoints
    fine = time_grid if time_grid is not None else tg.time_grid(schedule, time_schedule, steps)
    outer, mids = fine[bounds], fine[np.minimum(bounds[:-1] + 1, steps)]
  for k, o in enumerate(orders):
    s, t = outer[k], outer[k + 1]
    lam_s = schedule.lam(s)
    h = schedule.lam(t) - lam_s
    alpha_t, phi1 = schedule.alpha(t), np.expm1(-h)
    ratio = schedule.sigma(t) / schedule.sigma(s)
    if o == 1:
      calls.add(s, ratio, [-alpha_t * phi1], advance=True)
      continue
    s1 = mids[k]
    r1 = (schedule.lam(s1) - lam_s) / h
    calls.add(
      s,
      schedule.sigma(s1) / schedule.sigma(s),
      [-schedule.alpha(s1) * np.expm1(-r1 * h)],
      advance=False,
    )
    w = 0.5 / r1 * alpha_t * phi1
    calls.add(s1, ratio, [-w, -alpha_t * phi1 + w], advance=True)
  return outer, orders


def _plms(schedule, grid, calls):
  """PLMS on eps: improved Euler (2 calls) for the first interval, then AB2, AB3, AB4."""
  alpha, sigma = schedule.alpha(grid), schedule.sigma(grid)
  ddim = lambda i: (alpha[i + 1] / alpha[i], sigma[i + 1] - alpha[i + 1] * sigma[i] / alpha[i])
  x_coef, c = ddim(0)
  calls.add(grid[0], x_coef, [c], advance=False, eps_mode=True)
  calls.add(grid[1], x_coef, [0.5 * c, 0.5 * c], advance=True, push=False, eps_mode=True)
  for j in range(1, grid.size - 1):
    x_coef, c = ddim(j)
    calls.add(
      grid[j], x_coef, c * np.array(_ADAMS_BASHFORTH[min(j, 3)]), advance=True, eps_mode=True
    )
  return grid, [2] + [min(j + 1, 4) for j in range(1, grid.size - 1)]


def unipc_default_order(steps: int, guided: bool = False) -> int:
  """UniPC's order when none is given: UNIPC_ORDER, UNIPC_GUIDED_ORDER when guided, <= steps."""
  return min(UNIPC_GUIDED_ORDER if guided else UNIPC_ORDER, steps)


def unipc_orders(steps: int, order: int, lower_order_final: bool = True):
  """The order of each of UniPC's `steps` steps (warm-up, then the official lower_order_final)."""
  return [
    min(order, k, steps + 1 - k) if lower_order_final else min(order, k)
    for k in range(1, steps + 1)
  ]


def _unipc_step(lam_s, lam_t, lam_earlier, alpha_t, order, variant, corrector):
  """Weights of one UniPC step s -> t on the x0 predictions (data prediction; module docstring).

  lam_earlier: lambda of the earlier points, newest first (at least order - 1). Returns
  (w_t, w): x_t = sigma_t/sigma_s x_s + w_t m_t + sum_k w[k] m_k over m_s and the earlier
  points' m (order of them); w_t = 0 for the predictor.
  """
  h = lam_t - lam_s
  hh = -h
  big_b = hh if variant == "bh1" else np.expm1(hh)
  r = (np.asarray(lam_earlier[: order - 1], np.float64) - lam_s) / h
  nodes = np.append(r, 1.0) if corrector else r
  rhs, g, factorial = [], np.expm1(hh) / hh - 1.0, 1.0  # g_i = hh phi_{i+1}(hh)
  for i in range(1, nodes.size + 1):
    rhs.append(g * factorial / big_b)
    factorial *= i + 1
    g = g / hh - 1.0 / factorial
  if nodes.size == 0:
    rho = np.zeros(0)
  elif nodes.size == 1:  # the official's simplified order-2 predictor and order-1 corrector
    rho = np.array([0.5])
  else:
    rho = np.linalg.solve(np.vander(nodes, increasing=True).T, np.asarray(rhs))
  rho_earlier, rho_t = (rho[:-1], rho[-1]) if corrector else (rho, 0.0)
  w = np.zeros(order)
  w[0] = -alpha_t * np.expm1(-h) + alpha_t * big_b * (np.sum(rho_earlier / r) + rho_t)
  w[1:] = -alpha_t * big_b * rho_earlier / r
  return -alpha_t * big_b * rho_t, w


def _unipc(schedule, grid, order, variant, lower_order_final, corrector, calls):
  """UniPC over every grid interval: the call at t_j corrects x_j and predicts x_{j+1}."""
  n = grid.size - 1
  lam, alpha, sigma = schedule.lam(grid), schedule.alpha(grid), schedule.sigma(grid)
  orders = unipc_orders(n, order, lower_order_final)
  for j in range(n):  # P_0 = m_j, P_k = m_{j-k}
    if j == 0:  # x_0 = x_T, nothing to correct
      x_coef, coefs = 1.0, []
    else:  # UniC-p of step j (or, without the corrector, its prediction again)
      o = orders[j - 1]
      w_t, w = _unipc_step(
        lam[j - 1], lam[j], lam[j - 2 :: -1] if j > 1 else [], alpha[j], o, variant, corrector
      )
      x_coef, coefs = sigma[j] / sigma[j - 1], np.concatenate([[w_t], w])
    o = orders[j]
    _, w = _unipc_step(
      lam[j],
      lam[j + 1],
      lam[j - 1 :: -1] if j > 0 else [],
      alpha[j + 1],
      o,
      variant,
      corrector=False,
    )
    calls.add(
      grid[j],
      x_coef,
      coefs,
      advance=j > 0,
      eval_x_coef=sigma[j + 1] / sigma[j],
      eval_coefs=w,
      eval_ends_step=j == n - 1,
    )
  return grid, orders


def check_process(diffusion: g.GaussianDiffusion):
  """Refuses processes the solvers cannot use: respaced ones and previous_x models."""
  steps_map = np.asarray(diffusion.timestep_map)
  if not np.array_equal(steps_map, np.arange(steps_map.size)) or (
    steps_map.size != diffusion.original_num_steps
  ):
    raise ValueError(
      f"the solvers need the un-respaced process (timestep_map the identity), got one with "
      f"{steps_map.size} of {diffusion.original_num_steps} steps; build it with "
      "timestep_respacing='' and choose the solver's steps instead"
    )
  if diffusion.model_mean_type == g.PREVIOUS_X:
    raise ValueError(
      f"model_mean_type {g.PREVIOUS_X!r} is not supported by the solvers; "
      f"expected {g.EPSILON!r} or {g.START_X!r}"
    )


def _check_unipc_options(solver, order, variant, corrector):
  """Refuses UniPC's options for other solvers and values UniPC does not have."""
  if solver != "unipc":
    given = [
      f"{k}={v!r}"
      for k, v, unset in (
        ("order", order, None),
        ("variant", variant, None),
        ("corrector", corrector, True),
      )
      if v != unset
    ]
    if given:
      raise ValueError(f"{', '.join(given)}: options of solver 'unipc', not of {solver!r}")
    return
  if order is not None and (isinstance(order, bool) or order not in UNIPC_ORDERS):
    raise ValueError(f"UniPC order must be one of {UNIPC_ORDERS}, got {order!r}")
  if variant is not None and variant not in UNIPC_VARIANTS:
    raise ValueError(f"unknown UniPC variant {variant!r}; expected one of {UNIPC_VARIANTS}")


def solver_plan(
  diffusion: g.GaussianDiffusion,
  solver: str,
  steps: Optional[int] = None,
  *,
  time_schedule: str = "time_uniform",
  time_grid=None,
  lower_order_final: bool = True,
  denoise_to_zero: bool = False,
  order: Optional[int] = None,
  variant: Optional[str] = None,
  corrector: bool = True,
) -> SolverPlan:
  """The host-side plan of `solver` with `steps` network calls (see the module docstring).

  time_grid: explicit decreasing times in [1/N, 1] instead of `time_schedule` (e.g.
  DiscreteTimeSchedule.times_of_steps of integer steps): all steps + 1 points of the grid
  (dpmpp_2s: outer and midpoints alternate; plms: steps points). `steps` may then be omitted.
  UniPC only: order (UNIPC_ORDERS; None: unipc_default_order(steps)), variant
  (UNIPC_VARIANTS; None: UNIPC_VARIANT), corrector (False: the predictor UniP alone).
  """
  if solver not in SOLVERS:
    raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
  if time_schedule not in TIME_SCHEDULES:
    raise ValueError(f"unknown time_schedule {time_schedule!r}; expected one of {TIME_SCHEDULES}")
  _check_unipc_options(solver, order, variant, corrector)
  check_process(diffusion)
  schedule = tg.DiscreteTimeSchedule(diffusion.betas)
  grid = None
  if time_grid is not None:
    grid = tg.check_time_grid(schedule, time_grid)
    implied = grid.size if solver == "plms" else grid.size - 1
    if steps is not None and steps != implied:
      raise ValueError(
        f"steps={steps!r} does not match the time_grid of {grid.size} points, "
        f"which gives {solver} {implied} steps"
      )
    steps = implied
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
    raise ValueError(f"steps must be an integer number of network calls, got {steps!r}")
  steps = int(steps)
  if steps < _MIN_STEPS[solver]:
    why = f" ({_WHY_MIN[solver]})" if solver in _WHY_MIN else ""
    raise ValueError(
      f"solver {solver!r} needs steps >= {_MIN_STEPS[solver]}{why}, got steps={steps}"
    )
  if solver == "unipc" and order is not None and steps < order:
    raise ValueError(
      f"solver 'unipc' with order={order} needs steps >= {order} (its multistep "
      f"warm-up uses orders 1..{order}), got steps={steps}"
    )
  intervals = steps - 1 if solver == "plms" else steps
  schedule.check_intervals(intervals, f"solver {solver!r} with steps={steps}")
  if grid is None and not (solver == "dpmpp_2s" and time_schedule == "logsnr"):
    grid = tg.time_grid(schedule, time_schedule, intervals)
  calls = _Calls()
  if solver == "dpmpp_2s":
    times, orders = _singlestep(schedule, steps, time_schedule, grid, calls)
  elif solver == "plms":
    times, orders = _plms(schedule, grid, calls)
  elif solver == "unipc":
    times, orders = _unipc(
      schedule,
      grid,
      unipc_default_order(steps) if order is None else order,
      variant or UNIPC_VARIANT,
      lower_order_final,
      corrector,
      calls,
    )
  else:
    order = {"dpmpp_1": 1, "dpmpp_2m": 2, "dpmpp_3m": 3, "sde_dpmpp_2m": 2}[solver]
    times, orders = _multistep(
      schedule, grid, order, lower_order_final, solver == "sde_dpmpp_2m", calls
    )
  if denoise_to_zero:  # one more call: the x0 prediction at the last time
    calls.add(times[-1], 0.0, [1.0], advance=True, push=False)
    times, orders = np.append(times, times[-1]), list(orders) + [0]
  scale = 1000.0 / diffusion.original_num_steps if diffusion.rescale_timesteps else 1.0
  step_ends, step_states = calls.step_ends_and_states()
  return SolverPlan(
    solver=solver,
    steps=steps,
    times=np.asarray(times),
    orders=np.asarray(orders),
    step_ends=step_ends,
    step_states=step_states,
    arrays=calls.arrays(schedule, scale),
  )


def dynamic_threshold(x0, ratio: float = THRESHOLD_RATIO, max_value: float = THRESHOLD_MAX):
  """Imagen's rule per sample: s = max(quantile(|x0|, ratio), max_value); clip to [-s, s], / s."""
  flat = jnp.abs(x0.reshape(x0.shape[0], -1))
  s = jnp.maximum(jnp.quantile(flat, ratio, axis=1), max_value)
  s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.clip(x0, -s, s) / s


def run_solver_plan(
  diffusion: g.GaussianDiffusion,
  model_fn,
  plan,
  x_init,
  *,
  key=None,
  step_noise=None,
  clip_denoised: bool = False,
  thresholding: bool = False,
  cond_fn: Optional[Callable] = None,
  model_kwargs=None,
  progressive: bool = False,
):
  """Runs a plan (a SolverPlan or its `arrays`, which may be traced) from x_init [B, ..., C].

  Noise of call i: step_noise[i] ([nfe, *shape]) or normal(fold_in(key, i)); none when both
  are None. Returns the final x, or with progressive a dict with 'sample' and, per call,
  'states' (its x_next), 'evals' (its x_eval: the next call's input) and 'pred_xstarts' (the
  x0 prediction used) [nfe, *shape]; a plan's step_states index concat(states, evals).
  """
  arrays = plan.arrays if isinstance(plan, SolverPlan) else plan
  xs = {k: jnp.asarray(arrays[k], jnp.float32) for k in _ARRAY_KEYS}
  nfe, width = xs["coefs"].shape
  x_init = jnp.asarray(x_init, jnp.float32)
  kwargs = model_kwargs or {}

  def correct(x0):
    if thresholding:
      x0 = dynamic_threshold(x0)
    return jnp.clip(x0, -1.0, 1.0) if clip_denoised else x0

  def predict(x, p):
    t = jnp.full((x.shape[0],), p["t_model"], jnp.float32)
    out, _ = diffusion.split_model_output(
      jnp.asarray(model_fn(x, t, **kwargs)).astype(jnp.float32), x
    )
    alpha, sigma = p["alpha"], p["sigma"]
    grad = None if cond_fn is None else jnp.asarray(cond_fn(x, t, **kwargs), jnp.float32)
    eps = None
    if diffusion.model_mean_type == g.START_X:
      x0 = out if grad is None else out + (sigma**2 / alpha) * grad
    else:  # classifier guidance shifts eps: eps - sigma * grad log p(y | x_t)
      eps = out if grad is None else out - sigma * grad
      x0 = (x - sigma * eps) / alpha
    if thresholding or clip_denoised or eps is None:
      x0 = correct(x0)
      eps = (x - alpha * x0) / sigma
    return jnp.where(p["eps_mode"] > 0, eps, x0), x0

  def body(carry, inputs):
    i, p = inputs
    x_base, x_eval, history = carry
    current, x0 = predict(x_eval, p)
    terms = (current,) + history
    x_next = p["x_coef"] * x_base
    for k in range(width):
      x_next = x_next + p["coefs"][k] * terms[k]
    if step_noise is not None:
      x_next = x_next + p["noise_coef"] * jnp.asarray(step_noise, jnp.float32)[i]
    elif key is not None:
      x_next = x_next + p["noise_coef"] * jax.random.normal(
        jax.random.fold_in(key, i), x_init.shape, jnp.float32
      )
    x_base = jnp.where(p["advance"] > 0, x_next, x_base)
    x_eval = p["eval_x_coef"] * x_next  # = x_next (1 x_next + 0 P) except for UniPC
    for k in range(width):
      x_eval = x_eval + p["eval_coefs"][k] * terms[k]
    pushed = (current,) + history[:-1] if history else ()
    history = tuple(jnp.where(p["push"] > 0, a, b) for a, b in zip(pushed, history))
    return (x_base, x_eval, history), ((x_next, x_eval, x0) if progressive else None)

  history = tuple(jnp.zeros_like(x_init) for _ in range(width - 1))
  (_, final, _), outs = jax.lax.scan(body, (x_init, x_init, history), (jnp.arange(nfe), xs))
  if progressive:
    return {"sample": final, "states": outs[0], "evals": outs[1], "pred_xstarts": outs[2]}
  return final


def solver_sample_loop(
  diffusion: g.GaussianDiffusion,
  model_fn,
  shape: Sequence[int],
  key,
  *,
  solver: str,
  steps: Optional[int] = None,
  time_schedule: str = "time_uniform",
  time_grid=None,
  lower_order_final: bool = True,
  denoise_to_zero: bool = False,
  order: Optional[int] = None,
  variant: Optional[str] = None,
  corrector: bool = True,
  noise=None,
  step_noise=None,
  clip_denoised: bool = False,
  thresholding: bool = False,
  cond_fn: Optional[Callable] = None,
  model_kwargs: Optional[Mapping[str, Any]] = None,
  progressive: bool = False,
):
  """Samples x_0 [shape] from x_T = `noise` or N(0, I) drawn from `key`, with a fast solver.

  solver: one of SOLVERS; steps: network calls (see the module docstring); time_schedule:
  one of TIME_SCHEDULES, or time_grid: explicit times (see solver_plan). lower_order_final:
  the official rules (DPM-Solver: multistep solvers with steps < 10; UniPC: always).
  denoise_to_zero: one more call returning its x0 prediction at t = 1/N. order, variant,
  corrector: UniPC's (solver_plan; order None: unipc_default_order(steps), the unguided one:
  SamplerSpec picks the guided one). clip_denoised: clip every x0 prediction to [-1, 1];
  thresholding: Imagen's dynamic thresholding of it (ratio 0.995, max 1).
  cond_fn(x, t, **model_kwargs) -> scale * grad_x log p(y | x_t) (adm_jax.guidance), applied
  as eps - sigma_t * cond_fn; classifier-free guidance comes in through model_fn.
  step_noise [steps, *shape]: the noise of each step of sde_dpmpp_2m (else drawn from
  fold_in(key, i)). Returns x_0; with progressive a dict: 'sample', 'samples' [S, *shape]
  (x after each solver step), 'times' [S] (their t), 'pred_xstarts' [NFE, *shape].
  """
  plan = solver_plan(
    diffusion,
    solver,
    steps,
    time_schedule=time_schedule,
    time_grid=time_grid,
    lower_order_final=lower_order_final,
    denoise_to_zero=denoise_to_zero,
    order=order,
    variant=variant,
    corrector=corrector,
  )
  x_init, step_key = _initial_noise(key, shape, noise)
  if plan.stochastic:
    if step_noise is not None:
      step_noise = jnp.asarray(step_noise, jnp.float32)
      expected = (plan.steps,) + tuple(x_init.shape)
      if step_noise.shape != expected:
        raise ValueError(f"step_noise has shape {step_noise.shape}, expected {expected}")
      if plan.nfe > plan.steps:  # the denoise_to_zero call adds no noise
        step_noise = jnp.concatenate([step_noise, jnp.zeros_like(step_noise[:1])])
    elif step_key is None:
      raise ValueError(f"solver {solver!r} is stochastic: pass `key` or `step_noise`")
  else:
    if step_noise is not None:
      raise ValueError(f"step_noise is only for sde_dpmpp_2m; solver {solver!r} adds no noise")
    step_key = None
  out = run_solver_plan(
    diffusion,
    model_fn,
    plan,
    x_init,
    key=step_key,
    step_noise=step_noise,
    clip_denoised=clip_denoised,
    thresholding=thresholding,
    cond_fn=cond_fn,
    model_kwargs=model_kwargs,
    progressive=progressive,
  )
  if not progressive:
    return out
  states = jnp.concatenate([out["states"], out["evals"]])[plan.step_states]
  return {
    "sample": out["sample"],
    "samples": states,
    "times": jnp.asarray(plan.times[1:], jnp.float32),
    "pred_xstarts": out["pred_xstarts"],
  }
