"""The TFDS path against a stand-in imagenet2012 read by the real tensorflow_datasets (no mocks):
reading, labels of a split, missing or unreadable data, and import failures."""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from adm_jax import config_base
from adm_jax import data
from adm_jax.data import sources
from adm_jax.data.preprocess import preprocess
from adm_jax.data.preprocess import to_float

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

import imagenet_standin  # noqa: E402  (tests/ is on pytest's pythonpath)


@pytest.fixture
def imagenet_dir(imagenet_standin_dir):
  """The session's imagenet2012 stand-in (conftest; imagenet_standin.DEFAULT_SPLITS examples)."""
  return imagenet_standin_dir


def cfg(data_dir, **kw):
  c = config_base.data_defaults()
  c.update(name="tfds", tfds_name="imagenet2012", data_dir=data_dir, eval_split="validation")
  c.update(kw)
  return c


def test_standin_reads_through_tfds_data_source(imagenet_dir):
  counts = imagenet_standin.DEFAULT_SPLITS
  for split, key in (("train", "train"), ("validation", "eval")):
    src = data.create_source(cfg(imagenet_dir), key)
    assert src.name == f"tfds:imagenet2012:{split}" and len(src) == counts[split]
    assert src.num_classes == 1000 and src.class_names[281] == "n02123045"
    for i in range(len(src)):
      image, label = src[i]
      width, height, gray = imagenet_standin.SIZES[i % len(imagenet_standin.SIZES)]
      assert isinstance(image, bytes)  # decoded by the loader (PIL), not by TFDS
      decoded = Image.open(io.BytesIO(image))
      assert decoded.size == (width, height) and decoded.mode == ("L" if gray else "RGB")
      assert label == imagenet_standin.CLASSES[i % len(imagenet_standin.CLASSES)]
  test = sources.TfdsSource("imagenet2012", "test", imagenet_dir)
  assert [test[i][1] for i in range(len(test))] == [-1] * counts["test"]
  both = sources.TfdsSource("imagenet2012", "train[:2]+validation[:1]", imagenet_dir)
  assert len(both) == 3


def test_split_labels_are_known_before_any_batch(imagenet_dir, tmp_path):
  train = data.create_source(cfg(imagenet_dir), "train")
  test = data.create_source(cfg(imagenet_dir, eval_split="test"), "eval")
  assert data.split_is_labelled(train) and not data.split_is_labelled(test)
  for image in ("a_1.png", "b_1.png"):
    Image.new("RGB", (8, 8)).save(tmp_path / image)
  folder = lambda labels: data.FolderSource(str(tmp_path), labels)  # noqa: E731
  assert data.split_is_labelled(folder("prefix")) and not data.split_is_labelled(folder("none"))
  images = np.zeros((2, 8, 8, 3), np.uint8)
  assert not data.split_is_labelled(data.ArraySource(images))
  assert not data.split_is_labelled(data.ArraySource(images, np.array([3, -1])))
  assert data.split_is_labelled(data.ArraySource(images, np.array([3, 0])))
  with pytest.raises(
    ValueError,
    match=r"tfds:imagenet2012:test is unlabelled .* "
    r"data.eval_split='test' holds no labels",
  ):
    data.create_data_iterator(
      cfg(imagenet_dir, eval_split="test"),
      global_batch_size=2,
      image_size=8,
      seed=0,
      split="eval",
      num_classes=1000,
    )


def test_loader_refuses_label_minus_one_for_a_classifier(imagenet_dir):
  test = sources.TfdsSource("imagenet2012", "test", imagenet_dir)
  it = data.BatchIterator(
    test, global_batch_size=2, image_size=8, seed=0, num_classes=1000, num_workers=1
  )
  with pytest.raises(
    data.UnlabelledError,
    match=r"example \d of tfds:imagenet2012:test has no "
    r"label \(-1\) but labels are needed \(num_classes=1000\)",
  ):
    next(it)
  it.close()
  # An unconditional model reads the test split: its labels stay -1 (never used).
  it = data.create_data_iterator(
    cfg(imagenet_dir, eval_split="test"), global_batch_size=3, image_size=16, seed=0, split="eval"
  )
  batch = next(it)
  it.close()
  assert batch["image"].shape == (3, 16, 16, 3) and batch["label"].tolist() == [-1, -1, -1]


def test_loader_batches_are_the_preprocessed_examples(imagenet_dir):
  src = data.create_source(cfg(imagenet_dir), "train")
  it = data.create_data_iterator(
    cfg(imagenet_dir), global_batch_size=4, image_size=64, seed=1, num_classes=1000, source=src
  )
  batch = next(it)
  it.close()
  assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.float32
  for row in range(4):
    image, label = src[it.index_at(row)]
    np.testing.assert_array_equal(batch["image"][row], to_float(preprocess(image, 64)))
    assert batch["label"][row] == label


