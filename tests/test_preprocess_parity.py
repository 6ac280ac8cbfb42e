"""adm_jax's ImageNet preprocessing against the reference's center_crop_arr / random_crop_arr
(guided-diffusion's image_datasets.py), pixel for pixel, at ImageNet's image sizes.

tests/data/preprocess_parity.npz holds the JPEGs, the reference's outputs at 64/128/256 and the
random draws its random crop consumed (tests/data/make_preprocess_parity.py writes it).
"""

import os

import numpy as np
import PIL
import pytest

from adm_jax.data.preprocess import preprocess

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "preprocess_parity.npz")


class Replay:
  """A numpy-Generator stand-in returning the reference's recorded draws, checking that each is
  asked for over the same range the reference drew it from."""

  def __init__(self, draws):
    self.draws = [tuple(int(v) for v in row) for row in draws]

  def integers(self, low, high):
    lo, hi, value = self.draws.pop(0)
    assert (low, high) == (lo, hi), f"drew from [{low}, {high}), the reference from [{lo}, {hi})"
    return value


def undo_differences(stored: np.ndarray) -> np.ndarray:
  out = np.cumsum(stored.astype(np.int64), axis=0)
  return (np.cumsum(out, axis=1) % 256).astype(np.uint8)


@pytest.fixture(scope="module")
def reference():
  with np.load(DATA) as npz:
    return dict(npz)


def _cases():
  with np.load(DATA) as npz:
    return [(i, int(s)) for i in range(len(npz["jpeg_sizes"])) for s in npz["sizes"]]


@pytest.mark.parametrize("kind", ["center", "random"])
def test_preprocessing_is_pixel_exact_with_the_reference(reference, kind):
  offsets = reference["jpeg_offsets"]
  for i, size in _cases():
    jpeg = reference["jpeg_bytes"][offsets[i] : offsets[i + 1]].tobytes()
    expected = undo_differences(reference[f"{kind}_{i}_{size}"])
    if kind == "center":
      got = preprocess(jpeg, size)
    else:
      rng = Replay(reference[f"draws_{i}_{size}"])
      got = preprocess(jpeg, size, random_crop_=True, rng=rng)
      assert not rng.draws, "the random crop consumed fewer draws than the reference"
    width, height = reference["jpeg_sizes"][i]
    where = f"{kind} crop of the {width}x{height} JPEG at {size}"
    assert got.shape == expected.shape == (size, size, 3), where
    diff = np.abs(got.astype(np.int16) - expected)
    assert diff.max() == 0, (
      f"{where}: {np.count_nonzero(diff)} values differ, up to "
      f"{diff.max()} (PIL here {PIL.__version__}, reference made with "
      f"{reference['pil_version']})"
    )
