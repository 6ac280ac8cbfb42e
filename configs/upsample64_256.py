"""ADM super-resolution 64 -> 256 (Dhariwal & Nichol 2021, Table 6: ADM-G + ADM-U).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/upsample64_256.py --workdir=gs://BUCKET/up64_256 \\
    --config.train.fsdp=4
Two-stage sampling: base samples from configs/imagenet64.py, then
  python -m adm_jax.main --config=configs/upsample64_256.py --workdir=... --mode=sample \\
    --config.sample.base_samples=BASE.npz
Paper: ADM-G 64 + ADM-U 256: FID 3.94, sFID 6.14, precision 0.83, recall 0.53.
Checkpoint: 64_256_upsampler.pt. train.num_steps (500K) is a placeholder: check the paper's
Table 10.
"""

from adm_jax import config_base
from adm_jax.models import paper


def get_config():
  c = config_base.with_network_flags(config_base.base_config(), paper.NETWORKS["64_256_upsampler"])
  c.model.update(dtype="bfloat16")
  c.data.update(name="tfds", tfds_name="imagenet2012", random_flip=False, eval_split="validation")
  c.train.update(batch_size=256, lr=1e-4, num_steps=500000, ema_rate="0.9999")
  c.sample.update(timestep_respacing="250", feature_net="inception_v3")
  return c
