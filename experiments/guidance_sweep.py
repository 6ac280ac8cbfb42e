"""Classifier-guidance sweep on the Fashion-MNIST default: samples and metrics per scale.

usage: python experiments/guidance_sweep.py --workdir=/tmp/adm_fmnist [--scales 0,1,4,10]
         [--num 1000] [--kind classifier|cfg] [--reference_num 10000]
         [--tag ancestral100 --extra="--config.sample.sampler=ddpm
                                      --config.sample.timestep_respacing=100"]
Needs a workdir trained with configs/fashion_mnist.py and, for --kind=classifier (the default),
its classifier (--mode=train_classifier); --kind=cfg sweeps the classifier-free scale instead.
For each scale: --mode=sample (the config's ancestral-50 unless --extra overrides the sampler;
random labels, seed 0) into WORKDIR/TAG_KIND_SCALE, then --mode=eval with
fmnist_cnn_v1 against a reference batch; prints a Markdown table. The reference batch is, by
default, as many test images as samples; --reference_num N uses N training images instead (the
reference evaluator's practice: its reference batches come from the training set), written once
into the workdir.
"""

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cached_reference(workdir: str, split: str, num: int) -> str:
  """Path of a reference batch of the first `num` images of a Fashion-MNIST split, written into
  the workdir on first use; named like --mode=eval's own (split, full set or embedded subset)."""
  sys.path.insert(0, REPO)
  from adm_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from adm_jax.evaluation import api  # pylint: disable=g-import-not-at-top
  from configs import fashion_mnist  # pylint: disable=g-import-not-at-top

  config = fashion_mnist.get_config()
  source = data_lib.create_source(config.data, split)
  path = os.path.join(workdir, f"reference_{api.source_tag(source.name)}_{num}.npz")
  if not os.path.exists(path):
    api.write_reference_batch(path, config.data, split, num, config.model.image_size, source=source)
  return path


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--scales", default="0,1,4,10")
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--kind", default="classifier", choices=["classifier", "cfg"])
  parser.add_argument(
    "--extra",
    default="",
    help="more --config.x=y flags, space separated; pass as "
    "--extra='--config.x=y ...' (with '=': argparse reads a separate "
    "value starting with '--' as an option)",
  )
  parser.add_argument(
    "--tag",
    default="guidance",
    help="prefix of the per-scale output folders (WORKDIR/TAG_KIND_SCALE)",
  )
  parser.add_argument(
    "--reference_num",
    type=int,
    default=0,
    help="N > 0: reference batch of N training images instead of test images",
  )
  args = parser.parse_args()
  extra = args.extra.split()
  if args.reference_num > 0:
    reference = cached_reference(args.workdir, "train", args.reference_num)
    extra.append(f"--config.sample.reference_batch={reference}")
  rows = []
  for scale in args.scales.split(","):
    out = f"{args.tag}_{args.kind}_{scale}"
    base = [
      sys.executable,
      "-m",
      "adm_jax.main",
      "--config=configs/fashion_mnist.py",
      f"--workdir={args.workdir}",
      f"--config.sample.output_dir={out}",
      f"--config.sample.{args.kind}_scale={float(scale)}",
      f"--config.sample.num_samples={args.num}",
    ] + extra
    for mode in ("sample", "eval"):
      subprocess.run(base + [f"--mode={mode}"], cwd=REPO, check=True)
    with open(os.path.join(args.workdir, out, "eval_fmnist_cnn_v1.json")) as f:
      result = json.load(f)
    rows.append((scale, result))
  print(f"\n| {args.kind} scale | FID | sFID | IS | precision | recall | class accuracy |")
  print("|---|---|---|---|---|---|---|")
  for scale, r in rows:
    print(
      f"| {scale} | {r['fid']:.2f} | {r['sfid']:.2f} | {r['inception_score']:.2f} | "
      f"{r['precision']:.3f} | {r['recall']:.3f} | "
      f"{r.get('classifier_accuracy', float('nan')):.3f} |"
    )
  print(
    f"\n(feature network {rows[0][1]['feature_net']}; {args.num} samples per scale; "
    f"reference: {rows[0][1]['n_reference']} "
    f"{'training' if args.reference_num > 0 else 'test'} images)"
  )


if __name__ == "__main__":
  main()
