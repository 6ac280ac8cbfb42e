"""Improved DDPM on CIFAR-10 32x32 (Nichol & Dhariwal 2021, Table 2: L_hybrid, cosine schedule).

Launch:
  python -m adm_jax.main --config=configs/cifar10.py --workdir=/tmp/adm_cifar10
Data: TFDS cifar10 (array_record, no TensorFlow needed) prepared under data.data_dir.
The paper's CIFAR-10 setting: T = 4000, cosine schedule, L_hybrid, 3 res blocks of 128
channels, dropout 0.3, lr 1e-4, batch 128, 500K iterations; its NLL (bits/dim) and FID
for this setting are in the paper's CIFAR-10 tables (check them there before quoting).
"""

from adm_jax import config_base


def get_config():
  c = config_base.base_config()
  c.model.update(
    image_size=32,
    num_channels=128,
    num_res_blocks=3,
    channel_mult="1,2,2,2",
    attention_resolutions="16,8",
    num_heads=4,
    dropout=0.3,
    class_cond=False,
    use_scale_shift_norm=True,
    resblock_updown=False,
    learn_sigma=True,
  )
  c.diffusion.update(diffusion_steps=4000, noise_schedule="cosine", schedule_sampler="uniform")
  c.data.update(name="tfds", tfds_name="cifar10", random_flip=True)
  c.train.update(batch_size=128, lr=1e-4, num_steps=500000, ema_rate="0.9999")
  c.sample.update(timestep_respacing="250", feature_net="inception_v3")
  return c
