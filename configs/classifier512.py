"""Noisy ImageNet classifier for 512x512 guidance (Dhariwal & Nichol 2021, Section 4).

Launch (every host runs the same command; the classifier lives in WORKDIR/classifier):
  python -m adm_jax.main --config=configs/classifier512.py --workdir=gs://BUCKET/adm512 --mode=train_classifier
The reference trains it with AdamW (lr 3e-4, weight decay 0.05, linear anneal), batch 256,
random crops, on x_t noised by the diffusion process of configs/imagenet512.py.
Checkpoint: 512x512_classifier.pt.
"""
from adm_jax import config_base


def get_config():
  return config_base.imagenet_classifier_config("imagenet:512", depth=2)
