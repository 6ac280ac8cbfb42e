"""The nll mode: bits/dim of a data split under a trained model (the full variational bound)."""

import json
import logging
import os
import time
from typing import Sequence

import jax
import numpy as np
import tqdm

from adm_jax import data as data_lib
from adm_jax import diffusion as diff
from adm_jax import files
from adm_jax import networks
from adm_jax import report as report_lib
from adm_jax import restore
from adm_jax import sharding as shd
from adm_jax import validation
from adm_jax.modes import sample

log = logging.getLogger(__name__)


def run(config, workdir: str, mesh=None, overrides: Sequence[str] = ()) -> report_lib.RunReport:
  """--mode=nll: bits/dim (full variational bound, calc_bpd_loop) over a dataset split.

  Uses sample.nll_batches batches of sample.batch_size images of split sample.nll_split,
  the process of config.diffusion (its timestep_respacing, "" for the exact bound).
  Writes <output_dir>/nll.json; the report's metrics are its contents.
  """
  started = time.perf_counter()
  scfg = config.sample
  mesh = mesh or shd.create_mesh(1)
  validation.validate(config, "nll", workdir, devices=mesh.size)
  config, network, params, step = restore.sampling_model(config, workdir, mesh, overrides)
  source = data_lib.create_source(config.data, scfg.nll_split)
  validation.validate_labels(config, "nll", lambda split: source)
  gd = diff.respaced(networks.diffusion_process(config), config.diffusion.timestep_respacing)
  cond = config.model.class_cond

  @jax.jit
  def bpd(params, images, labels, key):
    model_fn = lambda x, t, **kw: network.apply(params, x, t, labels if cond else None)
    return diff.calc_bpd_loop(gd, model_fn, images, key=key)

  batches = data_lib.create_data_iterator(
    config.data,
    global_batch_size=scfg.batch_size,
    image_size=config.model.image_size,
    seed=scfg.seed,
    start_step=0,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    split=scfg.nll_split,
    source=source,
    num_classes=config.model.num_classes if cond else None,
  )
  totals = {"total_bpd": [], "prior_bpd": [], "vb": [], "xstart_mse": [], "mse": []}
  try:
    for i in tqdm.trange(scfg.nll_batches, desc="nll", disable=jax.process_index() != 0):
      batch = shd.global_batch(next(batches), mesh)
      out = jax.device_get(
        bpd(
          params,
          batch["image"],
          batch["label"],
          jax.random.fold_in(jax.random.PRNGKey(scfg.seed), i),
        )
      )
      for k in totals:
        totals[k].append(np.asarray(out[k]))
  finally:
    batches.close()
  result = {
    "checkpoint_step": step,
    "split": scfg.nll_split,
    "num_images": int(sum(len(v) for v in totals["total_bpd"])),
    "bits_per_dim": float(np.concatenate(totals["total_bpd"]).mean()),
    "prior_bpd": float(np.concatenate(totals["prior_bpd"]).mean()),
    "steps": int(gd.num_timesteps),
  }
  vb = np.concatenate(totals["vb"]).mean(axis=0)  # per step, column j = step T-1-j
  result["vb_per_step_bpd"] = [float(v) for v in vb[::-1]]  # now index = step
  out_dir = sample.output_dir(config, workdir)
  path = os.path.join(out_dir, "nll.json")
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    files.write_text(path, json.dumps(result, indent=2), "the NLL results")
  log.info(
    "NLL: %.4f bits/dim over %d images (%d steps, split %s)",
    result["bits_per_dim"],
    result["num_images"],
    result["steps"],
    result["split"],
  )
  return report_lib.RunReport(
    "nll",
    directory=out_dir,
    step=step if step >= 0 else None,
    metrics=result,
    outputs={"nll": path},
    wall_s=time.perf_counter() - started,
  )
