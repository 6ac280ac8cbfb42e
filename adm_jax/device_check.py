"""One-shot check of an accelerator: `python -m adm_jax.device_check` (experiments/device_check.sh).

In under 8 minutes on one NVIDIA H100 / H200 (or a TPU host), prints one table:
  1. parity: one train step (loss, gradient norm, updated parameters) and one classifier-guided
     ancestral sampling step of the Fashion-MNIST UNet and classifier (configs/fashion_mnist.py,
     random weights) on the accelerator against the same step on
     the host CPU, from the same state, batch and keys (float32; tolerances below: XLA:GPU runs
     float32 matmuls and convolutions in TF32 by default, XLA:TPU in bf16 passes);
  2. ADM-128 (configs/imagenet128.py, bfloat16, 421M parameters) train step: images/s and MFU
     at the largest per-device batch of --batches that fits, and its peak memory;
  3. classifier-guided sampling steps/s of ADM-128 with its classifier (ancestral, batch 64).
On a machine without an accelerator it runs the same on the CPU (parity then compares the
CPU with itself) so that the script itself is tested.
"""

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from adm_jax import config_base
from adm_jax import experiment
from adm_jax import networks
from adm_jax import sampling
from adm_jax import sharding as shd
from adm_jax.benchmarks import timing

# |accelerator - CPU| / max(|CPU|, floor): float32 on a GPU uses TF32 (10-bit mantissa) for
# convolutions and matmuls unless jax_default_matmul_precision is 'highest'.
TOLERANCE = {"loss": 5e-3, "grad_norm": 2e-2, "params": 2e-3, "sample": 5e-3}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "v5e": 197.0, "v4": 275.0, "v5p": 459.0}


def _accelerator():
  devices = jax.devices()
  return devices[0] if devices[0].platform != "cpu" else None


def _peak_tflops(device) -> float:
  kind = getattr(device, "device_kind", "") if device is not None else ""
  return next((v for k, v in PEAK_TFLOPS.items() if k.lower() in kind.lower()), 0.0)


def _relative(a, b, floor=1e-3):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), floor))


def parity(config, device) -> dict:
  """One train step and one guided sampling step on `device` and on the CPU, compared."""
  cpu = jax.devices("cpu")[0]
  out = {}
  runs = {}
  for name, dev in (("cpu", cpu), ("device", device)):
    if dev is None:  # no accelerator: the CPU against itself (the check's plumbing still runs)
      runs[name] = runs["cpu"]
      continue
    with jax.default_device(dev):
      exp = experiment.build(config, shd.create_mesh(1, [dev]), donate=False)
      state = exp.init_state()
      batch = jax.device_put(timing.random_batch(exp), dev)
      new, metrics = exp.train_step(state, batch)
      classifier = networks.classifier(config)
      sample_fn = sampling.make_sample_fn(
        exp.network.inference_fn(),
        exp.diffusion,
        exp.image_shape,
        sampling.SamplerSpec("ddpm", 1),
        class_cond=True,
        classifier_fn=classifier.inference_fn(),
        classifier_scale=1.0,
      )
      labels = jnp.arange(4, dtype=jnp.int32) % config.model.num_classes
      images = sample_fn(
        new.params, jax.random.PRNGKey(3), labels, jax.jit(classifier.init)(jax.random.PRNGKey(1))
      )
      runs[name] = jax.device_get((metrics, new.params, images))
  (m_cpu, p_cpu, s_cpu), (m_dev, p_dev, s_dev) = runs["cpu"], runs["device"]
  out["loss"] = _relative(m_dev["weighted_loss"], m_cpu["weighted_loss"])
  out["grad_norm"] = _relative(m_dev["grad_norm"], m_cpu["grad_norm"])
  out["params"] = max(
    _relative(a, b) for a, b in zip(jax.tree.leaves(p_dev), jax.tree.leaves(p_cpu))
  )
  out["sample"] = _relative(s_dev, s_cpu)
  out["ok"] = all(out[k] <= TOLERANCE[k] for k in TOLERANCE)
  return out


