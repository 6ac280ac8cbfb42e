"""python -m adm_jax.bench on tiny models: every measurement runs and the table reads right.

No timing is asserted (benchmarks measure, tests check that they run and report).
"""
import json
import subprocess
import sys
import textwrap

import pytest

from adm_jax import bench
from conftest import REPO_ROOT
from test_training_loop import tiny_config


def tiny_bench_config():
  c = tiny_config()
  c.classifier.update(channel_mult="1,2", classifier_attention_resolutions="4",
                      classifier_width=32, classifier_depth=1)
  c.model.update(num_classes=10)
  return c


def test_train_sample_and_components_report(tmp_path):
  config = tiny_bench_config()
  train = bench.bench_train(config, batch=2, repeats=1, warmup=0,
                            profile_dir=str(tmp_path / "profile"))
  assert train["median_s"] > 0 and train["images_per_s"] > 0 and train["compile_s"] > 0
  assert train["params"] > 0 and train["train_flops_per_image"] > 0
  # --profile: a trace on disk and the op kinds that took the most time in it.
  assert list((tmp_path / "profile").rglob("*.xplane.pb"))
  top = train["profile"]["top_ops"]
  assert top and all(r["ms_per_step"] > 0 and r["count_per_step"] > 0 for r in top)
  assert [r["ms_per_step"] for r in top] == sorted((r["ms_per_step"] for r in top), reverse=True)
  bench.print_profile(train["profile"])
  sample = bench.bench_sample(config, batch=2, steps=2, repeats=1, warmup=0, skip=[])
  assert set(sample) == {f"{s}_{k}" for s in ("ddpm", "ddim") for k in ("unguided", "classifier", "cfg")}
  for r in sample.values():
    assert r["s_per_step"] > 0 and r["steps"] == 2 and r["compile_s"] > 0
  components = bench.bench_components(config, batch=2, repeats=1, warmup=0)
  assert components["unet_forward_s"] > 0 and components["classifier_grad_s"] > 0

  ref_path = tmp_path / "ref.json"  # the layout of ref-harness/bench.py --out
  ref_path.write_text(json.dumps({"train_step": {"median_s": 1.5 * train["median_s"]},
                                  "ema_update": {"median_s": 0.5 * train["median_s"]},
                                  "p_sample_step_unguided": {"median_s": 1.0},
                                  "p_sample_step_guided": {"median_s": 1.7}}))
  rows = bench.table_rows({"train": train, "sample": sample, "components": components,
                           "reference": bench.reference_medians(str(ref_path))})
  by_name = {r[0]: r for r in rows}
  # The harness's EMA (timed apart) counts into its train step, as ours includes EMA.
  assert by_name["train step (fwd+bwd+AdamW+EMA)"][4] == "0.50x"
  assert by_name["ddpm guidance overhead"][3] == "70%"
  assert by_name["ddim guidance overhead"][3] == "-"  # no reference figure given
  assert by_name["sample ddim_cfg"][3] == "-"
  bench.print_table({"train": train, "sample": sample})


def test_memory_table_for_a_config_file(tmp_path, capsys):
  (tmp_path / "tiny.py").write_text(textwrap.dedent("""
      from adm_jax import config_base
      def get_config():
        c = config_base.base_config()
        c.model.update(image_size=8, num_channels=32, channel_mult="1,2", attention_resolutions="4",
                       num_heads=1, num_res_blocks=1, in_channels=1)
        return c
      """))
  rows = bench.bench_memory(str(tmp_path), ("tiny",))
  assert [(r["dtype"], r["remat"]) for r in rows] == [
      ("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True)]
  for r in rows:
    assert 0 < r["GiB"] < 1 and r["fits_16"] and r["train_flops_per_image"] > 0
  bench.print_memory_table(rows)
  assert "fits 16 / 32 / 80 GiB" in capsys.readouterr().out


def test_unknown_preset_is_refused():
  result = subprocess.run([sys.executable, "-m", "adm_jax.bench", "--preset=nope"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and "unknown --preset 'nope'" in result.stderr
