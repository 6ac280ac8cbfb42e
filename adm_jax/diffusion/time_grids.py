"""Continuous time for a discrete-time process, and the time grids of the fast solvers.

DPM-Solver (Lu et al. 2022) solves the diffusion ODE in a continuous time t in (0, 1]. For a
process trained on steps n = 0 .. T-1 it uses (as the official NoiseScheduleVP('discrete')):
  * step n sits at t_n = (n + 1) / N, and log alpha_t (alpha_t = sqrt(abar), sigma_t =
    sqrt(1 - alpha_t^2)) is piecewise linear in t between those points, extended linearly
    beyond the ends; lambda_t = log(alpha_t / sigma_t) is its half log-SNR;
  * the tail where lambda < -5.1 is cut off first, so N <= T (cosine, T = 1000: N = 996, t = 1
    is step 995; linear, T = 1000: N = 1000);
  * lambda -> t is inverted on the flipped log alpha table (also piecewise linear).
Solvers run from t = 1 down to t = 1/N (step 0) by default. Everything here is host numpy
float64, computed once per (schedule, steps) before a sampling loop is traced.
"""

from typing import Sequence

import numpy as np

CLIPPED_LAMBDA = -5.1
KARRAS_RHO = 7.0
TIME_SCHEDULES = ("time_uniform", "logsnr", "time_quadratic", "karras")


def _interp(x, xp, yp):
  """Piecewise-linear y(x) through (xp, yp), xp increasing, extended linearly past both ends."""
  x = np.asarray(x, np.float64)
  i = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, len(xp) - 2)
  x0, x1, y0, y1 = xp[i], xp[i + 1], yp[i], yp[i + 1]
  return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def _lambda_of_log_alpha(log_alpha):
  return log_alpha - 0.5 * np.log(-np.expm1(2.0 * log_alpha))


class DiscreteTimeSchedule:
  """The continuous-time view of betas [T] described in the module docstring."""

  def __init__(self, betas):
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or betas.size < 2:
      raise ValueError(f"betas must be a 1-D array of at least 2 steps, got shape {betas.shape}")
    log_alpha = 0.5 * np.cumsum(np.log1p(-betas))
    lam = _lambda_of_log_alpha(log_alpha)
    cut = int(np.searchsorted(lam[::-1], CLIPPED_LAMBDA))  # steps at the end with lambda < -5.1
    self.num_train_steps = betas.size
    self.log_alpha_table = log_alpha[: betas.size - cut]
    self.num_steps = self.log_alpha_table.size  # N
    if self.num_steps < 2:
      raise ValueError(f"only {self.num_steps} step of {betas.size} has lambda >= {CLIPPED_LAMBDA}")
    self.t_table = np.arange(1, self.num_steps + 1, dtype=np.float64) / self.num_steps
    self.t_start, self.t_end = 1.0, 1.0 / self.num_steps

  def log_alpha(self, t):
    return _interp(t, self.t_table, self.log_alpha_table)

  def alpha(self, t):
    return np.exp(self.log_alpha(t))

  def sigma(self, t):
    return np.sqrt(-np.expm1(2.0 * self.log_alpha(t)))

  def lam(self, t):
    """Half log-SNR lambda_t = log(alpha_t / sigma_t)."""
    return _lambda_of_log_alpha(self.log_alpha(t))

  def inverse_lambda(self, lam):
    """The t whose lambda_t is `lam`."""
    log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * np.asarray(lam, np.float64))
    return _interp(log_alpha, self.log_alpha_table[::-1], self.t_table[::-1])

  def step_index(self, t):
    """Fractional training step of t: (t - 1/N) * N, so t_n = (n + 1)/N gives n."""
    return (np.asarray(t, np.float64) - 1.0 / self.num_steps) * self.num_steps

  def times_of_steps(self, steps: Sequence[int]) -> np.ndarray:
    """t_n = (n + 1) / N of integer training steps n (checked to lie in [0, N - 1])."""
    n = np.asarray(steps)
    if n.ndim != 1 or not np.issubdtype(n.dtype, np.integer):
      raise ValueError(f"steps must be a 1-D sequence of integers, got {steps!r}")
    if n.size and (n.min() < 0 or n.max() > self.num_steps - 1):
      raise ValueError(
        f"steps must lie in [0, {self.num_steps - 1}] (the {self.num_steps} of "
        f"{self.num_train_steps} steps with lambda >= {CLIPPED_LAMBDA}), got {n.min()}..{n.max()}"
      )
    return (n.astype(np.float64) + 1.0) / self.num_steps

  def check_intervals(self, intervals: int, what: str):
    """Refuses a grid finer than the discrete steps between t = 1 and t = 1/N."""
    usable = self.num_steps - 1
    if intervals > usable:
      raise ValueError(
        f"{what} asks for {intervals} intervals between t = 1 and t = 1/N, but this schedule "
        f"has only {usable} ({self.num_steps} of {self.num_train_steps} steps are kept after "
        f"clipping lambda < {CLIPPED_LAMBDA})"
      )


