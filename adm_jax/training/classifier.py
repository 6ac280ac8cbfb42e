"""Training the noisy-image classifier used for classifier guidance (`--mode=train_classifier`).

Each step noises the batch to x_t with t from the schedule sampler (t = 0 when
`classifier.noised` is false), and minimises cross-entropy with AdamW (optional linear
anneal). Logged: loss, top-1 and top-5 accuracy overall and by t-quartile, on the
training batches and periodically on the validation split. Checkpoints go to
`<workdir>/<classifier.checkpoint_dir>` and resume exactly, like the diffusion loop.
"""
import json
import logging
import os
import time
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import optax
import tqdm

from adm_jax import config_base
from adm_jax import data as data_lib
from adm_jax import diffusion as diff
from adm_jax import models
from adm_jax import sharding as shd
from adm_jax.training import checkpoint as ckpt_lib
from adm_jax.training import metrics as metrics_lib
from adm_jax.training import state as state_lib
from adm_jax.training import step as step_lib

log = logging.getLogger(__name__)


def classifier_model_config(config) -> ml_collections.ConfigDict:
  """The classifier flags with the image size of the experiment."""
  cfg = ml_collections.ConfigDict(config.classifier.to_dict())
  cfg.image_size = config.model.image_size
  cfg.in_channels = config.model.in_channels
  return cfg


