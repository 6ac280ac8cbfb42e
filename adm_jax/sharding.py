"""Device mesh, shardings and multi-host start-up.

One mesh with axes ('data', 'fsdp') covers every device of every host. The batch is
split over both axes; parameters and optimizer state are replicated when fsdp == 1,
else each large tensor is split along one of its dimensions over 'fsdp' (ZeRO-3 /
FSDP style: XLA all-gathers them for the forward pass and reduce-scatters gradients).
The same code runs on one CPU, a GPU node and a multi-host TPU pod slice.
"""
import logging
import os
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

BATCH_AXES = ("data", "fsdp")

_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def maybe_initialize_distributed(mode: str = "auto") -> bool:
  """Starts jax.distributed when asked, or ('auto') when the environment describes a cluster.

  'auto' initialises when JAX_COORDINATOR_ADDRESS is set (with JAX_NUM_PROCESSES and
  JAX_PROCESS_ID), on a multi-host Cloud TPU VM (TPU_WORKER_HOSTNAMES lists several
  hosts), or under SLURM with several tasks. Returns whether it initialised.
  """
  if mode == "off":
    return False
  env = os.environ
  multi_tpu = "," in env.get("TPU_WORKER_HOSTNAMES", "")
  slurm = int(env.get("SLURM_NTASKS", "1")) > 1
  coordinator = next((env[k] for k in _DISTRIBUTED_ENV if env.get(k)), None)
  if mode == "auto" and not (coordinator or multi_tpu or slurm):
    return False
  kwargs = {}
  if coordinator:
    kwargs = dict(coordinator_address=coordinator,
                  num_processes=int(env["JAX_NUM_PROCESSES"]),
                  process_id=int(env["JAX_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)
  log.info("jax.distributed: process %d of %d, %d global devices",
               jax.process_index(), jax.process_count(), jax.device_count())
  return True


def create_mesh(fsdp: int = 1, devices: Optional[list] = None) -> Mesh:
  """A ('data', 'fsdp') mesh over all devices; fsdp must divide the device count."""
  devices = list(jax.devices() if devices is None else devices)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"an FSDP degree of {fsdp} must divide the number of devices ({len(devices)})")
  grid = np.asarray(devices).reshape(len(devices) // fsdp, fsdp)
  return Mesh(grid, BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape, fsdp: int, min_size: int) -> P:
  """Splits the largest dimension divisible by fsdp; small tensors stay replicated."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_tree: Any, mesh: Mesh, min_fsdp_size: int = 2 ** 14) -> Any:
  """NamedShardings for a tree of ShapeDtypeStructs (params, optimizer state, ...)."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(
      lambda leaf: NamedSharding(mesh, _fsdp_spec(getattr(leaf, "shape", ()), fsdp, min_fsdp_size)),
      abstract_tree)


def global_batch(local: Any, mesh: Mesh) -> Any:
  """Assembles each host's slice of a batch (numpy, leading axis) into global jax Arrays."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local)
