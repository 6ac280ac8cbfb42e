"""The base ml-collections config every experiment file in configs/ starts from.

Every key that adm_jax reads is declared here, with its default and what it means; an
override of an undeclared key (`--config.train.nmu_steps=3`) is refused with the close
matches (`check_keys`). Sections use the reference's flag names where it has them:
  model      UNet flags (image_size, num_channels, ..., learn_sigma) + compute dtype
  diffusion  diffusion flags (diffusion_steps, noise_schedule, ..., schedule_sampler)
  classifier noisy-image classifier flags (classifier_width, ...) and its training options
  data       dataset source and preprocessing
  train      optimisation, EMA, logging, checkpointing, sample grids, sharding
  sample     the sample / eval / nll modes
Configs are found by path (`configs/imagenet128.py`, optionally `:ARG`) or by name
(`imagenet128`, `imagenet:128`): see `resolve_config_path`.
"""

import difflib
import importlib.util
import json
import os
from typing import Iterable, List

import ml_collections

_HERE = os.path.dirname(os.path.abspath(__file__))
# A source checkout (also `pip install -e .`) has configs/ beside the package; an installed
# wheel has them as the package adm_jax.configs (pyproject.toml maps configs/ there).
CONFIGS_DIR = next(
  (
    d
    for d in (os.path.join(os.path.dirname(_HERE), "configs"), os.path.join(_HERE, "configs"))
    if os.path.isdir(d)
  ),
  os.path.join(os.path.dirname(_HERE), "configs"),
)


def model_defaults() -> ml_collections.ConfigDict:
  """The reference's model defaults (guided_diffusion.script_util), plus dtype."""
  return ml_collections.ConfigDict(
    dict(
      image_size=64,  # height = width of the images (pixels)
      in_channels=3,  # image channels (1 for grayscale)
      num_channels=128,  # base width; level i has channel_mult[i] * num_channels
      num_res_blocks=2,  # ResBlocks per encoder level (decoder: one more)
      channel_mult="",  # per-level width multipliers; "" = the reference's per-size default
      attention_resolutions="16,8",  # feature-map sizes (px) with self-attention
      num_heads=4,  # attention heads when num_head_channels == -1
      num_head_channels=-1,  # fixed channels per head (overrides num_heads); -1: off
      num_heads_upsample=-1,  # decoder heads; -1: num_heads
      dropout=0.0,  # dropout inside ResBlocks while training
      class_cond=False,  # class-conditional (label embedding added to the time embedding)
      num_classes=1000,  # number of classes of a class-conditional model
      use_checkpoint=False,  # gradient checkpointing (remat) of ResBlocks / attention
      # what remat keeps: "" (convs_saveable when use_checkpoint) | none | nothing_saveable |
      # dots_with_no_batch_dims_saveable | convs_saveable | dots_saveable
      remat_policy="",
      use_scale_shift_norm=True,  # AdaGN: GroupNorm(h) * (1 + scale) + shift
      resblock_updown=False,  # BigGAN-style up/down-sampling inside ResBlocks
      use_new_attention_order=False,  # split q, k, v before heads (the reference's new order)
      learn_sigma=False,  # learned variance: 2C output channels, hybrid loss
      dtype="float32",  # compute dtype: float32 | bfloat16 (parameters stay float32)
      small_size=0,  # > 0: a super-resolution UNet conditioned on small_size images
    )
  )


def diffusion_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      diffusion_steps=1000,  # T, the steps of the training process
      noise_schedule="linear",  # linear | cosine
      use_kl=False,  # loss RESCALED_KL (T times the variational bound)
      predict_xstart=False,  # the network predicts x_0 instead of eps
      rescale_timesteps=False,  # networks see t * 1000 / T instead of t
      rescale_learned_sigmas=False,  # loss RESCALED_MSE (vb term times T / 1000)
      timestep_respacing="",  # respacing of the process the nll mode integrates ("" = all T)
      schedule_sampler="uniform",  # t sampler while training: uniform | loss-second-moment
    )
  )