def classification_terms(logits, labels):
  """Per-example cross-entropy, top-1 and top-5 correctness, [B] each."""
  logits = logits.astype(jnp.float32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  k = min(5, logits.shape[-1])
  top_k = jax.lax.top_k(logits, k)[1]
  hits = top_k == labels[:, None]
  return {"loss": loss, "acc1": hits[:, 0].astype(jnp.float32),
          "acc5": jnp.any(hits, axis=-1).astype(jnp.float32)}


def make_classifier_step(model, gd, sampler, tx, *, noised: bool, train: bool, mesh=None,
                         state_shardings=None):
  """Returns step(state, batch) -> (state, metrics) (train) or metrics (eval), jitted."""

  def forward(params, images, labels, t, dropout_key):
    logits = model.apply({"params": params}, images, gd.model_timesteps(t), train=train,
                         rngs={"dropout": dropout_key} if train else None)
    terms = classification_terms(logits, labels)
    return jnp.mean(terms["loss"]), terms

  def prepare(state, batch, salt):
    images = batch["image"].astype(jnp.float32)
    t_key, noise_key, dropout_key, _ = step_lib.step_keys(jax.random.fold_in(state.rng, salt),
                                                          state.step)
    if noised:
      t, _ = sampler.sample(state.sampler_state, t_key, images.shape[0])
      images = gd.q_sample(images, t, jax.random.normal(noise_key, images.shape))
    else:
      t = jnp.zeros((images.shape[0],), jnp.int32)
    return images, batch["label"].astype(jnp.int32), t, dropout_key

  def metrics_of(terms, t):
    out = {}
    for name, values in terms.items():
      sums, counts = step_lib.quartile_sums(values, t, gd.num_timesteps)
      out[f"{name}_qsum"], out[f"{name}_qcount"] = sums, counts
      out[f"{name}_mean"] = jnp.mean(values)
    return out

  def train_step(state, batch):
    images, labels, t, dropout_key = prepare(state, batch, 0)
    (loss, terms), grads = jax.value_and_grad(forward, has_aux=True)(
        state.params, images, labels, t, dropout_key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    finite = jnp.isfinite(loss)
    params = optax.apply_updates(state.params, updates)
    keep = lambda n, o: jnp.where(finite, n, o)
    new = state.replace(step=state.step + 1,
                        params=jax.tree.map(keep, params, state.params),
                        opt_state=jax.tree.map(keep, opt_state, state.opt_state))
    metrics = metrics_of(terms, t)
    metrics["grad_norm"] = state_lib.global_norm(grads)
    metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    return new, metrics

  def eval_step(state, batch):
    images, labels, t, _ = prepare(state, batch, 1)
    _, terms = forward(state.params, images, labels, t, None)
    return metrics_of(terms, t)

  batch_sh = shd.batch_sharding(mesh) if mesh is not None else None
  in_batch = {"image": batch_sh, "label": batch_sh} if mesh is not None else None
  if train:
    if mesh is None:
      return jax.jit(train_step, donate_argnums=(0,))
    return jax.jit(train_step, in_shardings=(state_shardings, in_batch),
                   out_shardings=(state_shardings, shd.replicated(mesh)), donate_argnums=(0,))
  if mesh is None:
    return jax.jit(eval_step)
  return jax.jit(eval_step, in_shardings=(state_shardings, in_batch),
                 out_shardings=shd.replicated(mesh))


def run(config: ml_collections.ConfigDict, workdir: str, mesh=None) -> Dict[str, float]:
  """Trains (or resumes) the classifier of `config`; returns the last validation metrics."""
  ccfg = config.classifier
  mesh = mesh or shd.create_mesh(config.train.fsdp)
  model = models.create_classifier(classifier_model_config(config))
  gd = diff.create_gaussian_diffusion(**config_base.diffusion_kwargs(config, ""))
  sampler = diff.create_named_schedule_sampler(ccfg.schedule_sampler, gd.num_timesteps)
  tx = state_lib.create_optimizer(ccfg.lr, ccfg.weight_decay, ccfg.lr_anneal_steps)
  size, channels = config.model.image_size, config.model.in_channels

  def init(key):
    x = jnp.zeros((1, size, size, channels), jnp.float32)
    return model.init({"params": key}, x, jnp.zeros((1,), jnp.int32), train=False)["params"]

  state, shardings = state_lib.init_train_state(init, tx, sampler, (), config.train.seed + 7, mesh)
  train_step = make_classifier_step(model, gd, sampler, tx, noised=ccfg.noised, train=True,
                                    mesh=mesh, state_shardings=shardings)
  eval_step = make_classifier_step(model, gd, sampler, tx, noised=ccfg.noised, train=False,
                                   mesh=mesh, state_shardings=shardings)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, ccfg.checkpoint_dir, "checkpoints"),
                                       keep=config.train.keep_checkpoints,
                                       async_save=config.train.async_checkpoint)
  start = checkpointer.latest_step() or 0
  if start:
    state = checkpointer.restore(start, state_lib.abstract_like(state, shardings))
    ckpt_lib.log_restore(start, checkpointer.directory)
  meta = {"config": json.loads(config.to_json()), "kind": "classifier"}
  shd.local_batch_size(ccfg.batch_size)
  data_cfg = ml_collections.ConfigDict(config.data.to_dict())
  data_cfg.random_crop = True  # the reference trains its classifiers with random crops
  iterator = lambda cfg, split, step, seed: data_lib.create_data_iterator(
      cfg, global_batch_size=ccfg.batch_size, image_size=size, seed=seed, start_step=step,
      process_index=jax.process_index(), process_count=jax.process_count(), split=split)
  batches = iterator(data_cfg, "train", start, config.train.seed)
  writer = metrics_lib.MetricWriter(os.path.join(workdir, ccfg.checkpoint_dir),
                                    tensorboard=config.train.tensorboard)
  bar = tqdm.tqdm(total=ccfg.iterations, initial=start, desc="classifier", unit="step",
                  disable=not config.train.progress or jax.process_index() != 0)
  history, summary, last_saved = [], {}, checkpointer.latest_step()
  window = time.perf_counter()
  try:
    for step in range(start, ccfg.iterations):
      state, metrics = train_step(state, shd.global_batch(next(batches), mesh))
      history.append(metrics)
      bar.update(1)
      done = step + 1
      is_last = done == ccfg.iterations
      if done % ccfg.log_every == 0 or done % ccfg.checkpoint_every == 0 or is_last:
        host = jax.device_get(history)
        step_lib.check_finite(host, done - len(host), last_saved, os.path.dirname(checkpointer.directory))
        summary = step_lib.summarize_metrics(host)
        summary["steps_per_sec"] = len(host) / max(time.perf_counter() - window, 1e-9)
        writer.write(done, summary)
        bar.set_postfix(loss=f"{summary['loss']:.3f}", acc1=f"{summary['acc1']:.3f}")
        history, window = [], time.perf_counter()
      if done % ccfg.eval_every == 0 or is_last:
        val = iterator(config.data, "test", done, config.train.seed + 1)
        try:
          host = [jax.device_get(eval_step(state, shd.global_batch(next(val), mesh)))
                  for _ in range(ccfg.eval_batches)]
        finally:
          getattr(val, "close", lambda: None)()
        val_summary = {f"val_{k}": v for k, v in step_lib.summarize_metrics(host).items()}
        writer.write(done, val_summary)
        summary.update(val_summary)
        log.info("classifier step %d: %s", done,
                     {k: round(v, 4) for k, v in val_summary.items() if "_q" not in k})
      if done % ccfg.checkpoint_every == 0 or is_last:
        checkpointer.save(done, state, meta)
        last_saved = done
  finally:
    bar.close()
    getattr(batches, "close", lambda: None)()
    checkpointer.close()
    writer.flush()
  return summary
