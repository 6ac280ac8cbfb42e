"""ADM on LSUN cat 256x256, unconditional (Dhariwal & Nichol 2021, Table 1/10).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/lsun_cat.py --workdir=gs://BUCKET/lsun_cat \\
    --config.data.data_dir=/path/to/lsun_cat
Paper: FID 5.57 (1000 steps, dropout 0.1). Same network and training recipe as
configs/lsun_bedroom.py. Checkpoint: lsun_cat.pt.
"""

from adm_jax import config_base


def get_config():
  return config_base.from_config_file("lsun_bedroom")
