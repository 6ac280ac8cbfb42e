"""What a mode did, for the person who ran it: status, files produced, key figures, wall time,
and the mode to run next. Every mode returns a `RunReport`; `main` prints it."""

import dataclasses
from typing import Any, Dict, List, Optional

FINISHED, ALREADY_FINISHED, PREEMPTED = "finished", "already finished", "stopped by a signal"
# Exit statuses of `python -m adm_jax.main` (README "Exit statuses"): 0 only when the mode
# finished its work; a run stopped by a signal after its checkpoint exits as the shell reports
# a process killed by that signal (128 + its number), so a scheduler that decides by status
# requeues it; everything else that stops a mode (a bad setting, a full disk, a non-finite
# loss, a lost peer process) exits 1; a bad command line 2.
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


@dataclasses.dataclass
class RunReport:
  """mode: train | train_classifier | sample | eval | nll. metrics: the last logged scalars
  (training) or the results (sample / eval / nll). outputs: {what: path}."""

  mode: str
  status: str = FINISHED
  directory: str = ""
  step: Optional[int] = None
  metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
  outputs: Dict[str, str] = dataclasses.field(default_factory=dict)
  wall_s: float = 0.0
  notes: List[str] = dataclasses.field(default_factory=list)
  next_mode: Optional[str] = None  # the mode a user typically runs next
  next_overrides: List[str] = dataclasses.field(default_factory=list)  # its extra --config.x=y
  stopped_by: Optional[str] = None  # PREEMPTED: SIGTERM, SIGINT or "preemption notice"

  def exit_code(self) -> int:
    """The process exit status this report calls for (see EXIT_* above)."""
    if self.status in (FINISHED, ALREADY_FINISHED):
      return EXIT_OK
    if self.status == PREEMPTED:
      return EXIT_SIGNAL.get(self.stopped_by or "", EXIT_SIGNAL["SIGTERM"])
    return EXIT_ERROR

  def lines(self, figures=()) -> List[str]:
    """Human-readable summary: one line of status, the key figures, the files, the notes."""
    head = f"{self.mode}: {self.status}"
    if self.step is not None:
      head += f" at step {self.step}"
    if self.wall_s:
      head += f" in {_duration(self.wall_s)}"
    out = [head]
    shown = [(k, self.metrics[k]) for k in figures if k in self.metrics]
    if shown:
      out.append("  " + "  ".join(f"{k} {_number(v)}" for k, v in shown))
    for what, path in self.outputs.items():
      out.append(f"  {what}: {path}")
    out += [f"  note: {n}" for n in self.notes]
    return out


def _number(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def _duration(seconds: float) -> str:
  if seconds < 90:
    return f"{seconds:.0f} s"
  minutes = seconds / 60
  return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"
