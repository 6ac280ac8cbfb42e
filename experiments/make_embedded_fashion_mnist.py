"""Writes the class-balanced Fashion-MNIST subset shipped in adm_jax/data/embedded/.

usage: python experiments/make_embedded_fashion_mnist.py [--dir /usr/share/datasets/fashion-mnist]
Needs the full IDX files (Debian: apt-get install dataset-fashion-mnist). Takes 500 train
and 100 test images per class, chosen with a fixed seed, as uint8 28x28.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adm_jax.data import sources  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--dir", default=sources.DEBIAN_FASHION_MNIST)
  parser.add_argument("--train_per_class", type=int, default=500)
  parser.add_argument("--test_per_class", type=int, default=100)
  parser.add_argument("--out", default=sources.EMBEDDED_FASHION_MNIST)
  args = parser.parse_args()
  arrays = {}
  for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
    prefix = "train" if split == "train" else "t10k"
    images = sources.read_idx(os.path.join(args.dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = sources.read_idx(os.path.join(args.dir, f"{prefix}-labels-idx1-ubyte.gz"))
    keep = sources.class_balanced_subset(labels, per_class, seed=0)
    arrays[f"{split}_images"] = images[keep]
    arrays[f"{split}_labels"] = labels[keep].astype(np.uint8)
  np.savez_compressed(args.out, **arrays)
  print(
    f"wrote {args.out}: {os.path.getsize(args.out) / 1e6:.2f} MB",
    {k: v.shape for k, v in arrays.items()},
  )


if __name__ == "__main__":
  main()
