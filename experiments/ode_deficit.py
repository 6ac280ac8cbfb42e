"""Where the deterministic samplers lose against ancestral sampling (experiments, not argument).

usage: python experiments/ode_deficit.py --workdir=W [--step S] [--ema_index I | --no_ema]
W: a configs/fashion_mnist.py training workdir, or a frozen model .npz (nfe_lib.Model.export,
e.g. experiments/models/fmnist_step10000_ema0995.npz: its one step and EMA copy).
           [--out $ADM_JAX_RUNS/ode_deficit] [--num 1000] EXPERIMENT [EXPERIMENT ...]

EXPERIMENT is one of
  switch:R:J:ORDER   respacing R (e.g. 50): the first J of its R steps (from t = T - 1) with one
                     sampler, the rest with the other. ORDER anc_ddim: ancestral then DDIM (eta 0);
                     ddim_anc: DDIM then ancestral. J = 0 / R are the pure samplers.
  phases:R:P        respacing R run in phases P = 'NAME-n,NAME-n,...' from t = T - 1, NAME one
                     of anc, ddim, anc_noclip, ddim_noclip (x0 not clipped to [-1, 1]), e.g.
                     'ddim_noclip-10,ddim-40': no clipping during the first 10 steps.
  tmax:R:TMAX:S      sampler S (ddim | ddpm) over R steps evenly spaced from t = TMAX down to 0,
                     from x ~ N(0, I) at TMAX (the first step of 'R' sits at T - 1 = 999, where
                     x0 = (x - sigma eps) / alpha amplifies eps errors ~2e4-fold).
  point:SPEC         an experiments/nfe_lib.py point 'sampler:nfe:scale[:schedule][:k=v,..]'
                     (e.g. ddim:50:0:clip=0, ddim:50:0:eta=1.0).
  encode:R           DDIM-encode --num test images to x_T over respacing R (eta 0, the ODE run
                     backwards), report the latents' statistics (a model whose ODE is the data's
                     probability flow maps the data to N(0, I)) and decode them back (FID of the
                     reconstructions, RMS error).
  clipstats:R        per step of ancestral and DDIM over respacing R: how much of the x0
                     prediction the [-1, 1] clip changes (first --batch samples).
  epserr             the network's eps error E|eps_hat - eps|^2 (per pixel) on --num test images
                     at 20 noise levels; the x0 error it implies, sigma^2/alpha^2 of it.
Samples: the fixed keys and labels of experiments/nfe_lib.py (every experiment starts from the
same x_T as the sweep), batches saved at once, finished experiments skipped when rerun. Results:
OUT/results.json, merged into experiments/results/ode_deficit.json (records name their --workdir).
"""

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import nfe_lib  # noqa: E402  pylint: disable=wrong-import-position


def process_over(base, kept):
  """The base process visiting only the original steps `kept` (explicit respacing)."""
  from adm_jax import diffusion as diff  # pylint: disable=g-import-not-at-top
  from adm_jax.diffusion import schedules  # pylint: disable=g-import-not-at-top

  betas, timestep_map = schedules.respace_betas(base.betas, kept)
  return diff.GaussianDiffusion.from_betas(
    betas,
    model_mean_type=base.model_mean_type,
    model_var_type=base.model_var_type,
    loss_type=base.loss_type,
    rescale_timesteps=base.rescale_timesteps,
    timestep_map=timestep_map,
    original_num_steps=base.original_num_steps,
  )


def two_phase_fn(model, process, first, n_first, clip=True):
  """jit fn(params, key, labels, clf_params): sampler `first` for n_first steps, then the other."""
  second = "ddim" if first == "ddpm" else "ddpm"
  return phases_fn(
    model, process, [(first, n_first, clip), (second, process.num_timesteps - n_first, clip)]
  )


