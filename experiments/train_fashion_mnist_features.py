"""Trains fmnist_cnn_v1, the feature network of the Fashion-MNIST metrics, and writes its weights.

usage: python experiments/train_fashion_mnist_features.py [--epochs 4] \\
         [--out adm_jax/evaluation/weights]
Data: the full Fashion-MNIST IDX files (Debian: apt-get install dataset-fashion-mnist), resized
28 → 32 with the diffusion pipeline's preprocessing; test accuracy on the 10k test images
goes into the JSON card beside the weights.
"""

import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adm_jax import xla_env  # noqa: E402

xla_env.configure_for_cpu()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from adm_jax.data import sources  # noqa: E402
from adm_jax.data.preprocess import preprocess as preprocess_image  # noqa: E402
from adm_jax.evaluation import feature_net  # noqa: E402


def load_split(split, directory):
  src = sources.fashion_mnist(split, directory)
  if "subset" in src.name:
    raise SystemExit(
      "the full Fashion-MNIST IDX files are needed (apt-get install dataset-fashion-mnist)"
    )
  images = np.stack([preprocess_image(src.images[i], 32, channels=1) for i in range(len(src))])
  return images, src.labels.astype(np.int32)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--epochs", type=int, default=4)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--dir", default="")
  parser.add_argument("--out", default=feature_net.WEIGHTS_DIR)
  args = parser.parse_args()
  start = time.time()
  x_train, y_train = load_split("train", args.dir)
  x_test, y_test = load_split("test", args.dir)
  module = feature_net.FashionCNN()
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))["params"]
  steps = args.epochs * (len(x_train) // args.batch)
  tx = optax.adam(optax.cosine_decay_schedule(args.lr, steps))
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, x, y, key):
    def loss_fn(p):
      out = module.apply({"params": p}, feature_net.to_input(x), train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(out["logits"], y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  predict = jax.jit(
    lambda p, x: module.apply({"params": p}, feature_net.to_input(x))["logits"].argmax(-1)
  )
  rng = np.random.default_rng(0)
  step = 0
  for epoch in range(args.epochs):
    order = rng.permutation(len(x_train))
    for i in range(0, len(order) - args.batch + 1, args.batch):
      idx = order[i : i + args.batch]
      params, opt_state, loss = train_step(
        params, opt_state, x_train[idx], y_train[idx], jax.random.PRNGKey(step)
      )
      step += 1
    print(f"epoch {epoch + 1}: loss {float(loss):.4f}", flush=True)
  correct = sum(
    int((np.asarray(predict(params, x_test[i : i + 1000])) == y_test[i : i + 1000]).sum())
    for i in range(0, len(x_test), 1000)
  )
  accuracy = correct / len(x_test)
  os.makedirs(args.out, exist_ok=True)
  np.savez_compressed(
    os.path.join(args.out, feature_net.NAME + ".npz"), **feature_net.flatten_params(params)
  )
  card = {
    "name": feature_net.NAME,
    "test_accuracy": accuracy,
    "test_images": len(x_test),
    "train_images": len(x_train),
    "epochs": args.epochs,
    "batch": args.batch,
    "lr": args.lr,
    "architecture": feature_net.FashionCNN.__doc__,
    "command": "python experiments/train_fashion_mnist_features.py " + " ".join(sys.argv[1:]),
    "training_seconds": round(time.time() - start, 1),
    "jax": jax.__version__,
    "date": datetime.date.today().isoformat(),
    "data": "Fashion-MNIST (MIT licence, Zalando SE), Debian dataset-fashion-mnist IDX files",
  }
  with open(os.path.join(args.out, feature_net.NAME + ".json"), "w") as f:
    json.dump(card, f, indent=2)
  print(f"test accuracy {accuracy:.4f}; wrote {args.out}")


if __name__ == "__main__":
  main()
