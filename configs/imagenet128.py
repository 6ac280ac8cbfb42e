"""ADM-G on ImageNet 128x128, class-conditional (Dhariwal & Nichol 2021, Table 4).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/imagenet128.py --workdir=gs://BUCKET/adm128
Paper: ADM FID 5.91; ADM-G (classifier scale 0.5, 250 steps) FID 2.97, sFID 5.09,
precision 0.78, recall 0.59. Batch 256, lr 1e-4, 4360K iterations. Checkpoint: 128x128_diffusion.pt.
"""
from adm_jax import config_base


def get_config():
  c = config_base.base_config()
  c.model.update(image_size=128, num_channels=256, num_res_blocks=2, channel_mult="",
                 attention_resolutions="32,16,8", num_heads=4, num_head_channels=-1,
                 class_cond=True, use_scale_shift_norm=True, resblock_updown=True,
                 learn_sigma=True, dtype="bfloat16")
  c.diffusion.update(diffusion_steps=1000, noise_schedule="linear")
  c.data.update(name="tfds", tfds_name="imagenet2012", random_flip=False)
  c.train.update(batch_size=256, lr=1e-4, num_steps=4360000, ema_rate="0.9999")
  c.classifier.update(classifier_depth=2, classifier_width=128,
                      classifier_attention_resolutions="32,16,8", classifier_pool="attention",
                      classifier_resblock_updown=True, classifier_use_scale_shift_norm=True)
  c.sample.update(timestep_respacing="250", classifier_scale=0.5)
  return c
