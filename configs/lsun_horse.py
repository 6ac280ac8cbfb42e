"""ADM on LSUN horse 256x256, unconditional (Dhariwal & Nichol 2021, Table 1/10).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/lsun_horse.py --workdir=gs://BUCKET/lsun_horse --config.data.data_dir=/path/to/lsun_horse
Paper: FID 2.57 (1000 steps, dropout 0.1). Batch 256, lr 1e-4; train.num_steps is a 2M-step placeholder
(the paper's Table 10 lists the exact iteration count). Checkpoint: lsun_horse.pt.
"""
from adm_jax import config_base


def get_config():
  c = config_base.base_config()
  c.model.update(image_size=256, num_channels=256, num_res_blocks=2, channel_mult="",
                 attention_resolutions="32,16,8", num_head_channels=64, dropout=0.1,
                 class_cond=False, use_scale_shift_norm=True, resblock_updown=True,
                 learn_sigma=True, dtype="bfloat16")
  c.diffusion.update(diffusion_steps=1000, noise_schedule="linear")
  c.data.update(name="folder", folder_labels="none", random_flip=True)
  c.train.update(batch_size=256, lr=1e-4, num_steps=2000000, ema_rate="0.9999")
  c.sample.update(timestep_respacing="1000")
  return c
