"""The training modes: `run` (--mode=train, the diffusion model) and `run_classifier`
(--mode=train_classifier, the noisy classifier for guidance).

Both check the config and the data first (seconds), take ownership of their directory (a
second run there stops at once, naming the first), build their objects with
adm_jax.experiment and run the one loop of adm_jax.training.loop, in `workdir` (the
classifier in WORKDIR/<classifier.checkpoint_dir>). They return a RunReport.
"""
import logging
import os

import jax
import ml_collections

from adm_jax import experiment
from adm_jax import report as report_lib
from adm_jax import validation
from adm_jax import workdir as workdir_lib
from adm_jax.training import loop
from adm_jax.training import state as state_lib

log = logging.getLogger(__name__)


def _check_data(config, mode: str):
  """The training data fits the network (read once the workdir is ours, before any build)."""
  validation.validate_source(config, mode, experiment.data_source(config.data, "train"))


def run(config: ml_collections.ConfigDict, workdir: str, mesh=None) -> report_lib.RunReport:
  """Trains (or resumes) the diffusion model of `config` in `workdir`."""
  validation.validate(config, "train", workdir, devices=mesh.size if mesh else None)
  with workdir_lib.WorkdirLock(workdir, "train", jax.process_index()):
    _check_data(config, "train")
    exp = experiment.build(config, mesh)
    log.info("model: %.2fM parameters; %d devices, %d processes",
             state_lib.param_count(exp.abstract_state.params) / 1e6, jax.device_count(),
             jax.process_count())
    if jax.process_index() == 0:
      with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2))
    report = loop.run(experiment.loop_spec(exp, workdir))
  report.outputs.setdefault("samples", os.path.join(workdir, "samples"))
  report.next_mode = "sample"
  return report


def run_classifier(config: ml_collections.ConfigDict, workdir: str,
                   mesh=None) -> report_lib.RunReport:
  """Trains (or resumes) the noisy classifier of `config` in WORKDIR/<classifier.checkpoint_dir>."""
  validation.validate(config, "train_classifier", workdir, devices=mesh.size if mesh else None)
  directory = os.path.join(workdir, config.classifier.checkpoint_dir)
  with workdir_lib.WorkdirLock(directory, "train_classifier", jax.process_index()):
    _check_data(config, "train_classifier")
    exp = experiment.build_classifier(config, mesh)
    log.info("classifier: %.2fM parameters",
             state_lib.param_count(exp.abstract_state.params) / 1e6)
    report = loop.run(experiment.loop_spec(exp, workdir))
  report.next_mode = "sample"
  report.next_overrides = ["--config.sample.classifier_scale=1.0"]
  return report
