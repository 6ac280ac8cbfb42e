"""Noisy ImageNet classifier for 256x256 guidance (Dhariwal & Nichol 2021, Section 4).

Launch (every host runs the same command; the classifier lives in WORKDIR/classifier):
  python -m adm_jax.main --config=configs/classifier256.py --workdir=gs://BUCKET/adm256 \\
    --mode=train_classifier
The reference trains it with AdamW (lr 3e-4, weight decay 0.05, linear anneal over 300K steps),
batch 256, random crops, on x_t noised by the diffusion process of configs/imagenet256.py
(depth 2; adm_jax/models/paper.py). Checkpoint: 256x256_classifier.pt.
"""

from adm_jax import config_base
from adm_jax.models import paper


def get_config():
  c = config_base.from_config_file("imagenet", "256")
  c.classifier.update(paper.CLASSIFIER_TRAINING)
  return c
