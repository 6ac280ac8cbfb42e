"""Scripts in experiments/: the sweep's reference batches, the precision diagnostics on real
images, and the convolution benchmark's three parts (they compute the right gradients)."""

import importlib.util
import os
import shutil
import textwrap

from conftest import REPO_ROOT
import jax
import numpy as np
import pytest


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
  assert (
    sweep.cached_reference(str(tmp_path), "train", 12) == path
    and os.stat(path).st_mtime_ns == stamp
  )


def test_precision_diagnostics_of_real_images(tmp_path, capsys):
  # "Samples" that are the reference images themselves: precision and recall 1, distance 0,
  # and the class accuracy that evaluation.classifier_accuracy gives them.
  diagnostics = _load("precision_diagnostics")
  sweep = _load("guidance_sweep")
  real = sweep.cached_reference(str(tmp_path), "train", 12)
  os.makedirs(tmp_path / "guidance_real")
  shutil.copy(real, tmp_path / "guidance_real" / "samples_12x32x32x1.npz")
  diagnostics.main(["--workdir", str(tmp_path), "--reference_num", "12"])
  line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("guidance_real")][0]
  from adm_jax import evaluation  # pylint: disable=g-import-not-at-top

  accuracy = evaluation.classifier_accuracy(real)
  assert f"acc={accuracy:.3f}" in line and "n=12" in line
  assert "train12:P1.000/R1.000" in line and "nn/real 0.000" in line


def test_conv_kernels_script_times_the_right_gradients():
  # The per-shape convolution benchmark (experiments/conv_kernels.py), on a tiny shape: its
  # three functions compute the convolution and its two gradients, and each is timed.
  script = _load("conv_kernels")
  parts = script.jax_functions(1, 4, 2, 3)
  (forward, (x, kernel)), (input_grad, (_, _, g)), (kernel_grad, _) = (
    parts["forward"],
    parts["input_grad"],
    parts["kernel_grad"],
  )
  plain = lambda a, b: jax.lax.conv_general_dilated(
    a, b, (1, 1), script.PADDING, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  _, vjp = jax.vjp(plain, x, kernel)
  want_x, want_k = vjp(g)
  np.testing.assert_allclose(forward(x, kernel), plain(x, kernel), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(input_grad(x, kernel, g)[0], want_x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(kernel_grad(x, kernel, g)[0], want_k, rtol=1e-5, atol=1e-5)
  times = script.jax_times(1, 4, 2, 3, repeats=1)
  assert sorted(times) == ["forward", "input_grad", "kernel_grad"]
  assert all(np.isfinite(v) and v > 0 for v in times.values())


@pytest.mark.slow  # builds and steps two small models on the CPU
def test_device_check_runs_on_the_cpu(tmp_path, capsys):
  # Without an accelerator the one-shot device check compares the CPU with itself.
  from adm_jax import device_check  # pylint: disable=g-import-not-at-top

  out = tmp_path / "device_check.json"
  tiny = tmp_path / "tiny.py"  # a class-conditional 8x8 model with a classifier: seconds to compile
  tiny.write_text(
    textwrap.dedent("""
      from adm_jax import config_base
      def get_config():
        c = config_base.from_config_file("fashion_mnist")
        c.model.update(image_size=8, num_channels=32, channel_mult="1,2", attention_resolutions="4",
                       num_heads=1)
        c.classifier.update(classifier_width=32, channel_mult="1,2",
                            classifier_attention_resolutions="4")
        return c
      """)
  )
  code = device_check.main(
    [
      f"--small={tiny}",
      f"--big={tiny}",
      "--batches=4",
      "--steps=1",
      "--sample_batch=2",
      f"--out={out}",
    ]
  )
  printed = capsys.readouterr().out
  assert code == 0 and "parity within tolerance" in printed and "yes" in printed
  import json  # pylint: disable=g-import-not-at-top

  result = json.loads(out.read_text())
  assert result["parity"]["loss"] == 0.0 and result["train"]["batch"] == 4
  assert result["train"]["images_per_s"] > 0 and result["guided"]["steps_per_s"] > 0
