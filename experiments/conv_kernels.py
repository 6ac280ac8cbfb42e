"""Per-shape convolution timings: adm_jax's convolution and its two gradients, beside PyTorch's.

usage: python experiments/conv_kernels.py [--batch 16] [--repeats 20] [--out conv_kernels.json]

Times, for every distinct 3x3 convolution of the bench32 UNet (`../shared/ref-harness/
configs_bench32.json`, batch 16), the forward convolution, the input gradient and the kernel
gradient as `adm_jax.models.layers.conv2d` computes them (the kernel gradient includes its two
layout transposes), each jitted alone; and, when `torch` is importable, the same three with
`torch.nn.functional.conv2d` / `aten.convolution_backward` on 2 threads (NCHW, oneDNN), timed in a
separate process first (the two runtimes' thread pools disturb each other in one process).
Prints milliseconds (median of --repeats after a discarded first pass and 3 warm-ups) and the
JAX/torch ratio.

What it is for: the train step is convolution-bound on CPU, so this table says how much of the
gap to the reference is in the convolution kernels themselves (XLA:CPU's Eigen convolution vs.
torch's oneDNN) rather than in the model code. Rerun it when jaxlib changes. For timing the
reference, set the malloc variables of ../shared/cpu-perf-notes.md, as for the ref-harness.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (spatial size, input channels, output channels) of the bench32 UNet's 3x3 convolutions.
SHAPES = [
  (32, 64, 64),
  (32, 64, 128),
  (32, 128, 128),
  (32, 192, 64),
  (16, 128, 128),
  (16, 256, 128),
  (8, 128, 128),
  (8, 256, 128),
  (4, 128, 128),
]
PADDING = ((1, 1), (1, 1))


def median_ms(fn, repeats: int) -> float:
  # Not adm_jax.bench.timed: the torch child process must not import jax; one helper keeps the
  # protocol (3 warm-ups, median of `repeats`) the same for both backends.
  for _ in range(3):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def jax_functions(batch, size, cin, cout):
  """The three jitted parts of adm_jax's conv2d (forward, input gradient, kernel gradient) and
  their inputs: {part: (fn, args)}."""
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  import jax  # pylint: disable=g-import-not-at-top

  from adm_jax.models import layers  # pylint: disable=g-import-not-at-top

  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (batch, size, size, cin))
  kernel = jax.random.normal(keys[1], (3, 3, cin, cout))
  grad_out = jax.random.normal(keys[2], (batch, size, size, cout))
  forward = jax.jit(lambda x, k: layers.conv2d(x, k, 1, PADDING))
  input_grad = jax.jit(lambda x, k, g: jax.vjp(lambda a: layers.conv2d(a, k, 1, PADDING), x)[1](g))
  kernel_grad = jax.jit(lambda x, k, g: jax.vjp(lambda b: layers.conv2d(x, b, 1, PADDING), k)[1](g))
  return {
    "forward": (forward, (x, kernel)),
    "input_grad": (input_grad, (x, kernel, grad_out)),
    "kernel_grad": (kernel_grad, (x, kernel, grad_out)),
  }


def jax_times(batch, size, cin, cout, repeats):
  """Milliseconds of forward, input gradient, kernel gradient with adm_jax's conv2d rules."""
  import jax  # pylint: disable=g-import-not-at-top

  return {
    part: median_ms(lambda fn=fn, args=args: jax.block_until_ready(fn(*args)), repeats)
    for part, (fn, args) in jax_functions(batch, size, cin, cout).items()
  }


def torch_times(batch, size, cin, cout, repeats):
  """The same three with torch (NCHW, 2 threads)."""
  import torch  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(2)
  x = torch.randn(batch, cin, size, size)
  kernel = torch.randn(cout, cin, 3, 3)
  grad_out = torch.randn(batch, cout, size, size)
  conv_backward = torch.ops.aten.convolution_backward

  def backward(mask):
    return lambda: conv_backward(
      grad_out, x, kernel, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
    )

  with torch.no_grad():
    return {
      "forward": median_ms(lambda: torch.nn.functional.conv2d(x, kernel, padding=1), repeats),
      "input_grad": median_ms(backward([True, False, False]), repeats),
      "kernel_grad": median_ms(backward([False, True, False]), repeats),
    }


def torch_table(args):
  """{(size, cin, cout): times} from a child process, or None when torch is not installed."""
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    print("torch not installed: JAX columns only")
    return None
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "torch.json")
    subprocess.run(
      [
        sys.executable,
        os.path.abspath(__file__),
        "--backend=torch",
        f"--out={out}",
        f"--batch={args.batch}",
        f"--repeats={args.repeats}",
      ],
      check=True,
    )
    with open(out) as f:
      return {tuple(key): value for key, value in json.load(f)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", default="")
  parser.add_argument(
    "--backend",
    default="both",
    choices=["both", "torch"],
    help="torch: only the torch timings, as JSON into --out (the child process)",
  )
  args = parser.parse_args()
  if args.backend == "torch":
    torch_times(args.batch, *SHAPES[0], 5)  # the first timings of a process run slow: discarded
    with open(args.out, "w") as f:
      json.dump(
        [[list(shape), torch_times(args.batch, *shape, args.repeats)] for shape in SHAPES], f
      )
    return
  reference = torch_table(args)
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  from adm_jax import xla_env  # pylint: disable=g-import-not-at-top

  xla_env.configure_for_cpu()  # before JAX starts its CPU backend, as the entry points do
  jax_times(args.batch, *SHAPES[0], 5)  # the first timings of a process run slow: discarded
  rows = []
  print(
    f"{'H=W':>4} {'Cin':>4} {'Cout':>4} | "
    + " | ".join(
      f"{part:>11} jax ms{'  torch ms  ratio' if reference else ''}"
      for part in ("forward", "input_grad", "kernel_grad")
    )
  )
  totals = {"jax": 0.0, "torch": 0.0}
  for size, cin, cout in SHAPES:
    row = {
      "size": size,
      "cin": cin,
      "cout": cout,
      "gflop": 2 * args.batch * size * size * 9 * cin * cout / 1e9,
      "jax": jax_times(args.batch, size, cin, cout, args.repeats),
    }
    if reference:
      row["torch"] = reference[(size, cin, cout)]
    cells = []
    for part in ("forward", "input_grad", "kernel_grad"):
      cell = f"{row['jax'][part]:18.2f}"
      totals["jax"] += row["jax"][part]
      if reference:
        cell += f" {row['torch'][part]:9.2f} {row['jax'][part] / row['torch'][part]:6.2f}"
        totals["torch"] += row["torch"][part]
      cells.append(cell)
    print(f"{size:4d} {cin:4d} {cout:4d} | " + " | ".join(cells), flush=True)
    rows.append(row)
  summary = f"sum over shapes (one of each): jax {totals['jax']:.1f} ms"
  if reference:
    summary += f", torch {totals['torch']:.1f} ms, ratio {totals['jax'] / totals['torch']:.2f}"
  print(summary)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"batch": args.batch, "rows": rows, "totals_ms": totals}, f, indent=1)


if __name__ == "__main__":
  main()
