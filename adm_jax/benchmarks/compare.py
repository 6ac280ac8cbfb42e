"""Our benchmark figures beside the PyTorch reference harness's (its bench.py --out JSON)."""

import json
from typing import Any, Dict, List

from adm_jax import sampling

# Our result name -> the reference harness's JSON key (medians of the same measurement).
REFERENCE_KEYS = {
  "train": "train_step",
  "ddpm_unguided": "p_sample_step_unguided",
  "ddpm_classifier": "p_sample_step_guided",
  "ddim_unguided": "ddim_step_unguided",
  "ddim_classifier": "ddim_step_guided",
  "unet_forward_s": "unet_forward_nograd",
  "classifier_grad_s": "classifier_grad",
}


def reference_medians(path: str) -> Dict[str, float]:
  """Medians (seconds) from a ref-harness bench.py JSON, under our result names.

  The harness times its EMA update apart from its train step; ours is inside the step, so the
  reference's train figure here is the sum of the two medians when both are given.
  """
  with open(path) as f:
    raw = json.load(f)
  medians = {
    ours: float(raw[ref]["median_s"]) for ours, ref in REFERENCE_KEYS.items() if ref in raw
  }
  if "train" in medians and "ema_update" in raw:
    medians["train"] += float(raw["ema_update"]["median_s"])
  return medians


def table_rows(results: Dict[str, Any]) -> List[List[str]]:
  """[name, ours, unit, reference, ratio, note] rows of the printed table."""
  ref = results.get("reference", {})
  rows = []

  def add(name, key, value, unit, note=""):
    r = ref.get(key)
    rows.append(
      [
        name,
        f"{value:.3f}",
        unit,
        f"{r:.3f}" if r else "-",
        f"{value / r:.2f}x" if r else "-",
        note,
      ]
    )

  train = results.get("train")
  if train:
    micro = train.get("microbatches", 1)
    add(
      "train step (fwd+bwd+AdamW+EMA)",
      "train",
      train["median_s"],
      "s",
      f"{train['images_per_s']:.1f} img/s, compile {train['compile_s']:.1f} s"
      + (f", batch as {micro} microbatches" if micro > 1 else ""),
    )
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
      rows.append(
        [
          f"{sampler} guided step / DDIM guided step",
          f"{ratio:.2f}x",
          "",
          "-",
          "-",
          "the same network and classifier calls per step",
        ]
      )
  for key, value in results.get("components", {}).items():
    if key.endswith("_s"):
      add(key[: -len("_s")], key, value, "s")
  return rows


def print_table(results: Dict[str, Any]) -> None:
  header = ["benchmark", "adm_jax", "unit", "reference", "ratio", ""]
  rows = [header] + table_rows(results)
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  lines = [""]
  for row in rows:
    lines.append(
      "  ".join(
        c.ljust(w) if i in (0, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
      ).rstrip()
    )
  print("\n".join(lines))
