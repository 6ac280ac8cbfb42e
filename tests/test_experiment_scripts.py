"""Scripts in experiments/: the sweep's reference batches; the diagnostics script loads; the
convolution benchmark times its three parts."""
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


def test_precision_diagnostics_script_loads():
  # Its nearest-real distances are metrics.nearest_distances (tested in test_evaluation.py);
  # this catches a script that no longer imports.
  diagnostics = _load("precision_diagnostics")
  assert callable(diagnostics.main)


def test_conv_kernels_script_times_all_three_parts():
  # The per-shape convolution benchmark (experiments/conv_kernels.py), on a tiny shape.
  times = _load("conv_kernels").jax_times(1, 4, 2, 3, repeats=1)
  assert sorted(times) == ["forward", "input_grad", "kernel_grad"]
  assert all(value > 0 for value in times.values())
