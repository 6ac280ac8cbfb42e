"""ADM on ImageNet 256x256: an alias of `configs/imagenet.py:256` (the paper's settings are
tabled there).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/imagenet256.py --workdir=gs://BUCKET/adm256 \\
    --config.train.fsdp=4
"""

from adm_jax import config_base


def get_config():
  return config_base.from_config_file("imagenet", "256")
