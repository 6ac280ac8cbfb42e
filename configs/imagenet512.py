"""ADM on ImageNet 512x512: an alias of `configs/imagenet.py:512` (the paper's settings are
tabled there).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/imagenet512.py --workdir=gs://BUCKET/adm512 \\
    --config.train.fsdp=8
"""

from adm_jax import config_base


def get_config():
  return config_base.from_config_file("imagenet", "512")
