"""A deterministic, resumable, per-host batch iterator with background decoding.

The global batch at step s is a pure function of (seed, s): it holds stream positions
[s*B, (s+1)*B) of an endless index stream made of per-epoch permutations (epoch e uses
a permutation seeded by (seed, e)), so batches wrap across epochs and resuming at step s
needs only s. Process p of P takes the contiguous slice [p*B/P, (p+1)*B/P) of every
global batch. Per-example augmentation randomness is seeded by (seed, stream position).
"""

import concurrent.futures as futures
import logging
import queue
import threading
from typing import Dict, Iterator, Optional

import numpy as np

# The functions, not the module: adm_jax.data re-exports `preprocess` (the function) under the
# module's name.
from adm_jax.data.preprocess import preprocess as preprocess_example
from adm_jax.data.preprocess import to_float

log = logging.getLogger(__name__)

_REPLACEMENT_TRIES = 16


class CorruptImageError(RuntimeError):
  pass


class UnlabelledError(ValueError):
  """An example without a label (-1) reached a loader that needs labels (num_classes set)."""


class BatchIterator(Iterator[Dict[str, np.ndarray]]):
  """Yields {'image': float32 [B_local, S, S, C] in [-1, 1], 'label': int32 [B_local]}.

  With num_classes every label must lie in [0, num_classes): a -1 (unlabelled example) raises
  UnlabelledError rather than reaching a classifier or a class-conditional model.
  """

  def __init__(
    self,
    source,
    *,
    global_batch_size: int,
    image_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    channels: int = 3,
    random_crop: bool = False,
    random_flip: bool = False,
    on_corrupt: str = "skip",
    num_workers: int = 4,
    prefetch: int = 2,
    shuffle: bool = True,
    num_classes: Optional[int] = None,
  ):
    if len(source) == 0:
      raise ValueError(f"dataset {getattr(source, 'name', source)!r} is empty")
    if global_batch_size % process_count:
      raise ValueError(
        f"batch size {global_batch_size} does not split over {process_count} processes"
      )
    if on_corrupt not in ("skip", "raise"):
      raise ValueError(f"data.on_corrupt={on_corrupt!r}: expected 'skip' or 'raise'")
    if channels not in (1, 3):
      raise ValueError(f"data.channels={channels} must be 1 (grayscale) or 3 (RGB)")
    self.source = source
    self.size = len(source)
    self.global_batch = global_batch_size
    self.local_batch = global_batch_size // process_count
    self.offset = process_index * self.local_batch
    self.image_size, self.channels = image_size, channels
    self.random_crop, self.random_flip = random_crop, random_flip
    self.on_corrupt, self.shuffle, self.seed = on_corrupt, shuffle, seed
    self.num_classes = num_classes
    self.num_skipped = 0
    self._lock = threading.Lock()
    self._perm_cache: Dict[int, np.ndarray] = {}
    self._step = start_step
    self._pool = futures.ThreadPoolExecutor(max(1, num_workers))
    self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, prefetch))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._produce, daemon=True)
    self._thread.start()

  # -------------------------------------------------------------- index stream
  def _permutation(self, epoch: int) -> np.ndarray:
    with self._lock:
      perm = self._perm_cache.get(epoch)
      if perm is None:
        perm = (
          np.random.default_rng([self.seed, epoch]).permutation(self.size)
          if self.shuffle
          else np.arange(self.size)
        )
        self._perm_cache = {
          epoch: perm,
          **{e: p for e, p in self._perm_cache.items() if e >= epoch - 1},
        }
      return perm

  def index_at(self, position: int) -> int:
    """Dataset index at a position of the endless stream."""
    epoch, within = divmod(position, self.size)
    return int(self._permutation(epoch)[within])

  # -------------------------------------------------------------- examples
  def _load(self, position: int):
    """Preprocessed (image, label) at a stream position; a corrupt example is replaced by
    the next positions' (deterministically) when skipping."""
    for attempt in range(_REPLACEMENT_TRIES):
      index = self.index_at(position + attempt)
      item, label = self.source[index]
      if self.num_classes is not None and not 0 <= label < self.num_classes:
        name = getattr(self.source, "name", type(self.source).__name__)
        if label < 0:
          raise UnlabelledError(
            f"example {index} of {name} has no label ({label}) but labels are "
            f"needed (num_classes={self.num_classes}); use a labelled split"
          )
        raise ValueError(
          f"label {label} of example {index} of {name} is out of range for "
          f"num_classes={self.num_classes}"
        )
      rng = np.random.default_rng([self.seed, position, attempt, 7])
      try:
        image = preprocess_example(
          item, self.image_size, self.channels, self.random_crop, self.random_flip, rng
        )
        return image, label
      except Exception as e:  # pylint: disable=broad-except
        where = item if isinstance(item, str) else f"example {index}"
        if self.on_corrupt == "raise":
          raise CorruptImageError(f"cannot read image {where}: {e}") from e
        with self._lock:
          self.num_skipped += 1
        log.warning(
          "skipping unreadable image %s (%s); %d skipped so far", where, e, self.num_skipped
        )
    raise CorruptImageError(
      f"{_REPLACEMENT_TRIES} unreadable images in a row near position "
      f"{position}; is the dataset corrupt?"
    )

  def _fill(self, images: np.ndarray, labels: np.ndarray, row: int, position: int) -> None:
    """Writes the example at a stream position into row `row` of a batch (in a worker thread,
    float conversion included, so that assembling a batch is no serial step)."""
    image, label = self._load(position)
    images[row] = to_float(image)
    labels[row] = label

  def _start(self, step: int):
    """Submits this process's slice of global batch `step` to the workers."""
    start = step * self.global_batch + self.offset
    images = np.empty(
      (self.local_batch, self.image_size, self.image_size, self.channels), np.float32
    )
    labels = np.empty((self.local_batch,), np.int32)
    jobs = [
      self._pool.submit(self._fill, images, labels, row, start + row)
      for row in range(self.local_batch)
    ]
    return images, labels, jobs

  @staticmethod
  def _finish(pending) -> Dict[str, np.ndarray]:
    images, labels, jobs = pending
    for job in jobs:
      job.result()  # the first failure, in row order
    return {"image": images, "label": labels}

  def batch_at(self, step: int) -> Dict[str, np.ndarray]:
    """This process's slice of global batch `step` (synchronously)."""
    return self._finish(self._start(step))

  # -------------------------------------------------------------- iteration
  def _produce(self):
    step = self._step
    pending = None
    while not self._stop.is_set():
      try:
        pending = pending or self._start(step)
        following = self._start(step + 1)  # the workers go on while this batch is handed over
        item = self._finish(pending)
        pending = following
      except Exception as e:  # pylint: disable=broad-except
        item = e
        # Stop decoding at once: the rest of these batches' images would be read for nothing.
        self._pool.shutdown(wait=False, cancel_futures=True)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if isinstance(item, Exception):
        return
      step += 1

  def __next__(self) -> Dict[str, np.ndarray]:
    item = self._queue.get()
    if isinstance(item, Exception):
      self.close()
      raise item
    self._step += 1
    return item

  def __iter__(self):
    return self

  @property
  def step(self) -> int:
    """The step of the next batch to be returned."""
    return self._step

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)
    self._pool.shutdown(wait=False, cancel_futures=True)
