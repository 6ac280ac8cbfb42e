"""Looks behind the precision numbers of a guidance sweep: reference size, per-class precision,
distance to the nearest real image, and which classes the samples look like.

usage: python experiments/precision_diagnostics.py --workdir=/tmp/adm_fmnist_long \\
         [--glob 'guidance_*']
For every WORKDIR/GLOB/samples_*.npz (written by experiments/guidance_sweep.py), with fmnist_cnn_v1
pool features, prints one line with:
  acc            share of samples classified as their asked class;
  test/trainN    precision/recall against the first N test or training images
                 (N = 400, 1000, 10000);
  classcond      precision/recall of the samples of asked class c against real training images of
                 class c (1,000 per class), averaged over the classes;
  nn/real        median distance from a sample to its nearest real training image, divided by the
                 same median for 2,000 real test images (1 = as close as real images are);
  norm/real      mean feature norm of the samples over that of real images;
  predhist       how many samples the feature network puts in each class.
Uses the full Fashion-MNIST set when installed (Debian's dataset-fashion-mnist), else the
embedded subset.
"""

import argparse
import glob
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from adm_jax import xla_env  # noqa: E402  pylint: disable=wrong-import-position
from adm_jax.evaluation import api  # noqa: E402  pylint: disable=wrong-import-position
from adm_jax.evaluation import feature_net  # noqa: E402  pylint: disable=wrong-import-position
from adm_jax.evaluation import metrics  # noqa: E402  pylint: disable=wrong-import-position
from experiments.guidance_sweep import cached_reference  # noqa: E402  pylint: disable=wrong-import-position

xla_env.configure_for_cpu()


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--glob", default="guidance_*")
  parser.add_argument(
    "--reference_num", type=int, default=10000, help="real images per split (the first N of each)"
  )
  args = parser.parse_args(argv)
  sizes = sorted({min(n, args.reference_num) for n in (400, 1000, 10000)})
  module, params = feature_net.load()
  feature_fn = feature_net.make_feature_fn(params, module)
  refs = {}
  for split in ("test", "train"):
    batch = api.load_batch(cached_reference(args.workdir, split, args.reference_num))
    refs[split] = (
      api.extract_features(batch["images"], feature_fn, desc=split)["pool"],
      batch["labels"],
    )
  real_nn = np.median(metrics.nearest_distances(refs["test"][0][:2000], refs["train"][0]))
  train_norm = np.linalg.norm(refs["train"][0], axis=1).mean()
  for folder in sorted(glob.glob(os.path.join(args.workdir, args.glob))):
    npz = sorted(glob.glob(os.path.join(folder, "samples_*.npz")))
    if not npz:
      continue
    batch = api.load_batch(npz[-1])
    feats = api.extract_features(batch["images"], feature_fn, desc="samples")
    pool, labels = feats["pool"], batch["labels"]
    predicted = feats["logits"].argmax(axis=1)
    line = [os.path.basename(folder), f"n={len(pool)}", f"acc={np.mean(predicted == labels):.3f}"]
    for split in ("test", "train"):
      for n in sizes:
        p, r = metrics.precision_recall(refs[split][0][:n], pool)
        line.append(f"{split}{n}:P{p:.3f}/R{r:.3f}")
    per_class = []
    for c in range(10):
      own = pool[labels == c]
      real = refs["train"][0][refs["train"][1] == c][:1000]
      if len(own) > 3:
        per_class.append(metrics.precision_recall(real, own))
    line.append(
      "classcond P%.3f/R%.3f" % tuple(np.mean(per_class, axis=0)) if per_class else "classcond -"
    )
    line.append(
      f"nn/real {np.median(metrics.nearest_distances(pool, refs['train'][0])) / real_nn:.3f}"
    )
    line.append(f"norm/real {np.linalg.norm(pool, axis=1).mean() / train_norm:.3f}")
    line.append("predhist " + ",".join(str(x) for x in np.bincount(predicted, minlength=10)))
    print("  ".join(line), flush=True)


if __name__ == "__main__":
  main()
