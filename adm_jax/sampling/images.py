"""Images out of the samplers: uint8 conversion and PNG grids (optionally one labelled column per
class)."""

import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw

from adm_jax import files


def to_uint8(images) -> np.ndarray:
  """[-1, 1] float images → uint8 [0, 255], rounded like the reference ((x + 1) * 127.5)."""
  images = np.asarray(images, dtype=np.float32)
  return np.clip((images + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def image_grid(images: np.ndarray, ncols: Optional[int] = None, pad: int = 2) -> np.ndarray:
  """Tiles uint8 images [N, H, W, C] into one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] image."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  ncols = ncols or int(math.ceil(math.sqrt(n)))
  nrows = int(math.ceil(n / ncols))
  grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, ncols)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top : top + h, left : left + w] = images[i]
  return grid


def save_grid(
  path: str,
  images_uint8: np.ndarray,
  ncols: Optional[int] = None,
  scale: int = 1,
  column_names: Optional[Sequence[str]] = None,
) -> str:
  """Writes a PNG grid (optionally enlarged by an integer factor) and returns its path.

  column_names: a caption above each column (e.g. the class of a class-ordered grid).
  """
  grid = image_grid(images_uint8, ncols)
  if grid.shape[-1] == 1:
    grid = grid[..., 0]
  img = Image.fromarray(grid)
  if scale > 1:
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  if column_names:
    img = _with_column_captions(img, column_names, images_uint8.shape[2] * scale, 2 * scale)
  with files.atomic_path(path, "an image grid") as tmp:
    img.save(tmp)
  return path


def _with_column_captions(img: Image.Image, names: Sequence[str], cell: int, pad: int):
  """The grid with a white band on top naming each column (PIL's built-in font)."""
  band = 14
  out = Image.new(img.mode, (img.width, img.height + band), 255 if img.mode == "L" else (255,) * 3)
  out.paste(img, (0, band))
  draw = ImageDraw.Draw(out)
  for i, name in enumerate(names):
    left = pad + i * (cell + pad)
    text = str(name)
    while text and draw.textlength(text) > cell + pad:
      text = text[:-1]
    draw.text((left, 1), text, fill=0 if img.mode == "L" else (0, 0, 0))
  return out
