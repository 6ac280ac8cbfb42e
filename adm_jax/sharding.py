"""Device mesh, shardings and multi-host start-up.

One mesh with axes ('data', 'fsdp') covers every device of every host. The batch is
split over both axes; parameters and optimizer state are replicated when fsdp == 1,
else each large tensor is split along one of its dimensions over 'fsdp' (ZeRO-3 /
FSDP style: XLA all-gathers them for the forward pass and reduce-scatters gradients).
The same code runs on one CPU, a GPU node and a multi-host TPU pod slice.
"""

import logging
import os
import re
from typing import Any, Optional

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

log = logging.getLogger(__name__)

BATCH_AXES = ("data", "fsdp")

_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")

# How long a multi-process run waits before it gives up on a process that stopped answering
# (the coordination service's heartbeat; README "Exit statuses") and on the processes that have
# not started yet. ADM_JAX_HEARTBEAT_TIMEOUT / ADM_JAX_INIT_TIMEOUT (seconds) override them.
HEARTBEAT_TIMEOUT_S = 30
INITIALIZATION_TIMEOUT_S = 600
# What the collectives and the coordination client say when a peer process is gone.
_PEER_LOSS_TEXT = (
  "Gloo",
  "gloo",
  "Connection reset by peer",
  "Connection refused",
  "heartbeat",
  "coordination service",
  "Socket closed",
  "DEADLINE_EXCEEDED",
  "UNAVAILABLE",
  "Broken pipe",
)


def cluster_environment() -> bool:
  """Whether the environment describes a multi-process run (a coordinator address, a
  multi-host Cloud TPU VM, SLURM with several tasks)."""
  env = os.environ
  return bool(
    any(env.get(k) for k in _DISTRIBUTED_ENV)
    or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    or int(env.get("SLURM_NTASKS", "1") or 1) > 1
  )


def process_id_from_environment() -> int:
  """This process's index as the cluster environment gives it (0 when it does not say)."""
  for key in ("JAX_PROCESS_ID", "SLURM_PROCID", "TPU_WORKER_ID"):
    if os.environ.get(key, "").isdigit():
      return int(os.environ[key])
  return 0


def timeouts():
  """(heartbeat, initialization) timeouts in seconds of jax.distributed."""
  env = os.environ
  return (
    int(env.get("ADM_JAX_HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT_S)),
    int(env.get("ADM_JAX_INIT_TIMEOUT", INITIALIZATION_TIMEOUT_S)),
  )


def is_peer_loss(error: BaseException) -> bool:
  """Whether an error of a multi-process run is a lost peer (its collective or heartbeat broke)."""
  return jax.process_count() > 1 and any(t in str(error) for t in _PEER_LOSS_TEXT)


_RESUME = (
  "every process exits: start all {n} again with the same command (training resumes "
  "from its newest complete checkpoint, sampling from its finished parts)"
)


def peer_loss_message(detail: str) -> str:
  """One line: this process lost the others (a collective broke), and the command to resume."""
  first = (str(detail).strip().splitlines() or ["no detail"])[0][:160]
  lost = re.search(r"task[:_ ](\d+)", str(detail))
  me, count = jax.process_index(), jax.process_count()
  if lost and int(lost.group(1)) != me:
    who = f"process {lost.group(1)}"
  else:  # of two processes, the lost one is the other
    who = f"process {1 - me}" if count == 2 else "another process"
  return (
    f"{who} of this {jax.process_count()}-process run is gone (process "
    f"{jax.process_index()} saw: {first}); " + _RESUME.format(n=jax.process_count())
  )


def aborted_message(log_path: str, status: int) -> str:
  """One line for a supervised process that the runtime aborted (status < 0: a signal): which
  process the coordination service found gone, from the process's native log."""
  try:
    with open(log_path, errors="replace") as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 200_000))
      text = f.read()
  except OSError:
    text = ""
  me = process_id_from_environment()
  count = os.environ.get("JAX_NUM_PROCESSES") or os.environ.get("SLURM_NTASKS") or "multi"
  unhealthy = re.findall(r"tasks are unhealthy \(stopped sending heartbeats\):\s*([\d\s,]+)", text)
  lost = sorted({int(t) for t in re.findall(r"\d+", unhealthy[-1])}) if unhealthy else []
  how = f"signal {-status}" if status < 0 else f"status {status}"
  if lost:
    who = ", ".join(f"process {t}" for t in lost)
    what = f"{who} of this {count}-process run stopped answering (the coordination service)"
  elif "coordination service" in text or "distributed service" in text:
    what = (
      f"process {me} lost the coordination service of this {count}-process run (process 0 is gone?)"
    )
  else:
    what = f"process {me} of this {count}-process run stopped ({how})"
  return f"{what}; details in {log_path}; " + _RESUME.format(
    n=count if count != "multi" else "the processes"
  )


def maybe_initialize_distributed(mode: str = "auto") -> bool:
  """Starts jax.distributed when asked, or ('auto') when the environment describes a cluster.

  'auto' initialises when JAX_COORDINATOR_ADDRESS is set (with JAX_NUM_PROCESSES and
  JAX_PROCESS_ID), on a multi-host Cloud TPU VM (TPU_WORKER_HOSTNAMES lists several
  hosts), or under SLURM with several tasks. Returns whether it initialised. A process that
  stops answering is noticed within the heartbeat timeout (`timeouts()`).
  """
  if mode == "off":
    return False
  env = os.environ
  coordinator = next((env[k] for k in _DISTRIBUTED_ENV if env.get(k)), None)
  if mode == "auto" and not cluster_environment():
    return False
  kwargs = {}
  if coordinator:
    kwargs = dict(
      coordinator_address=coordinator,
      num_processes=int(env["JAX_NUM_PROCESSES"]),
      process_id=int(env["JAX_PROCESS_ID"]),
    )
  heartbeat, init = timeouts()
  if os.environ.get("ADM_JAX_RECOVERABLE"):
    jax.config.update("jax_enable_recoverability", True)
  jax.distributed.initialize(
    **kwargs, heartbeat_timeout_seconds=heartbeat, initialization_timeout=init
  )
  log.info(
    "jax.distributed: process %d of %d, %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.device_count(),
  )
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


def state_shardings(abstract_tree: Any, mesh: Mesh, min_fsdp_size: int = 2**14) -> Any:
  """NamedShardings for a tree of ShapeDtypeStructs (params, optimizer state, ...)."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(
    lambda leaf: NamedSharding(mesh, _fsdp_spec(getattr(leaf, "shape", ()), fsdp, min_fsdp_size)),
    abstract_tree,
  )


def global_batch(local: Any, mesh: Mesh) -> Any:
  """Assembles each host's slice of a batch (numpy, leading axis) into global jax Arrays."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
    lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local
  )
