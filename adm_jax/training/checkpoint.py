"""Orbax checkpoints of the train state: periodic async saves, keep-N, exact resume.

A checkpoint holds the whole TrainState (step, params, EMA, optimizer, sampler state,
RNG) plus a JSON `meta` item (the config and run facts). The data position is the
step: the loader's batch at step s is a pure function of (seed, s). Restoring takes an
abstract target with the CURRENT mesh's shardings, so a checkpoint written on N devices
restores on M devices.
"""
import json
import logging
from typing import Any, Dict, Optional

import flax.serialization
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager for one workdir's train state."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True, create: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                           enable_async_checkpointing=async_save)
    self.directory = directory
    self.manager = ocp.CheckpointManager(directory, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self):
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: Dict[str, Any]) -> None:
    """Starts an (async) save of `state` at `step`; returns once arrays are copied."""
    self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
        meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, target: Any) -> Any:
    """Restores into the structure, dtypes and shardings of `target` (abstract or concrete)."""
    abstract = jax.tree.map(_as_abstract, flax.serialization.to_state_dict(target))
    restored = self.manager.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    return flax.serialization.from_state_dict(target, restored["state"])

  def restore_meta(self, step: Optional[int] = None) -> Dict[str, Any]:
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _as_abstract(leaf):
  if isinstance(leaf, jax.ShapeDtypeStruct) or leaf is None:
    return leaf
  sharding = getattr(leaf, "sharding", None)
  return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def config_mismatches(saved: Dict[str, Any], current: Dict[str, Any], sections=("model", "diffusion")):
  """Flags of `sections` whose values differ between two config dicts: ['model.x: a != b', ...]."""
  diffs = []
  for section in sections:
    a, b = saved.get(section, {}) or {}, current.get(section, {}) or {}
    for key in sorted(set(a) | set(b)):
      if json.dumps(a.get(key), sort_keys=True) != json.dumps(b.get(key), sort_keys=True):
        diffs.append(f"{section}.{key}: checkpoint {a.get(key)!r} != config {b.get(key)!r}")
  return diffs


def log_restore(step: int, directory: str) -> None:
  log.info("restored checkpoint of step %d from %s", step, directory)
