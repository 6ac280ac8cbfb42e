"""ADM super-resolution 128 -> 512 (Dhariwal & Nichol 2021, Table 6: ADM-G + ADM-U).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/upsample128_512.py --workdir=gs://BUCKET/up128_512 \\
    --config.train.fsdp=8
Two-stage sampling: base samples from configs/imagenet128.py, then
  python -m adm_jax.main --config=configs/upsample128_512.py --workdir=... --mode=sample \\
    --config.sample.base_samples=BASE.npz
Paper: ADM-G 128 + ADM-U 512: FID 3.85, sFID 5.86, precision 0.84, recall 0.53.
Checkpoint: 128_512_upsampler.pt. train.num_steps (500K) is a placeholder: check the paper's
Table 10.
"""

from adm_jax import config_base
from adm_jax.models import paper


def get_config():
  c = config_base.with_network_flags(config_base.base_config(), paper.NETWORKS["128_512_upsampler"])
  c.model.update(dtype="bfloat16", use_checkpoint=True)
  c.data.update(name="tfds", tfds_name="imagenet2012", random_flip=False, eval_split="validation")
  c.train.update(batch_size=256, lr=1e-4, num_steps=500000, ema_rate="0.9999")
  c.sample.update(timestep_respacing="250", feature_net="inception_v3")
  return c
