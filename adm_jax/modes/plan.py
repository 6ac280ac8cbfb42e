"""The plan mode: checks a config and its data and reports model size, state and batch per
device, without building anything on the host (seconds, even for ADM-512).

Compiled memory estimates (minutes per compilation) come from
`python -m adm_jax.bench --plan --config=NAME` (adm_jax.memory_plan).
"""

import time
from typing import Sequence

import jax

from adm_jax import experiment
from adm_jax import memory_plan
from adm_jax import report as report_lib
from adm_jax import validation


def run(config, workdir: str, mesh=None, overrides: Sequence[str] = ()) -> report_lib.RunReport:
  """--mode=plan: the checks of --mode=train, the parameter count, the state per device and
  the per-device batch and microbatches; the data source's size and classes when readable."""
  del mesh, overrides
  started = time.perf_counter()
  validation.validate(config, "train")  # no workdir: a dry run writes nothing
  summary = memory_plan.state_summary(config)
  report = report_lib.RunReport(
    "plan",
    directory=workdir,
    metrics={
      "parameters_M": summary["params"] / 1e6,
      "state_GiB_per_device": summary["state_bytes_per_device"] / memory_plan.GIB,
      "per_device_batch": summary["per_device_batch"],
      "microbatches": summary["microbatches"],
      "devices": jax.device_count(),
    },
  )
  try:
    source = experiment.data_source(config.data, "train")
    validation.validate_source(config, "train", source)
    validation.validate_labels(config, "train", lambda split: source)
    report.notes.append(
      f"data: {getattr(source, 'name', config.data.name)}, {len(source)} "
      f"images, {getattr(source, 'num_classes', '?')} classes"
    )
  except (FileNotFoundError, ImportError, ValueError) as e:
    report.status = "data not available"
    report.notes.append(f"data: {e}")
  report.notes.append(
    "compiled memory per device and the batch / microbatch / remat that fit: "
    "python -m adm_jax.bench --plan --config=CONFIG (minutes per compilation)"
  )
  report.wall_s = time.perf_counter() - started
  report.next_mode = "train" if report.status == report_lib.FINISHED else None
  return report
