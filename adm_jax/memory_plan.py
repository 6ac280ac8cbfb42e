"""Will a config's train step fit a device, and with which per-device batch, microbatch and remat?

`measure(config, policy)` compiles the production train step (experiment.build) on one device
at per-device batches 4 and 8 and reads XLA's memory analysis (arguments + temporaries +
outputs - aliases); the two points give the fixed bytes and the bytes per example.
`plan(...)` turns those into, for a device count and memory size, the largest per-device batch
that fits with and without FSDP, and the microbatch and remat policy to use for the config's
global batch. The figures come from XLA:CPU's compilation: GPU / TPU compilers fuse and lay
out differently (XLA:CPU also computes bf16 convolutions in float32), so treat them as
estimates within tens of percent and leave the headroom `plan` keeps (10%).
"""

import dataclasses
import math
from typing import Dict, List, Sequence

import jax
import ml_collections

from adm_jax import experiment
from adm_jax import sharding as shd
from adm_jax.training import state as state_lib

# Device kinds of the README table: (devices per host, GiB of memory per device).
DEVICE_KINDS = {
  "v4-8": (4, 32),
  "v5e-8": (8, 16),
  "8xA100-80G": (8, 80),
  "8xH100": (8, 80),
  "8xH200": (8, 141),
}
HEADROOM = 0.9
GIB = 2**30


@dataclasses.dataclass
class Fit:
  """Compiled memory of one remat policy: bytes(b) = fixed + b * per_example (one device)."""

  policy: str
  fixed: float
  per_example: float
  flops_per_example: float
  state: float  # params + EMA + optimizer (+ sampler) bytes, in `fixed`
  params: float  # bytes of the float32 parameters (the gradients are as many)


def state_bytes(exp: experiment.Experiment) -> Dict[str, float]:
  """Bytes of the train state's parts (float32 params, EMA copies, optimizer moments)."""
  size = lambda tree: float(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))
  s = exp.abstract_state
  parts = {
    "params": size(s.params),
    "ema": size(s.ema_params),
    "optimizer": size(s.opt_state),
    "other": size((s.sampler_state, s.step, s.rng)),
  }
  parts["total"] = sum(parts.values())
  return parts


def _with(config, batch: int, policy: str, mode: str = "train") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  config.train.update(batch_size=batch, microbatch=-1, fsdp=1)
  config.model.update(remat_policy=policy, use_checkpoint=False)
  if mode == "train_classifier":
    config.classifier.update(
      batch_size=batch, microbatch=-1, remat_policy=policy, use_checkpoint=False
    )
  return config


def measure(
  config, policy: str = "none", batches: Sequence[int] = (4, 8), mode: str = "train"
) -> Fit:
  """Compiles the train step of the model that `mode` trains (train: the UNet,
  train_classifier: the classifier) at two per-device batches on one device; fits the line."""
  mesh = shd.create_mesh(1, jax.devices()[:1])
  points = []
  for batch in batches:
    exp = experiment.builder(mode)(_with(config, batch, policy, mode), mesh, donate=True)
    compiled = exp.train_step.lower(exp.abstract_state, exp.abstract_batch()).compile()
    mem = compiled.memory_analysis()
    total = (
      mem.argument_size_in_bytes
      + mem.output_size_in_bytes
      + mem.temp_size_in_bytes
      - mem.alias_size_in_bytes
    )
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    points.append((batch, float(total), float((cost or {}).get("flops", 0.0))))
  (b1, m1, f1), (b2, m2, f2) = points[0], points[-1]
  per_example = (m2 - m1) / (b2 - b1)
  parts = state_bytes(exp)
  return Fit(
    policy,
    m1 - b1 * per_example,
    per_example,
    (f2 - f1) / (b2 - b1),
    parts["total"],
    parts["params"],
  )


def device_bytes(fit: Fit, batch: int, fsdp: int) -> float:
  """Estimated bytes per device at a per-device batch with parameters sharded over `fsdp`.

  The state and the gradients divide by fsdp; each device then also holds the all-gathered
  float32 parameters while it computes.
  """
  if fsdp == 1:
    return fit.fixed + batch * fit.per_example
  sharded = fit.state + fit.params  # the state and the gradients
  return fit.fixed - sharded + sharded / fsdp + fit.params + batch * fit.per_example


def max_batch(fit: Fit, memory_gib: float, fsdp: int) -> int:
  """The largest per-device batch whose estimate fits HEADROOM of the memory (0: none)."""
  room = HEADROOM * memory_gib * GIB - device_bytes(fit, 0, fsdp)
  return max(0, int(room // fit.per_example)) if fit.per_example > 0 else 0


def plan(fits: Sequence[Fit], global_batch: int, devices: int, memory_gib: float) -> Dict:
  """The cheapest setting that runs `global_batch` on `devices` devices of `memory_gib` GiB.

  Prefers no microbatching, then the remat policy with the fewest FLOPs, then no FSDP.
  Returns per-device batch, microbatch (per device), remat policy, fsdp and the estimate.
  """
  per_device = max(1, global_batch // devices)
  base_flops = min(f.flops_per_example for f in fits) or 1.0
  best = None
  for fit in fits:
    for fsdp in (1, devices):
      fits_batch = min(max_batch(fit, memory_gib, fsdp), per_device)
      if fits_batch < 1:
        continue
      micro = max(d for d in range(1, fits_batch + 1) if per_device % d == 0)
      key = (micro < per_device, -micro, fit.flops_per_example / base_flops, fsdp)
      if best is None or key < best[0]:
        best = (
          key,
          {
            "per_device_batch": per_device,
            "microbatch": micro,
            "remat": fit.policy,
            "fsdp": fsdp,
            "flops_overhead": fit.flops_per_example / base_flops - 1,
            "GiB": device_bytes(fit, micro, fsdp) / GIB,
          },
        )
  if best is None:
    return {
      "per_device_batch": per_device,
      "microbatch": 0,
      "remat": "-",
      "fsdp": "-",
      "flops_overhead": math.nan,
      "GiB": math.nan,
    }
  return best[1]


def table(name: str, fits: Sequence[Fit], global_batch: int, kinds=DEVICE_KINDS) -> List[Dict]:
  """One plan per device kind (rows for the README table)."""
  rows = []
  for kind, (devices, gib) in kinds.items():
    row = plan(fits, global_batch, devices, gib)
    row.update(config=name, device=kind, devices=devices, memory_gib=gib, global_batch=global_batch)
    rows.append(row)
  return rows


def state_summary(config, mesh=None) -> Dict[str, float]:
  """Parameter count and per-device state bytes of a config, abstractly (nothing is built)."""
  exp = experiment.build(config, mesh or shd.create_mesh(config.train.fsdp), donate=False)
  parts = state_bytes(exp)
  per_device = float(
    sum(
      math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
      for leaf in jax.tree.leaves(exp.abstract_state)
    )
  )
  return {
    "params": float(state_lib.param_count(exp.abstract_state.params)),
    "state_bytes": parts["total"],
    "state_bytes_per_device": per_device,
    "per_device_batch": config.train.batch_size / max(1, jax.device_count()),
    "microbatches": exp.microbatches,
  }
