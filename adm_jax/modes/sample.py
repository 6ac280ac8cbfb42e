"""The sample mode: `run` (--mode=sample).

Parameters come from adm_jax.restore (a workdir's newest checkpoint, built with the settings it
was trained with, or a converted checkpoint), the jitted sampler from the sampling library;
this module does the batching over hosts, the npz parts of an interrupted run, the two-stage
(base + upsampler) pipeline and the output files.
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any, Dict, Sequence

import jax
import numpy as np
import tqdm

from adm_jax import config_base
from adm_jax import files
from adm_jax import networks
from adm_jax import report as report_lib
from adm_jax import restore
from adm_jax import sampling
from adm_jax import sharding as shd
from adm_jax import validation
from adm_jax import workdir as workdir_lib

log = logging.getLogger(__name__)


def parse_labels(spec, num: int, num_classes: int, seed: int) -> np.ndarray:
  """Class labels [num] from 'random', one integer ('3'), or a comma list cycled ('1,5,7')."""
  spec = str(spec).strip()
  if spec in ("", "random"):
    labels = np.random.default_rng(seed).integers(0, num_classes, size=num)
  else:
    try:
      values = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
      raise ValueError(f"sample.labels {spec!r}: expected 'random', an integer or a list") from None
    labels = np.resize(np.asarray(values), num)
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if bad.size:
    raise ValueError(f"sample.labels: label {int(bad[0])} is out of range [0, {num_classes})")
  return labels.astype(np.int32)


def output_dir(config, workdir: str) -> str:
  out = config.sample.output_dir
  return out if os.path.isabs(out) else os.path.join(workdir, out)


def _base_samples(config, num_samples: int):
  """(low-res images [N, h, w, C] in [-1, 1], their labels) for a super-resolution model."""
  path = config.sample.base_samples
  if not path:
    raise ValueError(
      "a super-resolution model samples from base images: set "
      "sample.base_samples to an npz of base samples (arr_0, arr_1)"
    )
  with np.load(path) as base:
    low_res = base["arr_0"].astype(np.float32) / 127.5 - 1.0
    labels = base["arr_1"] if "arr_1" in base.files else np.zeros(len(low_res), np.int32)
  if low_res.shape[1] != config.model.small_size:
    raise ValueError(
      f"base samples are {low_res.shape[1]}px, the model upsamples "
      f"{config.model.small_size}px images"
    )
  num = min(num_samples, len(low_res))
  return low_res, labels[:num].astype(np.int32), num


def sampling_settings(config, step: int) -> Dict[str, Any]:
  """Everything that decides the samples of a run; parts are kept per these settings."""
  s = config.sample
  keys = (
    "num_samples",
    "batch_size",
    "sampler",
    "steps",
    "timestep_respacing",
    "time_schedule",
    "thresholding",
    "eta",
    "use_ema",
    "ema_index",
    "clip_denoised",
    "classifier_scale",
    "cfg_scale",
    "classifier_path",
    "checkpoint_path",
    "labels",
    "seed",
    "base_samples",
    "solver_order",
    "unipc_variant",
  )
  settings = {k: s[k] for k in keys}
  if s.sampler == "ddim" and s.classifier_scale:
    settings["clip_guided"] = s.clip_guided  # (keys only the runs it changes)
  m = config.model
  settings.update(checkpoint_step=step, image_shape=[m.image_size, m.image_size, m.in_channels])
  return settings


def settings_tag(settings: Dict[str, Any]) -> str:
  return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def parts_directory(out_dir: str, settings: Dict[str, Any]) -> str:
  """Where the finished batches (part_XXXXX.npz) of one set of settings wait."""
  return os.path.join(out_dir, f"parts_{settings_tag(settings)}")


def _final_path(out_dir: str, shape, settings: Dict[str, Any]) -> str:
  """samples_NxHxWxC.npz, unless a file of that name holds samples of other settings (then
  the settings' tag is added: an earlier run's samples are never overwritten)."""
  name = "samples_" + "x".join(str(v) for v in shape)
  path = os.path.join(out_dir, name + ".npz")
  info = path[: -len(".npz")] + ".json"
  if os.path.exists(path):
    try:
      with open(info) as f:
        same = json.load(f).get("settings") == settings
    except (OSError, ValueError):
      same = False
    if not same:
      path = os.path.join(out_dir, f"{name}_{settings_tag(settings)}.npz")
  return path


_SAMPLERS: Dict[str, Any] = {}
_SAMPLERS_KEPT = 8


def compiled_sampler(config, network, classifier, process, spec, mesh):
  """sampling.make_sample_fn for a network (+ classifier) and the config's guidance, kept per
  process for the same modules, process, sampler and mesh (a later run reuses its traced and
  compiled program: sweeps over seeds or sample counts, tests)."""
  s = config.sample
  key = json.dumps(
    [
      repr(network.module),
      repr(classifier.module) if classifier else None,
      config_base.diffusion_kwargs(config, ""),
      dataclasses.astuple(spec),
      s.cfg_scale,
      s.classifier_scale,
      s.clip_denoised,
      config.model.class_cond,
      config.model.num_classes,
      [d.id for d in mesh.devices.flat],
    ],
    default=str,
  )
  if key not in _SAMPLERS:
    if len(_SAMPLERS) >= _SAMPLERS_KEPT:
      _SAMPLERS.pop(next(iter(_SAMPLERS)))
    _SAMPLERS[key] = sampling.make_sample_fn(
      network.inference_fn(),
      process,
      network.image_shape,
      spec,
      class_cond=config.model.class_cond,
      cfg_scale=s.cfg_scale,
      null_label=config.model.num_classes,
      classifier_fn=classifier.inference_fn() if classifier else None,
      classifier_scale=s.classifier_scale,
      clip_denoised=s.clip_denoised,
      out_shardings=shd.replicated(mesh),
    )
  return _SAMPLERS[key]


def run(config, workdir: str, mesh=None, overrides: Sequence[str] = ()) -> report_lib.RunReport:
  """--mode=sample: N samples into the reference's npz (arr_0 uint8 NHWC, arr_1 labels) + grid.

  Batches are written as they finish (part_XXXXX.npz in a folder keyed by the settings); an
  interrupted run with the same settings picks up at the first missing part, a run with other
  settings (seed, sampler, checkpoint step, ...) starts its own. Batch i uses key
  fold_in(key(seed), i), so results do not depend on interruptions or the number of devices.
  overrides: the config keys set on the command line (a network setting among them that
  contradicts the checkpoint's is refused; see adm_jax.restore).
  """
  started = time.perf_counter()
  scfg = config.sample
  mesh = mesh or shd.create_mesh(1)
  out_dir = output_dir(config, workdir)
  validation.validate(config, "sample", out_dir, devices=mesh.size)
  spec = sampling.SamplerSpec.from_config(scfg)
  # The networks first: a missing checkpoint or a contradicting flag stops before anything
  # is written.
  config, network, params, step = restore.sampling_model(config, workdir, mesh, overrides)
  classifier, classifier_params = None, None
  if scfg.classifier_scale:
    classifier, classifier_params = restore.guidance_classifier(config, workdir, mesh, overrides)
  with workdir_lib.WorkdirLock(out_dir, "sample", jax.process_index()):
    shape = network.image_shape
    process = networks.diffusion_process(config)
    sample_fn = compiled_sampler(config, network, classifier, process, spec, mesh)
    num_samples = scfg.num_samples
    low_res_all = None
    if config.model.small_size:  # two-stage sampling: upsample base samples with their labels
      low_res_all, labels, num_samples = _base_samples(config, num_samples)
    else:
      labels = parse_labels(scfg.labels, num_samples, config.model.num_classes, scfg.seed)
    settings = sampling_settings(config, step)
    parts = parts_directory(out_dir, settings)
    if jax.process_index() == 0:
      os.makedirs(parts, exist_ok=True)
      files.write_text(
        os.path.join(parts, "settings.json"),
        json.dumps(settings, indent=2),
        "the sampling settings",
      )
    num_batches = -(-num_samples // scfg.batch_size)
    base_key = jax.random.PRNGKey(scfg.seed)
    local = scfg.batch_size // jax.process_count()
    mine = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    log.info(
      "sampling %d images with %s (checkpoint step %s) into %s",
      num_samples,
      spec.describe(),
      step,
      out_dir,
    )
    bar = tqdm.tqdm(
      range(num_batches), desc="sample", unit="batch", disable=jax.process_index() != 0
    )
    for i in bar:
      part = os.path.join(parts, f"part_{i:05d}.npz")
      if os.path.exists(part):
        continue  # finished by an earlier, interrupted run with the same settings
      rows = np.arange(i * scfg.batch_size, (i + 1) * scfg.batch_size)
      batch_labels = np.resize(
        labels[i * scfg.batch_size : (i + 1) * scfg.batch_size], scfg.batch_size
      )
      y = shd.global_batch(batch_labels[mine], mesh)
      extra = None
      if low_res_all is not None:
        extra = {
          "low_res": shd.global_batch(low_res_all[np.minimum(rows, num_samples - 1)][mine], mesh)
        }
      images = sample_fn(params, jax.random.fold_in(base_key, i), y, classifier_params, extra)
      if jax.process_index() == 0:
        arr_0 = sampling.to_uint8(jax.device_get(images))
        with files.atomic_path(
          part,
          f"sample part {i}",
          needed=arr_0.nbytes,
          resume=f"the {i} finished parts are kept: it resumes at part {i}",
        ) as tmp:
          np.savez(tmp, arr_0=arr_0, arr_1=batch_labels)
    bar.close()
    report = report_lib.RunReport("sample", directory=out_dir, step=step if step >= 0 else None)
    if jax.process_index() != 0:
      return report
    loaded = [np.load(os.path.join(parts, f"part_{i:05d}.npz")) for i in range(num_batches)]
    arr_0 = np.concatenate([p["arr_0"] for p in loaded])[:num_samples]
    arr_1 = np.concatenate([p["arr_1"] for p in loaded])[:num_samples]
    path = _final_path(out_dir, arr_0.shape, settings)
    with files.atomic_path(
      path,
      "the samples file",
      needed=arr_0.nbytes,
      resume="every part is kept: it only joins them again",
    ) as tmp:
      np.savez(tmp, arr_0=arr_0, arr_1=arr_1)
    info = {
      "settings": settings,
      "checkpoint_step": step,
      "num_samples": int(arr_0.shape[0]),
      "sampler": spec.describe(),
      "nfe_per_image": spec.nfe(process),
      "npz": path,
    }
    for info_path in (path[: -len(".npz")] + ".json", os.path.join(out_dir, "sample_info.json")):
      files.write_text(info_path, json.dumps(info, indent=2), "the samples' record")
    grid = sampling.save_grid(
      os.path.join(out_dir, "grid.png"), arr_0[:64], scale=max(1, 128 // shape[0])
    )
    shutil.rmtree(parts)  # every part is in the npz now
  report.outputs.update(samples=path, grid=grid)
  report.metrics = {"num_samples": int(arr_0.shape[0]), "nfe_per_image": info["nfe_per_image"]}
  report.wall_s = time.perf_counter() - started
  report.notes.append(
    f"{spec.describe()}; {report.metrics['num_samples']} images in "
    f"{report.wall_s / max(num_samples, 1) * 1e3:.1f} ms per image"
  )
  report.next_mode = "eval"
  report.next_overrides = [f"--config.sample.sample_npz={path}"]
  return report
