"""Config -> a training run's objects, built once: the front door for training.

  exp = experiment.build(config)             # DiffusionExperiment: the UNet of a config
  state = exp.init_state()                   # sharded init (exp.abstract_state: restore target)
  state, metrics = exp.train_step(state, batch)
  clf = experiment.build_classifier(config)  # ClassifierExperiment: the noisy classifier

An experiment holds the network (adm_jax.networks), the un-respaced diffusion process
(samplers respace it), the timestep sampler, the optimizer, the abstract TrainState with its
shardings and the jitted train step. The training modes, the benchmark, the memory plan and
the tests build here, so the benchmark times exactly the step training runs. Sampling and
evaluation need none of this: adm_jax.restore reads parameters alone.
"""

import dataclasses
import json
import os
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from adm_jax import config_base
from adm_jax import data as data_lib
from adm_jax import diffusion as diff
from adm_jax import networks
from adm_jax import sharding as shd
from adm_jax.training import classifier_step
from adm_jax.training import state as state_lib
from adm_jax.training import step as step_lib
from adm_jax.training import update


@dataclasses.dataclass
class Experiment:
  """The built objects of one trainable model of a config (see the module docstring)."""

  config: ml_collections.ConfigDict
  mesh: Any
  network: networks.Network
  diffusion: diff.GaussianDiffusion  # the un-respaced process the model trains on
  timestep_sampler: diff.ScheduleSampler
  tx: Any  # the optax optimizer (with its schedule)
  ema_rates: Tuple[float, ...]
  seed: int
  batch_size: int  # global batch of the train step
  microbatches: int
  abstract_state: state_lib.TrainState  # ShapeDtypeStructs with their shardings
  state_shardings: state_lib.TrainState
  train_step: Callable  # jitted (state, batch) -> (state, metrics)

  mode: ClassVar[str] = ""  # the --mode that trains it
  # What changes the run's results (resuming under other values is refused): config keys
  # or whole sections ('model.*'), less the keys in NOT_IDENTITY.
  IDENTITY: ClassVar[Tuple[str, ...]] = ()
  # What the built objects depend on (a prebuilt experiment serves configs that agree on
  # these, less NOT_IDENTITY's run-length and logging keys).
  BUILT_FROM: ClassVar[Tuple[str, ...]] = ()
  NOT_IDENTITY: ClassVar[Tuple[str, ...]] = (
    "model.use_checkpoint",
    "model.remat_policy",
    "classifier.use_checkpoint",
    "classifier.remat_policy",
    "classifier.iterations",
    "classifier.eval_every",
    "classifier.eval_batches",
    "classifier.log_every",
    "classifier.checkpoint_every",
    "classifier.checkpoint_dir",
    "classifier.microbatch",
    "data.num_workers",
    "data.prefetch",
    "data.on_corrupt",
    "data.eval_dir",
    "data.eval_split",
    "diffusion.timestep_respacing",
  )

  @property
  def model(self):
    return self.network.module

  @property
  def apply_fn(self) -> Callable:
    return self.network.apply

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return self.network.image_shape

  def init_state(self) -> state_lib.TrainState:
    """The initial state, created directly in its sharded layout."""
    return state_lib.init_train_state(
      self.network.init,
      self.tx,
      self.timestep_sampler,
      self.ema_rates,
      self.seed,
      self.state_shardings,
    )

  def abstract_batch(self, batch_size: Optional[int] = None) -> Dict[str, jax.ShapeDtypeStruct]:
    """ShapeDtypeStructs of a global batch (for lowering and memory analysis)."""
    n = batch_size or self.batch_size
    sharding = shd.batch_sharding(self.mesh)
    return {
      "image": jax.ShapeDtypeStruct((n,) + self.image_shape, jnp.float32, sharding=sharding),
      "label": jax.ShapeDtypeStruct((n,), jnp.int32, sharding=sharding),
    }

  def directory(self, workdir: str) -> str:
    """Where this model's checkpoints/ and metrics.jsonl live."""
    return workdir

  def identity_keys(self) -> List[str]:
    """The dotted keys of the config that make a checkpoint this run's."""
    return config_base.dotted_keys(self.config, self.IDENTITY, self.NOT_IDENTITY)

  def serves(self, config) -> List[str]:
    """The keys in which `config` differs from the config this experiment was built from
    ([]: its compiled objects serve a run of `config`)."""
    keys = config_base.dotted_keys(config, self.BUILT_FROM, self.NOT_IDENTITY)
    built, wanted = json.loads(self.config.to_json()), json.loads(config.to_json())
    return [k for k in keys if config_base.lookup(built, k) != config_base.lookup(wanted, k)]

  def source(self, split: str = "train"):
    """The data source of a split (created once; its name and size enter the run's identity)."""
    return data_source(self.config.data, split)

  def data_config(self) -> ml_collections.ConfigDict:
    return self.config.data

  def label_classes(self) -> Optional[int]:
    """Classes the labels must lie in (None: labels are not used)."""
    m = self.config.model
    return m.num_classes if m.class_cond else None

  def batches(self, start_step: int, split: str = "train", seed: Optional[int] = None):
    """This host's slices of the global batches from `start_step` (a BatchIterator)."""
    return data_lib.create_data_iterator(
      self.data_config(),
      global_batch_size=self.batch_size,
      image_size=self.config.model.image_size,
      seed=self.config.train.seed if seed is None else seed,
      start_step=start_step,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      split=split,
      num_classes=self.label_classes(),
      source=self.source(split),
    )


