"""The samplers on an EXACT score: the empirical distribution of a few hundred training images.

usage: python experiments/exact_score.py --out $ADM_JAX_RUNS/exact_score [--num_data 500]
           [--num 500] [--points ddpm:250 ddim:20 dpmpp_2m:10:logsnr ...] [--table]

For data {x_i} (the first --num_data Fashion-MNIST training images, 32x32 in [-1, 1]), the
noise prediction that minimises the training loss is known in closed form (no network):
  eps*(x_t, t) = (x_t - alpha_t xhat) / sigma_t,  xhat = sum_i softmax_i(-|x_t - alpha_t x_i|^2
  / (2 sigma_t^2)) x_i,
and the exact ODE maps x_T onto one of the x_i. With it only the samplers' discretisation
error (and any bug in their updates) is left: do the deterministic solvers reach the data?
The same process as configs/fashion_mnist.py (cosine, 1000 steps); the ancestral sampler uses
the posterior variance (fixed small: a learned-sigma network has no closed form here). The
solvers get the fractional step the library passes them (log alpha linear between steps,
as adm_jax.diffusion.time_grids). Samples use sampling key fold_in(PRNGKey(0), 0) for every
point, so all samplers start from the same x_T.

Per point: the RMS distance (per pixel, [-1, 1] units) of each sample to its nearest data
image: median, 90th percentile and the fraction within 0.02 / 0.1 ("reached the data"), the
number of distinct nearest images, and FID (fmnist_cnn_v1) against the data images
themselves. Each finished point is saved at once to OUT/results.json and skipped when rerun.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from adm_jax import xla_env  # noqa: E402  pylint: disable=wrong-import-position

DEFAULT_POINTS = (
  "ddpm:25 ddpm:50 ddpm:100 ddpm:250 ddpm:1000 "
  "ddim:5 ddim:10 ddim:20 ddim:50 ddim:100 ddim:250 ddim:1000 ddim:50:clip=0 "
  "dpmpp_2m:5:logsnr dpmpp_2m:10:logsnr dpmpp_2m:20:logsnr dpmpp_2m:50:logsnr "
  "dpmpp_3m:10:logsnr dpmpp_3m:20:logsnr dpmpp_2s:10:logsnr dpmpp_2s:20:logsnr "
  "sde_dpmpp_2m:10:logsnr sde_dpmpp_2m:20:logsnr sde_dpmpp_2m:50:logsnr "
  "plms:10:time_uniform plms:20:time_uniform dpmpp_2m:20:time_uniform "
  "dpmpp_1:20:logsnr dpmpp_1:20:time_quadratic ddim:20:start=ddim"
).split()


def parse_point(text):
  """'sampler:nfe[:schedule][:opt=v,...]' -> dict."""
  parts = text.split(":")
  point = {"sampler": parts[0], "nfe": int(parts[1]), "schedule": "time_uniform", "options": {}}
  for part in parts[2:]:
    if "=" in part:
      point["options"].update(kv.split("=", 1) for kv in part.split(","))
    else:
      point["schedule"] = part
  return point


def point_name(point):
  name = f"{point['sampler']}_{point['nfe']}"
  if point["sampler"] not in ("ddpm", "ddim"):
    name += "_" + point["schedule"]
  return name + "".join(f"_{k}{v}" for k, v in sorted(point["options"].items()))


def load_data(num, split="train"):
  """The first `num` images of a Fashion-MNIST split as float32 [num, 32, 32, 1] in [-1, 1]."""
  from adm_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from configs import fashion_mnist  # pylint: disable=g-import-not-at-top

  config = fashion_mnist.get_config()
  source = data_lib.create_source(config.data, split)
  images = np.stack([data_lib.preprocess(source[i][0], 32, 1) for i in range(num)])
  return images.astype(np.float32) / 127.5 - 1.0


def exact_eps_fn(data, log_alpha_table):
  """model_fn(x, t, **kw) -> eps*(x_t, t) of the empirical distribution of `data` [M, ...]."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  flat = jnp.asarray(data.reshape(data.shape[0], -1))
  sq = jnp.sum(flat**2, axis=1)
  table = jnp.asarray(log_alpha_table, jnp.float32)
  steps = table.shape[0]

  def model_fn(x, t, **_):
    t = jnp.asarray(t, jnp.float32)
    lo = jnp.clip(jnp.floor(t), 0, steps - 2).astype(jnp.int32)
    log_alpha = table[lo] + (t - lo) * (table[lo + 1] - table[lo])  # linear, extended
    alpha = jnp.exp(log_alpha)[:, None]
    sigma = jnp.sqrt(-jnp.expm1(2.0 * log_alpha))[:, None]
    xf = x.reshape(x.shape[0], -1)
    # -|x - a x_i|^2 / (2 s^2) up to a per-row constant
    logits = (alpha * (xf @ flat.T) - 0.5 * alpha**2 * sq[None]) / sigma**2
    w = jnp.exp(logits - logits.max(axis=1, keepdims=True))
    xhat = (w @ flat) / w.sum(axis=1, keepdims=True)
    return ((xf - alpha * xhat) / sigma).reshape(x.shape)

  return model_fn


