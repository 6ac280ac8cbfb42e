"""FSDP as sharding.py promises, counted in the programs: gradients constrained to the
parameter shardings right after value_and_grad (so that XLA:GPU / TPU turn the gradient
all-reduce + slice into a reduce-scatter), parameters all-gathered once per step (outside the
microbatch loop), kernel gradients accumulated per device and reduced once.

8 fake CPU devices as a ('data', 'fsdp') = 2 x 4 mesh. XLA:CPU has no reduce-scatter pass,
so on CPU the check is on where the collectives sit; the sharding constraints are checked
in the cuda / tpu StableHLO.
"""

import collections
import functools
import re

import jax
import pytest
from test_lowering import tiny_config

from adm_jax import experiment
from adm_jax import sharding as shd

# Its tests share module-level traced programs / fixtures: one worker runs them all.
pytestmark = pytest.mark.xdist_group("fsdp")

KERNEL = re.compile(r"f32\[\d+,\d+,\d+,\d+\]")  # a convolution kernel's shape


@functools.lru_cache(maxsize=None)
def fsdp_experiment(microbatch=-1):
  config = tiny_config("float32")
  config.train.update(fsdp=4, fsdp_min_size=256, batch_size=16, microbatch=microbatch)
  return experiment.build(config, shd.create_mesh(4), donate=False)


def sharded_params(exp):
  return [x for x in jax.tree.leaves(exp.abstract_state.params) if "fsdp" in str(x.sharding.spec)]


def computations(hlo: str):
  """{computation name: its instruction lines} of compiled HLO text, and the while bodies."""
  comps, name, bodies = collections.defaultdict(list), None, set()
  for line in hlo.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header:
      name = header.group(1)
      continue
    if name:
      comps[name].append(line)
      body = re.search(r" while\(.*body=%?([\w.\-]+)", line)
      if body:
        bodies.add(body.group(1))
  return comps, bodies


def collectives(lines, op):
  return [ln for ln in lines if re.search(rf" {op}(-start)?\(", ln)]


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_gradients_are_constrained_to_the_parameter_shardings(platform):
  exp = fsdp_experiment()
  text = str(
    exp.train_step.trace(exp.abstract_state, exp.abstract_batch())
    .lower(lowering_platforms=(platform,))
    .as_text()
  )
  on_fsdp = [ln for ln in re.findall(r"sdy\.sharding_constraint[^\n]*", text) if '"fsdp"' in ln]
  n = len(sharded_params(exp))
  assert n > 20 and len(on_fsdp) >= n, (len(on_fsdp), n)


@pytest.mark.slow  # compiles a microbatched train step over 8 devices
def test_parameters_gathered_and_gradients_reduced_once_per_step():
  exp = fsdp_experiment(microbatch=8)
  assert exp.microbatches == 2
  hlo = exp.train_step.lower(exp.abstract_state, exp.abstract_batch()).compile().as_text()
  comps, bodies = computations(hlo)
  assert bodies, "the microbatches are one while loop"
  inside = [ln for name in bodies for ln in comps[name]]
  outside = [ln for name, lines in comps.items() if name not in bodies for ln in lines]
  gathered_kernels = [
    ln for ln in collectives(outside, "all-gather") if KERNEL.search(ln.split("=")[1])
  ]
  # Each sharded kernel is gathered before the loop (twice on CPU: its forward convolution and
  # the CPU kernel's input gradient), never per microbatch.
  sharded_kernels = [x for x in sharded_params(exp) if x.ndim == 4]
  assert len(gathered_kernels) >= len(sharded_kernels) > 10
  assert not [ln for ln in collectives(inside, "all-gather") if KERNEL.search(ln.split("=")[1])]
  # Gradients are accumulated over the microbatches as shards: the loop carries one
  # shard-shaped accumulator per sharded kernel (XLA:GPU / TPU reduce-scatter into it).
  loops = [ln.split(" while(")[0] for lines in comps.values() for ln in lines if " while(" in ln]
  carry = max(loops, key=len)  # the microbatch loop carries the most
  carried = collections.Counter(re.findall(r"f32\[([\d,]+)\]", carry))
  for leaf in sharded_kernels:
    shard = leaf.sharding.shard_shape(leaf.shape)
    assert carried[",".join(map(str, shard))] >= 1, (leaf.shape, shard)
