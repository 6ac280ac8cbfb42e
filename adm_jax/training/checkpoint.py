"""Orbax checkpoints of the train state: periodic async saves, keep-N, exact resume, fallback.

A checkpoint holds the whole TrainState (step, params, EMA, optimizer, sampler state,
RNG) plus a JSON `meta` item (the config and run facts). The data position is the
step: the loader's batch at step s is a pure function of (seed, s). Restoring takes an
abstract target with the CURRENT mesh's shardings, so a checkpoint written on N devices
restores on M devices. Each save records a fingerprint of the state (per leaf, the sum of
its bit patterns modulo 2^32: exact and independent of sharding or reduction order), so a
restore can tell a checkpoint whose files were garbled but still decode. `restore_newest`
reads the newest checkpoint in full and, if it is damaged (missing or garbled files,
truncated metadata, contents that differ from the fingerprint, non-finite values), moves it
aside to checkpoints/damaged/<step> (never deleting it) and falls back to the next newest.
"""

import contextlib
import logging
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Tuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from adm_jax import files

log = logging.getLogger(__name__)

DAMAGED_DIR = "damaged"


class NoUsableCheckpointError(RuntimeError):
  """Every checkpoint of a directory is damaged (they were moved aside, not deleted)."""


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager for one workdir's train state."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True, create: bool = True):
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=create, enable_async_checkpointing=async_save
    )
    self.directory = directory
    self._pending = None  # (step, bytes) of the newest save, until it is known to be complete
    self.manager = ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self):
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: Dict[str, Any]) -> None:
    """Starts an (async) save of `state` at `step`; returns once arrays are copied.

    The state's fingerprint goes into the meta item (see the module docstring).
    """
    tree = flax.serialization.to_state_dict(state)
    meta = dict(meta, fingerprint=fingerprint(tree))
    self.wait()  # the previous background save: its error (a full disk) is its own
    self._pending = (int(step), tree_bytes(tree))
    with self._out_of_space_check():
      self.manager.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
      )

  def restore(self, step: int, target: Any) -> Any:
    """Restores into the structure, dtypes and shardings of `target` (abstract or concrete)."""
    abstract = jax.tree.map(_as_abstract, flax.serialization.to_state_dict(target))
    restored = self.manager.restore(
      int(step), args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    )
    return flax.serialization.from_state_dict(target, restored["state"])

  def restore_part(self, step: int, target: Dict[str, Any]) -> Dict[str, Any]:
    """Restores only the parts of a saved state named in `target` (a state-dict subtree such as
    {'ema_params': {'0': abstract params}}: nothing else is read); ValueError when they differ
    from what was saved (fingerprint) or hold NaN / inf."""
    abstract = jax.tree.map(_as_abstract, target)
    restored = self.manager.restore(
      int(step),
      args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
          item=abstract,
          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
          partial_restore=True,
        )
      ),
    )["state"]
    saved = self.restore_meta(step).get("fingerprint") or {}
    now = fingerprint(restored)
    changed = [path for path, value in now.items() if path in saved and saved[path] != value]
    bad = changed or nonfinite_leaves(restored)
    if bad:
      what = "differs from what was saved" if changed else "holds non-finite values"
      raise ValueError(f"checkpoint step {step} in {self.directory} is damaged: {bad[0]} {what}")
    return restored

  def restore_meta(self, step: Optional[int] = None) -> Dict[str, Any]:
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def restore_newest(
    self, target: Any, check_meta: Optional[Callable[[Dict[str, Any]], None]] = None
  ) -> Tuple[Any, Optional[int], Optional[Dict[str, Any]]]:
    """(state, step, meta) of the newest readable checkpoint, or (None, None, None) if none.

    check_meta(meta) may raise (e.g. a checkpoint of another configuration): that error
    propagates, it does not make the checkpoint "damaged". A checkpoint whose meta or state
    cannot be read, or whose state holds NaN/inf, is moved to checkpoints/damaged/<step>.
    """
    damaged: List[str] = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        meta = self.restore_meta(step)
      except Exception as e:  # pylint: disable=broad-except
        damaged.append(self._set_aside(step, f"unreadable meta: {_short(e)}"))
        continue
      if check_meta is not None:
        check_meta(meta)
      try:
        state = self.restore(step, target)
        changed = fingerprint_mismatches(meta.get("fingerprint"), state)
        if changed:
          raise ValueError(
            f"contents differ from what was saved in {changed[0]}"
            + (f" and {len(changed) - 1} more" if len(changed) > 1 else "")
          )
        bad = nonfinite_leaves(state)
        if bad:
          raise ValueError(
            f"non-finite values in {bad[0]}" + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
          )
      except Exception as e:  # pylint: disable=broad-except
        damaged.append(self._set_aside(step, _short(e)))
        continue
      return state, step, meta
    if damaged:
      raise NoUsableCheckpointError(
        f"no usable checkpoint in {self.directory}: {'; '.join(damaged)}. They were moved to "
        f"{os.path.join(self.directory, DAMAGED_DIR)}; remove them or restore a copy to resume "
        "(or use a new --workdir to start over)"
      )
    return None, None, None

  def _set_aside(self, step: int, reason: str) -> str:
    """Moves a damaged step directory to checkpoints/damaged/<step>; returns a description."""
    self.manager.wait_until_finished()
    source = os.path.join(self.directory, str(step))
    target = os.path.join(self.directory, DAMAGED_DIR, str(step))
    suffix = 1
    while os.path.exists(target):
      target = os.path.join(self.directory, DAMAGED_DIR, f"{step}.{suffix}")
      suffix += 1
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(source, target)
    self.manager.reload()
    log.warning(
      "checkpoint step %d in %s is damaged (%s): moved to %s; trying the next newest",
      step,
      self.directory,
      reason,
      target,
    )
    return f"step {step} ({reason})"

  def wait(self) -> None:
    with self._out_of_space_check():
      self.manager.wait_until_finished()
    self._pending = None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()

  @contextlib.contextmanager
  def _out_of_space_check(self):
    """A save (or the background write of the last one) stopped by a full disk or quota: its
    partial directory is removed (orbax never took it as a step) and OutOfSpaceError says so."""
    try:
      yield
    except Exception as e:
      if not files.is_out_of_space(e) or self._pending is None:
        raise
      step, needed = self._pending
      self._pending = None
      for name in os.listdir(self.directory):
        if name.startswith(f"{step}.orbax-checkpoint-tmp"):
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      newest = max((s for s in self.manager.all_steps() if s != step), default=None)
      resume = (
        f"it resumes from checkpoint step {newest}"
        if newest is not None
        else "no checkpoint was complete yet: it starts again"
      )
      raise files.out_of_space(
        os.path.join(self.directory, str(step)), f"checkpoint step {step}", needed, resume
      ) from e


