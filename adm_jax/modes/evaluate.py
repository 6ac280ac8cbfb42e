"""The eval mode: FID, sFID, IS, precision / recall (and class accuracy) of a samples file."""

import json
import logging
import os
import time
from typing import Sequence

from adm_jax import data as data_lib
from adm_jax import evaluation
from adm_jax import files
from adm_jax import report as report_lib
from adm_jax import validation
from adm_jax.modes import sample

log = logging.getLogger(__name__)

MIN_RELIABLE_SAMPLES = 1000


def newest_samples(out_dir: str) -> str:
  """The newest samples_*.npz of a sample folder (by modification time), or ''."""
  if not os.path.isdir(out_dir):
    return ""
  candidates = [
    os.path.join(out_dir, f)
    for f in os.listdir(out_dir)
    if f.startswith("samples_") and f.endswith(".npz")
  ]
  return max(candidates, key=os.path.getmtime) if candidates else ""


def run(config, workdir: str, mesh=None, overrides: Sequence[str] = ()) -> report_lib.RunReport:
  """--mode=eval: metrics of sample.sample_npz (default: the newest samples_*.npz of
  sample.output_dir) against sample.reference_batch.

  Without a reference batch, one is written from the data config's eval split (as many
  images as samples). Writes eval_<feature_net>.json beside the samples.
  """
  del mesh, overrides  # the feature networks run on the default device; no model is built
  started = time.perf_counter()
  validation.validate(config, "eval", devices=1)
  scfg = config.sample
  out_dir = sample.output_dir(config, workdir)
  sample_npz = scfg.sample_npz or newest_samples(out_dir)
  if not sample_npz:
    raise FileNotFoundError(
      f"no samples_*.npz in {out_dir}: run --mode=sample first, or set sample.sample_npz"
    )
  n = len(evaluation.load_batch(sample_npz)["images"])
  log.info("evaluating %s (%d samples) with %s", sample_npz, n, scfg.feature_net)
  reference = scfg.reference_batch
  if not reference:
    source = data_lib.create_source(config.data, config.data.eval_split)
    reference = os.path.join(out_dir, f"reference_{evaluation.source_tag(source.name)}_{n}.npz")
    if not os.path.exists(reference):
      evaluation.write_reference_batch(
        reference, config.data, config.data.eval_split, n, config.model.image_size, source=source
      )
  result = evaluation.evaluate_npz(
    sample_npz, reference, scfg.feature_net, scfg.inception_weights or None
  )
  result.update(sample_npz=sample_npz, reference=reference)
  path = os.path.join(os.path.dirname(sample_npz), f"eval_{scfg.feature_net}.json")
  files.write_text(path, json.dumps(result, indent=2), "the evaluation results")
  log.info("%s", evaluation.format_result(result))
  report = report_lib.RunReport(
    "eval",
    directory=os.path.dirname(sample_npz),
    metrics=result,
    outputs={"evaluated": sample_npz, "reference": reference, "results": path},
    wall_s=time.perf_counter() - started,
  )
  if n < MIN_RELIABLE_SAMPLES:
    report.notes.append(
      f"only {n} samples: FID and sFID are biased upwards and noisy below "
      f"{MIN_RELIABLE_SAMPLES} (the paper uses 50,000); compare runs with the "
      "same N, or sample more (sample.num_samples)"
    )
  return report