def test_unprepared_dataset_message_and_nothing_written(tmp_path):
  """With no data, the run stops with the preparation steps and leaves no folder behind (a fresh
  process, so that TFDS's default data dir follows the temporary HOME)."""
  home, data_dir = tmp_path / "home", tmp_path / "data"
  home.mkdir()
  script = (
    "from adm_jax.data import sources\n"
    "for d in (None, {d!r}):\n"
    "  try:\n"
    "    sources.TfdsSource('imagenet2012', 'train', d)\n"
    "  except FileNotFoundError as e:\n"
    "    print(e)\n"
  ).format(d=str(data_dir))
  env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
  env["HOME"] = str(home)
  out = subprocess.run(
    [sys.executable, "-c", script],
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 2, out.stdout + out.stderr
  for line, where in zip(lines, (home / "tensorflow_datasets", data_dir)):
    assert line.startswith(
      f"TFDS dataset 'imagenet2012' (split 'train') is not prepared under "
      f"{where} (no imagenet2012/5.1.0/dataset_info.json)"
    )
    assert f"tfds build imagenet2012 --file_format=array_record --data_dir={where}" in line
    assert "ILSVRC2012_img_train.tar" in line and "section 'ImageNet data'" in line
  assert "Downloading" not in out.stderr
  assert os.listdir(home) == [] and not data_dir.exists()


def test_other_versions_tfrecord_and_unknown_names(imagenet_dir, tmp_path):
  old = tmp_path / "old"
  shutil.copytree(
    os.path.join(imagenet_dir, "imagenet2012", "5.1.0"), old / "imagenet2012" / "5.0.0"
  )
  with pytest.raises(
    FileNotFoundError,
    match=r"versions present: 5.0.0 \(pick one with "
    r"data.tfds_name='imagenet2012:VERSION'\)",
  ):
    sources.TfdsSource("imagenet2012", "train", str(old))
  assert len(sources.TfdsSource("imagenet2012:5.0.0", "train", str(old))) == 8
  tfrecord = tmp_path / "tfrecord"
  shutil.copytree(os.path.join(imagenet_dir, "imagenet2012"), tfrecord / "imagenet2012")
  info_path = tfrecord / "imagenet2012" / "5.1.0" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info_path.write_text(json.dumps(dict(info, fileFormat="tfrecord")))
  with pytest.raises(
    ValueError,
    match=r"prepared as tfrecord, .*`tfds convert_format "
    r"--dataset_version_dir=\S+5.1.0 --out_file_format=array_record",
  ):
    sources.TfdsSource("imagenet2012", "train", str(tfrecord))
  with pytest.raises(FileNotFoundError, match="no builder named 'imagenet2013'"):
    sources.TfdsSource("imagenet2013", "train", str(tmp_path))
  with pytest.raises(
    ValueError,
    match=r"data.image_key='img' is not a feature of imagenet2012 "
    r"\(its features: file_name, image, label\)",
  ):
    data.create_source(cfg(imagenet_dir, image_key="img"), "train")


class _Failing:
  """A meta-path finder that makes importing `name` raise `error`."""

  def __init__(self, name, error):
    self.name, self.error = name, error

  def find_spec(self, fullname, path=None, target=None):
    if fullname == self.name:
      raise self.error
    return None


@pytest.mark.parametrize(
  "module, error, expected",
  [
    (
      "array_record.python.array_record_data_source",
      None,
      r"^data.name='tfds': importing array_record.python.array_record_data_source failed "
      r"\(ModuleNotFoundError: .*pip install -U array-record \(or pip install -U "
      r"'adm-jax\[tfds\]'\)$",
    ),
    (
      "tensorflow_datasets",
      TypeError("Descriptors cannot be created directly."),
      r"^data.name='tfds': importing tensorflow_datasets failed \(TypeError: "
      r"Descriptors cannot be created directly.; installed: tensorflow-datasets \S+, array-record "
      r"\S+\); install or upgrade it: pip install -U tensorflow-datasets ",
    ),
  ],
)
def test_import_failures_name_the_module_not_the_data(monkeypatch, module, error, expected):
  monkeypatch.delitem(sys.modules, module)
  if error is None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ModuleNotFoundError
  else:
    monkeypatch.setattr(sys, "meta_path", [_Failing(module, error)] + sys.meta_path)
  with pytest.raises(ImportError, match=expected) as info:
    sources.TfdsSource("imagenet2012", "train", "/nonexistent")
  assert "not prepared" not in str(info.value) and "\n" not in str(info.value)
