"""Classifier-guidance sweep on the Fashion-MNIST default: samples and metrics per scale.

usage: python experiments/guidance_sweep.py --workdir=/tmp/adm_fmnist [--scales 0,1,4,10] [--num 1000]
                                            [--kind classifier|cfg]
Needs a workdir trained with configs/fashion_mnist.py and, for --kind=classifier (the default),
its classifier (--mode=train_classifier); --kind=cfg sweeps the classifier-free scale instead.
For each scale: --mode=sample (DDIM-50, random labels, seed 0), then --mode=eval with
fmnist_cnn_v1 against the test split; prints a Markdown table.
"""
import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--scales", default="0,1,4,10")
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--kind", default="classifier", choices=["classifier", "cfg"])
  parser.add_argument("--extra", default="", help="more --config.x=y flags, space separated")
  args = parser.parse_args()
  rows = []
  for scale in args.scales.split(","):
    out = f"guidance_{args.kind}_{scale}"
    base = [sys.executable, "-m", "adm_jax.main", "--config=configs/fashion_mnist.py",
            f"--workdir={args.workdir}", f"--config.sample.output_dir={out}",
            f"--config.sample.{args.kind}_scale={float(scale)}",
            f"--config.sample.num_samples={args.num}"] + args.extra.split()
    for mode in ("sample", "eval"):
      subprocess.run(base + [f"--mode={mode}"], cwd=REPO, check=True)
    with open(os.path.join(args.workdir, out, "eval_fmnist_cnn_v1.json")) as f:
      result = json.load(f)
    rows.append((scale, result))
  print(f"\n| {args.kind} scale | FID | sFID | IS | precision | recall | class accuracy |")
  print("|---|---|---|---|---|---|---|")
  for scale, r in rows:
    print(f"| {scale} | {r['fid']:.2f} | {r['sfid']:.2f} | {r['inception_score']:.2f} | "
          f"{r['precision']:.3f} | {r['recall']:.3f} | {r.get('classifier_accuracy', float('nan')):.3f} |")
  print(f"\n(feature network {rows[0][1]['feature_net']}; {args.num} samples per scale; "
        f"reference: {rows[0][1]['n_reference']} test images)")


if __name__ == "__main__":
  main()