def train_throughput(config, batches, steps: int) -> dict:
  """images/s, MFU and peak memory of the train step at the largest per-device batch that fits."""
  for batch in batches:
    try:
      exp = timing.build_train(config, batch)
      state, data = exp.init_state(), timing.random_batch(exp)
      stats, compiled = timing.compile_stats(exp.train_step, state, data)
      holder = {"state": state}

      def one():
        holder["state"], metrics = compiled(holder["state"], data)
        return metrics["weighted_loss"]

      result = timing.timed(one, steps, 2)
    except Exception as e:  # pylint: disable=broad-except  (out of memory: try a smaller batch)
      if "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower():
        print(f"  batch {batch}: out of memory, trying a smaller one", flush=True)
        continue
      raise
    result.update(
      batch=batch,
      images_per_s=batch / result["median_s"],
      flops_per_image=stats.get("flops", 0.0) / batch,
      compile_s=stats["compile_s"],
    )
    return result
  return {}


def guided_sampling(config, batch: int, steps: int, repeats: int) -> dict:
  """Seconds per classifier-guided ancestral step (one UNet forward + classifier gradient)."""
  results = timing.bench_sample(config, batch, steps, repeats, 1, skip=["cfg"], samplers=("ddpm",))
  r = results["ddpm_classifier"]
  return {
    "s_per_step": r["s_per_step"],
    "steps_per_s": 1.0 / r["s_per_step"],
    "batch": batch,
    "images_steps_per_s": batch / r["s_per_step"],
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--small", default="fashion_mnist", help="config of the parity check")
  parser.add_argument("--big", default="imagenet128", help="config of the throughput checks")
  parser.add_argument(
    "--batches", default="64,48,32,16,8,4", help="per-device train batches to try, largest first"
  )
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--sample_batch", type=int, default=64)
  parser.add_argument("--out", default="device_check.json")
  args = parser.parse_args(argv)
  device = _accelerator()
  start = time.perf_counter()
  print(
    f"device: {device.device_kind if device else 'none (CPU only)'}; jax {jax.__version__}",
    flush=True,
  )
  small = config_base.from_config_file(args.small)
  small.train.update(batch_size=4, microbatch=-1)
  results = {"device": device.device_kind if device else "cpu", "parity": parity(small, device)}
  print(f"parity: {json.dumps(results['parity'])}", flush=True)
  big = config_base.from_config_file(args.big)
  big.model.dtype = "bfloat16"
  results["train"] = train_throughput(big, [int(b) for b in args.batches.split(",")], args.steps)
  peak = _peak_tflops(device)
  train = results["train"]
  if train and peak:
    train["mfu"] = train["flops_per_image"] * train["images_per_s"] / (peak * 1e12)
  results["guided"] = guided_sampling(big, args.sample_batch, 5, 3)
  stats = (device.memory_stats() or {}) if device is not None else {}
  results["peak_GiB"] = stats.get("peak_bytes_in_use", 0) / 2**30
  results["wall_s"] = time.perf_counter() - start
  with open(args.out, "w") as f:
    json.dump(results, f, indent=2)
  p = results["parity"]
  rows = [
    (
      "parity train step: loss / grad norm / params (rel.)",
      f"{p['loss']:.1e} / {p['grad_norm']:.1e} / {p['params']:.1e}",
      f"<= {TOLERANCE['loss']:.0e} / {TOLERANCE['grad_norm']:.0e} / {TOLERANCE['params']:.0e}",
    ),
    ("parity guided sampling step (rel.)", f"{p['sample']:.1e}", f"<= {TOLERANCE['sample']:.0e}"),
    (f"{args.big} bf16 train: per-device batch", str(train.get("batch", "none fits")), ""),
    ("  images/s", f"{train.get('images_per_s', 0):.1f}", f"step {train.get('median_s', 0):.3f} s"),
    (
      "  MFU",
      f"{100 * train['mfu']:.1f}%" if "mfu" in train else "-",
      f"peak {peak:.0f} TFLOP/s" if peak else "peak unknown",
    ),
    (
      f"{args.big} guided ancestral steps/s (batch {args.sample_batch})",
      f"{results['guided']['steps_per_s']:.2f}",
      "",
    ),
    ("peak memory", f"{results['peak_GiB']:.1f} GiB", ""),
    ("parity within tolerance", "yes" if p["ok"] else "NO", ""),
    ("wall time", f"{results['wall_s']:.0f} s", ""),
  ]
  width = max(len(r[0]) for r in rows)
  print("\n" + "\n".join(f"{a:{width}s}  {b:>22s}  {c}" for a, b, c in rows))
  return 0 if p["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