def tree_bytes(tree: Any) -> int:
  """Bytes of the array leaves of a tree (what a checkpoint of it needs, uncompressed)."""
  return int(
    sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree) if hasattr(leaf, "dtype"))
  )


def _short(error: Exception, limit: int = 200) -> str:
  text = f"{type(error).__name__}: {error}".splitlines()[0]
  return text if len(text) <= limit else text[:limit] + "..."


def _bit_sum(leaf):
  """The sum modulo 2^32 of a leaf's bit patterns (uint32), on its devices."""
  x = jnp.asarray(leaf)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  width = x.dtype.itemsize
  if width not in (1, 2, 4, 8):
    return jnp.zeros((), jnp.uint32)
  as_uint = jax.lax.bitcast_convert_type(
    x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[width]
  )
  return jnp.sum(as_uint.astype(jnp.uint32), dtype=jnp.uint32)


_fingerprint_fn = jax.jit(lambda leaves: [_bit_sum(leaf) for leaf in leaves])


def fingerprint(tree: Any) -> Dict[str, int]:
  """{leaf path: bit-pattern sum mod 2^32} of the array leaves of a (state dict) tree."""
  flat = [
    (jax.tree_util.keystr(path), leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    if hasattr(leaf, "dtype")
  ]
  if not flat:
    return {}
  sums = jax.device_get(_fingerprint_fn([leaf for _, leaf in flat]))
  return {path: int(value) for (path, _), value in zip(flat, sums)}


def fingerprint_mismatches(saved: Optional[Dict[str, int]], state: Any) -> List[str]:
  """Leaves of a restored state whose fingerprint differs from the saved one (none saved: [])."""
  if not saved:
    return []
  now = fingerprint(flax.serialization.to_state_dict(state))
  return [path for path, value in saved.items() if now.get(path) != value]


def nonfinite_leaves(tree: Any) -> List[str]:
  """Paths of float leaves holding NaN or inf (host-side check of a restored state)."""
  bad = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    value = np.asarray(jax.device_get(leaf)) if hasattr(leaf, "shape") else None
    if (
      value is not None and np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all()
    ):
      bad.append(jax.tree_util.keystr(path))
  return bad


def _as_abstract(leaf):
  if isinstance(leaf, jax.ShapeDtypeStruct) or leaf is None:
    return leaf
  sharding = getattr(leaf, "sharding", None)
  return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def lookup(tree: Dict[str, Any], dotted: str):
  value: Any = tree
  for part in dotted.split("."):
    if not isinstance(value, dict):
      return None
    value = value.get(part)
  return value


def log_restore(step: int, directory: str) -> None:
  log.info("restored checkpoint of step %d from %s", step, directory)
