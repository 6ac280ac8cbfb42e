"""Reference checkpoint conversion: .pt and .npz paths, the CLI, and its errors."""

import importlib.util
import subprocess
import sys

from conftest import REPO_ROOT
from conftest import load_fixture
from conftest import nchw_to_nhwc
from conftest import nhwc_to_nchw
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adm_jax import convert

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_torch_key_mapping():
  assert (
    convert.torch_key(("input_blocks_3_0", "in_layers_2", "kernel"))
    == "input_blocks.3.0.in_layers.2.weight"
  )
  assert convert.torch_key(("out_2", "positional_embedding")) == "out.2.positional_embedding"
  assert convert.torch_key(("label_emb", "embedding")) == "label_emb.weight"
  assert convert.torch_key(("middle_block_1", "proj_out", "bias")) == "middle_block.1.proj_out.bias"


@pytest.mark.skipif(
  not HAS_TORCH, reason="torch is not installed (the .npz path is tested without it)"
)
@pytest.mark.parametrize("stem, kind", [("unet", "unet"), ("classifier", "classifier")])
def test_pt_and_npz_give_identical_params(stem, kind):
  fx = load_fixture("gd_tiny_cond")
  flags = convert.resolve_config(str(fx.dir / "config.json"), kind)
  _, from_pt = convert.convert(str(fx.dir / f"{stem}.pt"), flags, kind)
  _, from_npz = convert.convert(str(fx.dir / f"{stem}_params.npz"), flags, kind)
  for a, b in zip(jax.tree.leaves(from_pt), jax.tree.leaves(from_npz)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # two subprocesses
def test_cli_writes_a_checkpoint_that_reloads_to_the_same_outputs(tmp_path):
  fx = load_fixture("gd_tiny_cond")
  source = fx.dir / ("unet.pt" if HAS_TORCH else "unet_params.npz")
  out = tmp_path / "converted"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "adm_jax.convert",
      "--checkpoint",
      str(source),
      "--config",
      str(fx.dir / "config.json"),
      "--out",
      str(out),
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "2.09M parameters" in result.stdout
  flags, params = convert.load_converted(str(out))
  from adm_jax import models

  model = models.create_model(flags)
  y = jnp.asarray(fx["in_y"], jnp.int32)
  got = model.apply(
    {"params": params}, jnp.asarray(nchw_to_nhwc(fx["out_q_sample"])), jnp.asarray(fx["in_t"]), y=y
  )
  fx.check("out_model", nhwc_to_nchw(got))


def _flags():
  fx = load_fixture("gd_tiny_cond")
  return fx, convert.resolve_config(str(fx.dir / "config.json"), "unet")


def test_wrong_config_names_the_first_mismatching_tensor():
  fx, flags = _flags()
  with pytest.raises(ValueError, match=r"tensor 'input_blocks\.0\.0\.bias'.*\(32,\).*\(64,\)"):
    convert.convert(str(fx.dir / "unet_params.npz"), dict(flags, num_channels=64), "unet")


def test_missing_and_extra_tensors_are_named(tmp_path):
  fx, flags = _flags()
  state = dict(np.load(fx.dir / "unet_params.npz"))
  missing = dict(state)
  del missing["middle_block.1.qkv.weight"]
  np.savez(tmp_path / "missing.npz", **missing)
  with pytest.raises(ValueError, match=r"'middle_block\.1\.qkv\.weight'.*missing"):
    convert.convert(str(tmp_path / "missing.npz"), flags, "unet")
  extra = dict(state, **{"foo.weight": np.zeros(3)})
  np.savez(tmp_path / "extra.npz", **extra)
  with pytest.raises(ValueError, match=r"'foo\.weight'.*no place"):
    convert.convert(str(tmp_path / "extra.npz"), flags, "unet")
  with pytest.raises(FileNotFoundError):
    convert.convert(str(tmp_path / "nope.pt"), flags, "unet")
  with pytest.raises(ValueError, match="unknown released checkpoint"):
    convert.resolve_config("1024x1024_diffusion", "unet")
