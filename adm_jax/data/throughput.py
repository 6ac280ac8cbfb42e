"""How many ImageNet-sized JPEGs per second the loader decodes and preprocesses.

  src = throughput.BytesSource.imagenet_like(300)          # or any source (a TfdsSource ...)
  throughput.measure(src, image_size=128, num_workers=2, seconds=10)   # -> images/s
  throughput.table(src, sizes=(64, 128, 256, 512), workers=(1, 2), seconds=10)   # rows

CLI (the bench's data preset):
  python -m adm_jax.data.throughput --sizes=64,128,256,512 --workers=1,2 --seconds=10
  python -m adm_jax.data.throughput --tfds_dir=DATA_DIR        # a prepared imagenet2012
"""

import argparse
import concurrent.futures as futures
import json
import os
import time
from typing import Dict, List, Optional, Sequence

from adm_jax.data import loader
from adm_jax.data import sources
from adm_jax.data import synthetic
from adm_jax.data.preprocess import preprocess as preprocess_example


class BytesSource:
  """Encoded images in memory (a source for `loader.BatchIterator`): src[i] -> (bytes, 0)."""

  def __init__(self, images: Sequence[bytes], name: str = "jpeg_bytes"):
    self.images = list(images)
    self.num_classes, self.labelled, self.name = 1, True, name

  @classmethod
  def imagenet_like(cls, count: int = 300, seed: int = 0) -> "BytesSource":
    """`count` synthetic JPEGs of ImageNet's size mix (synthetic.IMAGENET_SIZE_MIX)."""
    return cls([b for b, _ in synthetic.imagenet_like(count, seed)], f"imagenet_like_{count}")

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return self.images[i], 0


def measure_detail(
  source,
  image_size: int,
  num_workers: int,
  *,
  seconds: Optional[float] = None,
  batches: Optional[int] = None,
  batch_size: int = 64,
  random_crop: bool = False,
  prefetch: int = 2,
  seed: int = 0,
) -> Dict[str, float]:
  """measure(), with the process's CPU time: {'images_per_s', 'cpu_ms_per_image', 'images'}.
  CPU time per image does not depend on what else the machine runs (a shared host)."""
  if (seconds is None) == (batches is None):
    raise ValueError("measure: give exactly one of seconds or batches")
  it = loader.BatchIterator(
    source,
    global_batch_size=batch_size,
    image_size=image_size,
    seed=seed,
    num_workers=num_workers,
    prefetch=prefetch,
    random_crop=random_crop,
  )
  try:
    next(it)  # warm-up: threads started, first decodes done
    start, cpu, done = time.perf_counter(), time.process_time(), 0
    while (done < batches) if batches is not None else (time.perf_counter() - start < seconds):
      next(it)
      done += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  finally:
    it.close()
  images = done * batch_size
  return {"images_per_s": images / wall, "cpu_ms_per_image": 1e3 * cpu / images, "images": images}


def measure(
  source,
  image_size: int,
  num_workers: int,
  *,
  seconds: Optional[float] = None,
  batches: Optional[int] = None,
  batch_size: int = 64,
  random_crop: bool = False,
  prefetch: int = 2,
  seed: int = 0,
) -> float:
  """Images/s the loader (BatchIterator: read, decode, resize, crop, to float) delivers from
  `source` at `image_size` with `num_workers` threads, over `batches` batches or `seconds`
  (after one warm-up batch)."""
  return measure_detail(
    source,
    image_size,
    num_workers,
    seconds=seconds,
    batches=batches,
    batch_size=batch_size,
    random_crop=random_crop,
    prefetch=prefetch,
    seed=seed,
  )["images_per_s"]


def table(
  source,
  sizes: Sequence[int] = (64, 128, 256, 512),
  workers: Sequence[int] = (1, 2),
  seconds: float = 10.0,
  batch_size: int = 64,
  random_crop: bool = False,
) -> List[Dict[str, float]]:
  """measure_detail() for every (size, workers): [{'image_size', 'workers', 'images_per_s',
  'cpu_ms_per_image', 'images'}]."""
  rows = []
  for size in sizes:
    for n in workers:
      row = measure_detail(
        source, size, n, seconds=seconds, batch_size=batch_size, random_crop=random_crop
      )
      rows.append(
        {
          "image_size": size,
          "workers": n,
          "images_per_s": round(row["images_per_s"], 1),
          "cpu_ms_per_image": round(row["cpu_ms_per_image"], 2),
          "images": row["images"],
        }
      )
  return rows


def _preprocess_all(images: Sequence[bytes], image_size: int) -> int:
  for image in images:
    preprocess_example(image, image_size)
  return len(images)


def scaling(
  images: Sequence[bytes], image_size: int, workers: int, repeats: int = 1
) -> Dict[str, float]:
  """Images/s of bare decode + preprocess (no loader) in 1 thread, `workers` threads and
  `workers` processes: threads below processes means the GIL (or the loader) is the limit."""
  work = list(images) * repeats
  chunks = [work[i::workers] for i in range(workers)]
  out = {}
  start = time.perf_counter()
  _preprocess_all(work, image_size)
  out["1_thread"] = len(work) / (time.perf_counter() - start)
  for kind, pool_cls in (
    ("threads", futures.ThreadPoolExecutor),
    ("processes", futures.ProcessPoolExecutor),
  ):
    with pool_cls(workers) as pool:
      list(pool.map(_preprocess_all, [chunks[0][:2]] * workers, [image_size] * workers))  # warm
      start = time.perf_counter()
      done = sum(pool.map(_preprocess_all, chunks, [image_size] * workers))
      out[f"{workers}_{kind}"] = done / (time.perf_counter() - start)
  return {k: round(v, 1) for k, v in out.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="64,128,256,512")
  parser.add_argument("--workers", default=f"1,{os.cpu_count()}")
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--images", type=int, default=300, help="synthetic JPEGs (no --tfds_dir)")
  parser.add_argument("--tfds_dir", default="", help="read imagenet2012 (train) from this dir")
  parser.add_argument("--random_crop", action="store_true")
  parser.add_argument(
    "--scaling",
    action="store_true",
    help="also bare decode+preprocess: 1 thread vs N threads vs N processes",
  )
  args = parser.parse_args(argv)
  if args.tfds_dir:
    source = sources.TfdsSource("imagenet2012", "train", args.tfds_dir)
  else:
    source = BytesSource.imagenet_like(args.images)
  sizes = [int(s) for s in args.sizes.split(",")]
  workers = [int(w) for w in args.workers.split(",")]
  print(
    f"# {source.name}: {len(source)} images; batch {args.batch_size}; load average "
    f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
    flush=True,
  )
  for row in table(source, sizes, workers, args.seconds, args.batch_size, args.random_crop):
    print(json.dumps(row), flush=True)
  if args.scaling:
    images = [source[i][0] for i in range(min(len(source), 100))]
    for size in sizes:
      print(
        json.dumps({"image_size": size, "bare_images_per_s": scaling(images, size, max(workers))}),
        flush=True,
      )
  print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
