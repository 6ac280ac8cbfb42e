"""Compiled train-step memory of whole configs, and the memory plan's table per device kind."""

import dataclasses
import time
from typing import Any, Dict, List

from adm_jax import config_base
from adm_jax import experiment
from adm_jax import memory_plan
from adm_jax.benchmarks import timing
from adm_jax.training import state as state_lib

RELEASED = (
  "imagenet64",
  "imagenet128",
  "imagenet256",
  "imagenet256_uncond",
  "imagenet512",
  "upsample64_256",
  "upsample128_512",
)


MEMORY_SETTINGS = (("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True))


def bench_memory(names=RELEASED, settings=MEMORY_SETTINGS) -> List[Dict[str, Any]]:
  """Compiled train-step memory at batch 1 for each config (a name or file) and (dtype,
  remat) setting."""
  rows = []
  for name in names:
    for dtype, remat in settings:
      config = timing.bench_config(config_base.from_config_file(name), 1)
      config.model.dtype, config.model.use_checkpoint = dtype, remat
      exp = experiment.build(config, timing.single_device_mesh())
      stats, _ = timing.compile_stats(exp.train_step, exp.abstract_state, exp.abstract_batch())
      gib = stats.get("total_bytes", 0) / 2**30
      rows.append(
        {
          "config": name,
          "dtype": dtype,
          "remat": remat,
          "GiB": gib,
          "params": state_lib.param_count(exp.abstract_state.params),
          "fits_16": gib <= 16,
          "fits_32": gib <= 32,
          "fits_80": gib <= 80,
          "train_flops_per_image": stats.get("flops"),
        }
      )
      print(f"{name:20s} {dtype:9s} remat={remat!s:5s} {gib:8.2f} GiB", flush=True)
  return rows


def device_kinds(names) -> Dict[str, Any]:
  """{kind: (devices, GiB)} from known kind names or COUNTxGIB."""
  kinds = {}
  for name in names:
    if name in memory_plan.DEVICE_KINDS:
      kinds[name] = memory_plan.DEVICE_KINDS[name]
    else:
      try:
        count, gib = name.lower().split("x")
        kinds[name] = (int(count), float(gib))
      except ValueError:
        raise ValueError(
          f"--plan_devices: {name!r} is neither one of "
          f"{', '.join(memory_plan.DEVICE_KINDS)} nor COUNTxGIB"
        ) from None
  return kinds


def run_plan(spec: str, policies, kind_names, dtype: str = "") -> Dict[str, Any]:
  """Fits per remat policy, then the plan per device kind; prints the table."""
  config = config_base.from_config_file(spec)
  if dtype:
    config.model.dtype = dtype
  kinds = device_kinds(kind_names)
  fits = []
  for policy in policies:
    start = time.perf_counter()
    fit = memory_plan.measure(config, policy)
    fits.append(fit)
    print(
      f"{spec} remat={policy}: {fit.fixed / 2**30:.2f} GiB + {fit.per_example / 2**30:.3f} "
      f"GiB per example (state {fit.state / 2**30:.2f} GiB; {time.perf_counter() - start:.0f} s "
      "to compile)",
      flush=True,
    )
  rows = memory_plan.table(spec, fits, config.train.batch_size, kinds)
  print(
    f"\n{spec} ({config.model.dtype}, global batch {config.train.batch_size}); estimates from "
    "XLA:CPU's memory analysis, 10% headroom"
  )
  print(
    f"{'device':14s} {'per-device batch':>16s} {'microbatch':>10s} {'remat':>15s} {'fsdp':>5s} "
    f"{'GiB':>6s}"
  )
  for r in rows:
    print(
      f"{r['device']:14s} {r['per_device_batch']:16d} {r['microbatch']:10d} {r['remat']:>15s} "
      f"{str(r['fsdp']):>5s} {r['GiB']:6.1f}"
    )
  return {"fits": [dataclasses.asdict(f) for f in fits], "rows": rows}


def print_memory_table(rows: List[Dict[str, Any]]) -> None:
  print(f"\n{'config':20s} {'dtype':9s} {'remat':5s} {'GiB (batch 1)':>13s}  fits 16 / 32 / 80 GiB")
  for r in rows:
    fits = " / ".join("yes" if r[f"fits_{g}"] else "no" for g in (16, 32, 80))
    print(f"{r['config']:20s} {r['dtype']:9s} {r['remat']!s:5s} {r['GiB']:13.2f}  {fits}")
