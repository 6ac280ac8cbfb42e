"""The metrics of real images, measured like the samples: the floor under every FID of the campaign.

usage: python experiments/fid_floor.py [--num 1000,2000] [--sets 5]
           [--out experiments/results/fid_floor.json]

Disjoint sets of --num Fashion-MNIST *training* images (set k: images k*num ... (k+1)*num - 1),
scored by experiments/nfe_lib.py's `score` (fmnist_cnn_v1 against the one reference file, the
10,000 test images) exactly as solver_nfe.py scores samples. A sampler cannot be expected to beat
these figures at the same N, and their spread over the sets is the sampling error of one point.
"""

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import nfe_lib  # noqa: E402  pylint: disable=wrong-import-position

METRICS = ("fid", "sfid", "precision", "recall", "classifier_accuracy", "inception_score")


def train_images(start: int, num: int):
  """Training images start..start+num-1 as uint8 [num, 32, 32, 1] and their labels [num]."""
  from adm_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from configs import fashion_mnist  # pylint: disable=g-import-not-at-top

  source = data_lib.create_source(fashion_mnist.get_config().data, "train")
  items = [source[i] for i in range(start, start + num)]
  images = np.stack([data_lib.preprocess(image, 32, 1) for image, _ in items]).astype(np.uint8)
  return images, np.asarray([label for _, label in items], np.int32)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--num", default="1000,2000")
  parser.add_argument("--sets", type=int, default=5)
  parser.add_argument(
    "--out", default=os.path.join(REPO, "experiments", "results", "fid_floor.json")
  )
  args = parser.parse_args()
  reference = nfe_lib.reference_stats()
  rows = []
  for num in [int(n) for n in args.num.split(",")]:
    for k in range(args.sets):
      images, labels = train_images(k * num, num)
      path = os.path.join(nfe_lib.RUNS, f"fid_floor_{num}_{k}.npz")
      m = nfe_lib.score(images, labels, path, reference)
      rows.append({"num": num, "set": k, **{key: float(m[key]) for key in METRICS}})
      print(json.dumps(rows[-1]), flush=True)
    fids = [r["fid"] for r in rows if r["num"] == num]
    print(f"N = {num}: FID {np.mean(fids):.3f} +- {np.std(fids, ddof=1):.3f} over {len(fids)} sets")
  nfe_lib.save_results(
    args.out,
    {"reference": "fmnist_cnn_v1 statistics of the 10,000 Fashion-MNIST test images", "sets": rows},
  )


if __name__ == "__main__":
  main()
