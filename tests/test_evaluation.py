"""Metric mathematics (known answers), the npz layout, and the shipped feature network."""

import os

import numpy as np
import pytest

from adm_jax import evaluation
from adm_jax.evaluation import feature_net
from adm_jax.evaluation import metrics


def test_fid_of_a_set_with_itself_is_zero():
  x = np.random.default_rng(0).normal(size=(500, 16))
  assert abs(evaluation.fid_from_features(x, x)) < 1e-6


def test_fid_closed_form_diagonal_covariances():
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2)
  assert evaluation.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_non_commuting_covariances_against_eigen_route():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
  s1, s2 = a @ a.T + np.eye(4), b @ b.T + np.eye(4)
  mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
  # Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), computed through symmetric eigendecompositions.
  w, v = np.linalg.eigh(s1)
  root1 = v @ np.diag(np.sqrt(w)) @ v.T
  inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(inner))
  assert evaluation.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
  assert not np.allclose(s1 @ s2, s2 @ s1)


def test_inception_score_known_answers():
  uniform = np.full((100, 10), 0.1)
  assert evaluation.inception_score(uniform) == pytest.approx(1.0)
  onehot = np.eye(10)[np.arange(1000) % 10] * (1 - 1e-12) + 1e-13
  assert evaluation.inception_score(onehot) == pytest.approx(10.0, rel=1e-6)
  # Splits: two halves of one class each score 1, not the whole set's 2.
  halves = np.eye(2)[np.repeat([0, 1], 5000)]
  assert evaluation.inception_score(halves, split_size=5000) == pytest.approx(1.0)


def test_precision_recall_known_answers():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(200, 8))
  assert evaluation.precision_recall(x, x) == (1.0, 1.0)
  far = x + 1000.0
  assert evaluation.precision_recall(x, far) == (0.0, 0.0)
  # Reference: two far-apart clusters; samples cover only the first (mode dropping):
  # high precision, recall at most the first cluster's half of the reference.
  ref = np.concatenate([x[:100], x[100:] + 50.0])
  samples = rng.normal(size=(100, 8))
  precision, recall = evaluation.precision_recall(ref, samples)
  assert precision >= 0.85 and 0.35 < recall <= 0.5, (precision, recall)


def test_batched_manifold_equals_unbatched():
  rng = np.random.default_rng(3)
  ref, samples = rng.normal(size=(130, 5)), rng.normal(size=(90, 5)) * 1.3
  assert metrics.precision_recall(ref, samples, batch=17) == metrics.precision_recall(
    ref, samples, batch=10000
  )
  # float32 distance matmuls summed in another order per batch size: 1.2e-6 relative seen here
  # (one radius of 130), so 1e-5, an order above float32 rounding, not the 1e-6 it once had.
  np.testing.assert_allclose(
    metrics.manifold_radii(ref, batch=7), metrics.manifold_radii(ref), rtol=1e-5
  )
  d = ((ref[:, None] - ref[None]) ** 2).sum(-1)
  np.testing.assert_allclose(
    metrics.manifold_radii(ref), np.sort(d, axis=1)[:, 3], rtol=1e-4, atol=1e-5
  )


def test_nearest_distances_matches_brute_force():
  rng = np.random.default_rng(4)
  points, reference = rng.normal(size=(23, 6)), rng.normal(size=(40, 6))
  expected = np.sqrt(((points[:, None] - reference[None]) ** 2).sum(-1)).min(axis=1)
  np.testing.assert_allclose(
    metrics.nearest_distances(points, reference, batch=5), expected, rtol=1e-4, atol=1e-5
  )
  assert metrics.nearest_distances(reference[:3], reference).max() < 1e-2


def test_npz_layout_reader(tmp_path):
  images = np.zeros((3, 32, 32, 1), np.uint8)
  np.savez(tmp_path / "ok.npz", arr_0=images, arr_1=np.arange(3))
  batch = evaluation.load_batch(str(tmp_path / "ok.npz"))
  assert batch["images"].shape == (3, 32, 32, 1) and batch["labels"].tolist() == [0, 1, 2]
  np.savez(tmp_path / "bad.npz", images=images)
  with pytest.raises(ValueError, match="arr_0"):
    evaluation.load_batch(str(tmp_path / "bad.npz"))
  np.savez(tmp_path / "float.npz", arr_0=images.astype(np.float32))
  with pytest.raises(ValueError, match="uint8"):
    evaluation.load_batch(str(tmp_path / "float.npz"))


@pytest.mark.skipif(not os.path.exists(feature_net.WEIGHTS), reason="feature net weights not built")
def test_shipped_feature_net_classifies_real_images():
  from adm_jax import data

  card = feature_net.card()
  assert card["name"] == feature_net.NAME and card["test_accuracy"] > 0.85
  src = data.sources.fashion_mnist("test")
  images = np.stack([data.preprocess(src.images[i], 32, channels=1) for i in range(200)])
  module, params = feature_net.load()
  out = feature_net.make_feature_fn(params, module)(images)
  assert out["pool"].shape == (200, 256) and out["spatial"].shape == (200, 8, 8, 128)
  accuracy = float((np.asarray(out["logits"]).argmax(1) == src.labels[:200]).mean())
  assert accuracy > 0.8, accuracy
  rgb = feature_net.make_feature_fn(params, module)(np.repeat(images[:4], 3, axis=-1))
  np.testing.assert_allclose(rgb["logits"], out["logits"][:4], rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # builds Inception-V3
@pytest.mark.xdist_group("inception")  # one compilation with test_imagenet_flow's
def test_inception_random_weights_shapes_and_loader_round_trip(tmp_path, random_inception_weights):
  import jax

  from adm_jax.evaluation import api
  from adm_jax.evaluation import inception

  path, params = random_inception_weights
  loaded = inception.load_inception_params(path)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(a, b)
  # (4 images of 128 px: the shape test_imagenet_flow scores, one compilation for both)
  images = np.random.default_rng(0).integers(0, 256, (4, 128, 128, 3), dtype=np.uint8)
  out = api._extractor("inception_v3", path)(images)  # the feature fn evaluation runs
  assert out["pool"].shape == (4, 2048) and out["spatial"].shape == (4, 17, 17, 192)
  assert out["logits"].shape == (4, 1008)
  assert all(np.isfinite(np.asarray(v)).all() for v in out.values())
  state = inception.params_to_state_dict(params)
  state["fc.extra"] = np.zeros(1)
  np.savez(tmp_path / "bad.npz", **state)
  with pytest.raises(ValueError, match="unexpected tensor 'fc.extra'"):
    inception.load_inception_params(str(tmp_path / "bad.npz"))
  with pytest.raises(ValueError, match="weights file"):
    inception.load_inception_params("")
