"""Benchmarks: `python -m adm_jax.bench --preset=cpu_quick` (prints a table, writes JSON).

Measures, after warm-up, medians over repeats (block_until_ready around each call):
  * train step (forward + backward + AdamW + EMA): seconds, images/s, compile time;
  * sampling: seconds per denoising step inside one jitted lax.scan loop, for ancestral and
    DDIM, unguided, classifier-guided (classifier of the same config) and classifier-free;
  * model FLOPs per image from the compiled cost analysis (→ MFU given a peak FLOP/s);
  * memory: the compiled train step's memory analysis for the released configurations
    (preset `memory`), float32 / bfloat16, with and without remat.
Presets: cpu_quick (bench32 config, batch 16, few repeats: < 5 min on 2 cores), bench32
(more repeats), memory, or --config=FILE.py / FILE.json for any model.
--profile=DIR also traces a few train steps with jax.profiler and prints the op kinds that took
the most time.
"""
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from adm_jax import config_base
from adm_jax import experiment
from adm_jax import guidance
from adm_jax import memory_plan
from adm_jax import sampling
from adm_jax import sharding as shd
from adm_jax import xla_env
from adm_jax.training import state as state_lib
from adm_jax.training import update

BENCH32 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                       "ref-harness", "configs_bench32.json")

