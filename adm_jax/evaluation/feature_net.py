"""`fmnist_cnn_v1`: a small Fashion-MNIST classifier used as the feature network of the metrics.

Inception-V3 features mean little on 32x32 grayscale clothing; this network, trained by
experiments/train_fashion_mnist_features.py on the 60k training images (preprocessed like
the diffusion data: bicubic 28 → 32), gives
  pool features [N, 256] (FID, precision/recall), spatial features [N, 8, 8, 128] (sFID),
  logits [N, 10] (IS, classifier accuracy of class-conditional samples).
Its weights ship in adm_jax/evaluation/weights/ with a JSON card (test accuracy, command).
"""

import json
import os
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NAME = "fmnist_cnn_v1"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
WEIGHTS = os.path.join(WEIGHTS_DIR, NAME + ".npz")
CARD = os.path.join(WEIGHTS_DIR, NAME + ".json")
IMAGE_SIZE = 32


class FashionCNN(nn.Module):
  """conv32x2 → pool → conv64x2 → pool → conv128 (spatial) → mean → dense256 (pool) → dense10."""

  @nn.compact
  def __call__(self, x, train: bool = False) -> Dict[str, jax.Array]:
    h = x
    for i, width in enumerate((32, 32)):
      h = nn.relu(nn.Conv(width, (3, 3), name=f"conv1_{i}")(h))
    h = nn.max_pool(h, (2, 2), strides=(2, 2))
    for i, width in enumerate((64, 64)):
      h = nn.relu(nn.Conv(width, (3, 3), name=f"conv2_{i}")(h))
    h = nn.max_pool(h, (2, 2), strides=(2, 2))
    spatial = nn.relu(nn.Conv(128, (3, 3), name="conv3")(h))
    pooled = nn.relu(nn.Dense(256, name="fc")(spatial.mean(axis=(1, 2))))
    pooled_d = nn.Dropout(0.3, deterministic=not train)(pooled)
    logits = nn.Dense(10, name="logits")(pooled_d)
    return {"pool": pooled, "spatial": spatial, "logits": logits}


def to_input(images) -> jax.Array:
  """uint8 [N, 32, 32, C] (C = 1 or 3) or floats in [-1, 1] → float32 [N, 32, 32, 1] in [-1, 1]."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    images = images.astype(jnp.float32) / 127.5 - 1.0
  if images.ndim == 3:
    images = images[..., None]
  if images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
    raise ValueError(f"{NAME} takes {IMAGE_SIZE}x{IMAGE_SIZE} images, got {images.shape[1:3]}")
  if images.shape[-1] == 3:
    images = images.mean(axis=-1, keepdims=True)
  return images.astype(jnp.float32)


def flatten_params(params) -> Dict[str, np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v) for path, v in flat}


def unflatten_params(arrays) -> Dict:
  tree: Dict = {}
  for key, value in arrays.items():
    node = tree
    parts = key.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = jnp.asarray(value)
  return tree


def load(path: str = WEIGHTS):
  """(module, params) of the shipped network (or another weights file of the same layout)."""
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{NAME} weights {path} not found; train them with "
      "experiments/train_fashion_mnist_features.py"
    )
  with np.load(path) as data:
    params = unflatten_params({k: data[k] for k in data.files})
  return FashionCNN(), params


def card() -> Dict:
  with open(CARD) as f:
    return json.load(f)


def make_feature_fn(params, module=None):
  """jitted fn(images) -> {'pool', 'spatial', 'logits'} for one batch."""
  module = module or FashionCNN()
  return jax.jit(lambda x: module.apply({"params": params}, to_input(x)))
