"""Benchmarks: `python -m adm_jax.bench --preset=cpu_quick` (prints a table, writes JSON).

Measures, after warm-up, medians over repeats (block_until_ready around each call):
  * train step (forward + backward + AdamW + EMA): seconds, images/s, compile time;
  * sampling: seconds per denoising step inside one jitted lax.scan loop, for ancestral and
    DDIM, unguided, classifier-guided (classifier of the same config) and classifier-free;
  * model FLOPs per image from the compiled cost analysis (→ MFU given a peak FLOP/s);
  * memory: the compiled train step's memory analysis for the released configurations
    (preset `memory`), float32 / bfloat16, with and without remat.
Presets: cpu_quick (the bench32 config, batch 16, few repeats: < 5 min on 2 cores), bench32
(more repeats), memory; --config=NAME / FILE.py / reference-style FILE.json for any model.
--profile=DIR also traces a few train steps with jax.profiler and prints the op kinds that took
the most time. The library behind it: adm_jax.benchmarks.
"""

import json
import os
import sys
from typing import Any, Dict

from absl import app
from absl import flags
import jax
import ml_collections

from adm_jax import config_base
from adm_jax import memory_plan
from adm_jax import xla_env
from adm_jax.benchmarks import compare
from adm_jax.benchmarks import memory
from adm_jax.benchmarks import profile
from adm_jax.benchmarks import timing
from adm_jax.data import sources
from adm_jax.data import throughput
from adm_jax.training import update

DEFAULT_CONFIG = "bench32"  # configs/bench32.py