def classifier_defaults() -> ml_collections.ConfigDict:
  """Classifier flags of the reference plus training options for --mode=train_classifier."""
  return ml_collections.ConfigDict(
    dict(
      classifier_width=128,  # base width of the classifier's encoder
      classifier_depth=2,  # ResBlocks per level
      classifier_attention_resolutions="32,16,8",  # feature-map sizes (px) with attention
      classifier_use_scale_shift_norm=True,  # AdaGN in the classifier's ResBlocks
      classifier_resblock_updown=True,  # ResBlock downsampling
      classifier_pool="attention",  # head: adaptive | attention | spatial | spatial_v2
      channel_mult="",  # per-level multipliers; "" = the per-size default
      num_classes=1000,  # classes the classifier predicts (>= the model's)
      dtype="float32",  # compute dtype: float32 | bfloat16
      use_checkpoint=False,  # remat of the classifier's blocks
      remat_policy="",  # as model.remat_policy
      # training (the reference's scripts/classifier_train.py defaults)
      noised=True,  # train on x_t (t from schedule_sampler); False: on x_0
      iterations=150000,  # training steps
      lr=3e-4,  # AdamW learning rate
      weight_decay=0.0,  # AdamW weight decay
      lr_anneal_steps=0,  # > 0: linear decay of lr to 0 over this many steps
      batch_size=64,  # global batch
      microbatch=-1,  # accumulate gradients over microbatches of this size (-1: off)
      schedule_sampler="uniform",  # t sampler: uniform | loss-second-moment
      eval_every=1000,  # steps between validation passes
      eval_batches=4,  # validation batches per pass
      log_every=10,  # steps between metric rows
      checkpoint_every=10000,  # steps between checkpoints
      checkpoint_dir="classifier",  # WORKDIR/<checkpoint_dir> holds its checkpoints and metrics
    )
  )


def data_defaults() -> ml_collections.ConfigDict:
  """Every data option with its default (read by adm_jax.data)."""
  return ml_collections.ConfigDict(
    dict(
      name="fashion_mnist",  # fashion_mnist | folder | tfds | arrays
      data_dir="",  # folder: the image directory; tfds: TFDS data_dir
      eval_dir="",  # folder: images of the eval split ("" = data_dir)
      tfds_name="",  # tfds: dataset name, e.g. imagenet2012, cifar10
      train_split="train",  # tfds split used for training
      eval_split="test",  # split for evaluation and validation
      image_key="image",  # tfds feature holding the image
      label_key="label",  # tfds feature holding the label
      fashion_mnist_dir="",  # IDX files; default: Debian's, else the embedded subset
      folder_labels="prefix",  # folder labels: prefix (reference) | subdir | none
      channels=3,  # 1 keeps grayscale; 3 converts to RGB
      random_crop=False,  # the reference's random crop (classifier training forces it)
      random_flip=False,  # random horizontal flips
      on_corrupt="skip",  # unreadable image: skip (and count) | raise (with the path)
      num_workers=4,  # decoding threads
      prefetch=2,  # batches decoded ahead
      shuffle=True,  # per-epoch permutations (False: file order)
    )
  )


def train_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      seed=0,  # initialisation, t / noise / dropout draws and data order
      batch_size=256,  # global batch (split over all devices of all hosts)
      microbatch=-1,  # accumulate gradients over microbatches of this global size (-1: off)
      lr=1e-4,  # AdamW learning rate
      weight_decay=0.0,  # AdamW weight decay
      lr_anneal_steps=0,  # > 0: linear decay of lr to 0 over this many steps
      grad_clip=0.0,  # > 0: clip gradients to this global norm
      ema_rate="0.9999",  # EMA rate(s), comma-separated
      num_steps=500000,  # training steps
      p_uncond=0.0,  # label dropout to the null class (classifier-free guidance)
      fsdp=1,  # devices each parameter is sharded over (1: replicated)
      fsdp_min_size=16384,  # with fsdp: tensors of fewer elements stay replicated
      log_every=100,  # steps between metric rows
      checkpoint_every=10000,  # steps between checkpoints
      keep_checkpoints=3,  # newest checkpoints kept
      async_checkpoint=True,  # write checkpoints in the background
      sample_every=10000,  # steps between sample grids
      grid_samples=16,  # images per grid (0: no grids)
      grid_sampler="ddim",  # sampler of the grids (any of sample.sampler's)
      grid_steps=0,  # grid sampler's network evaluations (0: grid_timestep_respacing)
      grid_timestep_respacing="ddim50",  # respacing of a ddpm / ddim grid when grid_steps is 0
      grid_time_schedule="time_uniform",  # time schedule of a solver grid (as sample.time_schedule)
      grid_solver_order=0,  # order of a unipc grid (as sample.solver_order)
      grid_unipc_variant="",  # variant of a unipc grid (as sample.unipc_variant)
      grid_cfg_scale=0.0,  # classifier-free guidance scale of the grids
      progress=True,  # progress bar
      tensorboard=True,  # also write TensorBoard summaries when TensorFlow is installed
      allow_config_change=False,  # resume a checkpoint although the run's settings changed (listed)
    )
  )


