"""Noise schedules and timestep respacing, as float64 numpy arrays.

Everything here runs once at set-up time on the host. Arrays stay float64 (as in the
reference) and are cast to float32 only when a coefficient is looked up on device.
"""

import math
from typing import Iterable, List, Sequence, Tuple, Union

import numpy as np

NOISE_SCHEDULES = ("linear", "cosine")


def linear_beta_schedule(num_steps: int) -> np.ndarray:
  """Ho et al.'s linear betas, scaled so that any T spans the same total noise."""
  scale = 1000.0 / num_steps
  return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)


def betas_from_alpha_bar(num_steps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
  """Discretises a continuous alpha_bar(s), s in [0, 1], into T betas capped at max_beta."""
  s = np.arange(num_steps + 1, dtype=np.float64) / num_steps
  abar = np.array([alpha_bar(v) for v in s], dtype=np.float64)
  return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def cosine_alpha_bar(s: float, offset: float = 0.008) -> float:
  """Improved DDPM's cosine alpha_bar(s) = cos^2(((s + offset) / (1 + offset)) * pi / 2)."""
  return math.cos((s + offset) / (1.0 + offset) * math.pi / 2) ** 2


def get_named_beta_schedule(name: str, num_steps: int) -> np.ndarray:
  """Betas [T] float64 of the named schedule ('linear' or 'cosine')."""
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"diffusion_steps must be a positive integer, got {num_steps!r}")
  if name == "linear":
    if num_steps < 20:
      raise ValueError(
        f"noise_schedule 'linear' with diffusion_steps={num_steps} gives betas "
        "above 1 (its last beta is 0.02 * 1000 / T); use T >= 20 or 'cosine'"
      )
    return linear_beta_schedule(int(num_steps))
  if name == "cosine":
    return betas_from_alpha_bar(int(num_steps), cosine_alpha_bar)
  raise ValueError(f"unknown noise_schedule {name!r}; expected one of {NOISE_SCHEDULES}")


def _ddim_steps(num_steps: int, desired: int, spec: str) -> List[int]:
  """Multiples of the smallest integer stride that gives exactly `desired` steps."""
  for stride in range(1, num_steps):
    kept = list(range(0, num_steps, stride))
    if len(kept) == desired:
      return kept
  raise ValueError(
    f"timestep_respacing {spec!r}: no integer stride gives exactly {desired} of "
    f"{num_steps} steps (DDIM respacing needs len(range(0, T, stride)) == N)"
  )


def _section_steps(num_steps: int, counts: Sequence[int], spec) -> List[int]:
  """Evenly spaced steps from consecutive, nearly equal sections of [0, T)."""
  base, remainder = divmod(num_steps, len(counts))
  steps, start = [], 0
  for i, count in enumerate(counts):
    size = base + (1 if i < remainder else 0)
    if count < 1:
      raise ValueError(f"timestep_respacing {spec!r}: section {i} asks for {count} steps")
    if count > size:
      raise ValueError(
        f"timestep_respacing {spec!r}: section {i} has only {size} of {num_steps} "
        f"steps and cannot give {count}"
      )
    stride = 1.0 if count == 1 else (size - 1) / (count - 1)
    offset = 0.0
    for _ in range(count):
      steps.append(start + round(offset))  # Python round: half to even, as the reference.
      offset += stride
    start += size
  return steps


def space_timesteps(num_steps: int, spec: Union[str, Iterable[int], None]) -> List[int]:
  """Sorted original steps kept by a respacing spec.

  spec: "" or None (all steps), "N" or "a,b,c" (N steps, or a, b, c steps from as many
  equal sections, both ends of each section included), "ddimN" (stride multiples), or a
  sequence of per-section counts.
  """
  if spec is None or spec == "":
    return list(range(num_steps))
  if isinstance(spec, str):
    text = spec.strip()
    if text.startswith("ddim"):
      try:
        desired = int(text[len("ddim") :])
      except ValueError:
        raise ValueError(
          f"timestep_respacing {spec!r}: expected 'ddimN' with an integer N"
        ) from None
      if desired < 1:
        raise ValueError(f"timestep_respacing {spec!r}: N must be positive")
      if desired == num_steps:
        return list(range(num_steps))
      return _ddim_steps(num_steps, desired, spec)
    try:
      counts = [int(part) for part in text.split(",")]
    except ValueError:
      raise ValueError(
        f"timestep_respacing {spec!r}: expected '', 'N', 'a,b,c' or 'ddimN'"
      ) from None
  else:
    counts = [int(c) for c in spec]
  if not counts:
    raise ValueError(f"timestep_respacing {spec!r}: no section counts")
  return sorted(set(_section_steps(num_steps, counts, spec)))


def respace_betas(betas: np.ndarray, kept_steps: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
  """Betas of the process that visits only `kept_steps`, and the timestep map.

  beta'_i = 1 - abar[m_i] / abar[m_{i-1}] with abar[m_{-1}] = 1, so the kept steps have
  exactly the original alpha_bar. Returns (betas' [T'] float64, timestep_map [T'] int64).
  """
  kept = np.asarray(sorted(set(int(s) for s in kept_steps)), dtype=np.int64)
  if kept.size == 0 or kept[0] < 0 or kept[-1] >= len(betas):
    raise ValueError(f"kept steps must lie in [0, {len(betas)}), got {kept.tolist()[:5]}...")
  abar = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))[kept]
  prev = np.concatenate([[1.0], abar[:-1]])
  return 1.0 - abar / prev, kept