@dataclasses.dataclass
class DiffusionExperiment(Experiment):
  """The diffusion UNet of a config."""

  mode: ClassVar[str] = "train"
  IDENTITY: ClassVar[Tuple[str, ...]] = (
    "model.*",
    "diffusion.*",
    "data.*",
    "train.seed",
    "train.batch_size",
    "train.lr",
    "train.weight_decay",
    "train.lr_anneal_steps",
    "train.grad_clip",
    "train.ema_rate",
    "train.p_uncond",
  )
  BUILT_FROM: ClassVar[Tuple[str, ...]] = (
    "model.*",
    "diffusion.*",
    "train.seed",
    "train.batch_size",
    "train.microbatch",
    "train.lr",
    "train.weight_decay",
    "train.lr_anneal_steps",
    "train.grad_clip",
    "train.ema_rate",
    "train.p_uncond",
    "train.fsdp",
    "train.fsdp_min_size",
  )


@dataclasses.dataclass
class ClassifierExperiment(Experiment):
  """The noisy-image classifier of a config, trained on x_t of the config's process."""

  eval_step: Optional[Callable] = None  # jitted (state, batch) -> metrics, no update

  mode: ClassVar[str] = "train_classifier"
  IDENTITY: ClassVar[Tuple[str, ...]] = ("classifier.*", "diffusion.*", "data.*", "train.seed")
  BUILT_FROM: ClassVar[Tuple[str, ...]] = (
    "classifier.*",
    "model.image_size",
    "model.in_channels",
    "diffusion.*",
    "train.seed",
    "train.fsdp",
    "train.fsdp_min_size",
  )

  def directory(self, workdir: str) -> str:
    return os.path.join(workdir, self.config.classifier.checkpoint_dir)

  def data_config(self) -> ml_collections.ConfigDict:
    data_cfg = ml_collections.ConfigDict(self.config.data.to_dict())
    data_cfg.random_crop = True  # the reference trains its classifiers with random crops
    return data_cfg

  def label_classes(self) -> Optional[int]:
    return self.config.classifier.num_classes


_SOURCES: Dict[Tuple[str, str], Any] = {}