_PRESET = flags.DEFINE_string("preset", "cpu_quick", "cpu_quick | bench32 | memory")
_CONFIG = flags.DEFINE_string("config", "", "A configs/*.py file or a reference-style JSON.")
_BATCH = flags.DEFINE_integer("batch", 16, "Global batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 0, "Timed repeats (0: the preset's).")
_SAMPLE_STEPS = flags.DEFINE_integer("sample_steps", 0, "Steps of each timed sampling loop.")
_MICROBATCH = flags.DEFINE_integer(
    "microbatch", 0, "Train step: split the batch into microbatches of this size, gradients "
    "accumulated in a lax.scan (same update; 0: the config's train.microbatch).")
_DTYPE = flags.DEFINE_string("dtype", "", "Compute dtype override: float32 | bfloat16.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Accelerator peak TFLOP/s for MFU (0: skip).")
_OUT = flags.DEFINE_string("out", "bench.json", "Where to write the JSON results.")
_SKIP = flags.DEFINE_list("skip", [], "Parts to skip: train, sample, guided, cfg, components.")
_SAMPLERS = flags.DEFINE_list("samplers", ["ddpm", "ddim", "dpmpp_2m"],
                              "Samplers whose steps are timed (any of sample.sampler's).")
_COMPARE = flags.DEFINE_string(
    "compare", "", "JSON written by ../shared/ref-harness/bench.py (--out): its medians are "
    "printed beside ours, with the ratio ours / reference.")
_PROFILE = flags.DEFINE_string(
    "profile", "", "Directory: also trace 3 train steps with jax.profiler there (open it with "
    "XProf / TensorBoard's profile plugin) and print the op kinds taking the most time.")
_PLAN = flags.DEFINE_bool(
    "plan", False, "Memory plan of --config: compile its train step at per-device batch 1 and 2 "
    "per remat policy (minutes per compile for the paper's models) and print, per device kind, "
    "the per-device batch, microbatch, remat policy and FSDP that fit.")
_PLAN_POLICIES = flags.DEFINE_list("plan_policies", ["none", "convs_saveable"],
                                   "Remat policies the plan compiles.")
_PLAN_KINDS = flags.DEFINE_list("plan_devices", list(memory_plan.DEVICE_KINDS),
                                f"Device kinds of the plan: {', '.join(memory_plan.DEVICE_KINDS)}, "
                                "or COUNTxGIB (e.g. 8x96).")
_MEMORY_CONFIGS = flags.DEFINE_list("memory_configs", [], "Configs for --preset=memory "
                                    "(names in configs/; default: every released one).")

PRESETS = {"cpu_quick": dict(repeats=3, sample_steps=5, warmup=1),
           "bench32": dict(repeats=10, sample_steps=12, warmup=2),
           "memory": dict(repeats=0, sample_steps=0, warmup=0)}


def config_from_json(path: str) -> ml_collections.ConfigDict:
  """A config from the reference harness's JSON (model / classifier flag dicts)."""
  with open(path) as f:
    raw = json.load(f)
  c = config_base.base_config()
  model = dict(raw["model"])
  diffusion_keys = [k for k in model if k in c.diffusion]
  c.diffusion.update({k: model.pop(k) for k in diffusion_keys})
  c.model.update({k: v for k, v in model.items() if k in c.model})
  c.classifier.update({k: v for k, v in raw.get("classifier", {}).items() if k in c.classifier})
  return c


def load_config(preset: str, path: str) -> ml_collections.ConfigDict:
  if path.endswith(".json"):
    return config_from_json(path)
  if path:
    return config_base.from_config_file(path)
  if not os.path.exists(BENCH32):
    raise FileNotFoundError(f"benchmark config {BENCH32} not found; pass --config")
  return config_from_json(BENCH32)


def timed(fn: Callable[[], Any], repeats: int, warmup: int) -> Dict[str, float]:
  """Median / min / max wall seconds of fn() (its result blocked on) after warm-up calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
          "n": len(times)}


def compile_stats(jitted, *args) -> Dict[str, Any]:
  """Trace + compile seconds, FLOPs and memory of a jitted function at these arguments."""
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  traced = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  out = {"trace_s": traced - start, "compile_s": done - traced}
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if cost and "flops" in cost:
    out["flops"] = float(cost["flops"])
  mem = compiled.memory_analysis()
  if mem is not None:
    for name in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                 "alias_size_in_bytes", "generated_code_size_in_bytes"):
      if hasattr(mem, name):
        out[name] = int(getattr(mem, name))
    out["total_bytes"] = (out.get("argument_size_in_bytes", 0) + out.get("output_size_in_bytes", 0)
                          + out.get("temp_size_in_bytes", 0) - out.get("alias_size_in_bytes", 0))
  return out, compiled


def bench_config(config, batch: int, microbatch: int = 0) -> ml_collections.ConfigDict:
  """The config with the benchmark's global batch (and microbatch size, 0: the config's)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.train.batch_size = batch
  if microbatch:
    config.train.microbatch = microbatch
  return config


def single_device_mesh():
  return shd.create_mesh(1, jax.devices()[:1])


def random_batch(exp: experiment.Experiment) -> Dict[str, jax.Array]:
  """A fixed batch of uniform images in [-1, 1] and labels for the train step."""
  rng = np.random.default_rng(0)
  n = exp.batch_size
  return {"image": jnp.asarray(rng.uniform(-1, 1, (n,) + exp.image_shape), jnp.float32),
          "label": jnp.asarray(rng.integers(0, exp.config.model.num_classes, n), jnp.int32)}


def build_train(config, batch: int, microbatch: int = 0) -> experiment.Experiment:
  """The production train step of a config (experiment.build: its timestep sampler, dropout,
  EMA, optimizer and microbatching) at the benchmark's batch, on one device."""
  return experiment.build(bench_config(config, batch, microbatch), single_device_mesh())


def bench_train(config, batch: int, repeats: int, warmup: int, microbatch: int = 0,
                profile_dir: str = "") -> Dict[str, Any]:
  exp = build_train(config, batch, microbatch)
  state, data = exp.init_state(), random_batch(exp)
  stats, compiled = compile_stats(exp.train_step, state, data)
  holder = {"state": state}

  def one():
    holder["state"], metrics = compiled(holder["state"], data)
    return metrics["weighted_loss"]

  result = timed(one, repeats, warmup)
  if profile_dir:
    result["profile"] = profile_steps(one, profile_dir, steps=3)
  result.update(stats)
  result["images_per_s"] = batch / result["median_s"]
  result["microbatches"] = exp.microbatches
  result["params"] = state_lib.param_count(holder["state"].params)
  if "flops" in stats:
    # XLA's cost analysis counts a while loop's body once: with microbatches that is one
    # microbatch's forward and backward (plus the update, which is small beside them).
    result["train_flops_per_image"] = stats["flops"] * exp.microbatches / batch
  return result


def profile_steps(fn: Callable[[], Any], directory: str, steps: int = 3) -> Dict[str, Any]:
  """Runs fn `steps` times under jax.profiler.trace(directory); returns the op summary."""
  os.makedirs(directory, exist_ok=True)
  with jax.profiler.trace(directory):
    for _ in range(steps):
      jax.block_until_ready(fn())
  return {"dir": directory, "steps": steps, "top_ops": op_time_summary(directory, steps)}


def op_time_summary(directory: str, steps: int, top: int = 15) -> List[Dict[str, Any]]:
  """Op kinds (XLA instruction names without their .N suffix) by traced time per step.

  Sums the events of XLA's op lines (CPU: the runtime's threads; GPU / TPU: the device's "XLA
  Ops" line) in the newest trace under `directory`. On CPU the events are thread time, and
  convolutions, which run asynchronously on the intra-op pool, appear only with their dispatch.
  """
  paths = sorted((os.path.join(root, name) for root, _, names in os.walk(directory)
                  for name in names if name.endswith(".xplane.pb")), key=os.path.getmtime)
  profile_data = getattr(jax.profiler, "ProfileData", None)
  if not paths or profile_data is None:  # ProfileData: jax >= 0.5
    return []
  totals: Dict[str, float] = {}
  counts: Dict[str, int] = {}
  for plane in profile_data.from_file(paths[-1]).planes:
    for line in plane.lines:
      if not ("XLA" in line.name and (plane.name.startswith("/host") or line.name == "XLA Ops")):
        continue
      for event in line.events:
        if event.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
          continue
        stem, _, suffix = event.name.rpartition(".")
        kind = stem if stem and suffix.isdigit() else event.name
        totals[kind] = totals.get(kind, 0.0) + event.duration_ns / 1e6 / steps
        counts[kind] = counts.get(kind, 0) + 1
  ranked = sorted(totals, key=totals.get, reverse=True)[:top]
  return [{"op": k, "ms_per_step": totals[k], "count_per_step": counts[k] / steps} for k in ranked]


def print_profile(profile: Dict[str, Any]) -> None:
  print(f"\nprofile of {profile['steps']} train steps in {profile['dir']} (thread time per step; "
        "on CPU convolutions are asynchronous and show only their dispatch)")
  for row in profile["top_ops"]:
    print(f"  {row['op']:32s} {row['ms_per_step']:9.2f} ms  {row['count_per_step']:7.1f} / step")


def _random_networks(config):
  """(UNet apply_fn, its params, classifier apply_fn, its params) with random weights."""
  model, init_unet = experiment.diffusion_network(config)
  classifier, init_classifier = experiment.classifier_network(config)
  apply_fn = lambda p, x, t, y, **kw: model.apply({"params": p}, x, t, y=y, train=False, **kw)
  classifier_fn = lambda p, x, t: classifier.apply({"params": p}, x, t, train=False)
  return (apply_fn, jax.jit(init_unet)(jax.random.PRNGKey(0)), classifier_fn,
          jax.jit(init_classifier)(jax.random.PRNGKey(1)))


def bench_sample(config, batch: int, steps: int, repeats: int, warmup: int,
                 skip: List[str], samplers=("ddpm", "ddim")) -> Dict[str, Any]:
  """Seconds per network evaluation of the sample mode's jitted loops (sampling.make_sample_fn:
  each sampler x unguided, classifier-guided, classifier-free), random weights."""
  apply_fn, params, classifier_fn, clf_params = _random_networks(config)
  gd = experiment.diffusion_process(config)
  cond = config.model.class_cond
  labels = jnp.arange(batch, dtype=jnp.int32) % config.model.num_classes
  kinds = {"unguided": {}}
  if "guided" not in skip:
    kinds["classifier"] = dict(classifier_fn=classifier_fn, classifier_scale=1.0)
  if "cfg" not in skip and cond:
    kinds["cfg"] = dict(cfg_scale=1.0)
  shape = (config.model.image_size, config.model.image_size, config.model.in_channels)
  results = {}
  for sampler in samplers:
    for kind, guidance_kw in kinds.items():
      sample_fn = sampling.make_sample_fn(
          apply_fn, gd, shape, experiment.sampler_spec(sampler, steps), class_cond=cond,
          null_label=0, **guidance_kw)
      key = jax.random.PRNGKey(0)
      stats, compiled = compile_stats(sample_fn, params, key, labels, clf_params)
      r = timed(lambda: compiled(params, key, labels, clf_params), repeats, warmup)
      r = {"s_per_step": r["median_s"] / steps, "loop_median_s": r["median_s"],
           "steps": steps, "compile_s": stats["compile_s"], "trace_s": stats["trace_s"]}
      if "flops" in stats:  # XLA's cost analysis counts a while loop's body once
        r["flops_per_step_per_image"] = stats["flops"] / batch
      results[f"{sampler}_{kind}"] = r
  return results


def bench_components(config, batch: int, repeats: int, warmup: int) -> Dict[str, Any]:
  """Seconds of one jitted UNet forward and of one classifier gradient d log p(y|x_t) / dx_t.

  The two pieces of a guided sampling step, timed alone (the reference harness reports the
  same two as unet_forward_nograd and classifier_grad).
  """
  apply_fn, params, classifier_fn, clf_params = _random_networks(config)
  size, ch, cond = config.model.image_size, config.model.in_channels, config.model.class_cond
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, ch))
  t = jnp.full((batch,), 500, jnp.int32)
  y = jnp.arange(batch, dtype=jnp.int32) % config.model.num_classes
  forward_stats, forward = compile_stats(
      jax.jit(lambda p, x: apply_fn(p, x, t, y if cond else None)), params, x)
  grad_stats, grad = compile_stats(jax.jit(lambda cp, x: guidance.classifier_cond_fn(
      lambda a, b: classifier_fn(cp, a, b), 1.0)(x, t, y=y)), clf_params, x)
  out = {"unet_forward_s": timed(lambda: forward(params, x), repeats, warmup)["median_s"],
         "classifier_grad_s": timed(lambda: grad(clf_params, x), repeats, warmup)["median_s"]}
  if "flops" in forward_stats and "flops" in grad_stats:
    out["unet_forward_flops_per_image"] = forward_stats["flops"] / batch
    out["classifier_grad_flops_per_image"] = grad_stats["flops"] / batch
  return out


