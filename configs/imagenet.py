"""ADM on ImageNet, class-conditional, at 64, 128, 256 or 512 pixels (Dhariwal & Nichol 2021).

Launch (every host of a pod slice runs the same command; the argument picks the resolution):
  python -m adm_jax.main --config=configs/imagenet.py:128 --workdir=gs://BUCKET/adm128
  python -m adm_jax.main --config=configs/imagenet.py:256 --workdir=gs://BUCKET/adm256 \\
    --config.train.fsdp=4
(configs/imagenet64.py ... imagenet512.py are aliases of the four resolutions.)
Data: TFDS imagenet2012, prepared by hand (README "ImageNet data"); training on the train
split, validation and evaluation on the labelled validation split.

The paper's settings per resolution come from one table, adm_jax/models/paper.py (its Tables 4
and 11; released checkpoints NxN_diffusion.pt and NxN_classifier.pt), with the results (FID of
ADM / ADM-G with classifier guidance at 250 steps, and ADM-G's sFID, precision, recall):

| res | ch. | blocks | heads            | dropout | noise  | batch | lr   | steps | clf | g.s. |
|-----|-----|--------|------------------|---------|--------|-------|------|-------|-----|------|
| 64  | 192 | 3      | 64 ch, new order | 0.1     | cosine | 2048  | 3e-4 | 540K  | 4   | 1.0  |
| 128 | 256 | 2      | 4 heads          | 0.0     | linear | 256   | 1e-4 | 4360K | 2   | 0.5  |
| 256 | 256 | 2      | 64 ch / head     | 0.0     | linear | 256   | 1e-4 | 1980K | 2   | 1.0  |
| 512 | 256 | 2      | 64 ch / head     | 0.0     | linear | 256   | 1e-4 | 1940K | 2   | 4.0  |

(clf: the classifier's depth; g.s.: ADM-G's classifier guidance scale.)
Results: ADM-64 FID 2.07 (no guidance; sFID 4.29, P 0.74, R 0.63); ADM-128 5.91, ADM-G-128
2.97 / 5.09 / 0.78 / 0.59; ADM-256 10.94, ADM-G-256 4.59 / 5.25 / 0.82 / 0.52; ADM-512 23.24,
ADM-G-512 7.72 / 6.57 / 0.87 / 0.42 (ADM-G: FID / sFID / precision / recall).

All: attention at 32, 16 and 8 px, learned sigma (hybrid loss), AdaGN, BigGAN up/down-sampling,
EMA 0.9999, bfloat16 compute; 512 px also remats its blocks.
"""

from adm_jax import config_base
from adm_jax.models import paper


def get_config(resolution: str = "128"):
  try:
    size = int(resolution)
  except ValueError:
    size = 0
  if size not in paper.IMAGENET:
    raise ValueError(
      f"configs/imagenet.py:{resolution}: the resolution must be one of "
      f"{', '.join(str(r) for r in paper.IMAGENET)}"
    )
  row = paper.IMAGENET[size]
  c = config_base.with_network_flags(config_base.base_config(), paper.NETWORKS[row["network"]])
  c = config_base.with_classifier_flags(c, paper.NETWORKS[row["classifier"]])
  c.model.update(dtype="bfloat16", use_checkpoint=row["remat"])
  c.classifier.dtype = "bfloat16"
  # ~8 decoding threads keep a TPU host's chips busy (experiments/RESULTS.md, the loader).
  c.data.update(
    name="tfds", tfds_name="imagenet2012", random_flip=False, eval_split="validation", num_workers=8
  )
  c.train.update(
    batch_size=row["batch_size"], lr=row["lr"], num_steps=row["num_steps"], ema_rate="0.9999"
  )
  c.sample.update(
    timestep_respacing="250", classifier_scale=row["classifier_scale"], feature_net="inception_v3"
  )
  return c
