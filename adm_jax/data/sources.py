"""Random-access image sources: `len(src)`, `src[i] -> (image, label)`, `src.num_classes`.

An image is either a uint8 array [H, W, C] or a path (decoded later, in the loader's
worker threads, so that a corrupt file can be skipped or reported with its path).
"""

import gzip
import importlib
import logging
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

EMBEDDED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded")
EMBEDDED_FASHION_MNIST = os.path.join(EMBEDDED_DIR, "fashion_mnist_subset.npz")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
FASHION_MNIST_CLASSES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)


class ArraySource:
  """In-memory images [N, H, W(, C)] uint8 and labels [N] (None: unlabelled, all 0; a label of
  -1 marks an unlabelled example)."""

  def __init__(
    self,
    images: np.ndarray,
    labels: Optional[np.ndarray] = None,
    num_classes: Optional[int] = None,
    name: str = "arrays",
    class_names: Optional[Sequence[str]] = None,
  ):
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4:
      raise ValueError(f"{name}: images must be [N, H, W] or [N, H, W, C], got {images.shape}")
    self.images = images
    self.labelled = bool(labels is not None and not (len(labels) and np.min(labels) < 0))
    self.labels = np.zeros(len(images), np.int64) if labels is None else np.asarray(labels)
    if len(self.labels) != len(images):
      raise ValueError(f"{name}: {len(images)} images but {len(self.labels)} labels")
    most = max(int(self.labels.max()), 0) + 1 if len(self.labels) else 0
    self.num_classes = int(num_classes or most)
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
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
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
      return ArraySource(
        read_idx(images),
        read_idx(labels).astype(np.int64),
        10,
        name=f"fashion_mnist:{split}",
        class_names=FASHION_MNIST_CLASSES,
      )
  if directory:
    raise FileNotFoundError(
      f"data.fashion_mnist_dir={directory!r} holds no {prefix}-*-idx*-ubyte files"
    )
  with np.load(EMBEDDED_FASHION_MNIST) as data:
    images, labels = data[f"{split}_images"], data[f"{split}_labels"]
  log.info(
    "Fashion-MNIST %s: embedded subset (%d images); install Debian's "
    "dataset-fashion-mnist for the full set",
    split,
    len(images),
  )
  return ArraySource(
    images,
    labels.astype(np.int64),
    10,
    name=f"fashion_mnist_subset:{split}",
    class_names=FASHION_MNIST_CLASSES,
  )


# ----------------------------------------------------------------------------- folders
class FolderSource:
  """Image files under a directory (recursive), labelled as the reference or by sub-folder.

  labels: 'prefix' (class = file name before the first '_', the reference's convention),
  'subdir' (class = first-level sub-folder), or 'none' (all 0; `labelled` is False).
  """

  def __init__(self, directory: str, labels: str = "prefix"):
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"data.data_dir={directory!r} is not a directory")
    if labels not in ("prefix", "subdir", "none"):
      raise ValueError(f"data.folder_labels={labels!r}: expected 'prefix', 'subdir' or 'none'")
    paths: List[str] = []
    for root, dirs, files in os.walk(directory):
      dirs.sort()
      paths += [
        os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)
      ]
    if labels == "prefix":
      keys = [os.path.basename(p).split("_")[0] for p in paths]
    elif labels == "subdir":
      keys = [os.path.relpath(p, directory).split(os.sep)[0] for p in paths]
      if any(os.sep not in os.path.relpath(p, directory) for p in paths):
        raise ValueError(
          f"data.folder_labels='subdir' but {directory} has images outside class sub-folders"
        )
    else:
      keys = ["" for _ in paths]
    self.class_names = sorted(set(keys))
    index = {k: i for i, k in enumerate(self.class_names)}
    self.paths = paths
    self.labels = np.asarray([index[k] for k in keys], np.int64)
    self.num_classes = len(self.class_names)
    self.name = f"folder:{directory}"
    self.labelled = labels != "none"

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    return self.paths[i], int(self.labels[i])


