"""Timing of the production train step, the sampling loops and the guided step's parts.

Medians after warm-up (block_until_ready around each call), compile times, FLOPs from XLA's
cost analysis (a while loop's body counted once) and the compiled memory analysis.
"""

import statistics
import time
from typing import Any, Callable, Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from adm_jax import experiment
from adm_jax import guidance
from adm_jax import networks
from adm_jax import sampling
from adm_jax import sharding as shd
from adm_jax.benchmarks import profile
from adm_jax.training import state as state_lib


def timed(fn: Callable[[], Any], repeats: int, warmup: int) -> Dict[str, float]:
  """Median / min / max wall seconds of fn() (its result blocked on) after warm-up calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return {
    "median_s": statistics.median(times),
    "min_s": min(times),
    "max_s": max(times),
    "n": len(times),
  }


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
    for name in (
      "argument_size_in_bytes",
      "output_size_in_bytes",
      "temp_size_in_bytes",
      "alias_size_in_bytes",
      "generated_code_size_in_bytes",
    ):
      if hasattr(mem, name):
        out[name] = int(getattr(mem, name))
    out["total_bytes"] = (
      out.get("argument_size_in_bytes", 0)
      + out.get("output_size_in_bytes", 0)
      + out.get("temp_size_in_bytes", 0)
      - out.get("alias_size_in_bytes", 0)
    )
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
  return {
    "image": jnp.asarray(rng.uniform(-1, 1, (n,) + exp.image_shape), jnp.float32),
    "label": jnp.asarray(rng.integers(0, exp.config.model.num_classes, n), jnp.int32),
  }


def build_train(config, batch: int, microbatch: int = 0) -> experiment.Experiment:
  """The production train step of a config (experiment.build: its timestep sampler, dropout,
  EMA, optimizer and microbatching) at the benchmark's batch, on one device."""
  return experiment.build(bench_config(config, batch, microbatch), single_device_mesh())


def bench_train(
  config, batch: int, repeats: int, warmup: int, microbatch: int = 0, profile_dir: str = ""
) -> Dict[str, Any]:
  exp = build_train(config, batch, microbatch)
  state, data = exp.init_state(), random_batch(exp)
  stats, compiled = compile_stats(exp.train_step, state, data)
  holder = {"state": state}

  def one():
    holder["state"], metrics = compiled(holder["state"], data)
    return metrics["weighted_loss"]

  result = timed(one, repeats, warmup)
  if profile_dir:
    result["profile"] = profile.profile_steps(one, profile_dir, steps=3)
  result.update(stats)
  result["images_per_s"] = batch / result["median_s"]
  result["microbatches"] = exp.microbatches
  result["params"] = state_lib.param_count(holder["state"].params)
  if "flops" in stats:
    # XLA's cost analysis counts a while loop's body once: with microbatches that is one
    # microbatch's forward and backward (plus the update, which is small beside them).
    result["train_flops_per_image"] = stats["flops"] * exp.microbatches / batch
  return result


def random_networks(config):
  """(UNet inference fn, its params, classifier inference fn, its params), random weights."""
  unet, classifier = networks.unet(config), networks.classifier(config)
  return (
    unet.inference_fn(),
    jax.jit(unet.init)(jax.random.PRNGKey(0)),
    classifier.inference_fn(),
    jax.jit(classifier.init)(jax.random.PRNGKey(1)),
  )


def bench_sample(
  config,
  batch: int,
  steps: int,
  repeats: int,
  warmup: int,
  skip: List[str],
  samplers=("ddpm", "ddim"),
) -> Dict[str, Any]:
  """Seconds per network evaluation of the sample mode's jitted loops (sampling.make_sample_fn:
  each sampler x unguided, classifier-guided, classifier-free), random weights."""
  apply_fn, params, classifier_fn, clf_params = random_networks(config)
  gd = networks.diffusion_process(config)
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
        apply_fn,
        gd,
        shape,
        sampling.SamplerSpec(sampler, steps),
        class_cond=cond,
        null_label=0,
        **guidance_kw,
      )
      key = jax.random.PRNGKey(0)
      stats, compiled = compile_stats(sample_fn, params, key, labels, clf_params)
      r = timed(lambda: compiled(params, key, labels, clf_params), repeats, warmup)
      r = {
        "s_per_step": r["median_s"] / steps,
        "loop_median_s": r["median_s"],
        "steps": steps,
        "compile_s": stats["compile_s"],
        "trace_s": stats["trace_s"],
      }
      if "flops" in stats:  # XLA's cost analysis counts a while loop's body once
        r["flops_per_step_per_image"] = stats["flops"] / batch
      results[f"{sampler}_{kind}"] = r
  return results


def bench_components(config, batch: int, repeats: int, warmup: int) -> Dict[str, Any]:
  """Seconds of one jitted UNet forward and of one classifier gradient d log p(y|x_t) / dx_t.

  The two pieces of a guided sampling step, timed alone (the reference harness reports the
  same two as unet_forward_nograd and classifier_grad).
  """
  apply_fn, params, classifier_fn, clf_params = random_networks(config)
  size, ch, cond = config.model.image_size, config.model.in_channels, config.model.class_cond
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, ch))
  t = jnp.full((batch,), 500, jnp.int32)
  y = jnp.arange(batch, dtype=jnp.int32) % config.model.num_classes
  forward_stats, forward = compile_stats(
    jax.jit(lambda p, x: apply_fn(p, x, t, y if cond else None)), params, x
  )
  grad_stats, grad = compile_stats(
    jax.jit(
      lambda cp, x: guidance.classifier_cond_fn(lambda a, b: classifier_fn(cp, a, b), 1.0)(
        x, t, y=y
      )
    ),
    clf_params,
    x,
  )
  out = {
    "unet_forward_s": timed(lambda: forward(params, x), repeats, warmup)["median_s"],
    "classifier_grad_s": timed(lambda: grad(clf_params, x), repeats, warmup)["median_s"],
  }
  if "flops" in forward_stats and "flops" in grad_stats:
    out["unet_forward_flops_per_image"] = forward_stats["flops"] / batch
    out["classifier_grad_flops_per_image"] = grad_stats["flops"] / batch
  return out
