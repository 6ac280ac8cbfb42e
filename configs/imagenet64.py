"""ADM on ImageNet 64x64, class-conditional (Dhariwal & Nichol 2021, Table 4/11 "ADM (dropout)").

Launch (every host of a pod slice runs the same command):
  python -m adm_jax.main --config=configs/imagenet64.py --workdir=gs://BUCKET/adm64
Paper: FID 2.07, sFID 4.29, precision 0.74, recall 0.63 (250 steps, no guidance);
batch 2048, lr 3e-4, 540K iterations, EMA 0.9999. Released checkpoint: 64x64_diffusion.pt.
"""
from adm_jax import config_base


def get_config():
  c = config_base.base_config()
  c.model.update(image_size=64, num_channels=192, num_res_blocks=3, channel_mult="",
                 attention_resolutions="32,16,8", num_head_channels=64, num_heads=4,
                 dropout=0.1, class_cond=True, use_scale_shift_norm=True, resblock_updown=True,
                 use_new_attention_order=True, learn_sigma=True, dtype="bfloat16")
  c.diffusion.update(diffusion_steps=1000, noise_schedule="cosine")
  c.data.update(name="tfds", tfds_name="imagenet2012", random_flip=False)
  c.train.update(batch_size=2048, lr=3e-4, num_steps=540000, ema_rate="0.9999")
  c.classifier.update(classifier_depth=4, classifier_width=128,
                      classifier_attention_resolutions="32,16,8", classifier_pool="attention",
                      classifier_resblock_updown=True, classifier_use_scale_shift_norm=True)
  c.sample.update(timestep_respacing="250", classifier_scale=1.0)
  return c
