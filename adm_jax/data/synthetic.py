"""Synthetic ImageNet-like JPEGs (ImageNet's image and file sizes, made-up content) for the data
layer's tests and throughput measurements, where no real ImageNet is at hand.

  jpeg(500, 375, seed=0)              # bytes of one 500x375 RGB JPEG
  imagenet_like(300, seed=0)          # [(bytes, (w, h))] drawn from IMAGENET_SIZE_MIX
"""

import functools
import io
from typing import List, Tuple

import numpy as np
from PIL import Image

# (width, height, weight): an assumed mix modelled on ImageNet-1k (most images are 500 px on the
# long side, landscape more often than portrait; a few small and a few camera-sized ones). Its
# mean is 460 x 383 px (ImageNet's train split: about 470 x 390).
IMAGENET_SIZE_MIX = (
  (500, 375, 28),
  (375, 500, 9),
  (500, 333, 14),
  (333, 500, 5),
  (500, 500, 5),
  (400, 300, 7),
  (300, 400, 3),
  (333, 250, 5),
  (300, 225, 4),
  (640, 480, 4),
  (800, 600, 2),
  (1024, 683, 2),
  (1280, 960, 1),
  (250, 188, 4),
  (200, 150, 3),
  (150, 200, 2),
  (100, 80, 1),
  (2272, 1704, 0.5),
)
# Detail that makes the mix's mean JPEG about ImageNet's ~110 KB at quality 90 (measured).
IMAGENET_DETAIL = 32


def _texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
  """uint8 [height, width, 3]: smooth multi-scale colour fields (an 8x smaller field, upsampled)."""
  lw, lh = max(2, width // 8), max(2, height // 8)
  acc = np.zeros((lh, lw, 3), np.float32)
  k = 1
  while max(lw, lh) // k >= 2:
    small = rng.standard_normal((3, max(1, lh // k), max(1, lw // k))).astype(np.float32)
    acc += (
      np.stack(
        [np.asarray(Image.fromarray(c, "F").resize((lw, lh), Image.BILINEAR)) for c in small], -1
      )
      * k**0.7
    )
    k *= 2
  acc = (acc - acc.mean()) / (acc.std() + 1e-6) * 55 + 128
  small_image = Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))
  return np.asarray(small_image.resize((width, height), Image.BICUBIC))


@functools.lru_cache(maxsize=64)
def jpeg(
  width: int,
  height: int,
  seed: int = 0,
  detail: int = 8,
  quality: int = 90,
  grayscale: bool = False,
) -> bytes:
  """One JPEG of width x height: smooth colour fields plus uniform noise of +-`detail` levels
  (detail sets the file size: 0 gives ~15 KB at 500x375, IMAGENET_DETAIL ~110 KB)."""
  rng = np.random.default_rng([seed, width, height])
  pixels = _texture(width, height, rng)
  if detail:  # one 128 x 128 tile of noise, repeated (fast for camera-sized images)
    tile = rng.integers(-detail, detail + 1, (128, 128, 3), dtype=np.int16)
    noise = np.tile(tile, (-(-height // 128), -(-width // 128), 1))[:height, :width]
    pixels = np.clip(pixels + noise, 0, 255).astype(np.uint8)
  image = Image.fromarray(pixels)
  if grayscale:
    image = image.convert("L")
  out = io.BytesIO()
  image.save(out, "JPEG", quality=quality)
  return out.getvalue()


def draw_sizes(count: int, seed: int = 0, mix=IMAGENET_SIZE_MIX) -> List[Tuple[int, int]]:
  """`count` (width, height) pairs drawn from `mix` with weights."""
  rng = np.random.default_rng(seed)
  weights = np.asarray([m[2] for m in mix], np.float64)
  picks = rng.choice(len(mix), size=count, p=weights / weights.sum())
  return [(mix[i][0], mix[i][1]) for i in picks]


def imagenet_like(
  count: int, seed: int = 0, detail: int = IMAGENET_DETAIL, quality: int = 90
) -> List[Tuple[bytes, Tuple[int, int]]]:
  """`count` distinct JPEGs with sizes drawn from IMAGENET_SIZE_MIX: [(bytes, (w, h))]."""
  sizes = draw_sizes(count, seed)
  return [
    (jpeg.__wrapped__(w, h, seed * 1_000_003 + i, detail, quality), (w, h))
    for i, (w, h) in enumerate(sizes)
  ]
