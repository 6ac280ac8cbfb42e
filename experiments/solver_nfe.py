"""FID against network evaluations (NFE) for every sampler, on one trained model and one reference.

usage: python experiments/solver_nfe.py --workdir=W [--step S] [--out $ADM_JAX_RUNS/solver_nfe]
           [--scales 0,1] [--samplers ddim,dpmpp_2m,dpmpp_3m,dpmpp_2s,sde_dpmpp_2m,plms,unipc]
           [--nfe 20,10,5,50] [--ancestral 250,50,25,100] [--num 1000] [--batch 250]
           [--decisive "ddpm:250:0 dpmpp_2m:20:0:time_uniform"] [--decisive_num 2000]
           [--points P ...] [--only_points] [--plot PNG] [--table]

W: a configs/fashion_mnist.py training workdir with a classifier (--mode=train_classifier).
Points are 'sampler:nfe:scale[:schedule][:k=v,...]'. The grid (unless --only_points):
for each scale, ancestral sampling (`ddpm`, respacing N: N evenly spaced steps of the
learned-variance process) at --ancestral; each solver at --nfe, with the time schedule its
authors recommend here: DPM-Solver++ 2M / 3M / 2S and SDE-DPM-Solver++(2M) logSNR (the
DPM-Solver authors' choice for low-resolution pixel models; time_uniform is theirs for high
resolution), plus DPM-Solver++(2M) time_uniform; PLMS time_uniform (PNDM); DDIM the library's
evenly spaced respacing 'N' (t = T - 1 ... 0): the DDIM paper's linear selection (ADM's
'ddimN', first step at t = T - T/N) was made for the linear beta schedule; under the cosine
schedule its start (alpha = 0.078 at N = 20) from pure noise costs FID 3.3 -> 15 even with the
exact score (experiments/exact_score.py); 2M / SDE-2M also at NFE 15 and 25 (--extra_nfe). Samplers
named here but absent from the library (e.g. `unipc` before its merge) are skipped with a note,
so the same command adds them after a merge (UniPC uses its paper's time_uniform / logsnr the
same way: --samplers unipc --nfe 5,10,15,20,25,50 --scales 0,1,4).

Every point: --num images in batches of --batch with the fixed keys and labels of
experiments/nfe_lib.py (the same x_T and labels for every sampler), each batch saved at once
under OUT/points/NAME/ and skipped when rerun; --decisive points are extended to
--decisive_num images (the first --num are the same images). Metrics with fmnist_cnn_v1
against the one reference statistics file (the 10,000 test images); seconds per image are the
wall time of the sampling calls (compilation excluded) on this shared 2-core machine, with the
process CPU seconds and the 1-minute load average beside them. Results go to --results
(experiments/results/solver_nfe.json) as each point finishes.
"""

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import nfe_lib  # noqa: E402  pylint: disable=wrong-import-position

SOLVERS = ("ddim", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "sde_dpmpp_2m", "plms", "unipc")
# The DPM-Solver / DPM-Solver++ authors recommend logSNR steps for low-resolution pixel models
# (time_uniform for high resolution); 2M (and UniPC) also run time_uniform. PLMS: PNDM's uniform
# steps. DDIM: the library's evenly spaced respacing 'N' (both ends; see below).
RECOMMENDED = {
  "dpmpp_2m": "logsnr",
  "dpmpp_3m": "logsnr",
  "dpmpp_2s": "logsnr",
  "sde_dpmpp_2m": "logsnr",
  "plms": "time_uniform",
  "unipc": "logsnr",
  "dpmpp_1": "logsnr",
}
SECOND_SCHEDULE = {"dpmpp_2m": "time_uniform", "unipc": "time_uniform"}
LABELS = {
  "ddpm": "ancestral",
  "ddim": "DDIM",
  "dpmpp_2m": "DPM-Solver++(2M)",
  "dpmpp_3m": "DPM-Solver++(3M)",
  "dpmpp_2s": "DPM-Solver++(2S)",
  "sde_dpmpp_2m": "SDE-DPM-Solver++(2M)",
  "plms": "PLMS",
  "unipc": "UniPC",
}


