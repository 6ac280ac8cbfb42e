"""Random-access image sources: `len(src)`, `src[i] -> (image, label)`, `src.num_classes`.

An image is either a uint8 array [H, W, C] or a path (decoded later, in the loader's
worker threads, so that a corrupt file can be skipped or reported with its path).
"""
import gzip
import logging
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

EMBEDDED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded")
EMBEDDED_FASHION_MNIST = os.path.join(EMBEDDED_DIR, "fashion_mnist_subset.npz")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


class ArraySource:
  """In-memory images [N, H, W(, C)] uint8 and labels [N]."""

  def __init__(self, images: np.ndarray, labels: Optional[np.ndarray] = None,
               num_classes: Optional[int] = None, name: str = "arrays",
               class_names: Optional[Sequence[str]] = None):
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4:
      raise ValueError(f"{name}: images must be [N, H, W] or [N, H, W, C], got {images.shape}")
    self.images = images
    self.labels = np.zeros(len(images), np.int64) if labels is None else np.asarray(labels)
    if len(self.labels) != len(images):
      raise ValueError(f"{name}: {len(images)} images but {len(self.labels)} labels")
    self.num_classes = int(num_classes or (self.labels.max() + 1 if len(self.labels) else 0))
    self.name = name
    self.class_names = list(class_names) if class_names else None

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return self.images[i], int(self.labels[i])


# ----------------------------------------------------------------------------- IDX files
def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (MNIST format, optionally gzipped) into a numpy array."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f"{path}: not an IDX file (bad magic number)")
  dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
  if data[2] not in dtypes:
    raise ValueError(f"{path}: unknown IDX element type {data[2]:#x}")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f"{path}: IDX header says {shape} but holds {array.size} values")
  return array.reshape(shape)


def _idx_file(directory: str, stem: str) -> Optional[str]:
  for name in (stem + ".gz", stem):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path
  return None


def fashion_mnist(split: str = "train", directory: str = "") -> ArraySource:
  """Fashion-MNIST: the full IDX files when installed (Debian's dataset-fashion-mnist or
  `directory`), else the class-balanced subset shipped in the package."""
  prefix = {"train": "train", "test": "t10k"}.get(split)
  if prefix is None:
    raise ValueError(f"fashion_mnist split {split!r}: expected 'train' or 'test'")
  for candidate in [directory] if directory else [DEBIAN_FASHION_MNIST]:
    images = _idx_file(candidate, f"{prefix}-images-idx3-ubyte")
    labels = _idx_file(candidate, f"{prefix}-labels-idx1-ubyte")
    if images and labels:
      log.info("Fashion-MNIST %s: full IDX files from %s", split, candidate)
      return ArraySource(read_idx(images), read_idx(labels).astype(np.int64), 10,
                         name=f"fashion_mnist:{split}", class_names=FASHION_MNIST_CLASSES)
  if directory:
    raise FileNotFoundError(f"data.fashion_mnist_dir={directory!r} holds no {prefix}-*-idx*-ubyte files")
  with np.load(EMBEDDED_FASHION_MNIST) as data:
    images, labels = data[f"{split}_images"], data[f"{split}_labels"]
  log.info("Fashion-MNIST %s: embedded subset (%d images); install Debian's "
               "dataset-fashion-mnist for the full set", split, len(images))
  return ArraySource(images, labels.astype(np.int64), 10, name=f"fashion_mnist_subset:{split}",
                     class_names=FASHION_MNIST_CLASSES)


# ----------------------------------------------------------------------------- folders
class FolderSource:
  """Image files under a directory (recursive), labelled as the reference or by sub-folder.

  labels: 'prefix' (class = file name before the first '_', the reference's convention),
  'subdir' (class = first-level sub-folder), or 'none' (all 0).
  """

  def __init__(self, directory: str, labels: str = "prefix"):
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"data.data_dir={directory!r} is not a directory")
    if labels not in ("prefix", "subdir", "none"):
      raise ValueError(f"data.folder_labels={labels!r}: expected 'prefix', 'subdir' or 'none'")
    paths: List[str] = []
    for root, dirs, files in os.walk(directory):
      dirs.sort()
      paths += [os.path.join(root, f) for f in sorted(files)
                if f.lower().endswith(IMAGE_EXTENSIONS)]
    if labels == "prefix":
      keys = [os.path.basename(p).split("_")[0] for p in paths]
    elif labels == "subdir":
      keys = [os.path.relpath(p, directory).split(os.sep)[0] for p in paths]
      if any(os.sep not in os.path.relpath(p, directory) for p in paths):
        raise ValueError(f"data.folder_labels='subdir' but {directory} has images outside "
                         "class sub-folders")
    else:
      keys = ["" for _ in paths]
    self.class_names = sorted(set(keys))
    index = {k: i for i, k in enumerate(self.class_names)}
    self.paths = paths
    self.labels = np.asarray([index[k] for k in keys], np.int64)
    self.num_classes = len(self.class_names)
    self.name = f"folder:{directory}"

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    return self.paths[i], int(self.labels[i])


# ----------------------------------------------------------------------------- TFDS
class TfdsSource:
  """A TFDS dataset read through `tfds.data_source` (array_record; no TensorFlow needed)."""

  def __init__(self, name: str, split: str, data_dir: Optional[str] = None,
               image_key: str = "image", label_key: str = "label"):
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ImportError("data.name='tfds' needs tensorflow_datasets (pip install "
                        "tensorflow-datasets array-record); TensorFlow itself is not needed") from None
    try:
      self.source = tfds.data_source(name, split=split, data_dir=data_dir or None)
    except Exception as e:  # pylint: disable=broad-except  (TFDS raises several kinds)
      where = data_dir or "~/tensorflow_datasets"
      first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      raise FileNotFoundError(
          f"TFDS dataset {name!r} (split {split!r}) is not prepared under {where} "
          f"({type(e).__name__}: {first_line}). Prepare it once, in array_record format: "
          f"`tfds build {name} --file_format=array_record --data_dir={where}` (imagenet2012: "
          f"first put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
          f"{where}/downloads/manual/; see the README's 'ImageNet data'), or read an image "
          f"tree with data.name=folder data.data_dir=DIR") from None
    self.image_key, self.label_key = image_key, label_key
    info = getattr(self.source, "dataset_info", None)
    feature = info.features[label_key] if info is not None and label_key in info.features else None
    self.num_classes = int(getattr(feature, "num_classes", 0) or 0)
    self.class_names = list(getattr(feature, "names", None) or []) or None
    self.name = f"tfds:{name}:{split}"

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    record = self.source[int(i)]
    label = int(record[self.label_key]) if self.label_key in record else 0
    image = record[self.image_key]
    if isinstance(image, bytes):
      return image, label  # encoded; decoded by the loader
    return np.asarray(image), label


def describe(source) -> Tuple[str, int]:
  return getattr(source, "name", type(source).__name__), len(source)


def class_balanced_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
  """Sorted indices of `per_class` random examples of every class."""
  rng = np.random.default_rng(seed)
  chosen: List[np.ndarray] = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    if len(idx) < per_class:
      raise ValueError(f"class {c} has {len(idx)} examples, fewer than {per_class}")
    chosen.append(rng.choice(idx, per_class, replace=False))
  return np.sort(np.concatenate(chosen))

