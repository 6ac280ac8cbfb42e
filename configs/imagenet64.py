"""ADM on ImageNet 64x64: an alias of `configs/imagenet.py:64` (the paper's settings are
tabled there).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/imagenet64.py --workdir=gs://BUCKET/adm64
"""

from adm_jax import config_base


def get_config():
  return config_base.from_config_file("imagenet", "64")
