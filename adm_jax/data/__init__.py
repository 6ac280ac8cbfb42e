"""Data: sources (embedded Fashion-MNIST, image folders, TFDS, arrays), reference
preprocessing, and a deterministic resumable per-host loader. The options (`config.data`)
are declared in adm_jax.config_base.data_defaults.

  it = data.create_data_iterator(config.data, global_batch_size=256, image_size=64, seed=0,
                                 start_step=step, process_index=jax.process_index(),
                                 process_count=jax.process_count())
  batch = next(it)   # {'image': float32 [B_local, 64, 64, C] in [-1, 1], 'label': int32 [B_local]}
"""

from adm_jax.data import sources
from adm_jax.data.loader import BatchIterator  # noqa: F401
from adm_jax.data.loader import CorruptImageError  # noqa: F401
from adm_jax.data.loader import UnlabelledError  # noqa: F401
from adm_jax.data.preprocess import center_crop  # noqa: F401
from adm_jax.data.preprocess import preprocess  # noqa: F401
from adm_jax.data.preprocess import random_crop  # noqa: F401
from adm_jax.data.sources import FASHION_MNIST_CLASSES  # noqa: F401
from adm_jax.data.sources import ArraySource  # noqa: F401
from adm_jax.data.sources import FolderSource  # noqa: F401
from adm_jax.data.sources import TfdsSource  # noqa: F401
from adm_jax.data.sources import read_idx  # noqa: F401
from adm_jax.data.sources import split_is_labelled  # noqa: F401

NAMES = ("fashion_mnist", "folder", "tfds", "arrays")


def create_source(data_config, split: str = "train", arrays=None):
  """The random-access source of a data config for split 'train' or 'test'."""
  name = data_config.name
  if name == "fashion_mnist":
    return sources.fashion_mnist(split, data_config.fashion_mnist_dir)
  if name == "folder":
    directory = data_config.data_dir
    if split != "train" and data_config.eval_dir:
      directory = data_config.eval_dir
    return sources.FolderSource(directory, data_config.folder_labels)
  if name == "tfds":
    if not data_config.tfds_name:
      raise ValueError("data.name='tfds' needs data.tfds_name (e.g. imagenet2012)")
    key = "data.train_split" if split == "train" else "data.eval_split"
    tfds_split = data_config.train_split if split == "train" else data_config.eval_split
    return sources.TfdsSource(
      data_config.tfds_name,
      tfds_split,
      data_config.data_dir or None,
      data_config.image_key,
      data_config.label_key,
      split_key=key,
    )
  if name == "arrays":
    if arrays is None:
      raise ValueError("data.name='arrays' needs the arrays passed to create_source")
    return sources.ArraySource(*arrays)
  raise ValueError(f"unknown data.name {name!r}; expected one of {NAMES}")


def unlabelled_message(data_config, split: str, source) -> str:
  """One line: the split (and its config key) has no labels, and what would have them."""
  name = getattr(source, "name", data_config.name)
  if data_config.name == "tfds":
    key = "data.train_split" if split == "train" else "data.eval_split"
    value = data_config.train_split if split == "train" else data_config.eval_split
    fix = (
      f"{key}={value!r} holds no labels (label -1); use a labelled split "
      f"(imagenet2012: 'validation')"
    )
  elif data_config.name == "folder":
    fix = "data.folder_labels='none' gives no labels; use 'prefix' or 'subdir'"
  else:
    fix = "the arrays were given without labels"
  return (
    f"{name} is unlabelled but labels are needed (a class-conditional model or a classifier): {fix}"
  )


def create_data_iterator(
  data_config,
  *,
  global_batch_size: int,
  image_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  split: str = "train",
  num_classes=None,
  source=None,
) -> BatchIterator:
  """A BatchIterator over the configured source, positioned at `start_step`. With num_classes
  (a class-conditional model, a classifier) the split must carry labels: an unlabelled one is
  refused here, before any image is read."""
  source = create_source(data_config, split) if source is None else source
  if num_classes is not None and not split_is_labelled(source):
    raise ValueError(unlabelled_message(data_config, split, source))
  train = split == "train"
  return BatchIterator(
    source,
    global_batch_size=global_batch_size,
    image_size=image_size,
    seed=seed,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
    channels=data_config.channels,
    random_crop=data_config.random_crop and train,
    random_flip=data_config.random_flip and train,
    on_corrupt=data_config.on_corrupt,
    num_workers=data_config.num_workers,
    prefetch=data_config.prefetch,
    shuffle=data_config.shuffle,
    num_classes=num_classes,
  )
