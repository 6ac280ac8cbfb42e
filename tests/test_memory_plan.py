"""The memory plan (bench --plan): a line through two compiled sizes predicts a third, and the
plan picks the cheapest setting that fits."""

import jax
import pytest
from test_lowering import tiny_config

from adm_jax import experiment
from adm_jax import memory_plan
from adm_jax import sharding as shd

# Its tests share module-level traced programs / fixtures: one worker runs them all.
pytestmark = pytest.mark.xdist_group("memory_plan")

GIB = 2**30


@pytest.fixture(scope="module")
def fits():
  config = tiny_config("float32")
  return config, {p: memory_plan.measure(config, p) for p in ("none", "nothing_saveable")}


@pytest.mark.slow  # compiles the tiny train step six times
def test_the_fit_predicts_a_compiled_size(fits):
  config, by_policy = fits
  fit = by_policy["none"]
  assert fit.per_example > 0 and fit.fixed > fit.state > fit.params > 0
  exp = experiment.build(
    memory_plan._with(config, 12, "none"), shd.create_mesh(1, jax.devices()[:1])
  )  # pylint: disable=protected-access
  mem = exp.train_step.lower(exp.abstract_state, exp.abstract_batch()).compile().memory_analysis()
  actual = (
    mem.argument_size_in_bytes
    + mem.output_size_in_bytes
    + mem.temp_size_in_bytes
    - mem.alias_size_in_bytes
  )
  assert memory_plan.device_bytes(fit, 12, 1) == pytest.approx(actual, rel=0.15)  # extrapolated
  # Remat trades FLOPs for activation memory.
  remat = by_policy["nothing_saveable"]
  assert remat.per_example < fit.per_example and remat.flops_per_example > fit.flops_per_example


def test_plan_prefers_no_microbatch_then_fewer_flops_then_no_fsdp():
  plain = memory_plan.Fit(
    "none",
    fixed=1 * GIB,
    per_example=0.5 * GIB,
    flops_per_example=100,
    state=0.6 * GIB,
    params=0.15 * GIB,
  )
  remat = memory_plan.Fit(
    "convs_saveable",
    fixed=1 * GIB,
    per_example=0.1 * GIB,
    flops_per_example=110,
    state=0.6 * GIB,
    params=0.15 * GIB,
  )
  roomy = memory_plan.plan([plain, remat], global_batch=64, devices=8, memory_gib=80)
  assert roomy == pytest.approx(
    {
      "per_device_batch": 8,
      "microbatch": 8,
      "remat": "none",
      "fsdp": 1,
      "flops_overhead": 0.0,
      "GiB": 5.0,
    }
  )
  tight = memory_plan.plan([plain, remat], global_batch=64, devices=8, memory_gib=2)
  assert (tight["remat"], tight["microbatch"]) == ("convs_saveable", 8)  # remat beats accumulating
  tiny = memory_plan.plan([plain, remat], global_batch=64, devices=8, memory_gib=1.3)
  assert tiny["microbatch"] in (1, 2, 4) and tiny["GiB"] <= 0.9 * 1.3
  none = memory_plan.plan([plain], global_batch=64, devices=8, memory_gib=0.5)
  assert none["microbatch"] == 0  # nothing fits
  # FSDP divides the state and gradients but adds the gathered parameters.
  assert memory_plan.device_bytes(plain, 0, 8) == pytest.approx(
    1 * GIB - 0.75 * GIB + 0.75 * GIB / 8 + 0.15 * GIB
  )