def sample_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      num_samples=10000,  # images to sample
      batch_size=64,  # images per sampling call (split over devices)
      # ddpm (ancestral) | ddim | dpmpp_1 | dpmpp_2m | dpmpp_3m | dpmpp_2s | sde_dpmpp_2m | plms |
      # unipc
      sampler="ddpm",
      steps=0,  # network evaluations per image (0: timestep_respacing; solvers need >= 1)
      timestep_respacing="250",  # respacing of ddpm / ddim when steps is 0
      time_schedule="time_uniform",  # solvers: time_uniform | logsnr | time_quadratic | karras
      thresholding=False,  # solvers: Imagen's dynamic thresholding of x_0
      solver_order=0,  # unipc: order 1 | 2 | 3 (0: 3 unguided, 2 guided)
      unipc_variant="",  # unipc: bh1 | bh2 ("": bh2)
      eta=0.0,  # DDIM noise (0: deterministic)
      # ddim with classifier guidance: clip the guided x_0 as well (False: the reference's
      # unclipped x_0, which saturates respacings that start at t = T - 1)
      clip_guided=True,
      use_ema=True,  # sample with the EMA parameters
      ema_index=-1,  # which EMA rate (index into train.ema_rate)
      clip_denoised=True,  # clip the x_0 prediction to [-1, 1]
      classifier_scale=0.0,  # classifier guidance scale (>= 0; 0: off)
      cfg_scale=0.0,  # classifier-free guidance scale w (>= 0; 0: off)
      classifier_path="",  # classifier: a converted checkpoint or a workdir ("" = this one)
      checkpoint_path="",  # sample a converted reference checkpoint instead of the workdir's
      labels="random",  # random | one class (3) | a list cycled (0,1,2)
      seed=0,  # sampling seed (batch i uses fold_in(seed, i))
      output_dir="samples",  # under the workdir unless absolute
      base_samples="",  # super-resolution: npz of base samples to upsample
      reference_batch="",  # eval: reference npz or statistics ("" = the eval split)
      sample_npz="",  # eval: the samples to score ("" = the newest samples_*.npz)
      feature_net="fmnist_cnn_v1",  # eval feature network: fmnist_cnn_v1 | inception_v3
      inception_weights="",  # inception_v3: path of pytorch-fid's weights file
      nll_split="test",  # nll: data split
      nll_batches=1,  # nll: batches of batch_size images
    )
  )


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model_defaults()
  config.diffusion = diffusion_defaults()
  config.classifier = classifier_defaults()
  config.data = data_defaults()
  config.train = train_defaults()
  config.sample = sample_defaults()
  config.distributed = "auto"  # jax.distributed start-up: auto | on | off
  return config


def diffusion_kwargs(config, timestep_respacing=None) -> dict:
  """Keyword arguments of diffusion.create_gaussian_diffusion from a full config."""
  d = config.diffusion
  return dict(
    steps=d.diffusion_steps,
    learn_sigma=config.model.learn_sigma,
    sigma_small=False,
    noise_schedule=d.noise_schedule,
    use_kl=d.use_kl,
    predict_xstart=d.predict_xstart,
    rescale_timesteps=d.rescale_timesteps,
    rescale_learned_sigmas=d.rescale_learned_sigmas,
    timestep_respacing=d.timestep_respacing if timestep_respacing is None else timestep_respacing,
  )


def model_config_for_training(config) -> ml_collections.ConfigDict:
  """The model flags, with one extra (null) class when training with label dropout."""
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  if config.model.class_cond and config.train.p_uncond > 0:
    model_cfg.num_classes = config.model.num_classes + 1
  return model_cfg


def classifier_model_config(config) -> ml_collections.ConfigDict:
  """The classifier flags with the image size and channels of the experiment."""
  cfg = ml_collections.ConfigDict(config.classifier.to_dict())
  cfg.image_size = config.model.image_size
  cfg.in_channels = config.model.in_channels
  return cfg


