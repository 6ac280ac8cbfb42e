"""Writes preprocess_parity.npz: the reference's ImageNet preprocessing of the stand-in's JPEGs.

For a JPEG of every size of tests/imagenet_standin.SIZES (500x375, 375x500, 1024x683, 150x200,
100x80, 2272x1704, a grayscale 500x333; gradients and sharp shapes, see parity_jpeg) and every
size 64, 128, 256, the outputs of openai/guided-diffusion's
`center_crop_arr` and `random_crop_arr` (guided_diffusion/image_datasets.py), each fed the JPEG
as its ImageDataset reads it (PIL open, load, convert to RGB). random_crop_arr draws from Python's
`random` module, seeded once with 0; every `random.randrange` call it makes is recorded as
(start, stop, value), so that adm_jax's random crop can be replayed with the same draws.

usage (a checkout of the reference; its torch / blobfile / mpi4py imports are not needed here):
  GD_REF=/path/to/guided-diffusion python tests/data/make_preprocess_parity.py
(GD_REF_COMMIT names the reference's commit where GD_REF is not a git checkout.)

Stored:
  jpeg_bytes uint8 [total], jpeg_offsets int64 [n + 1]   the JPEGs, concatenated
  jpeg_sizes int64 [n, 2]                                 (width, height)
  sizes int64 [3]                                         64, 128, 256
  center_{i}_{s}, random_{i}_{s} uint8 [s, s, 3]          outputs, as differences along x then
                                                          y (mod 256; see as_differences)
  draws_{i}_{s} int64 [3, 3]                              random_crop_arr's (start, stop, value)
                                                          for the side, then y, then x
  pil_version, reference_commit                           what produced them
"""

import io
import os
import random
import subprocess
import sys
import types

import numpy as np
import PIL
from PIL import Image
from PIL import ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
import imagenet_standin  # noqa: E402

SIZES = (64, 128, 256)
OUT = os.path.join(HERE, "preprocess_parity.npz")


def reference_module():
  """guided_diffusion.image_datasets from $GD_REF, without its unused I/O dependencies."""
  ref = os.environ.get("GD_REF")
  if not ref or not os.path.isfile(os.path.join(ref, "guided_diffusion", "image_datasets.py")):
    raise SystemExit(f"GD_REF={ref!r}: set it to a checkout of openai/guided-diffusion")
  for name in ("blobfile", "mpi4py"):
    if name not in sys.modules:
      try:
        __import__(name)
      except ImportError:
        stub = types.ModuleType(name)
        stub.MPI = None
        sys.modules[name] = stub
  sys.path.insert(0, ref)
  from guided_diffusion import image_datasets  # pylint: disable=g-import-not-at-top

  commit = (
    os.environ.get("GD_REF_COMMIT")
    or subprocess.run(
      ["git", "-C", ref, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
  )
  return image_datasets, commit


class RecordingRandom:
  """Stands in for the `random` module inside image_datasets: draws from random.Random(seed)
  and records every randrange as (start, stop, value)."""

  def __init__(self, seed: int):
    self.rng = random.Random(seed)
    self.calls = []

  def randrange(self, start, stop=None):
    lo, hi = (0, start) if stop is None else (start, stop)
    value = self.rng.randrange(lo, hi)
    self.calls.append((lo, hi, value))
    return value

  def random(self):
    raise AssertionError("random_crop_arr is not expected to call random.random()")


def parity_jpeg(width: int, height: int, grayscale: bool, index: int) -> bytes:
  """A JPEG of width x height: colour gradients and a few sharp-edged ellipses and bars (what
  the box / bicubic filters and the crop offsets act on), small once compressed."""
  rng = np.random.default_rng(index)
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  slopes = rng.uniform(-1, 1, (3, 2)) * 200
  pixels = np.stack([128 + a * x / width + b * y / height for a, b in slopes], -1)
  image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(image)
  for _ in range(6):
    x0, x1 = sorted(rng.integers(0, width, 2))
    y0, y1 = sorted(rng.integers(0, height, 2))
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=color)
  for k in range(0, width, max(4, width // 12)):  # thin bars: detail at every scale
    draw.line((k, 0, k, height // 4), fill=(255, 255, 255), width=1 + k % 3)
  if grayscale:
    image = image.convert("L")
  out = io.BytesIO()
  image.save(out, "JPEG", quality=90)
  return out.getvalue()


def as_differences(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, C] -> its differences along W, then along H (mod 256): mostly small values,
  which deflate packs (undone by two cumulative sums mod 256)."""
  out = image.astype(np.int16)
  out[:, 1:] = np.diff(out, axis=1)
  out[1:] = np.diff(out, axis=0)
  return (out % 256).astype(np.uint8)


def main():
  image_datasets, commit = reference_module()
  recorder = RecordingRandom(0)
  image_datasets.random = recorder
  jpegs = [parity_jpeg(w, h, gray, i) for i, (w, h, gray) in enumerate(imagenet_standin.SIZES)]
  out = {
    "sizes": np.asarray(SIZES),
    "pil_version": np.asarray(PIL.__version__),
    "reference_commit": np.asarray(commit),
    "jpeg_bytes": np.frombuffer(b"".join(jpegs), np.uint8),
    "jpeg_offsets": np.cumsum([0] + [len(j) for j in jpegs]),
    "jpeg_sizes": np.asarray([s[:2] for s in imagenet_standin.SIZES]),
  }
  for i, jpeg in enumerate(jpegs):
    for size in SIZES:

      def read():
        image = Image.open(io.BytesIO(jpeg))
        image.load()
        return image.convert("RGB")

      out[f"center_{i}_{size}"] = as_differences(image_datasets.center_crop_arr(read(), size))
      first = len(recorder.calls)
      out[f"random_{i}_{size}"] = as_differences(image_datasets.random_crop_arr(read(), size))
      out[f"draws_{i}_{size}"] = np.asarray(recorder.calls[first:], np.int64)
      assert out[f"draws_{i}_{size}"].shape == (3, 3), recorder.calls[first:]
  np.savez_compressed(OUT, **out)
  print(
    f"wrote {OUT}: {os.path.getsize(OUT) / 1e3:.0f} kB, {len(jpegs)} JPEGs x {SIZES}, "
    f"PIL {PIL.__version__}, reference {commit}"
  )


if __name__ == "__main__":
  main()
