"""The base ml-collections config every experiment file in configs/ starts from.

Sections use the reference's flag names where it has them:
  model      UNet flags (image_size, num_channels, ..., learn_sigma) + compute dtype
  diffusion  diffusion flags (diffusion_steps, noise_schedule, ..., schedule_sampler)
  classifier noisy-image classifier flags (classifier_width, ...) and its training options
  data       dataset source and preprocessing (see adm_jax.data.default_data_config)
  train      optimisation, EMA, logging, checkpointing, sample grids, sharding
  sample     the sample / eval / nll modes
"""
import ml_collections

from adm_jax import data as data_lib


def model_defaults() -> ml_collections.ConfigDict:
  """The reference's model defaults (guided_diffusion.script_util), plus dtype."""
  return ml_collections.ConfigDict(dict(
      image_size=64, in_channels=3, num_channels=128, num_res_blocks=2, channel_mult="",
      attention_resolutions="16,8", num_heads=4, num_head_channels=-1, num_heads_upsample=-1,
      dropout=0.0, class_cond=False, num_classes=1000, use_checkpoint=False,
      use_scale_shift_norm=True, resblock_updown=False, use_new_attention_order=False,
      learn_sigma=False, dtype="float32",
      small_size=0))  # > 0: a super-resolution UNet conditioned on small_size images


def diffusion_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      diffusion_steps=1000, noise_schedule="linear", use_kl=False, predict_xstart=False,
      rescale_timesteps=False, rescale_learned_sigmas=False, timestep_respacing="",
      schedule_sampler="uniform"))


def classifier_defaults() -> ml_collections.ConfigDict:
  """Classifier flags of the reference plus training options for --mode=train_classifier."""
  return ml_collections.ConfigDict(dict(
      classifier_width=128, classifier_depth=2, classifier_attention_resolutions="32,16,8",
      classifier_use_scale_shift_norm=True, classifier_resblock_updown=True,
      classifier_pool="attention", channel_mult="", num_classes=1000, dtype="float32",
      use_checkpoint=False,
      # training (reference scripts/classifier_train.py defaults)
      noised=True, iterations=150000, lr=3e-4, weight_decay=0.0, lr_anneal_steps=0,
      batch_size=64, microbatch=-1, schedule_sampler="uniform", eval_every=1000,
      eval_batches=4, log_every=10, checkpoint_every=10000, checkpoint_dir="classifier"))


def train_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      seed=0, batch_size=256, microbatch=-1, lr=1e-4, weight_decay=0.0, lr_anneal_steps=0,
      grad_clip=0.0, ema_rate="0.9999", num_steps=500000, p_uncond=0.0, fsdp=1,
      log_every=100, checkpoint_every=10000, keep_checkpoints=3, async_checkpoint=True,
      sample_every=10000, grid_samples=16, grid_sampler="ddim", grid_respacing="ddim50",
      grid_cfg_scale=0.0,
      progress=True, tensorboard=True))


def sample_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      num_samples=10000, batch_size=64, sampler="ddpm", timestep_respacing="250", eta=0.0,
      use_ema=True, ema_index=-1, clip_denoised=True, classifier_scale=0.0, cfg_scale=0.0,
      classifier_path="", checkpoint_path="", labels="random", seed=0, output_dir="samples",
      base_samples="", reference_batch="", feature_net="fmnist_cnn_v1", inception_weights="",
      nll_split="test", nll_batches=1))


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model_defaults()
  config.diffusion = diffusion_defaults()
  config.classifier = classifier_defaults()
  config.data = data_lib.default_data_config()
  config.train = train_defaults()
  config.sample = sample_defaults()
  config.distributed = "auto"
  return config


def diffusion_kwargs(config, timestep_respacing=None) -> dict:
  """Keyword arguments of diffusion.create_gaussian_diffusion from a full config."""
  d = config.diffusion
  return dict(steps=d.diffusion_steps, learn_sigma=config.model.learn_sigma, sigma_small=False,
              noise_schedule=d.noise_schedule, use_kl=d.use_kl, predict_xstart=d.predict_xstart,
              rescale_timesteps=d.rescale_timesteps,
              rescale_learned_sigmas=d.rescale_learned_sigmas,
              timestep_respacing=d.timestep_respacing if timestep_respacing is None
              else timestep_respacing)


def model_config_for_training(config) -> ml_collections.ConfigDict:
  """The model flags, with one extra (null) class when training with label dropout."""
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  if config.model.class_cond and config.train.p_uncond > 0:
    model_cfg.num_classes = config.model.num_classes + 1
  return model_cfg


def from_config_file(path: str, arg=None) -> ml_collections.ConfigDict:
  """Loads another experiment file's get_config() (configs build on each other this way)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  name = "adm_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


def imagenet_classifier_config(base_file: str, depth: int) -> ml_collections.ConfigDict:
  """An experiment's config with the reference's ImageNet classifier and its training recipe
  (AdamW lr 3e-4, weight decay 0.05, linear anneal over 300K steps, batch 256, noised inputs)."""
  c = from_config_file(base_file)
  c.classifier.update(classifier_depth=depth, classifier_width=128,
                      classifier_attention_resolutions="32,16,8", classifier_pool="attention",
                      classifier_resblock_updown=True, classifier_use_scale_shift_norm=True,
                      batch_size=256, lr=3e-4, weight_decay=0.05, iterations=300000,
                      lr_anneal_steps=300000, noised=True)
  return c