def data_source(data_config, split: str = "train"):
  """data.create_source, once per (data config, split) in a process (a folder of a million
  images is walked once, by the checks before training and by the loader)."""
  key = (data_config.to_json(), split)
  if key not in _SOURCES:
    _SOURCES[key] = data_lib.create_source(data_config, split)
  return _SOURCES[key]


def class_names(config) -> Optional[list]:
  """Names of the data's classes when the source knows them (Fashion-MNIST, folders, TFDS)."""
  try:
    names = getattr(data_source(config.data, "train"), "class_names", None)
  except Exception:  # pylint: disable=broad-except  (no data here: grids go without captions)
    return None
  return list(names) if names else None


# ----------------------------------------------------------------------------- builders
def build(
  config: ml_collections.ConfigDict, mesh=None, *, donate: bool = True
) -> DiffusionExperiment:
  """The diffusion model of a config: network, process, t sampler, optimizer, state, step."""
  t = config.train
  mesh = mesh or shd.create_mesh(t.fsdp)
  network = networks.unet(config)
  gd = networks.diffusion_process(config)
  sampler = diff.create_named_schedule_sampler(config.diffusion.schedule_sampler, gd.num_timesteps)
  ema_rates = state_lib.parse_ema_rates(t.ema_rate)
  tx = state_lib.create_optimizer(t.lr, t.weight_decay, t.lr_anneal_steps, t.grad_clip)
  abstract, shardings = state_lib.abstract_train_state(
    network.init, tx, sampler, ema_rates, t.seed, mesh, t.fsdp_min_size
  )
  microbatches = update.microbatch_count(t.batch_size, t.microbatch, mesh.size)
  train_step = step_lib.make_train_step(
    network.apply,
    gd,
    sampler,
    tx,
    ema_rates,
    microbatches=microbatches,
    p_uncond=t.p_uncond,
    null_label=config.model.num_classes,
    class_cond=config.model.class_cond,
    mesh=mesh,
    state_shardings=shardings,
    donate=donate,
    model_kwargs_fn=networks.low_res_fn(config),
  )
  return DiffusionExperiment(
    config,
    mesh,
    network,
    gd,
    sampler,
    tx,
    ema_rates,
    t.seed,
    t.batch_size,
    microbatches,
    abstract,
    shardings,
    train_step,
  )


def build_classifier(
  config: ml_collections.ConfigDict, mesh=None, *, donate: bool = True
) -> ClassifierExperiment:
  """The noisy-image classifier of a config, trained on x_t of the config's process."""
  c = config.classifier
  mesh = mesh or shd.create_mesh(config.train.fsdp)
  network = networks.classifier(config)
  gd = networks.diffusion_process(config)
  sampler = diff.create_named_schedule_sampler(c.schedule_sampler, gd.num_timesteps)
  tx = state_lib.create_optimizer(c.lr, c.weight_decay, c.lr_anneal_steps)
  seed = config.train.seed + 7
  abstract, shardings = state_lib.abstract_train_state(
    network.init, tx, sampler, (), seed, mesh, config.train.fsdp_min_size
  )
  microbatches = update.microbatch_count(c.batch_size, c.microbatch, mesh.size)
  steps = {
    train: classifier_step.make_classifier_step(
      network.apply,
      gd,
      sampler,
      tx,
      noised=c.noised,
      train=train,
      microbatches=microbatches,
      mesh=mesh,
      state_shardings=shardings,
      donate=donate,
    )
    for train in (True, False)
  }
  return ClassifierExperiment(
    config,
    mesh,
    network,
    gd,
    sampler,
    tx,
    (),
    seed,
    c.batch_size,
    microbatches,
    abstract,
    shardings,
    steps[True],
    eval_step=steps[False],
  )


def builder(mode: str) -> Callable[..., Experiment]:
  """build or build_classifier, by the mode that trains the model."""
  return {DiffusionExperiment.mode: build, ClassifierExperiment.mode: build_classifier}[mode]
