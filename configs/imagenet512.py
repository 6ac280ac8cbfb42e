"""ADM-G on ImageNet 512x512, class-conditional (Dhariwal & Nichol 2021, Table 4).

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/imagenet512.py --workdir=gs://BUCKET/adm512 --config.train.fsdp=8
Paper: ADM FID 23.24; ADM-G (classifier scale 4.0, 250 steps) FID 7.72, sFID 6.57,
precision 0.87, recall 0.42. Batch 256, lr 1e-4, 1940K iterations. Checkpoint: 512x512_diffusion.pt.
"""
from adm_jax import config_base


def get_config():
  c = config_base.base_config()
  c.model.update(image_size=512, num_channels=256, num_res_blocks=2, channel_mult="",
                 attention_resolutions="32,16,8", num_head_channels=64, class_cond=True,
                 use_scale_shift_norm=True, resblock_updown=True, learn_sigma=True,
                 dtype="bfloat16", use_checkpoint=True)
  c.diffusion.update(diffusion_steps=1000, noise_schedule="linear")
  c.data.update(name="tfds", tfds_name="imagenet2012", random_flip=False)
  c.train.update(batch_size=256, lr=1e-4, num_steps=1940000, ema_rate="0.9999")
  c.classifier.update(classifier_depth=2, classifier_width=128,
                      classifier_attention_resolutions="32,16,8", classifier_pool="attention",
                      classifier_resblock_updown=True, classifier_use_scale_shift_norm=True)
  c.sample.update(timestep_respacing="250", classifier_scale=4.0)
  return c
