"""ADM on ImageNet 128x128: an alias of `configs/imagenet.py:128` (the paper's settings are
tabled there).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/imagenet128.py --workdir=gs://BUCKET/adm128
"""

from adm_jax import config_base


def get_config():
  return config_base.from_config_file("imagenet", "128")
