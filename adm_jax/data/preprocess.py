"""The reference's image preprocessing: box-halving, bicubic resize, centre or random crop, flip.

Works on PIL images; returns uint8 [S, S, C]. Randomness comes from a numpy Generator
the caller seeds per example, so a batch is reproducible from (seed, step).
"""

import io
import math
from typing import Optional

import numpy as np
from PIL import Image


def decode(item) -> Image.Image:
  """A PIL image from a path, encoded bytes or a uint8 array [H, W(, C)]; 16-bit images
  (PNG, TIFF) are scaled to 8 bits (x / 257), not clipped."""
  if isinstance(item, (str, bytes)):
    image = Image.open(item if isinstance(item, str) else io.BytesIO(item))
    image.load()
    if image.mode.startswith("I"):  # 16- or 32-bit integer grayscale
      image = _eight_bit(np.asarray(image))
    return image
  array = np.asarray(item)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.dtype == np.uint16:
    return _eight_bit(array)
  return Image.fromarray(array.astype(np.uint8))


def _eight_bit(values: np.ndarray) -> Image.Image:
  """Integer pixels of a 16-bit range (0..65535) as an 8-bit grayscale image."""
  values = np.asarray(values).astype(np.float64)
  scale = 257.0 if values.max(initial=0) > 255 else 1.0  # an 'I' image may already be 8-bit
  return Image.fromarray(np.clip(np.round(values / scale), 0, 255).astype(np.uint8), mode="L")


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
  if channels not in (1, 3):
    raise ValueError(f"data.channels={channels} must be 1 (grayscale) or 3 (RGB)")
  mode = "L" if channels == 1 else "RGB"
  return image if image.mode == mode else image.convert(mode)


def center_crop(image: Image.Image, size: int) -> np.ndarray:
  """Halve with BOX filtering while the short side is >= 2*size, BICUBIC to short side = size,
  then crop the centre size x size."""
  while min(image.size) >= 2 * size:
    image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
  scale = size / min(image.size)
  image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
  array = np.asarray(image)
  top = (array.shape[0] - size) // 2
  left = (array.shape[1] - size) // 2
  return array[top : top + size, left : left + size]


def random_crop(
  image: Image.Image,
  size: int,
  rng: np.random.Generator,
  min_frac: float = 0.8,
  max_frac: float = 1.0,
) -> np.ndarray:
  """The reference's random crop: resize so the short side is in [size/max_frac, size/min_frac],
  then crop a random size x size window."""
  min_side = math.ceil(size / max_frac)
  max_side = math.ceil(size / min_frac)
  side = int(rng.integers(min_side, max_side + 1))
  while min(image.size) >= 2 * side:
    image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
  scale = side / min(image.size)
  image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
  array = np.asarray(image)
  top = int(rng.integers(0, array.shape[0] - size + 1))
  left = int(rng.integers(0, array.shape[1] - size + 1))
  return array[top : top + size, left : left + size]


def preprocess(
  item,
  size: int,
  channels: int = 3,
  random_crop_: bool = False,
  random_flip: bool = False,
  rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
  """One example → uint8 [size, size, channels]."""
  image = _to_mode(decode(item), channels)
  if random_crop_:
    array = random_crop(image, size, rng)
  else:
    array = center_crop(image, size)
  if random_flip and rng.random() < 0.5:
    array = array[:, ::-1]
  if array.ndim == 2:
    array = array[..., None]
  return np.ascontiguousarray(array)


def to_float(images_uint8: np.ndarray) -> np.ndarray:
  """uint8 → float32 in [-1, 1] (x / 127.5 - 1)."""
  return images_uint8.astype(np.float32) / 127.5 - 1.0
