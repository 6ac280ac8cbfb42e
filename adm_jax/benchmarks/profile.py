"""Where a step's time goes: a jax.profiler trace of a few calls and its op kinds by time."""

import os
from typing import Any, Callable, Dict, List

import jax


def profile_steps(fn: Callable[[], Any], directory: str, steps: int = 3) -> Dict[str, Any]:
  """Runs fn `steps` times under jax.profiler.trace(directory); returns the op summary."""
  os.makedirs(directory, exist_ok=True)
  with jax.profiler.trace(directory):
    for _ in range(steps):
      jax.block_until_ready(fn())
  return {"dir": directory, "steps": steps, "top_ops": op_time_summary(directory, steps)}


def op_time_summary(directory: str, steps: int, top: int = 15) -> List[Dict[str, Any]]:
  """Op kinds (XLA instruction names without their .N suffix) by traced time per step.

  Sums the events of XLA's op lines (CPU: the runtime's threads; GPU / TPU: the device's "XLA
  Ops" line) in the newest trace under `directory`. On CPU the events are thread time, and
  convolutions, which run asynchronously on the intra-op pool, appear only with their dispatch.
  """
  paths = sorted(
    (
      os.path.join(root, name)
      for root, _, names in os.walk(directory)
      for name in names
      if name.endswith(".xplane.pb")
    ),
    key=os.path.getmtime,
  )
  profile_data = getattr(jax.profiler, "ProfileData", None)
  if not paths or profile_data is None:  # ProfileData: jax >= 0.5
    return []
  totals: Dict[str, float] = {}
  counts: Dict[str, int] = {}
  for plane in profile_data.from_file(paths[-1]).planes:
    for line in plane.lines:
      if not ("XLA" in line.name and (plane.name.startswith("/host") or line.name == "XLA Ops")):
        continue
      for event in line.events:
        if event.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
          continue
        stem, _, suffix = event.name.rpartition(".")
        kind = stem if stem and suffix.isdigit() else event.name
        totals[kind] = totals.get(kind, 0.0) + event.duration_ns / 1e6 / steps
        counts[kind] = counts.get(kind, 0) + 1
  ranked = sorted(totals, key=totals.get, reverse=True)[:top]
  return [{"op": k, "ms_per_step": totals[k], "count_per_step": counts[k] / steps} for k in ranked]


def print_profile(profile: Dict[str, Any]) -> None:
  print(
    f"\nprofile of {profile['steps']} train steps in {profile['dir']} (thread time per step; "
    "on CPU convolutions are asynchronous and show only their dispatch)"
  )
  for row in profile["top_ops"]:
    print(f"  {row['op']:32s} {row['ms_per_step']:9.2f} ms  {row['count_per_step']:7.1f} / step")
