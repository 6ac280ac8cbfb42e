"""The benchmark model: a 32x32 class-conditional ADM UNet (64 channels, 4 levels, attention at
16 and 8 px) and its classifier, the size the PyTorch reference harness times beside ours.

  python -m adm_jax.bench --config=bench32 --preset=cpu_quick     (the bench's default)
It trains like any config: python -m adm_jax.main --config=bench32 --workdir=/tmp/bench32
Train step and sampling figures on the 2-core CPU: experiments/RESULTS.md.
"""

from adm_jax import config_base


def get_config():
  c = config_base.base_config()
  c.model.update(
    image_size=32,
    num_channels=64,
    num_res_blocks=2,
    channel_mult="1,2,2,2",
    attention_resolutions="16,8",
    num_head_channels=32,
    learn_sigma=True,
    class_cond=True,
    use_scale_shift_norm=True,
    resblock_updown=True,
    use_new_attention_order=False,
    dropout=0.0,
  )
  c.diffusion.update(diffusion_steps=1000, noise_schedule="cosine", timestep_respacing="")
  c.classifier.update(
    classifier_width=64,
    classifier_depth=2,
    channel_mult="1,2,2,2",
    classifier_attention_resolutions="16,8",
    classifier_pool="attention",
    classifier_use_scale_shift_norm=True,
    classifier_resblock_updown=True,
  )
  c.sample.classifier_scale = 1.0
  return c
