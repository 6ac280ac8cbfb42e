"""The one training loop, shared by the diffusion model and the noisy classifier.

`run(spec)`: restore the newest checkpoint of `spec.directory` (refusing one of another
configuration) or initialise → for each step: global batch → jitted train step →
progress bar, JSON-lines metrics (+ TensorBoard), the NaN / Inf check, periodic hooks
(sample grids, validation), orbax checkpoints. What differs between the two models — the
state, the step, the data, the hooks — comes in the `LoopSpec` (built by adm_jax.experiment).
"""
import dataclasses
import logging
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import jax
import tqdm

from adm_jax import sharding as shd
from adm_jax.training import checkpoint as ckpt_lib
from adm_jax.training import metrics as metrics_lib
from adm_jax.training import update

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Hook:
  """fn(step, state, batch) -> {name: scalar} (written as metrics) or None, every `every` steps
  (and after the last step when `at_end`)."""
  name: str
  every: int
  fn: Callable[[int, Any, Dict[str, Any]], Optional[Dict[str, float]]]
  at_end: bool = True


@dataclasses.dataclass
class LoopSpec:
  """Everything `run` needs; see adm_jax.experiment for how the two models fill it in."""
  name: str                                  # progress-bar label: "train" or "classifier"
  directory: str                             # metrics.jsonl and checkpoints/ go here
  init_state: Callable[[], Any]              # the initial (sharded) state
  abstract_state: Any                        # restore target: ShapeDtypeStructs with shardings
  train_step: Callable[[Any, Dict[str, Any]], Any]  # (state, global batch) -> (state, metrics)
  batches: Callable[[int], Iterator[Dict[str, Any]]]  # start step -> host-local batches
  mesh: Any
  num_steps: int
  batch_size: int                            # global images per step (for images/s)
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int = 3
  async_checkpoint: bool = True
  progress: bool = True
  tensorboard: bool = True
  meta: Dict[str, Any] = dataclasses.field(default_factory=dict)  # saved with every checkpoint
  identity: Dict[str, Any] = dataclasses.field(default_factory=dict)  # config sections compared on resume
  hooks: Sequence[Hook] = ()
  postfix: Callable[[Dict[str, float]], Dict[str, str]] = lambda summary: {}


def restore_or_init(spec: LoopSpec, checkpointer: ckpt_lib.Checkpointer):
  """(state, start step): the newest checkpoint of the same configuration, or a fresh state."""
  step = checkpointer.latest_step()
  if step is None:
    return spec.init_state(), 0
  saved = checkpointer.restore_meta(step).get("config", {})
  diffs = ckpt_lib.config_mismatches(saved, spec.identity, sections=tuple(spec.identity))
  if diffs:
    raise ValueError(
        f"{checkpointer.directory} holds a checkpoint of another configuration "
        f"({'; '.join(diffs[:5])}); use a new --workdir or the same config")
  state = checkpointer.restore(step, spec.abstract_state)
  ckpt_lib.log_restore(step, checkpointer.directory)
  return state, step


def run(spec: LoopSpec) -> Dict[str, float]:
  """Trains (or resumes) to spec.num_steps; returns the last logged summary (+ hook metrics)."""
  os.makedirs(spec.directory, exist_ok=True)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(spec.directory, "checkpoints"),
                                       keep=spec.keep_checkpoints,
                                       async_save=spec.async_checkpoint)
  state, start = restore_or_init(spec, checkpointer)
  last_saved = checkpointer.latest_step()
  writer = metrics_lib.MetricWriter(spec.directory, tensorboard=spec.tensorboard)
  batches = spec.batches(start)
  history: List[Dict[str, Any]] = []
  summary: Dict[str, float] = {}
  window_start, window_step = time.perf_counter(), start
  bar = tqdm.tqdm(total=spec.num_steps, initial=start, desc=spec.name, unit="step",
                  disable=not spec.progress or jax.process_index() != 0, dynamic_ncols=True)
  try:
    for step in range(start, spec.num_steps):
      batch = shd.global_batch(next(batches), spec.mesh)
      state, metrics = spec.train_step(state, batch)
      if history:  # wait for the previous step: keeps the bar honest, one step in flight
        jax.block_until_ready(history[-1]["nonfinite"])
      history.append(metrics)
      bar.update(1)
      done = step + 1
      is_last = done == spec.num_steps
      save_now = done % spec.checkpoint_every == 0 or is_last
      due = [h for h in spec.hooks if done % h.every == 0 or (is_last and h.at_end)]
      if done % spec.log_every == 0 or save_now or due:
        host = jax.device_get(history)
        update.check_finite(host, done - len(host), last_saved, spec.directory)
        elapsed = time.perf_counter() - window_start
        summary = update.summarize_metrics(host)
        summary["steps_per_sec"] = (done - window_step) / max(elapsed, 1e-9)
        summary["images_per_sec"] = summary["steps_per_sec"] * spec.batch_size
        summary["corrupt_images_skipped"] = float(getattr(batches, "num_skipped", 0))
        writer.write(done, summary)
        bar.set_postfix(spec.postfix(summary))
        history, window_start, window_step = [], time.perf_counter(), done
      if save_now:
        checkpointer.save(done, state, spec.meta)
        last_saved = done
      for hook in due:
        extra = hook.fn(done, state, batch)
        if extra:
          writer.write(done, extra)
          summary.update(extra)
  finally:
    bar.close()
    close = getattr(batches, "close", None)
    if close:
      close()
    checkpointer.close()
    writer.flush()
  return summary
