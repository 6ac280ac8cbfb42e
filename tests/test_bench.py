"""python -m adm_jax.bench on tiny models: it times the production step, and its figures are
consistent with each other (FLOPs of the parts add up, rates follow from the times).

No speed is asserted (benchmarks measure; tests check what they measure and report).
"""

import json
import subprocess
import sys
import textwrap
import time

from conftest import REPO_ROOT
import jax
import pytest
import tiny

from adm_jax import experiment
from adm_jax.benchmarks import compare
from adm_jax.benchmarks import memory
from adm_jax.benchmarks import profile
from adm_jax.benchmarks import timing
from adm_jax.modes import train as train_mode
from adm_jax.training import state as state_lib


def tiny_bench_config():
  c = tiny.config()
  c.classifier.update(
    channel_mult="1,2",
    classifier_attention_resolutions="4",
    classifier_width=32,
    classifier_depth=1,
  )
  c.model.update(num_classes=10)
  return c


@pytest.mark.slow  # compiles train steps and sampling loops
def test_bench_times_the_step_that_training_runs(tmp_path):
  # The same builder output: the train step `python -m adm_jax.main` runs (the loop spec of
  # experiment.build, with the config's loss-second-moment sampler, dropout, EMA and
  # microbatches) lowers to the same program as the one the benchmark times.
  config = tiny_bench_config()
  config.model.dropout = 0.1
  config.train.update(batch_size=4, microbatch=2)
  spec = train_mode.loop_spec(experiment.build(config, tiny.MESH), str(tmp_path))
  timed = timing.build_train(config, batch=4)
  assert timed.microbatches == 2 and timed.timestep_sampler.name == "loss-second-moment"
  args = (timed.abstract_state, timed.abstract_batch())
  assert timed.train_step.lower(*args).as_text() == spec.train_step.lower(*args).as_text()
  # A different step (no microbatches) lowers differently: the comparison can fail.
  other = timing.build_train(config, batch=4, microbatch=4)
  assert other.train_step.lower(*args).as_text() != spec.train_step.lower(*args).as_text()


def test_timed_reports_medians_of_the_calls():
  calls = []

  def work():
    calls.append(1)
    time.sleep(0.02)
    return jax.numpy.zeros(())

  r = timing.timed(work, repeats=3, warmup=2)
  assert len(calls) == 5 and r["n"] == 3
  assert 0.02 <= r["min_s"] <= r["median_s"] <= r["max_s"] < 1.0


@pytest.mark.slow  # compiles train steps and sampling loops
def test_train_sample_and_components_report(tmp_path):
  config = tiny_bench_config()
  train = timing.bench_train(
    config, batch=2, repeats=1, warmup=0, profile_dir=str(tmp_path / "profile")
  )
  assert train["images_per_s"] == pytest.approx(2 / train["median_s"])
  assert train["params"] == state_lib.param_count(
    experiment.build(
      timing.bench_config(config, 2), timing.single_device_mesh()
    ).abstract_state.params
  )
  # --profile: a trace on disk and the op kinds that took the most time in it, sorted.
  assert list((tmp_path / "profile").rglob("*.xplane.pb"))
  top = train["profile"]["top_ops"]
  assert [r["ms_per_step"] for r in top] == sorted((r["ms_per_step"] for r in top), reverse=True)
  assert any("conv" in r["op"] for r in top), top  # a UNet step spends time in convolutions
  profile.print_profile(train["profile"])

  samplers = ("ddim", "dpmpp_2m")
  sample = timing.bench_sample(
    config, batch=2, steps=2, repeats=1, warmup=0, skip=[], samplers=samplers
  )
  assert set(sample) == {f"{s}_{k}" for s in samplers for k in ("unguided", "classifier", "cfg")}
  for r in sample.values():
    assert r["steps"] == 2 and r["s_per_step"] == pytest.approx(r["loop_median_s"] / 2)
  components = timing.bench_components(config, batch=2, repeats=1, warmup=0)
  # FLOPs add up: an unguided step is one UNet forward; classifier-free guidance doubles the
  # batch; a classifier-guided step adds one classifier forward + backward.
  flops = {k: r["flops_per_step_per_image"] for k, r in sample.items()}
  forward = components["unet_forward_flops_per_image"]
  for s in samplers:
    assert flops[f"{s}_unguided"] == pytest.approx(forward, rel=0.1)
    assert flops[f"{s}_cfg"] == pytest.approx(2 * forward, rel=0.1)
    assert flops[f"{s}_classifier"] - flops[f"{s}_unguided"] == pytest.approx(
      components["classifier_grad_flops_per_image"], rel=0.1
    )

  ref_path = tmp_path / "ref.json"  # the layout of ref-harness/bench.py --out
  ref_path.write_text(
    json.dumps(
      {
        "train_step": {"median_s": 1.5 * train["median_s"]},
        "ema_update": {"median_s": 0.5 * train["median_s"]},
        "ddim_step_unguided": {"median_s": 1.0},
        "ddim_step_guided": {"median_s": 1.7},
      }
    )
  )
  rows = compare.table_rows(
    {
      "train": train,
      "sample": sample,
      "components": components,
      "reference": compare.reference_medians(str(ref_path)),
    }
  )
  by_name = {r[0]: r for r in rows}
  assert "dpmpp_2m guided step / DDIM guided step" in by_name
  # The harness's EMA (timed apart) counts into its train step, as ours includes EMA.
  assert by_name["train step (fwd+bwd+AdamW+EMA)"][4] == "0.50x"
  assert by_name["ddim guidance overhead"][3] == "70%"
  assert by_name["dpmpp_2m guidance overhead"][3] == "-"  # no reference figure given
  assert by_name["sample ddim_cfg"][3] == "-"
  compare.print_table({"train": train, "sample": sample})


@pytest.mark.slow  # compiles train steps and sampling loops
def test_memory_table_for_a_config_file(tmp_path, capsys):
  (tmp_path / "tiny.py").write_text(
    textwrap.dedent("""
      from adm_jax import config_base
      def get_config():
        c = config_base.base_config()
        c.model.update(image_size=8, num_channels=32, channel_mult="1,2", attention_resolutions="4",
                       num_heads=1, num_res_blocks=1, in_channels=1)
        return c
      """)
  )
  settings = (("float32", False), ("bfloat16", True))
  rows = memory.bench_memory((str(tmp_path / "tiny.py"),), settings)
  assert [(r["dtype"], r["remat"]) for r in rows] == list(settings)
  for r in rows:
    assert 0 < r["GiB"] < 1 and r["train_flops_per_image"] > 0
    assert all(r[f"fits_{g}"] == (r["GiB"] <= g) for g in (16, 32, 80))
    # At least the train state: float32 params, EMA and Adam's two moments.
    assert r["GiB"] * 2**30 >= 4 * 4 * r["params"]
  memory.print_memory_table(rows)
  assert "fits 16 / 32 / 80 GiB" in capsys.readouterr().out


def test_unknown_preset_is_refused():
  result = subprocess.run(
    [sys.executable, "-m", "adm_jax.bench", "--preset=nope"],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode != 0 and "unknown --preset 'nope'" in result.stderr