RELEASED = ("imagenet64", "imagenet128", "imagenet256", "imagenet256_uncond", "imagenet512",
            "upsample64_256", "upsample128_512")


MEMORY_SETTINGS = (("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True))


def bench_memory(configs_dir: str, names=RELEASED, settings=MEMORY_SETTINGS) -> List[Dict[str, Any]]:
  """Compiled train-step memory at batch 1 for each config (name in configs_dir) and
  (dtype, remat) setting."""
  rows = []
  for name in names:
    for dtype, remat in settings:
      config = bench_config(config_base.from_config_file(os.path.join(configs_dir, name + ".py")), 1)
      config.model.dtype, config.model.use_checkpoint = dtype, remat
      exp = experiment.build(config, single_device_mesh())
      stats, _ = compile_stats(exp.train_step, exp.abstract_state, exp.abstract_batch())
      gib = stats.get("total_bytes", 0) / 2 ** 30
      rows.append({"config": name, "dtype": dtype, "remat": remat, "GiB": gib,
                   "params": state_lib.param_count(exp.abstract_state.params),
                   "fits_16": gib <= 16, "fits_32": gib <= 32, "fits_80": gib <= 80,
                   "train_flops_per_image": stats.get("flops")})
      print(f"{name:20s} {dtype:9s} remat={remat!s:5s} {gib:8.2f} GiB", flush=True)
  return rows


def device_kinds(names) -> Dict[str, Any]:
  """{kind: (devices, GiB)} from known kind names or COUNTxGIB."""
  kinds = {}
  for name in names:
    if name in memory_plan.DEVICE_KINDS:
      kinds[name] = memory_plan.DEVICE_KINDS[name]
    else:
      try:
        count, gib = name.lower().split("x")
        kinds[name] = (int(count), float(gib))
      except ValueError:
        raise app.UsageError(f"--plan_devices: {name!r} is neither one of "
                             f"{', '.join(memory_plan.DEVICE_KINDS)} nor COUNTxGIB") from None
  return kinds


def run_plan(spec: str, policies, kind_names, dtype: str = "") -> Dict[str, Any]:
  """Fits per remat policy, then the plan per device kind; prints the table."""
  config = config_base.from_config_file(spec)
  if dtype:
    config.model.dtype = dtype
  kinds = device_kinds(kind_names)
  fits = []
  for policy in policies:
    start = time.perf_counter()
    fit = memory_plan.measure(config, policy)
    fits.append(fit)
    print(f"{spec} remat={policy}: {fit.fixed / 2 ** 30:.2f} GiB + {fit.per_example / 2 ** 30:.3f} "
          f"GiB per example (state {fit.state / 2 ** 30:.2f} GiB; {time.perf_counter() - start:.0f} s "
          "to compile)", flush=True)
  rows = memory_plan.table(spec, fits, config.train.batch_size, kinds)
  print(f"\n{spec} ({config.model.dtype}, global batch {config.train.batch_size}); estimates from "
        "XLA:CPU's memory analysis, 10% headroom")
  print(f"{'device':14s} {'per-device batch':>16s} {'microbatch':>10s} {'remat':>15s} {'fsdp':>5s} "
        f"{'GiB':>6s}")
  for r in rows:
    print(f"{r['device']:14s} {r['per_device_batch']:16d} {r['microbatch']:10d} {r['remat']:>15s} "
          f"{str(r['fsdp']):>5s} {r['GiB']:6.1f}")
  return {"fits": [dataclasses.asdict(f) for f in fits], "rows": rows}


# Our result name -> the reference harness's JSON key (medians of the same measurement).
REFERENCE_KEYS = {"train": "train_step", "ddpm_unguided": "p_sample_step_unguided",
                  "ddpm_classifier": "p_sample_step_guided", "ddim_unguided": "ddim_step_unguided",
                  "ddim_classifier": "ddim_step_guided", "unet_forward_s": "unet_forward_nograd",
                  "classifier_grad_s": "classifier_grad"}


def reference_medians(path: str) -> Dict[str, float]:
  """Medians (seconds) from a ref-harness bench.py JSON, under our result names.

  The harness times its EMA update apart from its train step; ours is inside the step, so the
  reference's train figure here is the sum of the two medians when both are given.
  """
  with open(path) as f:
    raw = json.load(f)
  medians = {ours: float(raw[ref]["median_s"]) for ours, ref in REFERENCE_KEYS.items() if ref in raw}
  if "train" in medians and "ema_update" in raw:
    medians["train"] += float(raw["ema_update"]["median_s"])
  return medians


def table_rows(results: Dict[str, Any]) -> List[List[str]]:
  """[name, ours, unit, reference, ratio, note] rows of the printed table."""
  ref = results.get("reference", {})
  rows = []

  def add(name, key, value, unit, note=""):
    r = ref.get(key)
    rows.append([name, f"{value:.3f}", unit, f"{r:.3f}" if r else "-",
                 f"{value / r:.2f}x" if r else "-", note])

  train = results.get("train")
  if train:
    micro = train.get("microbatches", 1)
    add("train step (fwd+bwd+AdamW+EMA)", "train", train["median_s"], "s",
        f"{train['images_per_s']:.1f} img/s, compile {train['compile_s']:.1f} s"
        + (f", batch as {micro} microbatches" if micro > 1 else ""))
  for name, r in results.get("sample", {}).items():
    add("sample " + name, name, r["s_per_step"], "s/step", f"loop compile {r['compile_s']:.1f} s")
  sample = results.get("sample", {})
  samplers = list(dict.fromkeys(name.rsplit("_", 1)[0] for name in sample))
  for sampler in samplers:
    plain, guided = sample.get(f"{sampler}_unguided"), sample.get(f"{sampler}_classifier")
    if plain and guided:
      overhead = guided["s_per_step"] / plain["s_per_step"] - 1
      r_plain = ref.get(f"{sampler}_unguided")
      r_guided = ref.get(f"{sampler}_classifier")
      r_over = f"{100 * (r_guided / r_plain - 1):.0f}%" if r_plain and r_guided else "-"
      rows.append([f"{sampler} guidance overhead", f"{100 * overhead:.0f}%", "", r_over, "-", ""])
  ddim = sample.get("ddim_classifier")
  for sampler in samplers:
    if sampler in sampling.SOLVERS and ddim and f"{sampler}_classifier" in sample:
      ratio = sample[f"{sampler}_classifier"]["s_per_step"] / ddim["s_per_step"]
      rows.append([f"{sampler} guided step / DDIM guided step", f"{ratio:.2f}x", "", "-", "-",
                   "the same network and classifier calls per step"])
  for key, value in results.get("components", {}).items():
    if key.endswith("_s"):
      add(key[:-len("_s")], key, value, "s")
  return rows


def print_table(results: Dict[str, Any]) -> None:
  header = ["benchmark", "adm_jax", "unit", "reference", "ratio", ""]
  rows = [header] + table_rows(results)
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  lines = [""]
  for row in rows:
    lines.append("  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))).rstrip())
  print("\n".join(lines))


def print_memory_table(rows: List[Dict[str, Any]]) -> None:
  print(f"\n{'config':20s} {'dtype':9s} {'remat':5s} {'GiB (batch 1)':>13s}  fits 16 / 32 / 80 GiB")
  for r in rows:
    fits = " / ".join("yes" if r[f"fits_{g}"] else "no" for g in (16, 32, 80))
    print(f"{r['config']:20s} {r['dtype']:9s} {r['remat']!s:5s} {r['GiB']:13.2f}  {fits}")


def main(argv):
  del argv
  xla_env.configure_for_cpu()
  preset = PRESETS.get(_PRESET.value)
  if preset is None:
    raise app.UsageError(f"unknown --preset {_PRESET.value!r}; expected one of {list(PRESETS)}")
  repeats = _REPEATS.value or preset["repeats"]
  steps = _SAMPLE_STEPS.value or preset["sample_steps"]
  results: Dict[str, Any] = {"preset": _PRESET.value, "backend": jax.default_backend(),
                             "devices": [str(d) for d in jax.devices()[:1]],
                             "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}
  if _PLAN.value:
    if not _CONFIG.value:
      raise app.UsageError("--plan needs --config (a config name or file)")
    results["plan"] = run_plan(_CONFIG.value, _PLAN_POLICIES.value, _PLAN_KINDS.value, _DTYPE.value)
  elif _PRESET.value == "memory":
    configs_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
    results["memory"] = bench_memory(configs_dir, tuple(_MEMORY_CONFIGS.value) or RELEASED)
    print_memory_table(results["memory"])
  else:
    config = load_config(_PRESET.value, _CONFIG.value)
    if _DTYPE.value:
      config.model.dtype = _DTYPE.value
    results["config"] = json.loads(config.to_json())
    results["batch"] = _BATCH.value
    if "train" not in _SKIP.value:
      try:  # the bench's train step runs on one device
        update.microbatch_count(_BATCH.value, _MICROBATCH.value or config.train.microbatch)
      except ValueError as e:
        raise app.UsageError(f"--microbatch / --batch: {e}") from e
      results["train"] = bench_train(config, _BATCH.value, repeats, preset["warmup"],
                                     _MICROBATCH.value, profile_dir=_PROFILE.value)
      if _PEAK.value and "train_flops_per_image" in results["train"]:
        achieved = results["train"]["train_flops_per_image"] * results["train"]["images_per_s"]
        results["train"]["mfu"] = achieved / (_PEAK.value * 1e12)
    if "sample" not in _SKIP.value:
      results["sample"] = bench_sample(config, _BATCH.value, steps, repeats, preset["warmup"],
                                       _SKIP.value, tuple(_SAMPLERS.value))
    if "components" not in _SKIP.value:
      results["components"] = bench_components(config, _BATCH.value, repeats, preset["warmup"])
    if _COMPARE.value:
      results["reference"] = reference_medians(_COMPARE.value)
    print_table(results)
    if "profile" in results.get("train", {}):
      print_profile(results["train"]["profile"])
  with open(_OUT.value, "w") as f:
    json.dump(results, f, indent=2)
  print(f"results written to {_OUT.value}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