_PRESET = flags.DEFINE_string("preset", "cpu_quick", "cpu_quick | bench32 | memory | data")
_CONFIG = flags.DEFINE_string(
  "config", "", f"A config name or file, or a reference-style JSON (default: {DEFAULT_CONFIG})."
)
_BATCH = flags.DEFINE_integer("batch", 16, "Global batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 0, "Timed repeats (0: the preset's).")
_SAMPLE_STEPS = flags.DEFINE_integer("sample_steps", 0, "Steps of each timed sampling loop.")
_MICROBATCH = flags.DEFINE_integer(
  "microbatch",
  0,
  "Train step: split the batch into microbatches of this size, gradients "
  "accumulated in a lax.scan (same update; 0: the config's train.microbatch).",
)
_DTYPE = flags.DEFINE_string("dtype", "", "Compute dtype override: float32 | bfloat16.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Accelerator peak TFLOP/s for MFU (0: skip).")
_OUT = flags.DEFINE_string("out", "bench.json", "Where to write the JSON results.")
_SKIP = flags.DEFINE_list("skip", [], "Parts to skip: train, sample, guided, cfg, components.")
_SAMPLERS = flags.DEFINE_list(
  "samplers",
  ["ddpm", "ddim", "dpmpp_2m"],
  "Samplers whose steps are timed (any of sample.sampler's).",
)
_COMPARE = flags.DEFINE_string(
  "compare",
  "",
  "JSON written by the reference harness's bench.py (--out): its medians are "
  "printed beside ours, with the ratio ours / reference.",
)
_PROFILE = flags.DEFINE_string(
  "profile",
  "",
  "Directory: also trace 3 train steps with jax.profiler there (open it with "
  "XProf / TensorBoard's profile plugin) and print the op kinds taking the most time.",
)
_PLAN = flags.DEFINE_bool(
  "plan",
  False,
  "Memory plan of --config: compile its train step at per-device batch 4 and 8 "
  "per remat policy (minutes per compile for the paper's models) and print, per device kind, "
  "the per-device batch, microbatch, remat policy and FSDP that fit.",
)
_PLAN_POLICIES = flags.DEFINE_list(
  "plan_policies", ["none", "convs_saveable"], "Remat policies the plan compiles."
)
_PLAN_KINDS = flags.DEFINE_list(
  "plan_devices",
  list(memory_plan.DEVICE_KINDS),
  f"Device kinds of the plan: {', '.join(memory_plan.DEVICE_KINDS)}, or COUNTxGIB (e.g. 8x96).",
)
_DATA_DIR = flags.DEFINE_string(
  "data_dir",
  "",
  "--preset=data: a TFDS data_dir holding imagenet2012 (its train split); "
  "empty: synthetic JPEGs of ImageNet's size mix.",
)
_DATA_SECONDS = flags.DEFINE_float("data_seconds", 10.0, "--preset=data: seconds per point.")
_MEMORY_CONFIGS = flags.DEFINE_list(
  "memory_configs",
  [],
  "Configs for --preset=memory (names in configs/; default: every released one).",
)

PRESETS = {
  "cpu_quick": dict(repeats=3, sample_steps=5, warmup=1),
  "bench32": dict(repeats=10, sample_steps=12, warmup=2),
  "memory": dict(repeats=0, sample_steps=0, warmup=0),
  "data": dict(repeats=0, sample_steps=0, warmup=0),
}


def load_config(path: str) -> ml_collections.ConfigDict:
  """The benchmark's config: a name or file of configs/, or a reference-style JSON."""
  path = path or DEFAULT_CONFIG
  if path.endswith(".json"):
    return config_base.from_reference_json(path)
  return config_base.from_config_file(path)


def main(argv):
  del argv
  xla_env.configure_for_cpu()
  preset = PRESETS.get(_PRESET.value)
  if preset is None:
    raise app.UsageError(f"unknown --preset {_PRESET.value!r}; expected one of {list(PRESETS)}")
  repeats = _REPEATS.value or preset["repeats"]
  steps = _SAMPLE_STEPS.value or preset["sample_steps"]
  results: Dict[str, Any] = {
    "preset": _PRESET.value,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()[:1]],
    "jax": jax.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  if _PLAN.value:
    if not _CONFIG.value:
      raise app.UsageError("--plan needs --config (a config name or file)")
    try:
      results["plan"] = memory.run_plan(
        _CONFIG.value, _PLAN_POLICIES.value, _PLAN_KINDS.value, _DTYPE.value
      )
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  elif _PRESET.value == "data":
    source = (
      sources.TfdsSource("imagenet2012", "train", _DATA_DIR.value)
      if _DATA_DIR.value
      else throughput.BytesSource.imagenet_like(300)
    )
    print(f"# decoded + preprocessed images/s of {source.name} ({len(source)} images)", flush=True)
    results["data"] = throughput.table(
      source,
      sizes=(64, 128, 256, 512),
      workers=sorted({1, os.cpu_count() or 1}),
      seconds=_DATA_SECONDS.value,
    )
    for row in results["data"]:
      print(json.dumps(row), flush=True)
  elif _PRESET.value == "memory":
    results["memory"] = memory.bench_memory(tuple(_MEMORY_CONFIGS.value) or memory.RELEASED)
    memory.print_memory_table(results["memory"])
  else:
    config = load_config(_CONFIG.value)
    if _DTYPE.value:
      config.model.dtype = _DTYPE.value
    results["config"] = json.loads(config.to_json())
    results["batch"] = _BATCH.value
    if "train" not in _SKIP.value:
      try:  # the bench's train step runs on one device
        update.microbatch_count(_BATCH.value, _MICROBATCH.value or config.train.microbatch)
      except ValueError as e:
        raise app.UsageError(f"--microbatch / --batch: {e}") from e
      results["train"] = timing.bench_train(
        config,
        _BATCH.value,
        repeats,
        preset["warmup"],
        _MICROBATCH.value,
        profile_dir=_PROFILE.value,
      )
      if _PEAK.value and "train_flops_per_image" in results["train"]:
        achieved = results["train"]["train_flops_per_image"] * results["train"]["images_per_s"]
        results["train"]["mfu"] = achieved / (_PEAK.value * 1e12)
    if "sample" not in _SKIP.value:
      results["sample"] = timing.bench_sample(
        config, _BATCH.value, steps, repeats, preset["warmup"], _SKIP.value, tuple(_SAMPLERS.value)
      )
    if "components" not in _SKIP.value:
      results["components"] = timing.bench_components(
        config, _BATCH.value, repeats, preset["warmup"]
      )
    if _COMPARE.value:
      results["reference"] = compare.reference_medians(_COMPARE.value)
    compare.print_table(results)
    if "profile" in results.get("train", {}):
      profile.print_profile(results["train"]["profile"])
  with open(_OUT.value, "w") as f:
    json.dump(results, f, indent=2)
  print(f"results written to {_OUT.value}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
