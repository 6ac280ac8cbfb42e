"""What fits where: the README's table of ADM-64/128/256/512, their classifiers and the two
upsamplers on 16, 24, 32, 40, 80 and 95 GB devices, from compiled memory analysis.

For each model and remat policy (none, convs_saveable) it compiles the production train step
(adm_jax.memory_plan.measure: per-device batch 4 and 8, the config's dtype) and stores the fit
in experiments/results/memory_fits.json as it goes (rerun to continue; finished fits are
skipped); then it prints the markdown tables: the largest per-device batch without / with
remat (no FSDP, and with FSDP over 8 devices), and the plan for the paper's global batch on
8 devices (per-device batch, microbatch, remat, FSDP).

  nice -n 19 python experiments/memory_table.py            # hours on a 2-core CPU
  python experiments/memory_table.py --print_only          # the tables from the stored fits
"""

import argparse
import dataclasses
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from adm_jax import xla_env  # noqa: E402  pylint: disable=wrong-import-position

# XLA's buffer assignment, which the memory analysis reports, comes before code generation:
# cheap code generation leaves the figures unchanged (measured: RESULTS.md, 2026-12-04).
xla_env.configure_for_cpu(fast_compile=True)
from adm_jax import config_base  # noqa: E402  pylint: disable=wrong-import-position
from adm_jax import memory_plan  # noqa: E402  pylint: disable=wrong-import-position

MODELS = (
  ("ADM-64", "imagenet64", "train"),
  ("ADM-128", "imagenet128", "train"),
  ("ADM-256", "imagenet256", "train"),
  ("ADM-512", "imagenet512", "train"),
  ("classifier 64", "classifier64", "train_classifier"),
  ("classifier 128", "classifier128", "train_classifier"),
  ("classifier 256", "classifier256", "train_classifier"),
  ("classifier 512", "classifier512", "train_classifier"),
  ("upsampler 64→256", "upsample64_256", "train"),
  ("upsampler 128→512", "upsample128_512", "train"),
)
POLICIES = ("none", "convs_saveable")
# Per-device batches of the two compilations. With remat the peak at small batches is the fixed
# part (gradients, optimizer update), where the line through two points says nothing of the
# activations: remat policies are measured at 8 and 16, and again at 16 and 32 when the
# activations at 16 are still under a tenth of the fixed part.
BATCHES = {"none": (4, 8), "convs_saveable": (8, 16)}
LARGER_BATCHES = (16, 32)
MEMORY_GB = (16, 24, 32, 40, 80, 95)
DEVICES = 8
OUT = os.path.join(REPO, "experiments", "results", "memory_fits.json")


def _load():
  try:
    with open(OUT) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def measure_all(models=MODELS) -> dict:
  stored = _load()
  for label, name, mode in models:
    for policy in POLICIES:
      key = f"{name}:{mode}:{policy}"
      if key in stored and "batches" in stored[key]:
        continue
      config = config_base.from_config_file(name)
      start = time.perf_counter()
      batches = BATCHES[policy]
      fit = memory_plan.measure(config, policy, batches=batches, mode=mode)
      if policy != "none" and fit.per_example * batches[-1] < 0.1 * fit.fixed:
        batches = LARGER_BATCHES
        fit = memory_plan.measure(config, policy, batches=batches, mode=mode)
      stored[key] = dict(
        dataclasses.asdict(fit),
        compile_s=time.perf_counter() - start,
        batches=list(batches),
        label=label,
        dtype=(config.classifier.dtype if mode == "train_classifier" else config.model.dtype),
      )
      os.makedirs(os.path.dirname(OUT), exist_ok=True)
      with open(OUT + ".tmp", "w") as f:
        json.dump(stored, f, indent=2)
      os.replace(OUT + ".tmp", OUT)
      print(
        f"{key}: {fit.fixed / 2**30:.2f} GiB + {fit.per_example / 2**30:.3f} GiB/example "
        f"({stored[key]['compile_s']:.0f} s)",
        flush=True,
      )
  return stored


def _fit(entry) -> memory_plan.Fit:
  return memory_plan.Fit(**{f.name: entry[f.name] for f in dataclasses.fields(memory_plan.Fit)})


def tables(stored, models=MODELS) -> str:
  head = " | ".join(f"{gb} GiB" for gb in MEMORY_GB)
  lines = [
    "Largest per-device batch, without / with remat (convs_saveable); in brackets with "
    f"FSDP over {DEVICES} devices:",
    "",
    f"| model | dtype | {head} |",
    "|---|---|" + "---|" * len(MEMORY_GB),
  ]
  plan_lines = [
    f"Plan for the paper's global batch on {DEVICES} devices (per-device batch / "
    "microbatch / remat / FSDP; '-': nothing fits):",
    "",
    f"| model | global batch | {head} |",
    "|---|---|" + "---|" * len(MEMORY_GB),
  ]
  for label, name, mode in models:
    fits = [_fit(stored[f"{name}:{mode}:{p}"]) for p in POLICIES if f"{name}:{mode}:{p}" in stored]
    if len(fits) < len(POLICIES):
      continue
    dtype = stored[f"{name}:{mode}:none"]["dtype"]
    cells, plans = [], []
    config = config_base.from_config_file(name)
    global_batch = (
      config.classifier.batch_size if mode == "train_classifier" else config.train.batch_size
    )
    for gb in MEMORY_GB:
      plain = [memory_plan.max_batch(f, gb, 1) for f in fits]
      sharded = [memory_plan.max_batch(f, gb, DEVICES) for f in fits]
      cells.append(f"{plain[0]} / {plain[1]} ({sharded[0]} / {sharded[1]})")
      p = memory_plan.plan(fits, global_batch, DEVICES, gb)
      plans.append(
        "-"
        if not p["microbatch"]
        else f"{p['per_device_batch']} / {p['microbatch']} / {p['remat']} / {p['fsdp']}"
      )
    lines.append(f"| {label} | {dtype} | " + " | ".join(cells) + " |")
    plan_lines.append(f"| {label} | {global_batch} | " + " | ".join(plans) + " |")
  return "\n".join(lines + [""] + plan_lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--print_only", action="store_true")
  parser.add_argument("--models", default="", help="comma-separated config names (default: all)")
  args = parser.parse_args(argv)
  models = [m for m in MODELS if not args.models or m[1] in args.models.split(",")]
  stored = _load() if args.print_only else measure_all(models)
  print(tables(stored, models))


if __name__ == "__main__":
  main()
