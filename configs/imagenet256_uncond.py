"""Unconditional ADM on ImageNet 256x256, guided by a classifier (Dhariwal & Nichol 2021, Table 5).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/imagenet256_uncond.py --workdir=gs://BUCKET/adm256u \\
    --config.train.fsdp=4
Paper: unconditional FID 26.21; with classifier guidance (scale 10.0) FID 12.00, sFID 10.40,
precision 0.76, recall 0.44. Otherwise as configs/imagenet256.py.
Checkpoint: 256x256_diffusion_uncond.pt.
"""

from adm_jax import config_base


def get_config():
  c = config_base.from_config_file("imagenet:256")
  c.model.class_cond = False
  c.sample.classifier_scale = 10.0
  return c
