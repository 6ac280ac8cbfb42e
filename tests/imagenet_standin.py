"""A small stand-in for a prepared TFDS imagenet2012 (array_record), written with TFDS's own
features and metadata code and no TensorFlow, for tests that read through the real
`tfds.data_source`.

  info = write_imagenet2012_standin(tmp_path)                  # ~0.2 s; DatasetInfo
  src = data.sources.TfdsSource("imagenet2012", "validation", str(tmp_path))

Layout (as `tfds build imagenet2012 --file_format=array_record` writes it):
  DATA_DIR/imagenet2012/5.1.0/imagenet2012-{train,validation,test}.array_record-00000-of-00001
  DATA_DIR/imagenet2012/5.1.0/{dataset_info.json, features.json, label.labels.txt}
Splits train and validation carry labels from CLASSES; test carries -1 (as the real dataset).
"""

import os
from typing import Dict, Optional, Sequence, Tuple

from adm_jax.data import synthetic

NAME, VERSION = "imagenet2012", "5.1.0"
# (width, height, grayscale): ImageNet's usual sizes, portrait, small (< 128 px on a side),
# large, one >= 2000 px and a grayscale JPEG (ImageNet holds a few).
SIZES: Tuple[Tuple[int, int, bool], ...] = (
  (500, 375, False),
  (375, 500, False),
  (1024, 683, False),
  (150, 200, False),
  (100, 80, False),
  (2272, 1704, False),
  (500, 333, True),
)
CLASSES = (0, 1, 281, 999)  # tench, goldfish, tabby cat, toilet tissue
DEFAULT_SPLITS = {"train": 8, "validation": 7, "test": 3}


def standin_jpeg(
  index: int, sizes: Sequence[Tuple[int, int, bool]] = SIZES, detail: int = 8
) -> Tuple[bytes, Tuple[int, int]]:
  """The JPEG of stand-in example `index` (the same bytes in every split): (bytes, (w, h))."""
  width, height, gray = sizes[index % len(sizes)]
  return synthetic.jpeg(width, height, seed=index % len(sizes), detail=detail, grayscale=gray), (
    width,
    height,
  )


def write_imagenet2012_standin(
  data_dir,
  per_split: Optional[Dict[str, int]] = None,
  sizes: Sequence[Tuple[int, int, bool]] = SIZES,
  jpegs: Optional[Dict[str, list]] = None,
  detail: int = 8,
):
  """Writes imagenet2012 5.1.0 under data_dir with per_split examples per split (default
  DEFAULT_SPLITS); `jpegs` {split: [bytes]} replaces the generated images. Returns its
  tfds DatasetInfo."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  per_split = dict(DEFAULT_SPLITS if per_split is None else per_split)
  if jpegs:
    per_split.update({split: len(images) for split, images in jpegs.items()})
  features = tfds.builder(NAME, data_dir=os.fspath(data_dir)).info.features
  names = features["label"].names
  version_dir = os.path.join(os.fspath(data_dir), NAME, VERSION)
  os.makedirs(version_dir, exist_ok=True)
  template = tfds.core.ShardedFileTemplate(
    data_dir=version_dir, dataset_name=NAME, filetype_suffix="array_record"
  )
  split_infos = []
  for split, count in per_split.items():
    path = template.replace(split=split).sharded_filepath(shard_index=0, num_shards=1)
    writer = array_record_module.ArrayRecordWriter(os.fspath(path), "group_size:1")
    for i in range(count):
      image = jpegs[split][i] if jpegs and split in jpegs else standin_jpeg(i, sizes, detail)[0]
      label = -1 if split == "test" else CLASSES[i % len(CLASSES)]
      file_name = (
        f"{names[label]}_{i}.JPEG"
        if split == "train"
        else f"ILSVRC2012_{'val' if split == 'validation' else split}_{i + 1:08d}.JPEG"
      )
      writer.write(
        features.serialize_example({"image": image, "label": label, "file_name": file_name})
      )
    writer.close()
    split_infos.append(
      tfds.core.SplitInfo(name=split, shard_lengths=[count], num_bytes=os.path.getsize(path))
    )
  tfds.folder_dataset.write_metadata(
    data_dir=version_dir,
    features=features,
    split_infos=split_infos,
    filename_template=template,
    check_data=False,
    supervised_keys=("image", "label"),
    description="A small stand-in for imagenet2012 (synthetic images) written by the tests.",
  )
  return tfds.builder(NAME, data_dir=os.fspath(data_dir)).info