# ----------------------------------------------------------------------------- TFDS
TFDS_README = "the README's section 'ImageNet data'"
_PIP_NAMES = {
  "tensorflow_datasets": "tensorflow-datasets",
  "array_record": "array-record",
  "importlib_resources": "importlib-resources",
}
_LABEL_PROBES = 4  # examples read to tell whether a TFDS split carries labels


def _first_line(e: BaseException) -> str:
  return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _import_error(e: BaseException, module: str) -> ImportError:
  """One line naming the module that failed to import (e.name, else `module`) and the pip command,
  for an ImportError or a version conflict inside tensorflow_datasets / array_record."""
  import importlib.metadata as metadata  # pylint: disable=g-import-not-at-top

  failed = getattr(e, "name", None) or module
  top = failed.split(".")[0]
  pip = _PIP_NAMES.get(top, top.replace("_", "-"))
  versions = []
  for dist in ("tensorflow-datasets", "array-record"):
    try:
      versions.append(f"{dist} {metadata.version(dist)}")
    except metadata.PackageNotFoundError:
      versions.append(f"{dist} not installed")
  return ImportError(
    f"data.name='tfds': importing {failed} failed ({type(e).__name__}: {_first_line(e)}; "
    f"installed: {', '.join(versions)}); install or upgrade it: pip install -U {pip} "
    f"(or pip install -U 'adm-jax[tfds]')"
  )


def _import_tfds():
  """tensorflow_datasets, or an ImportError naming what failed and the pip command."""
  module = "tensorflow_datasets"
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    module = "array_record.python.array_record_data_source"  # what tfds.data_source reads with
    importlib.import_module(module)
  except Exception as e:  # pylint: disable=broad-except  (ImportError, or a version conflict)
    raise _import_error(e, module) from None
  return tfds


def _not_prepared(name: str, split: str, where: str, cause: str) -> FileNotFoundError:
  return FileNotFoundError(
    f"TFDS dataset {name!r} (split {split!r}) is not prepared under {where} ({cause}). "
    f"Prepare it once, in array_record format: `tfds build {name} --file_format=array_record "
    f"--data_dir={where}` (imagenet2012: first put ILSVRC2012_img_train.tar and "
    f"ILSVRC2012_img_val.tar in {where}/downloads/manual/), as {TFDS_README} says, or read an "
    f"image tree with data.name=folder data.data_dir=DIR"
  )


def _versions_present(where: str, name: str) -> List[str]:
  """Version folders holding a dataset_info.json under where/name (may be a gs:// path)."""
  try:
    from etils import epath  # pylint: disable=g-import-not-at-top

    root = epath.Path(os.path.expanduser(where)) / name.split(":")[0]
    if not root.is_dir():
      return []
    found = [
      path.parent
      for pattern in ("*/dataset_info.json", "*/*/dataset_info.json")
      for path in root.glob(pattern)
    ]  # version/ or config/version/
    return sorted(os.path.relpath(os.fspath(p), os.fspath(root)) for p in found)
  except Exception:  # pylint: disable=broad-except
    return []


def _split_names(split: str) -> List[str]:
  """The split names in a TFDS split expression ('train[:10%]+validation' -> train, validation)."""
  return [part.split("[")[0].strip() for part in split.split("+")]


