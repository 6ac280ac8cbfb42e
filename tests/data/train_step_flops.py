"""FLOPs per image of the train step of ADM-64/128/256/512 (configs/imagenet.py), from XLA's cost
analysis of the step at batch 1 on one CPU device. Used for experiments/RESULTS.md's "host cores
per accelerator" estimate.

  python tests/data/train_step_flops.py 64 128 256 512            # lowered HLO only (seconds)
  python tests/data/train_step_flops.py --compiled 64             # compiled step (minutes each)
  python tests/data/train_step_flops.py --no_remat 512            # model FLOPs without remat
Prints one JSON line per resolution: resolution, parameters, flops (per image), seconds,
adm_jax (the package it measured).
"""

import json
import os
import sys
import time

# This checkout's adm_jax, not an installed one (a script's sys.path[0] is tests/data).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402

from adm_jax import config_base  # noqa: E402
from adm_jax import experiment  # noqa: E402
from adm_jax import sharding  # noqa: E402


def step_flops(resolution: int, compiled: bool = False, remat: bool = None) -> dict:
  """The train step's FLOPs for one image at `resolution` ({'flops': float, ...}); remat
  overrides the config's model.use_checkpoint (None keeps it)."""
  config = config_base.from_config_file("imagenet", str(resolution))
  config.train.update(batch_size=1, microbatch=-1, fsdp=1)
  if remat is not None:
    config.model.use_checkpoint = remat
  start = time.time()
  exp = experiment.build(config, sharding.create_mesh(1), donate=False)
  lowered = exp.train_step.lower(exp.abstract_state, exp.abstract_batch(1))
  cost = lowered.compile().cost_analysis() if compiled else lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  params = sum(x.size for x in jax.tree_util.tree_leaves(exp.abstract_state.params))
  return {
    "resolution": resolution,
    "compiled": compiled,
    "parameters": int(params),
    "flops": float(cost["flops"]),
    "remat": bool(config.model.use_checkpoint),
    "seconds": round(time.time() - start, 1),
    "adm_jax": os.path.dirname(experiment.__file__),
  }


if __name__ == "__main__":
  args = sys.argv[1:]
  compiled = "--compiled" in args
  remat = False if "--no_remat" in args else None
  for arg in [a for a in args if not a.startswith("--")]:
    print(json.dumps(step_flops(int(arg), compiled, remat)), flush=True)