def time_grid(schedule: DiscreteTimeSchedule, name: str, intervals: int) -> np.ndarray:
  """[intervals + 1] decreasing times from t = 1 to t = 1/N, spaced by the named rule.

  time_uniform: uniform in t. time_quadratic: uniform in sqrt(t) (DDIM's 'quad').
  logsnr: uniform in lambda. karras: sigma_i = (s_max^(1/rho) + i/(M-1) (s_min^(1/rho) -
  s_max^(1/rho)))^rho over the M = intervals + 1 points, rho = 7, sigma = sqrt((1 - abar)/abar)
  = exp(-lambda) between the end points' sigmas, mapped back through inverse_lambda.
  The end points of logsnr and karras are pinned to exactly 1 and 1/N.
  """
  if name not in TIME_SCHEDULES:
    raise ValueError(f"unknown time_schedule {name!r}; expected one of {TIME_SCHEDULES}")
  if not isinstance(intervals, (int, np.integer)) or intervals < 1:
    raise ValueError(f"a time grid needs at least 1 interval, got {intervals!r}")
  t_hi, t_lo = schedule.t_start, schedule.t_end
  if name == "time_uniform":
    return np.linspace(t_hi, t_lo, intervals + 1)
  if name == "time_quadratic":
    return np.linspace(np.sqrt(t_hi), np.sqrt(t_lo), intervals + 1) ** 2
  lam_hi, lam_lo = schedule.lam(t_hi), schedule.lam(t_lo)
  if name == "logsnr":
    lam = np.linspace(lam_hi, lam_lo, intervals + 1)
  else:
    ramp = np.linspace(0.0, 1.0, intervals + 1)
    inv_hi, inv_lo = np.exp(-lam_hi / KARRAS_RHO), np.exp(-lam_lo / KARRAS_RHO)
    lam = -KARRAS_RHO * np.log(inv_hi + ramp * (inv_lo - inv_hi))
  grid = schedule.inverse_lambda(lam)
  grid[0], grid[-1] = t_hi, t_lo
  return grid


def check_time_grid(schedule: DiscreteTimeSchedule, time_grid) -> np.ndarray:
  """An explicit grid as float64, checked: 1-D, >= 2 points, strictly decreasing, in [1/N, 1]."""
  grid = np.asarray(time_grid, np.float64)
  if grid.ndim != 1 or grid.size < 2:
    raise ValueError(f"time_grid must be a 1-D array of at least 2 times, got shape {grid.shape}")
  if not np.all(np.diff(grid) < 0):
    raise ValueError(f"time_grid must be strictly decreasing (t = 1 first), got {grid[:4]}...")
  lo, hi = schedule.t_end * (1 - 1e-9), 1.0 + 1e-9
  if grid.min() < lo or grid.max() > hi:
    raise ValueError(
      f"time_grid must lie in [1/N, 1] = [{schedule.t_end:.6g}, 1] (N = {schedule.num_steps}), "
      f"got [{grid.min():.6g}, {grid.max():.6g}]; use times_of_steps() for integer steps"
    )
  return grid