def grid_points(args):
  points = []
  for scale in [float(s) for s in args.scales.split(",") if s]:
    for n in [int(v) for v in args.ancestral.split(",") if v]:
      points.append({"sampler": "ddpm", "nfe": n, "scale": scale, "schedule": "", "options": {}})
    for nfe in [int(v) for v in args.nfe.split(",") if v]:
      for s in args.samplers.split(","):
        points += solver_points(s, nfe, scale)
    for nfe in [int(v) for v in args.extra_nfe.split(",") if v]:
      for s in args.extra_nfe_samplers.split(","):
        if s in args.samplers.split(","):
          points += solver_points(s, nfe, scale)
  return points


def solver_points(sampler, nfe, scale):
  if sampler == "ddim":
    return [{"sampler": "ddim", "nfe": nfe, "scale": scale, "schedule": "", "options": {}}]
  out = [
    {
      "sampler": sampler,
      "nfe": nfe,
      "scale": scale,
      "schedule": RECOMMENDED.get(sampler, "logsnr"),
      "options": {},
    }
  ]
  if sampler in SECOND_SCHEDULE:
    out.append(
      {
        "sampler": sampler,
        "nfe": nfe,
        "scale": scale,
        "schedule": SECOND_SCHEDULE[sampler],
        "options": {},
      }
    )
  return out


def available(sampler):
  from adm_jax import sampling  # pylint: disable=g-import-not-at-top

  return sampler in sampling.SAMPLERS


