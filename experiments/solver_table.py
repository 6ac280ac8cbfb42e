"""Quality against network evaluations (NFE) for every sampler on a trained Fashion-MNIST model.

usage: python experiments/solver_table.py --workdir=WORKDIR [--num 1000] [--scales 1,0,4]
           [--samplers ddpm,ddim,dpmpp_2m,dpmpp_3m,dpmpp_2s,sde_dpmpp_2m,plms]
           [--nfe 20,10,5,15,25,50] [--ceiling 250,1000] [--time_schedule logsnr]
           [--reference_num 10000] [--batch 250] [--only_extra] [--extra NAME:NFE:SCALE[:OPTS] ...]

WORKDIR is a `configs/fashion_mnist.py` training workdir with a classifier
(--mode=train_classifier).
For each (sampler, NFE, classifier scale): `--num` samples with random labels (seed 0; batch i
uses the same key for every sampler, so deterministic samplers start from the same x_T),
through the sample mode's own jitted function (adm_jax.sampling.make_sample_fn; x_0 clipped
to [-1, 1] as ADM's samplers do), then FID / IS / precision / recall / class accuracy with
fmnist_cnn_v1 against the first `--reference_num` training images, and the wall-clock seconds
per image of the sampling (compilation excluded: the first batch is timed apart). Results go
to WORKDIR/solver_table/results.json (a finished point is not run again) and a Markdown
table; `--plot` draws FID against NFE per sampler, one panel per scale.
ddpm / ddim take NFE as respacing "N" (evenly spaced steps, both ends); the solvers take the
`--time_schedule` over the un-respaced process. `--extra` adds single points, e.g.
"ddim:50:0:eta=1.0", "ddim:50:0:respacing=ddim50", "ddim:50:0:clip=0",
"dpmpp_2m:20:1:thresholding=1", "dpmpp_2m:20:1:schedule=time_uniform".
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

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "sde_dpmpp_2m", "plms")


def point_name(point):
  name = f"{point['sampler']}_{point['nfe']}_s{point['scale']:g}"
  for key in sorted(point.get("options", {})):
    name += f"_{key}{point['options'][key]}"
  return name


def parse_extra(text):
  parts = text.split(":")
  options = dict(kv.split("=", 1) for kv in parts[3].split(",")) if len(parts) > 3 else {}
  return {"sampler": parts[0], "nfe": int(parts[1]), "scale": float(parts[2]), "options": options}


class Runner:
  """Builds the model, classifier and reference statistics once; samples and scores points."""

  def __init__(self, args):
    import jax  # pylint: disable=g-import-not-at-top

    from adm_jax import config_base  # pylint: disable=g-import-not-at-top
    from adm_jax import evaluation  # pylint: disable=g-import-not-at-top
    from adm_jax import networks  # pylint: disable=g-import-not-at-top
    from adm_jax import restore  # pylint: disable=g-import-not-at-top
    from adm_jax import sharding  # pylint: disable=g-import-not-at-top
    from experiments.guidance_sweep import cached_reference  # pylint: disable=g-import-not-at-top

    self.jax, self.evaluation = jax, evaluation
    self.args = args
    self.out = os.path.join(args.workdir, "solver_table")
    os.makedirs(self.out, exist_ok=True)
    config = config_base.from_config_file("fashion_mnist")
    config.sample.update(num_samples=args.num, batch_size=args.batch, labels="random", seed=0)
    self.config = config
    self.mesh = sharding.create_mesh(1, jax.devices()[:1])
    config, self.model, self.params, self.step = restore.sampling_model(
      config, args.workdir, self.mesh
    )
    self.classifier, self.clf_params = restore.guidance_classifier(config, args.workdir, self.mesh)
    self.base = networks.diffusion_process(config)
    from adm_jax.modes import sample  # pylint: disable=g-import-not-at-top

    self.labels = sample.parse_labels("random", args.num, config.model.num_classes, 0)
    stats = os.path.join(self.out, f"reference_stats_train_{args.reference_num}.npz")
    if not os.path.exists(stats):
      evaluation.save_reference_stats(
        stats, cached_reference(self.out, "train", args.reference_num)
      )
    self.reference = stats

  def sample_fn(self, point):
    from adm_jax import sampling  # pylint: disable=g-import-not-at-top

    options = point.get("options", {})
    name, nfe = point["sampler"], point["nfe"]
    solver = name in sampling.SOLVERS
    spec = sampling.SamplerSpec(
      name=name,
      steps=0 if "respacing" in options else nfe,
      timestep_respacing=options.get("respacing", ""),
      eta=float(options.get("eta", 0.0)),
      time_schedule=options.get("schedule", self.args.time_schedule) if solver else "time_uniform",
      thresholding=bool(int(options.get("thresholding", 0))),
    )
    return sampling.make_sample_fn(
      self.model.inference_fn(),
      self.base,
      self.model.image_shape,
      spec,
      class_cond=True,
      classifier_fn=self.classifier.inference_fn(),
      classifier_scale=point["scale"],
      clip_denoised=bool(int(options.get("clip", 1))),
    ), spec

  def run(self, point):
    jax = self.jax
    fn, spec = self.sample_fn(point)
    n, batch = self.args.num, self.args.batch
    images, seconds, first = [], 0.0, 0.0
    for i in range(-(-n // batch)):
      labels = jax.numpy.asarray(np.resize(self.labels[i * batch : (i + 1) * batch], batch))
      start = time.perf_counter()
      out = jax.block_until_ready(
        fn(self.params, jax.random.fold_in(jax.random.PRNGKey(0), i), labels, self.clf_params)
      )
      if i == 0:
        first = time.perf_counter() - start  # compilation + one batch
      else:
        seconds += time.perf_counter() - start
      images.append(np.asarray(out))
    from adm_jax import sampling  # pylint: disable=g-import-not-at-top

    arr = sampling.to_uint8(np.concatenate(images)[:n])
    npz = os.path.join(self.out, point_name(point) + ".npz")
    np.savez(npz, arr_0=arr, arr_1=self.labels[:n])
    result = self.evaluation.evaluate_npz(npz, self.reference)
    timed_images = max(n - batch, 1)
    result.update(
      point,
      nfe_per_image=spec.nfe(self.base),
      name=point_name(point),
      s_per_image=seconds / timed_images if n > batch else first / n,
      first_batch_s=first,
      checkpoint_step=self.step,
      sampler_spec=spec.describe(),
    )
    return result


def table(results, scales):
  lines = []
  for scale in scales:
    rows = sorted(
      (r for r in results if r["scale"] == scale), key=lambda r: (r["sampler"], r["nfe"], r["name"])
    )
    if not rows:
      continue
    lines += [
      f"\nclassifier scale {scale:g}:\n",
      "| sampler | NFE | FID | IS | precision | recall | class acc. | ms / image |",
      "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
      label = r["sampler"] + "".join(f" {k}={v}" for k, v in sorted(r.get("options", {}).items()))
      lines.append(
        f"| {label} | {r['nfe']} | {r['fid']:.2f} | {r['inception_score']:.2f} | "
        f"{r['precision']:.3f} | {r['recall']:.3f} | "
        f"{r.get('classifier_accuracy', float('nan')):.3f} | "
        f"{1e3 * r['s_per_image']:.1f} |"
      )
  return "\n".join(lines)


def plot(results, scales, path):
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, len(scales), figsize=(5 * len(scales), 4), squeeze=False)
  for ax, scale in zip(axes[0], scales):
    rows = [r for r in results if r["scale"] == scale and not r.get("options")]
    for sampler in SAMPLERS:
      points = sorted(
        (r["nfe"], r["fid"]) for r in rows if r["sampler"] == sampler and r["nfe"] <= 50
      )
      if points:
        ax.plot(*zip(*points), marker="o", label=sampler)
    for r in rows:
      if r["sampler"] == "ddpm" and r["nfe"] > 50:
        ax.axhline(r["fid"], ls="--", color="gray", lw=1)
        ax.text(50, r["fid"], f"ancestral {r['nfe']}", va="bottom", ha="right", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel("FID (fmnist_cnn_v1)")
    ax.set_title(f"classifier scale {scale:g}")
    ax.grid(alpha=0.3, which="both")
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=250)
  parser.add_argument("--scales", default="1,0,4")
  parser.add_argument("--samplers", default=",".join(SAMPLERS))
  parser.add_argument("--nfe", default="20,10,5,15,25,50")
  parser.add_argument("--ceiling", default="250,1000", help="ancestral NFE of the quality ceiling")
  parser.add_argument("--time_schedule", default="logsnr")
  parser.add_argument("--reference_num", type=int, default=10000)
  parser.add_argument("--extra", nargs="*", default=[])
  parser.add_argument("--only_extra", action="store_true")
  parser.add_argument("--plot", default="")
  parser.add_argument("--table_only", action="store_true")
  args = parser.parse_args()
  xla_env.configure_for_cpu()
  scales = [float(s) for s in args.scales.split(",")]
  points = [parse_extra(e) for e in args.extra]
  if not args.only_extra:
    for scale in scales:
      points += [
        {"sampler": "ddpm", "nfe": int(n), "scale": scale, "options": {}}
        for n in args.ceiling.split(",")
        if n
      ]
      for nfe in args.nfe.split(","):
        points += [
          {"sampler": s, "nfe": int(nfe), "scale": scale, "options": {}}
          for s in args.samplers.split(",")
        ]
  path = os.path.join(args.workdir, "solver_table", "results.json")
  results = json.load(open(path)) if os.path.exists(path) else []
  done = {r["name"] for r in results}
  runner = None
  for point in points:
    if args.table_only or point_name(point) in done:
      continue
    runner = runner or Runner(args)
    result = runner.run(point)
    results.append(result)
    with open(path + ".tmp", "w") as f:
      json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
    print(
      f"{result['name']}: FID {result['fid']:.2f} acc {result.get('classifier_accuracy', 0):.3f} "
      f"P {result['precision']:.3f} R {result['recall']:.3f} "
      f"{1e3 * result['s_per_image']:.1f} ms/image",
      flush=True,
    )
  print(table(results, sorted({r["scale"] for r in results})))
  if args.plot:
    print(
      "plot:",
      plot(results, sorted({r["scale"] for r in results if not r.get("options")}), args.plot),
    )


if __name__ == "__main__":
  main()
