"""The one training loop, shared by the diffusion model and the noisy classifier.

`run(spec)`: restore the newest usable checkpoint of the same run (damaged ones are moved
aside; another run's is refused) or initialise (a finished run returns at once, saying so) →
for each step: global batch → jitted train step →
progress bar, JSON-lines metrics (+ TensorBoard), the NaN / Inf check, periodic hooks
(sample grids, validation), orbax checkpoints and metric plots. SIGTERM / SIGINT (and a
multi-host preemption notice) finish the current step, save a checkpoint and return. What
differs between the two models — the state, the step, the data, the hooks — comes in the
`LoopSpec` (built by adm_jax.experiment).
"""

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import jax
import tqdm

from adm_jax import plots
from adm_jax import report as report_lib
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

  name: str  # the mode: "train" or "train_classifier"
  directory: str  # metrics.jsonl, checkpoints/ and plots/ go here
  init_state: Callable[[], Any]  # the initial (sharded) state
  abstract_state: Any  # restore target: ShapeDtypeStructs with shardings
  train_step: Callable[[Any, Dict[str, Any]], Any]  # (state, global batch) -> (state, metrics)
  batches: Callable[[int], Iterator[Dict[str, Any]]]  # start step -> host-local batches
  mesh: Any
  num_steps: int
  batch_size: int  # global images per step (for images/s)
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int = 3
  async_checkpoint: bool = True
  progress: bool = True
  tensorboard: bool = True
  meta: Dict[str, Any] = dataclasses.field(default_factory=dict)  # saved with every checkpoint
  # What must not change on resume: {dotted key: value}; see experiment.run_identity.
  identity: Dict[str, Any] = dataclasses.field(default_factory=dict)
  allow_identity_change: bool = False  # resume even when the identity differs (logged)
  hooks: Sequence[Hook] = ()
  postfix: Callable[[Dict[str, float]], Dict[str, str]] = lambda summary: {}
  plot_keys: Sequence[str] = ("loss",)  # metrics drawn in plots/metrics.png
  label: str = "train"  # progress-bar label


def identity_check(spec: LoopSpec) -> Callable[[Dict[str, Any]], None]:
  """check(meta) raising ValueError when a checkpoint belongs to another run (see LoopSpec)."""

  def check(meta):
    saved = meta.get("identity")
    if saved is None:  # written before identities were recorded: what its config says
      saved = {k: ckpt_lib.lookup(meta.get("config", {}), k) for k in spec.identity}
      saved = {k: v for k, v in saved.items() if v is not None}
    diffs = [
      f"{k}: checkpoint {saved[k]!r} != config {v!r}"
      for k, v in spec.identity.items()
      if k in saved and _canonical(saved[k]) != _canonical(v)
    ]
    if not diffs:
      return
    if spec.allow_identity_change:
      log.warning(
        "resuming although the run changed (train.allow_config_change): %s", "; ".join(diffs)
      )
      return
    raise ValueError(
      f"{spec.directory} holds a checkpoint of another run ({'; '.join(diffs[:6])}"
      f"{'; ...' if len(diffs) > 6 else ''}); use a new --workdir, the same settings, or "
      "--config.train.allow_config_change=True to resume anyway"
    )

  return check


def _canonical(value):
  return json.dumps(value, sort_keys=True)


class StopRequest:
  """Set by SIGTERM / SIGINT (a second SIGINT interrupts at once) or a preemption notice."""

  def __init__(self):
    self.signal: Optional[str] = None
    self._previous: Dict[int, Any] = {}

  @contextlib.contextmanager
  def installed(self, multi_process: bool):
    # Under jax.distributed, JAX's preemption notifier owns SIGTERM (all hosts then agree on
    # the step through orbax's reached_preemption); a single process handles it here.
    names = [signal.SIGINT] + ([] if multi_process else [signal.SIGTERM])
    if threading.current_thread() is not threading.main_thread():
      yield self
      return
    for sig in names:
      self._previous[sig] = signal.signal(sig, self._handle)
    try:
      yield self
    finally:
      for sig, handler in self._previous.items():
        signal.signal(sig, handler)

  def _handle(self, signum, frame):
    del frame
    if self.signal is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal = signal.Signals(signum).name
    log.warning(
      "%s received: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)",
      self.signal,
    )