def run_point(point, data, key, num):
  import jax  # pylint: disable=g-import-not-at-top

  from adm_jax import diffusion as diff  # pylint: disable=g-import-not-at-top
  from adm_jax import sampling  # pylint: disable=g-import-not-at-top

  base = diff.create_gaussian_diffusion(
    steps=1000, learn_sigma=False, sigma_small=True, noise_schedule="cosine"
  )
  log_alpha = 0.5 * np.cumsum(np.log1p(-np.asarray(base.betas, np.float64)))
  model_fn = exact_eps_fn(data, log_alpha)
  opts = point["options"]
  name = point["sampler"]
  respacing = ""
  if opts.get("start") == "ddim":  # ADM's 'ddimN': stride spacing from t = 0, no t = T - 1
    respacing = f"ddim{point['nfe']}"
  spec = sampling.SamplerSpec(
    name=name,
    steps=0 if respacing else point["nfe"],
    timestep_respacing=respacing,
    eta=float(opts.get("eta", 0.0)),
    time_schedule=point["schedule"] if name in sampling.SOLVERS else "time_uniform",
  )
  fn = sampling.make_sample_fn(
    lambda p, x, t, y, **kw: model_fn(x, t),
    base,
    (32, 32, 1),
    spec,
    clip_denoised=bool(int(opts.get("clip", 1))),
  )
  labels = jax.numpy.zeros((num,), jax.numpy.int32)
  start = time.perf_counter()
  out = np.asarray(jax.block_until_ready(fn({}, key, labels)))
  return out, time.perf_counter() - start, spec.nfe(base)


def nearest(samples, data):
  s = samples.reshape(samples.shape[0], -1).astype(np.float64)
  d = data.reshape(data.shape[0], -1).astype(np.float64)
  sq = (s**2).sum(1)[:, None] - 2 * s @ d.T + (d**2).sum(1)[None]
  idx = sq.argmin(1)
  return np.sqrt(np.maximum(sq[np.arange(len(s)), idx], 0) / s.shape[1]), idx


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  parser.add_argument("--num_data", type=int, default=500)
  parser.add_argument("--num", type=int, default=500)
  parser.add_argument("--points", nargs="*", default=list(DEFAULT_POINTS))
  parser.add_argument("--table", action="store_true")
  args = parser.parse_args()
  xla_env.configure_for_cpu()
  import jax  # pylint: disable=g-import-not-at-top

  from adm_jax import sampling  # pylint: disable=g-import-not-at-top
  from adm_jax.evaluation import api  # pylint: disable=g-import-not-at-top
  from adm_jax.evaluation import feature_net  # pylint: disable=g-import-not-at-top
  from adm_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top

  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "results.json")
  results = json.load(open(path)) if os.path.exists(path) else []
  done = {r["name"] for r in results}
  todo = [p for p in map(parse_point, args.points) if point_name(p) not in done]
  if todo and not args.table:
    data = load_data(args.num_data)
    module, params = feature_net.load()
    feats = feature_net.make_feature_fn(params, module)
    data_u8 = sampling.to_uint8(data)
    ref = api.extract_features(data_u8, feats)["pool"]
    for point in todo:
      out, seconds, nfe = run_point(
        point, data, jax.random.fold_in(jax.random.PRNGKey(0), 0), args.num
      )
      dist, idx = nearest(out, data)
      u8 = sampling.to_uint8(out)
      sf = api.extract_features(u8, feats)["pool"]
      result = dict(
        point,
        name=point_name(point),
        nfe_actual=nfe,
        num_samples=args.num,
        num_data=args.num_data,
        seconds=seconds,
        rms_median=float(np.median(dist)),
        rms_p90=float(np.quantile(dist, 0.9)),
        frac_within_002=float((dist < 0.02).mean()),
        frac_within_01=float((dist < 0.1).mean()),
        distinct_nearest=int(len(set(idx.tolist()))),
        fid_vs_data=float(metrics.fid_from_features(sf, ref)),
      )
      results.append(result)
      np.savez_compressed(os.path.join(args.out, point_name(point) + ".npz"), arr_0=u8)
      with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
      os.replace(path + ".tmp", path)
      print(
        f"{result['name']}: NFE {nfe} rms median {result['rms_median']:.4f} p90 "
        f"{result['rms_p90']:.4f} within .02 {result['frac_within_002']:.3f} within .1 "
        f"{result['frac_within_01']:.3f} distinct {result['distinct_nearest']} FID "
        f"{result['fid_vs_data']:.2f} ({seconds:.1f} s)",
        flush=True,
      )
  print(
    "| point | NFE | RMS to nearest (median / p90) | within 0.02 | within 0.1 | distinct "
    "nearest | FID vs data |\n|---|---|---|---|---|---|---|"
  )
  for r in results:
    print(
      f"| {r['name']} | {r['nfe_actual']} | {r['rms_median']:.4f} / {r['rms_p90']:.4f} | "
      f"{r['frac_within_002']:.3f} | {r['frac_within_01']:.3f} | {r['distinct_nearest']} | "
      f"{r['fid_vs_data']:.2f} |"
    )


if __name__ == "__main__":
  main()
