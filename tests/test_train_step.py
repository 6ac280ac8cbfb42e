"""The sharded train step with a tiny network: device-count parity, microbatches, EMA, NaN."""

import jax
import numpy as np
import pytest
from tiny_train import B
from tiny_train import batches
from tiny_train import build
from tiny_train import train

from adm_jax import sharding as shd
from adm_jax.training import update


def assert_trees_close(a, b, rtol, atol):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(
      np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path)
    )


@pytest.mark.slow  # three meshes, three compilations
def test_eight_devices_match_one_device():
  assert jax.device_count() == 8, "conftest asks for 8 fake CPU devices"
  one, m1 = train(shd.create_mesh(1, jax.devices()[:1]))
  eight, m8 = train(shd.create_mesh(1))
  fsdp, _ = train(shd.create_mesh(4))  # params and optimizer state split over 4 devices
  assert_trees_close(one.params, eight.params, rtol=2e-5, atol=2e-6)
  assert_trees_close(one.params, fsdp.params, rtol=2e-5, atol=2e-6)
  assert_trees_close(one.ema_params, eight.ema_params, rtol=2e-5, atol=2e-6)
  np.testing.assert_array_equal(one.sampler_state.counts, eight.sampler_state.counts)
  np.testing.assert_allclose(one.sampler_state.losses, eight.sampler_state.losses, rtol=1e-5)
  for a, b in zip(m1, m8):
    np.testing.assert_allclose(a["weighted_loss"], b["weighted_loss"], rtol=1e-5)
  # The params really changed (the comparison is not between two untouched inits).
  init, _ = build(shd.create_mesh(1, jax.devices()[:1]))
  moved = max(
    float(np.abs(np.asarray(x) - np.asarray(y)).max())
    for x, y in zip(jax.tree.leaves(one.params), jax.tree.leaves(jax.device_get(init.params)))
  )
  assert moved > 1e-4


def test_fsdp_shards_large_tensors():
  mesh = shd.create_mesh(4)
  state, _ = build(mesh)
  specs = {tuple(x.sharding.spec) for x in jax.tree.leaves(state.params)}
  assert any("fsdp" in spec for spec in specs), specs


@pytest.mark.slow  # two 8-device trainings
def test_microbatches_equal_full_batch():
  # Dropout off: its draws legitimately differ between layouts. t and noise are drawn
  # for the global batch before it is split, so each example sees the same ones.
  mesh = shd.create_mesh(1)
  full, _ = train(mesh, n_steps=2, dropout=False)
  micro, _ = train(mesh, n_steps=2, dropout=False, microbatches=4)
  assert_trees_close(full.params, micro.params, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(full.sampler_state.losses, micro.sampler_state.losses, rtol=1e-5)
  assert int(full.step) == int(micro.step) == 2


def test_ema_math():
  mesh = shd.create_mesh(1, jax.devices()[:1])
  state, step = build(mesh, ema=(0.9, 0.0))
  p0 = jax.device_get(state.params)
  state, _ = step(state, shd.global_batch(batches(1)[0], mesh))
  p1 = jax.device_get(state.params)
  ema_slow, ema_copy = jax.device_get(state.ema_params)
  assert_trees_close(ema_copy, p1, rtol=0, atol=0)  # rate 0: the EMA is the params
  expected = jax.tree.map(lambda a, b: 0.9 * a + 0.1 * b, p0, p1)
  assert_trees_close(ema_slow, expected, rtol=1e-6, atol=1e-7)


def test_nonfinite_loss_skips_update_and_is_reported():
  mesh = shd.create_mesh(1, jax.devices()[:1])
  state, step = build(mesh)
  before = jax.device_get(state)
  bad = batches(1)[0]
  bad["image"][0, 0, 0, 0] = np.nan
  state, metrics = step(state, shd.global_batch(bad, mesh))
  after = jax.device_get(state)
  assert float(metrics["nonfinite"]) == 1.0
  assert_trees_close(after.params, before.params, rtol=0, atol=0)
  assert_trees_close(after.opt_state, before.opt_state, rtol=0, atol=0)
  np.testing.assert_array_equal(after.sampler_state.counts, before.sampler_state.counts)
  with pytest.raises(update.NonFiniteLossError, match="step 8"):
    update.check_finite([{"nonfinite": 0.0}, {"nonfinite": 1.0}], 6, 5, "/tmp/w")


def test_loss_history_is_updated_from_the_global_batch():
  mesh = shd.create_mesh(1)
  state, _ = train(mesh, n_steps=2)
  assert int(state.sampler_state.counts.sum()) == 2 * B  # every example of both global batches


def test_label_dropout_uses_null_class():
  mesh = shd.create_mesh(1, jax.devices()[:1])
  state, _ = train(mesh, n_steps=1, p_uncond=1.0, weight_decay=0.0)
  # With every label dropped, only the null row (10) of the label embedding gets gradient.
  table0, _ = build(mesh)
  emb_after = np.asarray(state.params["Embed_0"]["embedding"])
  emb_before = np.asarray(jax.device_get(table0.params["Embed_0"]["embedding"]))
  changed = np.abs(emb_after - emb_before).max(axis=1) > 0
  assert changed[10] and not changed[:10].any()


def test_summarize_metrics_quartiles():
  hist = [
    {
      "mse_qsum": np.array([1.0, 0, 4, 0]),
      "mse_qcount": np.array([1.0, 0, 2, 0]),
      "mse_mean": 1.0,
      "grad_norm": 2.0,
      "nonfinite": 0.0,
    },
    {
      "mse_qsum": np.array([3.0, 0, 0, 0]),
      "mse_qcount": np.array([1.0, 0, 0, 0]),
      "mse_mean": 3.0,
      "grad_norm": 4.0,
      "nonfinite": 0.0,
    },
  ]
  out = update.summarize_metrics(hist)
  assert out["mse_q0"] == 2.0 and out["mse_q2"] == 2.0 and "mse_q1" not in out
  assert out["mse"] == 2.0 and out["grad_norm"] == 3.0 and out["nonfinite"] == 0.0
