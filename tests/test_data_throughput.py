"""The loader's throughput measurement (adm_jax.data.throughput) on a few synthetic JPEGs."""

import numpy as np
import pytest

from adm_jax.data import synthetic
from adm_jax.data import throughput


def test_synthetic_jpegs_have_imagenet_sizes():
  images = synthetic.imagenet_like(6, seed=3)
  mix = {(w, h) for w, h, _ in synthetic.IMAGENET_SIZE_MIX}
  assert len(images) == 6 and all(size in mix for _, size in images)
  assert len({b for b, _ in images}) == 6  # distinct images
  sizes = synthetic.draw_sizes(4000, seed=0)
  assert 430 < np.mean([w for w, _ in sizes]) < 490 and 360 < np.mean([h for _, h in sizes]) < 410


def test_measure_counts_delivered_images():
  source = throughput.BytesSource([synthetic.jpeg(150, 200), synthetic.jpeg(500, 375)])
  row = throughput.measure_detail(source, 32, 1, batches=3, batch_size=4)
  assert row["images"] == 12 and row["images_per_s"] > 0 and row["cpu_ms_per_image"] > 0
  assert throughput.measure(source, 16, 2, batches=1, batch_size=2) > 0
  with pytest.raises(ValueError, match="exactly one of seconds or batches"):
    throughput.measure(source, 16, 1)
  rows = throughput.table(source, sizes=(16,), workers=(1, 2), seconds=0.05, batch_size=2)
  assert [(r["image_size"], r["workers"]) for r in rows] == [(16, 1), (16, 2)]
