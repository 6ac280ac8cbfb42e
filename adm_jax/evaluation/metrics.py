"""Sample-quality metrics with the definitions of the reference evaluator.

  FID / sFID   Fréchet distance between Gaussians fitted to features (pool features; for
               sFID the first 7 channels of a spatial feature map, flattened);
  IS           exp E[KL(p(y|x) || p(y))] per split of 5000 samples, averaged over splits;
  precision    share of samples inside the reference manifold, recall the converse, where
               a manifold is the union of balls around each point reaching its k-th (k=3)
               nearest neighbour (squared Euclidean distances, self included as 0th).
All inputs are numpy feature arrays [N, D]; distance blocks are computed in JAX batches
so that 50k x 50k never materialises at once.
"""

from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg


def compute_statistics(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) in float64."""
  features = np.asarray(features, dtype=np.float64)
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), as the reference computes it."""
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(
      f"statistics of different shapes: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}"
    )
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"sqrtm has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(features1, features2) -> float:
  return frechet_distance(*compute_statistics(features1), *compute_statistics(features2))


def spatial_features(spatial: np.ndarray, channels: int = 7) -> np.ndarray:
  """sFID features: the first `channels` channels of [N, H, W, C] maps, flattened."""
  spatial = np.asarray(spatial)
  return spatial[..., :channels].reshape(spatial.shape[0], -1)


def inception_score(probs: np.ndarray, split_size: int = 5000) -> float:
  """exp(mean KL(p(y|x) || p(y))) within splits of `split_size`, averaged over splits."""
  probs = np.asarray(probs, dtype=np.float64)
  scores = []
  for start in range(0, len(probs), split_size):
    part = probs[start : start + split_size]
    marginal = part.mean(axis=0, keepdims=True)
    kl = np.sum(part * (np.log(part + 1e-30) - np.log(marginal + 1e-30)), axis=1).mean()
    scores.append(np.exp(kl))
  return float(np.mean(scores))


@jax.jit
def _squared_distances(a, b):
  """Pairwise squared Euclidean distances [Na, Nb], clamped at 0."""
  na = jnp.sum(a * a, axis=1)[:, None]
  nb = jnp.sum(b * b, axis=1)[None, :]
  return jnp.maximum(na - 2 * a @ b.T + nb, 0.0)


def manifold_radii(features: np.ndarray, k: int = 3, batch: int = 10000) -> np.ndarray:
  """Squared distance of each point to its k-th nearest neighbour (itself is the 0th)."""
  features = jnp.asarray(features, jnp.float32)
  n = features.shape[0]
  if n <= k:
    raise ValueError(f"precision/recall with k={k} needs more than {k} points, got {n}")
  radii = np.zeros(n, np.float64)
  for start in range(0, n, batch):
    rows = features[start : start + batch]
    dists = np.concatenate(
      [np.asarray(_squared_distances(rows, features[c : c + batch])) for c in range(0, n, batch)],
      axis=1,
    )
    radii[start : start + batch] = np.partition(dists, k, axis=1)[:, k]
  return radii


def nearest_distances(points: np.ndarray, reference: np.ndarray, batch: int = 500) -> np.ndarray:
  """Euclidean distance [N] from each point [N, D] to its nearest point of `reference` [M, D]."""
  reference = jnp.asarray(reference, jnp.float32)
  out = []
  for start in range(0, len(points), batch):
    rows = jnp.asarray(points[start : start + batch], jnp.float32)
    out.append(np.sqrt(np.asarray(_squared_distances(rows, reference)).min(axis=1)))
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def _inside(points, radii_points, others, radii_others, batch):
  """(points inside the others' manifold [Np], others inside the points' manifold [No])."""
  points = jnp.asarray(points, jnp.float32)
  others = jnp.asarray(others, jnp.float32)
  p_in = np.zeros(points.shape[0], bool)
  o_in = np.zeros(others.shape[0], bool)
  for i in range(0, points.shape[0], batch):
    for j in range(0, others.shape[0], batch):
      d = np.asarray(_squared_distances(points[i : i + batch], others[j : j + batch]))
      p_in[i : i + batch] |= np.any(d <= radii_others[None, j : j + batch], axis=1)
      o_in[j : j + batch] |= np.any(d <= radii_points[i : i + batch, None], axis=0)
  return p_in, o_in


def precision_recall(
  ref_features, sample_features, k: int = 3, batch: int = 10000
) -> Tuple[float, float]:
  """(precision, recall) of samples against a reference set, k-NN manifolds."""
  ref_radii = manifold_radii(ref_features, k, batch)
  sample_radii = manifold_radii(sample_features, k, batch)
  ref_in, sample_in = _inside(ref_features, ref_radii, sample_features, sample_radii, batch)
  return float(sample_in.mean()), float(ref_in.mean())