def phases_fn(model, process, phases):
  """jit fn(params, key, labels, clf_params) running [(sampler, steps, clip), ...] in turn over
  the steps of `process` from t = T - 1 (ancestral noise of index i: fold_in(key', i), as
  p_sample_loop; x_T as every sampler of the library)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from adm_jax.diffusion import samplers  # pylint: disable=g-import-not-at-top

  apply = model.apply_fn()
  T = process.num_timesteps
  if sum(n for _, n, _ in phases) != T:
    raise ValueError(f"phases {phases} do not add up to the {T} steps")

  def run(params, key, labels, clf_params=None):
    del clf_params
    model_fn = lambda x, t, y=None, **kw: apply(params, x, t, y)
    x, step_key = samplers._initial_noise(key, (labels.shape[0], *model.image_shape), None)  # pylint: disable=protected-access
    idx = np.arange(T - 1, -1, -1)
    done = 0
    for sampler, n, clip in phases:
      kw = dict(clip_denoised=clip, model_kwargs={"y": labels})

      def anc(x, i, kw=kw):
        t = jnp.full((x.shape[0],), i, jnp.int32)
        return samplers.p_sample(
          process, model_fn, x, t, key=jax.random.fold_in(step_key, i), **kw
        )["sample"], None

      def ddim(x, i, kw=kw):
        t = jnp.full((x.shape[0],), i, jnp.int32)
        return samplers.ddim_sample(process, model_fn, x, t, **kw)["sample"], None

      if n > 0:
        x, _ = jax.lax.scan(
          anc if sampler == "ddpm" else ddim, x, jnp.asarray(idx[done : done + n], jnp.int32)
        )
      done += n
    return x

  return jax.jit(run)


def sample_experiment(model, exp, args, reference, meta):
  kind, _, rest = exp.partition(":")
  if kind == "switch":
    r, j, order = rest.split(":")
    r, j = int(r), int(j)
    process = process_over(model.base, _steps_of(model.base, r))
    first = "ddpm" if order == "anc_ddim" else "ddim"
    factory = lambda: two_phase_fn(model, process, first, j)
    t_switch = int(process.timestep_map[r - 1 - j]) if j < r else -1
    info = {"respacing": r, "first_steps": j, "order": order, "t_switch": t_switch, "nfe": r}
  elif kind == "phases":
    r, spec = rest.split(":", 1)
    r = int(r)
    phases = []
    for part in spec.split(","):
      name, n = part.split("-")
      phases.append(
        ("ddpm" if name.startswith("anc") else "ddim", int(n), not name.endswith("noclip"))
      )
    process = process_over(model.base, _steps_of(model.base, r))
    factory = lambda: phases_fn(model, process, phases)
    info = {"respacing": r, "phases": spec, "nfe": r}
  elif kind == "tmax":
    r, tmax, sampler = rest.split(":")
    r, tmax = int(r), int(tmax)
    kept = np.unique(np.round(np.linspace(0, tmax, r)).astype(int))
    process = process_over(model.base, kept)
    factory = lambda: two_phase_fn(model, process, sampler, r)
    info = {
      "respacing": r,
      "t_max": tmax,
      "sampler": sampler,
      "nfe": r,
      "alpha_tmax": float(np.sqrt(np.cumprod(1 - np.asarray(model.base.betas))[tmax])),
    }
  elif kind == "point":
    point = nfe_lib.parse_point(rest)
    factory = lambda: model.sample_fn(point)[0]
    info = dict(point, nfe=point["nfe"])
  else:
    raise ValueError(f"unknown experiment {exp!r}")
  out_dir = os.path.join(args.out, meta["tag"], exp.replace(":", "_"))
  images, labels, records = nfe_lib.run_batches(
    factory, model.params, model.clf_params, out_dir, args.num, args.batch
  )
  m = nfe_lib.score(images, labels, os.path.join(out_dir, f"eval_{args.num}.npz"), reference)
  return dict(
    info,
    fid=m["fid"],
    sfid=m["sfid"],
    precision=m["precision"],
    recall=m["recall"],
    accuracy=m.get("classifier_accuracy"),
    inception_score=m["inception_score"],
    **nfe_lib.timing(records),
  )


def _steps_of(base, r):
  from adm_jax.diffusion import schedules  # pylint: disable=g-import-not-at-top

  return schedules.space_timesteps(base.num_timesteps, str(r))


def test_images(num):
  from experiments.exact_score import load_data  # pylint: disable=g-import-not-at-top

  return load_data(num, "test")


def encode_experiment(model, exp, args, reference):
  """DDIM-encode test images, latent statistics, decode, reconstruction quality."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from adm_jax import diffusion as diff  # pylint: disable=g-import-not-at-top
  from adm_jax import sampling  # pylint: disable=g-import-not-at-top

  r = int(exp.split(":")[1])
  process = diff.respaced(model.base, str(r))
  apply = model.apply_fn()
  from adm_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from configs import fashion_mnist  # pylint: disable=g-import-not-at-top
  from experiments.exact_score import load_data  # pylint: disable=g-import-not-at-top

  x0 = load_data(args.num, "test")
  source = data_lib.create_source(fashion_mnist.get_config().data, "test")
  y = np.asarray([source[i][1] for i in range(args.num)], np.int32)

  @jax.jit
  def enc(params, x, labels):
    model_fn = lambda x, t, y=None, **kw: apply(params, x, t, y)
    return diff.ddim_reverse_sample_loop(
      process, model_fn, x, clip_denoised=True, model_kwargs={"y": labels}
    )

  @jax.jit
  def dec(params, x, labels):
    model_fn = lambda x, t, y=None, **kw: apply(params, x, t, y)
    return diff.ddim_sample_loop(
      process, model_fn, x.shape, None, noise=x, clip_denoised=True, model_kwargs={"y": labels}
    )

  lat, rec = [], []
  for i in range(0, args.num, args.batch):
    xb, yb = jnp.asarray(x0[i : i + args.batch]), jnp.asarray(y[i : i + args.batch])
    zb = enc(model.params, xb, yb)
    lat.append(np.asarray(zb))
    rec.append(np.asarray(dec(model.params, zb, yb)))
    print(f"  encode/decode batch {i // args.batch}", flush=True)
  z, xr = np.concatenate(lat), np.concatenate(rec)
  flat = z.reshape(len(z), -1)
  per_image_std = flat.std(axis=1)
  # neighbouring-pixel correlation of the latents (0 for white noise)
  zc = z - z.mean(axis=(1, 2, 3), keepdims=True)
  corr = float((zc[:, 1:] * zc[:, :-1]).mean() / (zc**2).mean())
  gauss = np.random.default_rng(0).standard_normal(flat.shape)
  out_dir = os.path.join(args.out, "encode_" + str(r))
  os.makedirs(out_dir, exist_ok=True)
  np.savez_compressed(os.path.join(out_dir, "latents.npz"), z=z.astype(np.float16))
  m = nfe_lib.score(sampling.to_uint8(xr), y, os.path.join(out_dir, "rec.npz"), reference)
  kurt = float(((flat - flat.mean()) ** 4).mean() / flat.var() ** 2)
  return {
    "respacing": r,
    "latent_mean": float(flat.mean()),
    "latent_std": float(flat.std()),
    "latent_std_per_image_p10_p90": [
      float(np.quantile(per_image_std, 0.1)),
      float(np.quantile(per_image_std, 0.9)),
    ],
    "latent_kurtosis": kurt,
    "latent_neighbour_corr": corr,
    "latent_abs_max_median": float(np.median(np.abs(flat).max(axis=1))),
    "gaussian_abs_max_median": float(np.median(np.abs(gauss).max(axis=1))),
    "recon_rms": float(np.sqrt(((xr - x0) ** 2).mean())),
    "recon_fid": m["fid"],
    "recon_accuracy": m.get("classifier_accuracy"),
  }