def run_point(model, point, args, num, reference, log=print):
  """Samples (resumably) and scores one point; returns its result record."""
  name = nfe_lib.point_name(point)
  out_dir = os.path.join(args.out, "points", name)
  holder = {}

  def factory():
    holder["fn"], holder["spec"] = model.sample_fn(point)
    return holder["fn"]

  images, labels, records = nfe_lib.run_batches(
    factory, model.params, model.clf_params, out_dir, num, args.batch, log=log
  )
  spec = holder.get("spec") or model.sample_fn(point)[1]
  metrics = nfe_lib.score(images, labels, os.path.join(out_dir, f"eval_{num}.npz"), reference)
  return {
    "sampler": point["sampler"],
    "nfe": spec.nfe(model.base),
    "nfe_requested": point["nfe"],
    "classifier_scale": float(point["scale"]),
    "time_schedule": point["schedule"] or f"respacing '{spec.respacing}'",
    "options": point["options"],
    "name": name,
    "num_samples": num,
    "fid": metrics["fid"],
    "sfid": metrics["sfid"],
    "inception_score": metrics["inception_score"],
    "precision": metrics["precision"],
    "recall": metrics["recall"],
    "accuracy": metrics.get("classifier_accuracy"),
    **nfe_lib.timing(records[: -(-num // args.batch)]),
    "sampler_spec": spec.describe(),
    "checkpoint_step": model.step,
    "ema_rate": model.ema_rate,
  }


def save_point(path, model, reference, result):
  """Adds `result` to the results file at `path` under a file lock, re-reading it first (other
  processes may have added points since this one started); returns the merged results."""
  import fcntl  # pylint: disable=g-import-not-at-top

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    data = nfe_lib.load_results(path) or {"model": {}, "feature_net": "fmnist_cnn_v1"}
    key = (result["name"], result["num_samples"])
    points = [p for p in data.get("points", []) if (p["name"], p["num_samples"]) != key]
    data.update(model={**model, **data["model"]}, reference=reference, points=points + [result])
    if (
      (result["sampler"], result["nfe"], result["num_samples"]) == ("ddpm", 250, 1000)
      and not result["options"]
      and result["classifier_scale"] == 0
    ):
      data["model"]["fid_ancestral250_n1000"] = result["fid"]
    nfe_lib.save_results(path, data)
  return data


def table(points, scales=None):
  lines = []
  for scale in sorted({p["classifier_scale"] for p in points}):
    if scales is not None and scale not in scales:
      continue
    rows = sorted(
      (p for p in points if p["classifier_scale"] == scale),
      key=lambda p: (
        p["sampler"] != "ddpm",
        p["sampler"],
        p["time_schedule"],
        p["nfe"],
        p["num_samples"],
      ),
    )
    lines += [
      f"\nClassifier scale {scale:g}:\n",
      "| sampler | time schedule | NFE | N | FID | precision | recall | class acc. | "
      "s / image (load) |",
      "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in rows:
      opts = "".join(f" {k}={v}" for k, v in sorted(p["options"].items()) if k != "respacing")
      lines.append(
        f"| {LABELS.get(p['sampler'], p['sampler'])}{opts} | {p['time_schedule']} | "
        f"{p['nfe']} | {p['num_samples']} | {p['fid']:.2f} | {p['precision']:.3f} | "
        f"{p['recall']:.3f} | {p['accuracy']:.3f} | {p['seconds_per_image']:.3f} "
        f"({p['load_avg_1min']:.1f}) |"
      )
  return "\n".join(lines)


def real_image_fid(num=1000):
  """Mean FID of disjoint sets of `num` real training images (experiments/fid_floor.py), or None."""
  path = os.path.join(REPO, "experiments", "results", "fid_floor.json")
  if not os.path.exists(path):
    return None
  fids = [r["fid"] for r in nfe_lib.load_results(path)["sets"] if r["num"] == num]
  return sum(fids) / len(fids) if fids else None


def curve_key(point):
  """(sampler, time schedule) of a plotted curve; the respacings 'N' of DDIM and ancestral
  sampling (one per NFE) are one curve."""
  sched = point["time_schedule"]
  return point["sampler"], ("respacing" if sched.startswith("respacing") else sched)


def plot(points, path, floor=None):
  """One panel per classifier scale: FID against NFE, one curve per sampler and time schedule
  (the same colour and style in every panel, one legend); `floor`: the FID of real images at the
  same N (a dotted line)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  rows = [
    p
    for p in points
    if p["num_samples"] == 1000 and not {k for k in p["options"] if k != "respacing"}
  ]
  keys = sorted({curve_key(p) for p in rows}, key=lambda k: (k[0] != "ddpm", k))
  colors = plt.get_cmap("tab10").colors
  styles = {}
  for i, (sampler, sched) in enumerate(k for k in keys if k[0] != "ddpm"):
    label = LABELS.get(sampler, sampler) + (f" ({sched})" if sampler in SECOND_SCHEDULE else "")
    dashed = sched == "time_uniform" and sampler in SECOND_SCHEDULE
    styles[(sampler, sched)] = dict(
      marker="o", ls="--" if dashed else "-", color=colors[i % len(colors)], label=label
    )
  styles[("ddpm", "respacing")] = dict(marker="s", ls=":", color="black", label="ancestral")
  scales = sorted({p["classifier_scale"] for p in rows})
  fig, axes = plt.subplots(1, len(scales), figsize=(5.2 * len(scales), 4.6), squeeze=False)
  for ax, scale in zip(axes[0], scales):
    for key in keys:
      pts = sorted(
        (p["nfe"], p["fid"]) for p in rows if p["classifier_scale"] == scale and curve_key(p) == key
      )
      if pts:
        ax.plot(*zip(*pts), **styles[key])
    if floor is not None:
      ax.axhline(floor, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([5, 10, 20, 50, 100, 250])
    ax.set_xticklabels(["5", "10", "20", "50", "100", "250"])
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel("FID (fmnist_cnn_v1, 10k test images)")
    ax.set_title(f"classifier scale {scale:g} (N = 1,000 per point)")
    ax.grid(alpha=0.3, which="both")
  handles = [plt.Line2D([], [], **styles[k]) for k in keys]
  if floor is not None:
    handles.append(
      plt.Line2D([], [], color="gray", ls=":", label="real training images (mean of 5 sets)")
    )
  fig.legend(handles=handles, loc="center right", fontsize=8)
  fig.tight_layout(rect=(0, 0, 0.83, 1))
  fig.savefig(path, dpi=110)
  return path


def sample_rows(out, names, path, count=12):
  """One row per point NAME: its first `count` images (batch 0: the same x_T and labels in every
  row), upscaled 2x, the point's name on the left. Returns the path of the PNG."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from PIL import ImageDraw  # pylint: disable=g-import-not-at-top

  rows = []
  for name in names:
    with np.load(os.path.join(out, "points", name, "batch_0.npz")) as d:
      images = d["images"][:count]
    rows.append(np.concatenate([np.pad(im[..., 0], 1, constant_values=255) for im in images], 1))
  grid = np.concatenate(rows, 0)
  image = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST)
  margin = 170
  canvas = Image.new("L", (image.width + margin, image.height), 255)
  canvas.paste(image, (margin, 0))
  draw = ImageDraw.Draw(canvas)
  row_height = image.height // len(names)
  for i, name in enumerate(names):
    draw.text((4, i * row_height + row_height // 2 - 5), name, fill=0)
  canvas.save(path)
  return path


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, default=-1)
  parser.add_argument("--out", default=os.path.join(nfe_lib.RUNS, "solver_nfe"))
  parser.add_argument(
    "--results", default=os.path.join(REPO, "experiments", "results", "solver_nfe.json")
  )
  parser.add_argument("--scales", default="0,1")
  parser.add_argument("--samplers", default=",".join(SOLVERS))
  parser.add_argument("--nfe", default="20,10,5,50")
  parser.add_argument("--extra_nfe", default="15,25")
  parser.add_argument("--extra_nfe_samplers", default="dpmpp_2m,sde_dpmpp_2m,unipc")
  parser.add_argument("--ancestral", default="250,50,25,100")
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=250)
  parser.add_argument(
    "--decisive", default="", help="space-separated points sampled to --decisive_num"
  )
  parser.add_argument("--decisive_num", type=int, default=2000)
  parser.add_argument("--points", nargs="*", default=[])
  parser.add_argument("--only_points", action="store_true")
  parser.add_argument("--plot", default="")
  parser.add_argument("--table", action="store_true", help="only print the table (and plot)")
  parser.add_argument(
    "--samples_figure",
    default="",
    help="PNG: the first images of --samples_points (point names under OUT/points), one row each",
  )
  parser.add_argument("--samples_points", default="")
  parser.add_argument(
    "--fid_ancestral250",
    type=float,
    default=None,
    help="the model's ancestral-250 FID at N = 1,000 (else from the results)",
  )
  args = parser.parse_args()
  data = nfe_lib.load_results(args.results)
  data = data or {"model": {}, "feature_net": "fmnist_cnn_v1", "points": []}
  todo = [] if args.only_points else [(p, args.num) for p in grid_points(args)]
  todo += [(nfe_lib.parse_point(p), args.num) for p in args.points]
  todo += [(nfe_lib.parse_point(p), args.decisive_num) for p in args.decisive.split() if p]
  done = {(p["name"], p["num_samples"]) for p in data["points"]}
  model = reference = None
  for point, num in todo:
    name = nfe_lib.point_name(point)
    if args.table or (name, num) in done:
      continue
    if not available(point["sampler"]):
      print(f"skip {name}: sampler {point['sampler']!r} is not in this checkout's library")
      continue
    if model is None:
      model = nfe_lib.Model(args.workdir, args.step)
      reference = nfe_lib.reference_stats()
      recorded = (data["model"].get("workdir"), data["model"].get("steps"))
      if data["points"] and recorded != (args.workdir, model.step):
        raise SystemExit(
          f"{args.results} holds points of {recorded[0]} step {recorded[1]}, not "
          f"{args.workdir} step {model.step}: pass another --results to keep runs apart"
        )
      data["model"] = {
        "config": "configs/fashion_mnist.py ("
        + ", ".join(f"train.{k}={model.config.train[k]}" for k in ("ema_rate", "lr", "batch_size"))
        + f"; sampled with EMA {model.ema_rate})",
        "workdir": args.workdir,
        "steps": model.step,
        **{k: v for k, v in data["model"].items() if k == "fid_ancestral250_n1000"},
      }
      data["reference"] = "fmnist_cnn_v1 statistics of the 10,000 Fashion-MNIST test images"
    print(f"{name} (N = {num})", flush=True)
    result = run_point(model, point, args, num, reference)
    data = save_point(args.results, data["model"], data["reference"], result)
    print(
      f"{name} N={num}: FID {result['fid']:.2f} P {result['precision']:.3f} R "
      f"{result['recall']:.3f} acc {result['accuracy']:.3f} "
      f"{result['seconds_per_image']:.3f} s/image (load {result['load_avg_1min']:.1f})",
      flush=True,
    )
  if args.fid_ancestral250 is not None:
    data["model"]["fid_ancestral250_n1000"] = args.fid_ancestral250
    nfe_lib.save_results(args.results, data)
  print(table(data["points"]))
  if args.plot:
    print("plot:", plot(data["points"], args.plot, floor=real_image_fid()))
  if args.samples_figure:
    names = args.samples_points.split(",")
    print("samples:", sample_rows(args.out, names, args.samples_figure))


if __name__ == "__main__":
  main()