def with_network_flags(config, flags) -> ml_collections.ConfigDict:
  """A copy of `config` with a released / converted UNet's flags (the reference's names) in its
  model and diffusion sections (large_size is the image size of an upsampler)."""
  config = ml_collections.ConfigDict(config.to_dict())
  flags = dict(flags)
  if "large_size" in flags:
    flags["image_size"] = flags.pop("large_size")
  for key, value in flags.items():
    for section in (config.model, config.diffusion):
      if key in section:
        section[key] = value
  config.model.class_cond = bool(flags.get("class_cond", False))
  config.model.in_channels = int(flags.get("in_channels", 3))
  config.model.num_classes = int(flags.get("num_classes", 1000))
  return config


def with_classifier_flags(config, flags) -> ml_collections.ConfigDict:
  """A copy of `config` with a released classifier's flags in its classifier section."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.classifier.update({k: v for k, v in flags.items() if k in config.classifier})
  return config


# ----------------------------------------------------------------------------- config files
def resolve_config_path(spec: str) -> str:
  """The file of a config given as a path (`configs/x.py`) or a name (`x`, found in configs/).

  A `:ARG` suffix (the config's variant argument) is kept on the returned path.
  """
  path, sep, arg = spec.partition(":")
  if not os.path.exists(path) and os.sep not in path and not path.endswith(".py"):
    candidate = os.path.join(CONFIGS_DIR, path + ".py")
    if os.path.exists(candidate):
      path = candidate
  if not os.path.exists(path):
    names = (
      sorted(n[:-3] for n in os.listdir(CONFIGS_DIR) if n.endswith(".py") and not n.startswith("_"))
      if os.path.isdir(CONFIGS_DIR)
      else []
    )
    raise FileNotFoundError(
      f"config {spec!r} not found: give a file path or one of the names {', '.join(names)}"
    )
  return os.path.abspath(path) + (sep + arg if sep else "")


def from_config_file(path: str, arg=None) -> ml_collections.ConfigDict:
  """Loads an experiment file's get_config() (configs build on each other this way).

  `path` may be a name or a path, with an optional `:ARG` (when `arg` is not given).
  """
  file_path, _, suffix = resolve_config_path(path).partition(":")
  if arg is None and suffix:
    arg = suffix
  name = "adm_jax_config_" + os.path.splitext(os.path.basename(file_path))[0]
  spec = importlib.util.spec_from_file_location(name, file_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


# ----------------------------------------------------------------------------- keys
def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> List[str]:
  """Every leaf key of a config, dotted ('train.lr', 'distributed')."""
  out = []
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      out += flat_keys(value, name + ".")
    else:
      out.append(name)
  return out


def dotted_keys(config, patterns: Iterable[str], excluded: Iterable[str] = ()) -> List[str]:
  """The dotted keys of a config matching patterns 'section.*' or 'section.key', less `excluded`."""
  excluded = set(excluded)
  out = []
  for pattern in patterns:
    section, _, key = pattern.partition(".")
    names = sorted(config[section]) if key == "*" else [key]
    out += [f"{section}.{n}" for n in names if f"{section}.{n}" not in excluded]
  return out


def lookup(tree, dotted: str):
  """tree['section']['key'] of a dotted key (a ConfigDict or its JSON dict)."""
  section, key = dotted.split(".")
  return tree[section][key]


def unknown_key_message(key: str, known: Iterable[str]) -> str:
  """'unknown config key train.nmu_steps; did you mean train.num_steps?' (close matches)."""
  known = list(known)
  section = key.rsplit(".", 1)[0] if "." in key else ""
  close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
  if not close and section:
    close = [k for k in known if k.startswith(section + ".")][:8]
    hint = f"; keys of {section}: {', '.join(close)}" if close else ""
  else:
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
  return f"unknown config key {key}{hint}"


def check_keys(config: ml_collections.ConfigDict, keys: Iterable[str]) -> None:
  """Raises KeyError with the close matches for dotted keys that the config does not declare."""
  known = set(flat_keys(config))
  sections = {k.split(".")[0] for k in known}
  for key in keys:
    if key in known or key in sections:
      continue
    raise KeyError(unknown_key_message(key, sorted(known)))


def from_reference_json(path: str) -> ml_collections.ConfigDict:
  """A config from the PyTorch reference harness's JSON (model / classifier flag dicts)."""
  with open(path) as f:
    raw = json.load(f)
  c = base_config()
  model = dict(raw["model"])
  c.diffusion.update({k: model.pop(k) for k in [k for k in model if k in c.diffusion]})
  c.model.update({k: v for k, v in model.items() if k in c.model})
  c.classifier.update({k: v for k, v in raw.get("classifier", {}).items() if k in c.classifier})
  return c