class TfdsSource:
  """A prepared TFDS dataset read at random through its builder's data source (array_record or
  parquet; no TensorFlow).

  Never downloads or prepares (nothing is written under data_dir or ~/tensorflow_datasets);
  images come out encoded (bytes) and are decoded by the loader with PIL, as the reference does.
  split_key names the config key of the split in messages (e.g. data.eval_split).
  """

  def __init__(
    self,
    name: str,
    split: str,
    data_dir: Optional[str] = None,
    image_key: str = "image",
    label_key: str = "label",
    split_key: str = "split",
  ):
    tfds = _import_tfds()
    where = data_dir or getattr(
      getattr(tfds.core, "constants", None), "DATA_DIR", "~/tensorflow_datasets"
    )
    try:
      builder = tfds.builder(name, data_dir=data_dir or None)
      prepared = builder.is_prepared()
    except ImportError as e:
      raise _import_error(e, "tensorflow_datasets") from None
    except Exception as e:  # pylint: disable=broad-except  (unknown name: DatasetNotFoundError)
      cause = f"{type(e).__name__}: {_first_line(e)}"
      if type(e).__name__ == "DatasetNotFoundError":
        cause = (
          f"tensorflow_datasets has no builder named {name!r} and no copy is there; "
          "check data.tfds_name"
        )
      raise _not_prepared(name, split, where, cause) from None
    if not prepared:
      found = _versions_present(where, name)
      cause = (
        f"no {builder.info.full_name}/dataset_info.json; versions present: "
        f"{', '.join(found)} (pick one with data.tfds_name='{name.split(':')[0]}:VERSION')"
        if found
        else f"no {builder.info.full_name}/dataset_info.json"
      )
      raise _not_prepared(name, split, where, cause)
    info = builder.info
    file_format = getattr(info.file_format, "value", info.file_format)
    if file_format not in ("array_record", "parquet"):
      raise ValueError(
        f"TFDS dataset {name!r} under {where} is prepared as {file_format}, which "
        f"tfds.data_source cannot read at random: convert it once with `tfds convert_format "
        f"--dataset_version_dir={builder.data_dir} --out_file_format=array_record` (needs "
        f"TensorFlow) or rebuild it with --file_format=array_record"
      )
    missing = [s for s in _split_names(split) if s not in info.splits]
    if missing:
      raise ValueError(
        f"{split_key}={split!r}: {name} has no split {missing[0]!r} (its splits: "
        f"{', '.join(sorted(info.splits))})"
      )
    if image_key not in info.features:
      raise ValueError(
        f"data.image_key={image_key!r} is not a feature of {name} (its features: "
        f"{', '.join(sorted(info.features))})"
      )
    decoders = (
      {image_key: tfds.decode.SkipDecoding()}
      if isinstance(info.features[image_key], tfds.features.Image)
      else None
    )
    try:
      self.source = builder.as_data_source(split=split, decoders=decoders)
    except ImportError as e:
      raise _import_error(e, "array_record") from None
    self.image_key, self.label_key = image_key, label_key
    self.dataset_info = info
    feature = info.features[label_key] if label_key in info.features else None
    self.num_classes = int(getattr(feature, "num_classes", 0) or 0)
    self.class_names = list(getattr(feature, "names", None) or []) or None
    self.name = f"tfds:{name}:{split}"
    self.split = split
    self._labelled: Optional[bool] = None

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    """(encoded image bytes or uint8 array [H, W, C], label; -1 where the split has none)."""
    record = self.source[int(i)]
    label = int(record[self.label_key]) if self.label_key in record else -1
    image = record[self.image_key]
    if isinstance(image, bytes):
      return image, label  # encoded; decoded by the loader
    return np.asarray(image), label

  @property
  def labelled(self) -> bool:
    """Whether the split carries labels: a label feature and no -1 among its first examples
    (imagenet2012's test split holds -1 everywhere)."""
    if self._labelled is None:
      has_feature = self.label_key in self.dataset_info.features
      probes = range(min(_LABEL_PROBES, len(self)))
      self._labelled = bool(
        has_feature and len(self) and all(int(self.source[i][self.label_key]) >= 0 for i in probes)
      )
    return self._labelled


def split_is_labelled(source) -> bool:
  """Whether a source's examples carry class labels (cheap: no image is decoded). Sources that
  do not say (user-made ones) count as labelled."""
  return bool(getattr(source, "labelled", True))


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
