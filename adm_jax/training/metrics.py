"""Metric output: JSON lines in the workdir, TensorBoard when TensorFlow is installed.

On resume at step s, rows of steps after s (written by a run that was interrupted before its
next checkpoint) move to `metrics.superseded.jsonl`, so that every step appears once in
metrics.jsonl and nothing is deleted.
"""

import importlib.util
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional

import jax

from adm_jax import files

log = logging.getLogger(__name__)

SUPERSEDED = "metrics.superseded.jsonl"


class MetricWriter:
  """Writes scalars as JSON lines (`metrics.jsonl`) and, if TF is importable, to TensorBoard.

  Only process 0 writes; other processes get a writer that does nothing.
  """

  def __init__(
    self,
    workdir: str,
    filename: str = "metrics.jsonl",
    tensorboard: bool = True,
    resume_step: Optional[int] = None,
  ):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, filename)
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None:
      supersede_after(self.path, resume_step)
    if tensorboard and importlib.util.find_spec("tensorflow") is not None:
      try:
        from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TF)

        self._tb = metric_writers.create_default_writer(
          os.path.join(workdir, "tensorboard"), just_logging=False
        )
      except Exception as e:  # pylint: disable=broad-except
        log.warning("TensorBoard writer unavailable: %s", e)

  def write(self, step: int, scalars: Dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "time": time.time()}
    record.update({k: float(v) for k, v in scalars.items()})
    files.append_line(
      self.path, json.dumps(record), "a metrics row", resume="it resumes from the newest checkpoint"
    )
    if self._tb is not None:
      self._tb.write_scalars(int(step), {k: float(v) for k, v in scalars.items()})

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()


def read_metrics(path: str) -> List[Dict[str, Any]]:
  """All records of a metrics.jsonl file, in order ([] when there is none)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def last_record(path: str) -> Dict[str, Any]:
  """The newest row of a metrics.jsonl file ({} when there is none)."""
  records = read_metrics(path)
  return records[-1] if records else {}


def supersede_after(path: str, step: int) -> int:
  """Moves the rows of steps > `step` to metrics.superseded.jsonl beside `path`; returns their
  number."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  keep = [line for line in lines if json.loads(line)["step"] <= step]
  moved = [line for line in lines if json.loads(line)["step"] > step]
  if not moved:
    return 0
  with open(os.path.join(os.path.dirname(path), SUPERSEDED), "a") as f:
    f.writelines(moved)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(keep)
  os.replace(tmp, path)
  log.info(
    "resuming at step %d: %d metric rows of later steps moved to %s", step, len(moved), SUPERSEDED
  )
  return len(moved)
