"""ADM on LSUN bedroom 256x256, unconditional (Dhariwal & Nichol 2021, Table 1/10).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/lsun_bedroom.py --workdir=gs://BUCKET/lsun_bedroom \\
    --config.data.data_dir=/path/to/lsun_bedroom
Paper: FID 1.90 (1000 steps, dropout 0.1). Batch 256, lr 1e-4; train.num_steps is a 2M-step
placeholder (the paper's Table 10 lists the exact iteration count). Checkpoint: lsun_bedroom.pt.
"""

from adm_jax import config_base
from adm_jax.models import paper


def get_config():
  c = config_base.with_network_flags(config_base.base_config(), paper.NETWORKS["lsun_bedroom"])
  c.model.update(dtype="bfloat16")
  c.data.update(name="folder", folder_labels="none", random_flip=True)
  c.train.update(batch_size=256, lr=1e-4, num_steps=2000000, ema_rate="0.9999")
  c.sample.update(timestep_respacing="1000", feature_net="inception_v3")
  return c
