"""The paper's networks and recipes, in one table (Dhariwal & Nichol 2021, Tables 4, 6, 10, 11;
the released checkpoints of openai/guided-diffusion).

NETWORKS maps a released checkpoint's name to its flags (the reference's names, diffusion
flags included); `models.released_config` reads them, and the experiment configs derive from
them: configs/imagenet.py (IMAGENET: which network and classifier per resolution, with the
training recipe and guidance scale), the upsamplers and LSUN configs, and the classifiers'
training recipe (CLASSIFIER_TRAINING).
"""

# Shared by the 256 / 512 px class-conditional models and LSUN.
_BIG = dict(
  num_channels=256,
  num_res_blocks=2,
  attention_resolutions="32,16,8",
  num_head_channels=64,
  learn_sigma=True,
  use_scale_shift_norm=True,
  resblock_updown=True,
  diffusion_steps=1000,
  noise_schedule="linear",
)
_UPSAMPLER = dict(
  num_channels=192,
  num_res_blocks=2,
  class_cond=True,
  learn_sigma=True,
  use_scale_shift_norm=True,
  resblock_updown=True,
  diffusion_steps=1000,
  noise_schedule="linear",
)
_CLASSIFIER = dict(
  classifier_width=128,
  classifier_depth=2,
  classifier_attention_resolutions="32,16,8",
  classifier_pool="attention",
  classifier_resblock_updown=True,
  classifier_use_scale_shift_norm=True,
)

NETWORKS = {
  "64x64_diffusion": dict(
    image_size=64,
    num_channels=192,
    num_res_blocks=3,
    attention_resolutions="32,16,8",
    num_head_channels=64,
    dropout=0.1,
    class_cond=True,
    learn_sigma=True,
    use_new_attention_order=True,
    use_scale_shift_norm=True,
    resblock_updown=True,
    diffusion_steps=1000,
    noise_schedule="cosine",
  ),
  "128x128_diffusion": dict(
    image_size=128,
    num_channels=256,
    num_res_blocks=2,
    attention_resolutions="32,16,8",
    num_heads=4,
    class_cond=True,
    learn_sigma=True,
    use_scale_shift_norm=True,
    resblock_updown=True,
    diffusion_steps=1000,
    noise_schedule="linear",
  ),
  "256x256_diffusion": dict(_BIG, image_size=256, class_cond=True),
  "256x256_diffusion_uncond": dict(_BIG, image_size=256, class_cond=False),
  "512x512_diffusion": dict(_BIG, image_size=512, class_cond=True),
  "lsun_bedroom": dict(_BIG, image_size=256, class_cond=False, dropout=0.1),
  "lsun_cat": dict(_BIG, image_size=256, class_cond=False, dropout=0.1),
  "lsun_horse": dict(_BIG, image_size=256, class_cond=False, dropout=0.1),
  "lsun_horse_nodropout": dict(_BIG, image_size=256, class_cond=False),
  "64_256_upsampler": dict(
    _UPSAMPLER, large_size=256, small_size=64, attention_resolutions="32,16,8", num_heads=4
  ),
  "128_512_upsampler": dict(
    _UPSAMPLER, large_size=512, small_size=128, attention_resolutions="32,16", num_head_channels=64
  ),
  "64x64_classifier": dict(_CLASSIFIER, image_size=64, classifier_depth=4),
  "128x128_classifier": dict(_CLASSIFIER, image_size=128),
  "256x256_classifier": dict(_CLASSIFIER, image_size=256),
  "512x512_classifier": dict(_CLASSIFIER, image_size=512),
}

# ImageNet per resolution: the network and classifier, the training recipe (batch, lr,
# iterations; bf16, EMA 0.9999), ADM-G's guidance scale at 250 steps, whether the paper's
# largest model needs remat, and the results (FID of ADM; ADM-G FID / sFID / P / R).
IMAGENET = {
  64: dict(
    network="64x64_diffusion",
    classifier="64x64_classifier",
    batch_size=2048,
    lr=3e-4,
    num_steps=540000,
    classifier_scale=1.0,
    remat=False,
    results="ADM FID 2.07 (no guidance; sFID 4.29, P 0.74, R 0.63)",
  ),
  128: dict(
    network="128x128_diffusion",
    classifier="128x128_classifier",
    batch_size=256,
    lr=1e-4,
    num_steps=4360000,
    classifier_scale=0.5,
    remat=False,
    results="ADM FID 5.91; ADM-G 2.97 / 5.09 / 0.78 / 0.59",
  ),
  256: dict(
    network="256x256_diffusion",
    classifier="256x256_classifier",
    batch_size=256,
    lr=1e-4,
    num_steps=1980000,
    classifier_scale=1.0,
    remat=False,
    results="ADM FID 10.94; ADM-G 4.59 / 5.25 / 0.82 / 0.52",
  ),
  512: dict(
    network="512x512_diffusion",
    classifier="512x512_classifier",
    batch_size=256,
    lr=1e-4,
    num_steps=1940000,
    classifier_scale=4.0,
    remat=True,
    results="ADM FID 23.24; ADM-G 7.72 / 6.57 / 0.87 / 0.42",
  ),
}

# The reference's classifier training (scripts/classifier_train.py as used for the paper):
# AdamW lr 3e-4, weight decay 0.05, linear anneal over 300K steps, batch 256, noised inputs.
CLASSIFIER_TRAINING = dict(
  batch_size=256, lr=3e-4, weight_decay=0.05, iterations=300000, lr_anneal_steps=300000, noised=True
)
