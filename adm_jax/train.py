"""The training modes: `run` (--mode=train, the diffusion model) and `run_classifier`
(--mode=train_classifier, the noisy classifier for guidance).

Both build their objects with adm_jax.experiment and run the one loop of
adm_jax.training.loop, in `workdir` (the classifier in WORKDIR/<classifier.checkpoint_dir>).
"""
import logging
import os
from typing import Dict

import jax
import ml_collections

from adm_jax import experiment
from adm_jax import validation
from adm_jax.training import loop
from adm_jax.training import state as state_lib

log = logging.getLogger(__name__)


def run(config: ml_collections.ConfigDict, workdir: str, mesh=None) -> Dict[str, float]:
  """Trains (or resumes) the diffusion model of `config` in `workdir`; returns the last metrics."""
  validation.validate(config, "train", workdir, devices=mesh.size if mesh else None)
  exp = experiment.build(config, mesh)
  log.info("model: %.2fM parameters; %d devices, %d processes",
           state_lib.param_count(exp.abstract_state.params) / 1e6, jax.device_count(),
           jax.process_count())
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))
  return loop.run(experiment.loop_spec(exp, workdir))


def run_classifier(config: ml_collections.ConfigDict, workdir: str, mesh=None) -> Dict[str, float]:
  """Trains (or resumes) the classifier of `config`; returns the last (validation) metrics."""
  validation.validate(config, "train_classifier", workdir, devices=mesh.size if mesh else None)
  exp = experiment.build_classifier(config, mesh)
  log.info("classifier: %.2fM parameters", state_lib.param_count(exp.abstract_state.params) / 1e6)
  return loop.run(experiment.loop_spec(exp, workdir))
