"""ADM on ImageNet, class-conditional, at 64, 128, 256 or 512 pixels (Dhariwal & Nichol 2021).

Launch (every host of a pod slice runs the same command; the argument picks the resolution):
  python -m adm_jax.main --config=configs/imagenet.py:128 --workdir=gs://BUCKET/adm128
  python -m adm_jax.main --config=configs/imagenet.py:256 --workdir=gs://BUCKET/adm256 --config.train.fsdp=4
(configs/imagenet64.py ... imagenet512.py are aliases of the four resolutions.)
Data: TFDS imagenet2012 (prepared by hand, see README "ImageNet on a TPU VM").

The paper's settings per resolution (its Tables 4 and 11; released checkpoints NxN_diffusion.pt).
Results: FID of ADM / ADM-G (classifier guidance at the listed scale, 250 sampling steps) and
ADM-G's sFID, precision and recall:

| res | channels | blocks | heads             | dropout | schedule | batch | lr   | iterations | classifier depth | guidance scale | ADM FID | ADM-G FID / sFID / P / R |
|-----|----------|--------|-------------------|---------|----------|-------|------|------------|------------------|----------------|---------|--------------------------|
| 64  | 192      | 3      | 64 ch/head, new order | 0.1 | cosine   | 2048  | 3e-4 | 540K       | 4                | 1.0            | 2.07 (no guidance; sFID 4.29, P 0.74, R 0.63) | — |
| 128 | 256      | 2      | 4 heads           | 0.0     | linear   | 256   | 1e-4 | 4360K      | 2                | 0.5            | 5.91    | 2.97 / 5.09 / 0.78 / 0.59 |
| 256 | 256      | 2      | 64 ch/head        | 0.0     | linear   | 256   | 1e-4 | 1980K      | 2                | 1.0            | 10.94   | 4.59 / 5.25 / 0.82 / 0.52 |
| 512 | 256      | 2      | 64 ch/head        | 0.0     | linear   | 256   | 1e-4 | 1940K      | 2                | 4.0            | 23.24   | 7.72 / 6.57 / 0.87 / 0.42 |

All: attention at 32, 16 and 8 px, learned sigma (hybrid loss), AdaGN, BigGAN up/down-sampling,
EMA 0.9999, bfloat16 compute; 512 px also remats its blocks.
"""
from adm_jax import config_base

# resolution: (num_channels, num_res_blocks, num_heads, num_head_channels, new attention order,
#              dropout, noise_schedule, batch_size, lr, num_steps, classifier_depth,
#              classifier_scale, use_checkpoint)
PAPER = {
    64: (192, 3, 4, 64, True, 0.1, "cosine", 2048, 3e-4, 540000, 4, 1.0, False),
    128: (256, 2, 4, -1, False, 0.0, "linear", 256, 1e-4, 4360000, 2, 0.5, False),
    256: (256, 2, 4, 64, False, 0.0, "linear", 256, 1e-4, 1980000, 2, 1.0, False),
    512: (256, 2, 4, 64, False, 0.0, "linear", 256, 1e-4, 1940000, 2, 4.0, True),
}


def get_config(resolution: str = "128"):
  try:
    size = int(resolution)
  except ValueError:
    size = 0
  if size not in PAPER:
    raise ValueError(f"configs/imagenet.py:{resolution}: the resolution must be one of "
                     f"{', '.join(str(r) for r in PAPER)}")
  (channels, blocks, heads, head_channels, new_order, dropout, schedule, batch, lr, steps,
   clf_depth, clf_scale, remat) = PAPER[size]
  c = config_base.base_config()
  c.model.update(image_size=size, num_channels=channels, num_res_blocks=blocks, channel_mult="",
                 attention_resolutions="32,16,8", num_heads=heads, num_head_channels=head_channels,
                 dropout=dropout, class_cond=True, use_scale_shift_norm=True, resblock_updown=True,
                 use_new_attention_order=new_order, learn_sigma=True, dtype="bfloat16",
                 use_checkpoint=remat)
  c.diffusion.update(diffusion_steps=1000, noise_schedule=schedule)
  c.data.update(name="tfds", tfds_name="imagenet2012", random_flip=False)
  c.train.update(batch_size=batch, lr=lr, num_steps=steps, ema_rate="0.9999")
  c.classifier.update(classifier_depth=clf_depth, classifier_width=128,
                      classifier_attention_resolutions="32,16,8", classifier_pool="attention",
                      classifier_resblock_updown=True, classifier_use_scale_shift_norm=True)
  c.sample.update(timestep_respacing="250", classifier_scale=clf_scale)
  return c
