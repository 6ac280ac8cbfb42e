"""Metric output: JSON lines in the workdir, TensorBoard when TensorFlow is installed."""
import importlib.util
import json
import logging
import os
import time
from typing import Any, Dict

import jax

log = logging.getLogger(__name__)


class MetricWriter:
  """Writes scalars as JSON lines (`metrics.jsonl`) and, if TF is importable, to TensorBoard.

  Only process 0 writes; other processes get a writer that does nothing.
  """

  def __init__(self, workdir: str, filename: str = "metrics.jsonl", tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, filename)
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if tensorboard and importlib.util.find_spec("tensorflow") is not None:
      try:
        from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TF)
        self._tb = metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"),
                                                         just_logging=False)
      except Exception as e:  # pylint: disable=broad-except
        log.warning("TensorBoard writer unavailable: %s", e)

  def write(self, step: int, scalars: Dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "time": time.time()}
    record.update({k: float(v) for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      self._tb.write_scalars(int(step), {k: float(v) for k, v in scalars.items()})

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()


def read_metrics(path: str):
  """All records of a metrics.jsonl file, in order."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
