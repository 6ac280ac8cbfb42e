"""Unconditional ADM on ImageNet 256x256, guided by a classifier (Dhariwal & Nichol 2021, Table 5).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/imagenet256_uncond.py --workdir=gs://BUCKET/adm256u --config.train.fsdp=4
Paper: unconditional FID 26.21; with classifier guidance (scale 10.0) FID 12.00, sFID 10.40,
precision 0.76, recall 0.44. Checkpoint: 256x256_diffusion_uncond.pt.
"""
from adm_jax import config_base


def get_config():
  c = config_base.base_config()
  c.model.update(image_size=256, num_channels=256, num_res_blocks=2, channel_mult="",
                 attention_resolutions="32,16,8", num_head_channels=64, class_cond=False,
                 use_scale_shift_norm=True, resblock_updown=True, learn_sigma=True,
                 dtype="bfloat16")
  c.diffusion.update(diffusion_steps=1000, noise_schedule="linear")
  c.data.update(name="tfds", tfds_name="imagenet2012", random_flip=False)
  c.train.update(batch_size=256, lr=1e-4, num_steps=1980000, ema_rate="0.9999")
  c.classifier.update(classifier_depth=2, classifier_width=128,
                      classifier_attention_resolutions="32,16,8", classifier_pool="attention",
                      classifier_resblock_updown=True, classifier_use_scale_shift_norm=True)
  c.sample.update(timestep_respacing="250", classifier_scale=10.0)
  return c
