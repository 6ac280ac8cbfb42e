"""Data sources, reference preprocessing, and the deterministic resumable per-host loader."""

import gzip
import os

import numpy as np
from PIL import Image
import pytest

from adm_jax import config_base
from adm_jax import data
from adm_jax.data import sources


def cfg(**kw):
  c = config_base.data_defaults()
  c.update(kw)
  return c


def test_embedded_subset_is_class_balanced():
  with np.load(sources.EMBEDDED_FASHION_MNIST) as d:
    assert d["train_images"].shape == (5000, 28, 28) and d["train_images"].dtype == np.uint8
    assert np.bincount(d["train_labels"], minlength=10).tolist() == [500] * 10
    assert np.bincount(d["test_labels"], minlength=10).tolist() == [100] * 10
  assert os.path.exists(os.path.join(sources.EMBEDDED_DIR, "LICENSE-fashion-mnist.txt"))


def test_fashion_mnist_falls_back_to_embedded(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", str(tmp_path / "absent"))
  src = data.create_source(cfg())
  assert len(src) == 5000 and src.num_classes == 10 and "subset" in src.name
  assert len(data.create_source(cfg(), "test")) == 1000


def _write_idx(path, array, gz):
  codes = {np.uint8: 0x08}
  header = bytes([0, 0, codes[array.dtype.type], array.ndim])
  header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  opener = gzip.open if gz else open
  with opener(path, "wb") as f:
    f.write(header + array.tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_idx_parsing_and_full_set_directory(tmp_path, gz):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
  labels = (np.arange(12) % 10).astype(np.uint8)
  suffix = ".gz" if gz else ""
  _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, gz)
  _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, gz)
  path = tmp_path / f"train-images-idx3-ubyte{suffix}"
  np.testing.assert_array_equal(sources.read_idx(str(path)), images)
  src = data.create_source(cfg(fashion_mnist_dir=str(tmp_path)))
  assert len(src) == 12 and src[3][1] == 3
  np.testing.assert_array_equal(src[5][0][..., 0], images[5])
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
  with pytest.raises(ValueError, match="not an IDX file"):
    sources.read_idx(str(tmp_path / "bad"))
  with pytest.raises(FileNotFoundError, match="fashion_mnist_dir"):
    data.create_source(cfg(fashion_mnist_dir=str(tmp_path / "empty")), "test")


def _png(path, color, size=(40, 30)):
  Image.new("RGB", size, color).save(path)


def test_folder_labels_prefix_and_subdir(tmp_path):
  flat = tmp_path / "flat"
  flat.mkdir()
  for name in ("cat_1.png", "cat_2.png", "dog_1.png"):
    _png(flat / name, (10, 20, 30))
  src = data.create_source(cfg(name="folder", data_dir=str(flat)))
  assert src.class_names == ["cat", "dog"] and sorted(src.labels.tolist()) == [0, 0, 1]
  nested = tmp_path / "nested"
  for cls in ("a", "b", "c"):
    (nested / cls).mkdir(parents=True)
    _png(nested / cls / "x.png", (1, 2, 3))
  src = data.create_source(cfg(name="folder", data_dir=str(nested), folder_labels="subdir"))
  assert src.num_classes == 3 and src.labels.tolist() == [0, 1, 2]


def test_preprocessing_matches_direct_pil():
  rng = np.random.default_rng(0)
  array = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
  got = data.preprocess(array, 64)
  image = Image.fromarray(array)
  image = image.resize((100, 150), resample=Image.BOX)  # 200x300 -> halve while >= 128
  scale = 64 / 100
  image = image.resize((round(100 * scale), round(150 * scale)), resample=Image.BICUBIC)
  expected = np.asarray(image)
  top = (expected.shape[0] - 64) // 2
  np.testing.assert_array_equal(got, expected[top : top + 64, :64])
  gray = data.preprocess(array, 32, channels=1)
  assert gray.shape == (32, 32, 1)
  crop = data.preprocess(array, 64, random_crop_=True, rng=np.random.default_rng(1))
  assert crop.shape == (64, 64, 3)


def _arrays_iterator(n=37, **kw):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  labels = np.arange(n) % 5
  src = data.ArraySource(images, labels, 5)
  args = dict(global_batch_size=8, image_size=8, seed=3)
  args.update(kw)
  return data.create_data_iterator(cfg(name="arrays", random_flip=True), source=src, **args)


def test_loader_values_determinism_and_resume():
  it = _arrays_iterator()
  stream = [next(it) for _ in range(7)]  # wraps across epochs (37 examples, batch 8)
  it.close()
  assert stream[0]["image"].dtype == np.float32 and stream[0]["image"].shape == (8, 8, 8, 3)
  assert stream[0]["image"].min() >= -1 and stream[0]["image"].max() <= 1
  again = _arrays_iterator()
  for ref in stream[:3]:
    b = next(again)
    np.testing.assert_array_equal(b["image"], ref["image"])
  again.close()
  resumed = _arrays_iterator(start_step=4)
  for ref in stream[4:]:
    b = next(resumed)
    np.testing.assert_array_equal(b["image"], ref["image"])
    np.testing.assert_array_equal(b["label"], ref["label"])
  resumed.close()
  other_seed = _arrays_iterator(seed=4)
  assert not np.array_equal(next(other_seed)["label"], stream[0]["label"])
  other_seed.close()


def test_loader_per_host_slices_concatenate_to_global_batch():
  whole = _arrays_iterator()
  hosts = [_arrays_iterator(process_index=p, process_count=2) for p in range(2)]
  for _ in range(3):
    ref = next(whole)
    parts = [next(h) for h in hosts]
    np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]), ref["image"])
    np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), ref["label"])
  for it in [whole] + hosts:
    it.close()


def test_corrupt_images_skipped_and_counted_or_fatal(tmp_path):
  for i in range(6):
    _png(tmp_path / f"ok_{i}.png", (i * 20, 0, 0))
  (tmp_path / "bad_0.png").write_bytes(b"not a png")
  it = data.create_data_iterator(
    cfg(name="folder", data_dir=str(tmp_path), folder_labels="none"),
    global_batch_size=7,
    image_size=8,
    seed=0,
  )
  batch = next(it)
  it.close()
  # Every 7-image epoch holds the bad file once; the loader may have prefetched more batches.
  assert batch["image"].shape[0] == 7 and it.num_skipped >= 1
  assert np.isfinite(batch["image"]).all()
  it = data.create_data_iterator(
    cfg(name="folder", data_dir=str(tmp_path), folder_labels="none", on_corrupt="raise"),
    global_batch_size=7,
    image_size=8,
    seed=0,
  )
  with pytest.raises(data.CorruptImageError, match="bad_0.png"):
    next(it)


def test_empty_dataset_and_bad_labels_and_names(tmp_path):
  with pytest.raises(ValueError, match="is empty"):
    data.create_data_iterator(
      cfg(name="folder", data_dir=str(tmp_path)), global_batch_size=2, image_size=8, seed=0
    )
  with pytest.raises(ValueError, match="out of range for num_classes=3"):
    next(_arrays_iterator(num_classes=3))
  with pytest.raises(ValueError, match="unknown data.name"):
    data.create_source(cfg(name="imagenet"))
