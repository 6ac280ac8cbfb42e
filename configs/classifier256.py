"""Noisy ImageNet classifier for 256x256 guidance (Dhariwal & Nichol 2021, Section 4).

Launch (every host runs the same command; the classifier lives in WORKDIR/classifier):
  python -m adm_jax.main --config=configs/classifier256.py --workdir=gs://BUCKET/adm256 --mode=train_classifier
The reference trains it with AdamW (lr 3e-4, weight decay 0.05, linear anneal), batch 256,
random crops, on x_t noised by the diffusion process of configs/imagenet256.py.
Checkpoint: 256x256_classifier.pt.
"""
import os

from adm_jax import config_base


def get_config():
  c = config_base.from_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                "imagenet256.py"))
  c.classifier.update(classifier_depth=2, classifier_width=128,
                      classifier_attention_resolutions="32,16,8", classifier_pool="attention",
                      classifier_resblock_updown=True, classifier_use_scale_shift_norm=True,
                      batch_size=256, lr=3e-4, weight_decay=0.05, iterations=300000,
                      lr_anneal_steps=300000, noised=True)
  return c
