"""A tiny stand-in diffusion network and train-step builder shared by tests and the
multi-process worker (no real UNet needed to test the training machinery)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adm_jax import diffusion
from adm_jax import sharding as shd
from adm_jax.training import state as state_lib
from adm_jax.training import step as step_lib

B, S = 16, 8


class TinyUNet(nn.Module):
  """A stand-in with the UNet's call signature: (x, t, y=None, train=False) -> 2C channels."""

  @nn.compact
  def __call__(self, x, t, y=None, train=False):
    h = nn.Conv(8, (3, 3))(x) + jnp.sin(t.astype(jnp.float32) / 300.0)[:, None, None, None]
    if y is not None:
      h = h + nn.Embed(11, 8)(y)[:, None, None, :]
    h = nn.Dropout(0.1, deterministic=not train)(nn.silu(h))
    return nn.Conv(6, (3, 3))(h)


def build(
  mesh,
  *,
  microbatches=1,
  sampler_name="loss-second-moment",
  lr=1e-3,
  p_uncond=0.0,
  ema=(0.9, 0.5),
  dropout=True,
  weight_decay=0.01,
):
  model = TinyUNet()
  gd = diffusion.create_gaussian_diffusion(steps=100, learn_sigma=True, noise_schedule="cosine")
  sampler = diffusion.create_named_schedule_sampler(sampler_name, gd.num_timesteps)
  tx = state_lib.create_optimizer(lr, weight_decay=weight_decay, grad_clip=1.0)

  def init(key):
    return model.init(
      key, jnp.zeros((1, S, S, 3)), jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32)
    )["params"]

  def apply_fn(params, x, t, y=None, rng=None, train=False):
    train = train and dropout
    return model.apply(
      {"params": params}, x, t, y, train=train, rngs={"dropout": rng} if train else None
    )

  _, shardings = state_lib.abstract_train_state(init, tx, sampler, ema, 0, mesh, min_fsdp_size=64)
  state = state_lib.init_train_state(init, tx, sampler, ema, 0, shardings)
  step = step_lib.make_train_step(
    apply_fn,
    gd,
    sampler,
    tx,
    ema,
    microbatches=microbatches,
    p_uncond=p_uncond,
    null_label=10,
    class_cond=True,
    mesh=mesh,
    state_shardings=shardings,
  )
  return state, step


def batches(n):
  rng = np.random.default_rng(0)
  return [
    {
      "image": rng.uniform(-1, 1, (B, S, S, 3)).astype(np.float32),
      "label": rng.integers(0, 10, B).astype(np.int32),
    }
    for _ in range(n)
  ]


def train(mesh, n_steps=3, **kw):
  state, step = build(mesh, **kw)
  metrics = []
  local = B // jax.process_count()
  for batch in batches(n_steps):
    mine = {
      k: v[jax.process_index() * local : (jax.process_index() + 1) * local]
      for k, v in batch.items()
    }  # this process's slice of the global batch
    state, m = step(state, shd.global_batch(mine, mesh))
    metrics.append(jax.device_get(m))
  host = lambda a: np.asarray(a.addressable_data(0)) if a.is_fully_replicated else np.asarray(a)
  return jax.tree.map(host, state), metrics
