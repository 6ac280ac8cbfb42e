"""Helpers of the sweep scripts in experiments/: reference batches and nearest-real distances."""
import importlib.util
import os

import numpy as np

from conftest import REPO_ROOT


def _load(name):
  spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_guidance_sweep_writes_training_reference_once(tmp_path):
  sweep = _load("guidance_sweep")
  path = sweep.cached_reference(str(tmp_path), "train", 12)
  assert os.path.dirname(path) == str(tmp_path) and path.endswith("_12.npz")
  with np.load(path) as data:
    assert data["arr_0"].shape == (12, 32, 32, 1) and data["arr_0"].dtype == np.uint8
    assert data["arr_1"].shape == (12,)
  stamp = os.stat(path).st_mtime_ns
  assert sweep.cached_reference(str(tmp_path), "train", 12) == path and os.stat(path).st_mtime_ns == stamp


def test_nearest_distances_match_brute_force():
  diagnostics = _load("precision_diagnostics")
  rng = np.random.default_rng(0)
  points = rng.normal(size=(7, 5)).astype(np.float32)
  reference = rng.normal(size=(11, 5)).astype(np.float32)
  brute = np.sqrt(((points[:, None] - reference[None]) ** 2).sum(-1)).min(axis=1)
  np.testing.assert_allclose(diagnostics.nearest_distances(points, reference, batch=3), brute,
                             rtol=1e-4, atol=1e-5)
  assert np.allclose(diagnostics.nearest_distances(reference, reference), 0.0, atol=1e-3)
