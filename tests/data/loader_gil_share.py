"""How much of the loader's per-image CPU time runs inside Pillow's JPEG decode, resize and
convert (C code that releases the GIL), and how much outside (TFDS record parsing, PIL's Python
parsing, numpy, the loader's own Python: the part that may hold the GIL). Thread CPU time, so a
busy shared machine does not skew it. Used for experiments/RESULTS.md's loader section.

  python tests/data/loader_gil_share.py TFDS_DATA_DIR [--images=300]
"""

import argparse
import os
import sys
import time

# This checkout's adm_jax, not an installed one (a script's sys.path[0] is tests/data).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from PIL import ImageFile  # noqa: E402

from adm_jax.data import sources  # noqa: E402
from adm_jax.data.preprocess import preprocess  # noqa: E402
from adm_jax.data.preprocess import to_float  # noqa: E402


def share(source, images: int, size: int) -> dict:
  """{'cpu_ms_per_image', 'pillow_c_share'} over the first `images` examples at `size`."""
  inside = [0.0]
  originals = (ImageFile.ImageFile.load, Image.Image.resize, Image.Image.convert)

  def timed(fn):
    def wrapper(*args, **kwargs):
      start = time.thread_time()
      try:
        return fn(*args, **kwargs)
      finally:
        inside[0] += time.thread_time() - start

    return wrapper

  ImageFile.ImageFile.load, Image.Image.resize, Image.Image.convert = map(timed, originals)
  try:
    start = time.thread_time()
    for i in range(images):
      item, _ = source[i]  # as the loader: read, seed, preprocess, convert
      rng = np.random.default_rng([0, i, 0, 7])
      to_float(preprocess(item, size, rng=rng))
    total = time.thread_time() - start
  finally:
    ImageFile.ImageFile.load, Image.Image.resize, Image.Image.convert = originals
  return {
    "image_size": size,
    "cpu_ms_per_image": round(1e3 * total / images, 2),
    "pillow_c_share": round(inside[0] / total, 3),
  }


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("tfds_dir")
  parser.add_argument("--images", type=int, default=300)
  args = parser.parse_args()
  source = sources.TfdsSource("imagenet2012", "train", args.tfds_dir)
  images = min(args.images, len(source))
  reads = {}
  for name in ("first", "again"):  # the first pass opens the reader and its files
    start = time.thread_time()
    for i in range(images):
      source[i]
    reads[name] = round(1e3 * (time.thread_time() - start) / images, 3)
  print({"tfds_read_cpu_ms_per_record": reads})
  for size in (64, 128, 256, 512):
    print(share(source, images, size))


if __name__ == "__main__":
  main()