def epserr_experiment(model, args):
  """Per-t eps MSE of the network on test images (fixed noise), and the implied x0 error."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from adm_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from configs import fashion_mnist  # pylint: disable=g-import-not-at-top
  from experiments.exact_score import load_data  # pylint: disable=g-import-not-at-top

  apply = model.apply_fn()
  base = model.base
  x0 = load_data(args.num, "test")
  source = data_lib.create_source(fashion_mnist.get_config().data, "test")
  y = np.asarray([source[i][1] for i in range(args.num)], np.int32)
  abar = np.cumprod(1 - np.asarray(base.betas, np.float64))

  @jax.jit
  def err(params, x, labels, t, noise):
    xt = base.q_sample(x, t, noise)
    out = apply(params, xt, t, labels)
    eps = out[..., : x.shape[-1]]
    return jnp.mean((eps - noise) ** 2, axis=(1, 2, 3)), jnp.mean(eps**2, axis=(1, 2, 3))

  rows = []
  for tv in (0, 10, 25, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950, 980, 990, 995, 999):
    e, n = [], []
    for i in range(0, args.num, args.batch):
      xb = jnp.asarray(x0[i : i + args.batch])
      noise = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(1), i * 1000 + tv), xb.shape)
      t = jnp.full((xb.shape[0],), tv, jnp.int32)
      a, b = err(model.params, xb, jnp.asarray(y[i : i + args.batch]), t, noise)
      e.append(np.asarray(a))
      n.append(np.asarray(b))
    e = float(np.concatenate(e).mean())
    snr_inv = (1 - abar[tv]) / abar[tv]
    rows.append(
      {
        "t": tv,
        "eps_mse": e,
        "eps_pred_sq": float(np.concatenate(n).mean()),
        "x0_mse_implied": e * snr_inv,
        "sigma_over_alpha": float(np.sqrt(snr_inv)),
      }
    )
    print(f"  t={tv}: eps mse {e:.5f}, implied x0 mse {e * snr_inv:.4g}", flush=True)
  return {"rows": rows}


def clipstats_experiment(model, exp, args):
  """Along ancestral and DDIM trajectories over respacing R (first --batch samples): per step,
  the fraction of x0-prediction pixels outside [-1, 1] (clipped), the RMS of the raw x0, and
  the RMS of the change the clip makes; and the eps-prediction's RMS."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from adm_jax.diffusion import samplers  # pylint: disable=g-import-not-at-top

  r = int(exp.split(":")[1])
  process = process_over(model.base, _steps_of(model.base, r))
  apply = model.apply_fn()
  labels = jnp.asarray(nfe_lib.labels_all()[: args.batch])
  key = jax.random.fold_in(jax.random.PRNGKey(0), 0)

  def run(params, sampler):
    model_fn = lambda x, t, y=None, **kw: apply(params, x, t, y)
    x, step_key = samplers._initial_noise(key, (labels.shape[0], *model.image_shape), None)  # pylint: disable=protected-access

    def body(x, i):
      t = jnp.full((x.shape[0],), i, jnp.int32)
      out = process.p_mean_variance(model_fn, x, t, clip_denoised=False, model_kwargs={"y": labels})
      raw = out["pred_xstart"]
      eps = out["model_output"][..., :1]
      stats = jnp.stack(
        [
          jnp.mean(jnp.abs(raw) > 1),
          jnp.sqrt(jnp.mean(raw**2)),
          jnp.sqrt(jnp.mean((raw - jnp.clip(raw, -1, 1)) ** 2)),
          jnp.sqrt(jnp.mean(eps**2)),
          jnp.sqrt(jnp.mean(x**2)),
        ]
      )
      kw = dict(clip_denoised=True, model_kwargs={"y": labels})
      if sampler == "ddpm":
        nxt = samplers.p_sample(process, model_fn, x, t, key=jax.random.fold_in(step_key, i), **kw)[
          "sample"
        ]
      else:
        nxt = samplers.ddim_sample(process, model_fn, x, t, **kw)["sample"]
      return nxt, stats

    _, stats = jax.lax.scan(body, x, jnp.arange(r - 1, -1, -1, dtype=jnp.int32))
    return stats

  out = {
    "respacing": r,
    "timesteps": [int(v) for v in np.asarray(process.timestep_map)[::-1]],
    "columns": ["frac_clipped", "x0_raw_rms", "clip_change_rms", "eps_rms", "x_rms"],
  }
  for sampler in ("ddpm", "ddim"):
    stats = np.asarray(jax.jit(run, static_argnums=1)(model.params, sampler))
    out[sampler] = stats.tolist()
    print(f"  {sampler}: clipped fraction by step", np.round(stats[:, 0], 3).tolist(), flush=True)
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, default=-1)
  parser.add_argument("--ema_index", type=int, default=-1)
  parser.add_argument("--no_ema", action="store_true")
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=250)
  parser.add_argument("--out", default=os.path.join(nfe_lib.RUNS, "ode_deficit"))
  parser.add_argument(
    "--mirror", default=os.path.join(REPO, "experiments", "results", "ode_deficit.json")
  )
  parser.add_argument("experiments", nargs="*")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "results.json")
  model = reference = None
  if args.workdir.endswith(".npz"):  # a frozen model (nfe_lib.Model.export): its own step and EMA
    model = nfe_lib.Model(args.workdir, classifier=False)
    if args.step not in (-1, model.step) or args.no_ema or args.ema_index != -1:
      raise SystemExit(
        f"{args.workdir} holds only step {model.step} with EMA {model.ema_rate}: "
        "drop --step, --ema_index and --no_ema"
      )
    step, ema = model.step, model.ema_rate
  else:
    with open(os.path.join(args.workdir, "config.json")) as f:
      rates = json.load(f)["train"]["ema_rate"].split(",")
    ema = "none" if args.no_ema else rates[args.ema_index]
    from experiments.plateau_eval import checkpoint_steps  # pylint: disable=g-import-not-at-top

    step = args.step if args.step >= 0 else max(checkpoint_steps(args.workdir))
  for exp in args.experiments:
    if any(
      r["experiment"] == exp
      and r["ema_rate"] == ema
      and r["num_samples"] == args.num
      and r["step"] == step
      and r.get("model") == args.workdir
      for r in nfe_lib.load_results(path)
    ):
      continue
    if reference is None:
      reference = nfe_lib.reference_stats()
    if model is None:
      model = nfe_lib.Model(
        args.workdir, step, args.ema_index, use_ema=not args.no_ema, classifier=False
      )
    print(f"step {model.step} EMA {ema}: {exp}", flush=True)
    meta = {"tag": f"step{model.step}_ema{ema}"}
    kind = exp.split(":")[0]
    if kind == "encode":
      res = encode_experiment(model, exp, args, reference)
    elif kind == "epserr":
      res = epserr_experiment(model, args)
    elif kind == "clipstats":
      res = clipstats_experiment(model, exp, args)
    else:
      res = sample_experiment(model, exp, args, reference, meta)
    record = {
      "experiment": exp,
      "step": model.step,
      "ema_rate": ema,
      "num_samples": args.num,
      "model": args.workdir,
      **res,
    }
    key = lambda r: (r["experiment"], r["step"], r["ema_rate"], r["num_samples"], r.get("model"))
    nfe_lib.add_result(path, record, key)
    nfe_lib.add_result(args.mirror, record, key)  # merged: the mirror keeps other runs' records
    print(json.dumps({k: v for k, v in record.items() if k != "rows"}), flush=True)


if __name__ == "__main__":
  main()