def run(spec: LoopSpec) -> report_lib.RunReport:
  """Trains (or resumes) to spec.num_steps; returns a report (last logged metrics, files).

  The caller owns spec.directory (adm_jax.workdir.WorkdirLock, taken by the training modes
  before they build anything).
  """
  started = time.perf_counter()
  report = _run(spec)
  report.wall_s = time.perf_counter() - started
  return report


def _run(spec: LoopSpec) -> report_lib.RunReport:
  report = report_lib.RunReport(spec.name, directory=spec.directory)
  checkpointer = ckpt_lib.Checkpointer(
    os.path.join(spec.directory, "checkpoints"),
    keep=spec.keep_checkpoints,
    async_save=spec.async_checkpoint,
  )
  writer = None
  try:
    latest = checkpointer.latest_step()
    latest_meta = _readable_meta(checkpointer, latest) if latest is not None else None
    if latest_meta is not None and latest >= spec.num_steps:  # nothing to compute: say so, fast
      identity_check(spec)(latest_meta)
      report.status, report.step = report_lib.ALREADY_FINISHED, latest
      report.metrics = metrics_lib.last_record(os.path.join(spec.directory, "metrics.jsonl"))
      report.notes.append(
        f"the newest checkpoint is step {latest} of {spec.num_steps}; raise the "
        "number of steps to train further (the run resumes there)"
      )
      report.outputs["checkpoints"] = checkpointer.directory
      return report
    state, start, _ = checkpointer.restore_newest(spec.abstract_state, identity_check(spec))
    if state is None:
      state, start = spec.init_state(), 0
    else:
      ckpt_lib.log_restore(start, checkpointer.directory)
    writer = metrics_lib.MetricWriter(
      spec.directory, tensorboard=spec.tensorboard, resume_step=start
    )
    stop = StopRequest()
    with stop.installed(jax.process_count() > 1):
      report = _train(
        spec,
        state,
        start,
        checkpointer,
        writer,
        stop,
        report,
        dict(spec.meta, identity=spec.identity),
      )
    return report
  finally:
    checkpointer.close()
    if writer is not None:
      writer.flush()


def _readable_meta(checkpointer, step):
  """The meta of a checkpoint, or None when it cannot be read (restore_newest handles that)."""
  try:
    return checkpointer.restore_meta(step)
  except Exception:  # pylint: disable=broad-except
    return None


def _train(spec, state, start, checkpointer, writer, stop, report, save_meta):
  last_saved = checkpointer.latest_step()
  batches = spec.batches(start)
  history: List[Dict[str, Any]] = []
  summary: Dict[str, float] = {}
  window_start, window_step = time.perf_counter(), start
  bar = tqdm.tqdm(
    total=spec.num_steps,
    initial=start,
    desc=spec.label,
    unit="step",
    disable=not spec.progress or jax.process_index() != 0,
    dynamic_ncols=True,
  )
  done = start
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
      stopping = stop.signal is not None or checkpointer.manager.reached_preemption(done)
      save_now = done % spec.checkpoint_every == 0 or is_last or stopping
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
        checkpointer.save(done, state, save_meta)
        last_saved = done
        _plot(spec, report)
      for hook in due:
        extra = hook.fn(done, state, batch)
        if extra:
          writer.write(done, extra)
          summary.update(extra)
      if stopping and not is_last:
        report.status = report_lib.PREEMPTED
        report.stopped_by = stop.signal or "preemption notice"
        report.notes.append(
          f"stopped by {stop.signal or 'a preemption notice'} after step "
          f"{done}; run the same command to resume"
        )
        break
  finally:
    bar.close()
    close = getattr(batches, "close", None)
    if close:
      close()
  report.step, report.metrics = done, summary
  report.outputs["checkpoints"] = checkpointer.directory
  report.outputs["metrics"] = writer.path
  return report


def _plot(spec: LoopSpec, report) -> None:
  if jax.process_index() != 0:
    return
  path = plots.plot_metrics(
    os.path.join(spec.directory, "metrics.jsonl"),
    os.path.join(spec.directory, "plots", "metrics.png"),
    spec.plot_keys,
  )
  if path:
    report.outputs["plot"] = path
