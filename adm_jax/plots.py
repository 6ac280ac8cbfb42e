"""Training curves as PNG (matplotlib, when installed): loss / mse / vb (or accuracy) by step."""

import importlib.util
import json
import logging
import os
from typing import Optional, Sequence

from adm_jax import files

log = logging.getLogger(__name__)


def plot_metrics(metrics_path: str, out_path: str, keys: Sequence[str]) -> Optional[str]:
  """One panel per metric in `keys` found in a metrics.jsonl file; returns the PNG's path, or
  None when there is nothing to draw or matplotlib is not installed."""
  if not os.path.exists(metrics_path) or importlib.util.find_spec("matplotlib") is None:
    return None
  with open(metrics_path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  series = {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}
  series = {k: v for k, v in series.items() if v}
  if not series:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top  (optional, heavy)

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3), squeeze=False)
  for ax, (name, points) in zip(axes[0], series.items()):
    steps, values = zip(*points)
    ax.plot(steps, values, lw=1)
    ax.set_title(name)
    ax.set_xlabel("step")
    if min(values) > 0 and max(values) / max(min(values), 1e-12) > 20:
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  try:
    with files.atomic_path(out_path, "the metrics plot") as tmp:
      fig.savefig(tmp, dpi=100)
  finally:
    plt.close(fig)
  return out_path
