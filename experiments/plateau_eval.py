"""The training curve: sample quality at checkpoints along a run (plateau check, deficit vs steps).

usage: python experiments/plateau_eval.py --workdir=W [--every 2000 | --steps 2000,4000]
           [--points ddpm:100:0 dpmpp_2m:20:0:time_uniform ddim:50:0:respacing=ddim50]
           [--num 1000] [--ema_index -1] [--no_ema] [--out $ADM_JAX_RUNS/plateau] [--watch]

For each checkpoint step (every kept checkpoint whose step is a multiple of --every, or --steps)
and each point, --num samples with the fixed keys and labels of experiments/nfe_lib.py, scored
with fmnist_cnn_v1 against the one reference statistics file (10,000 test images). Each batch
and each finished (step, point) is saved at once (OUT/results.json, merged into
experiments/results/plateau.json under a lock: records of other runs and processes are kept)
and skipped when rerun. --watch keeps polling for new
checkpoints (for a training run in progress) until --until_step has been evaluated.
"""

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import nfe_lib  # noqa: E402  pylint: disable=wrong-import-position


def checkpoint_steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def record_key(record):
  """What makes two records the same measurement (records of one run at one step)."""
  return (
    record.get("run"),
    record["step"],
    record["name"],
    record["ema_rate"],
    record["num_samples"],
  )


def evaluate(args, steps, results):
  done = {(r["step"], r["name"], r["ema_rate"], r["num_samples"]) for r in results}
  reference = nfe_lib.reference_stats()
  points = [nfe_lib.parse_point(p) for p in args.points]
  with open(os.path.join(args.workdir, "config.json")) as f:
    ema = "none" if args.no_ema else json.load(f)["train"]["ema_rate"].split(",")[args.ema_index]
  for step in steps:
    model = None
    for point in points:
      name = nfe_lib.point_name(point)
      if (step, name, ema, args.num) in done:
        continue
      if model is None:
        model = nfe_lib.Model(
          args.workdir,
          step,
          args.ema_index,
          use_ema=not args.no_ema,
          classifier=any(p["scale"] for p in points),
        )
      out_dir = os.path.join(args.out, f"step{step}_ema{model.ema_rate}", name)
      print(f"step {step} EMA {model.ema_rate} {name}", flush=True)
      images, labels, records = nfe_lib.run_batches(
        lambda: model.sample_fn(point)[0],
        model.params,
        model.clf_params,
        out_dir,
        args.num,
        args.batch,
      )
      m = nfe_lib.score(images, labels, os.path.join(out_dir, f"eval_{args.num}.npz"), reference)
      record = {
        "run": os.path.basename(os.path.normpath(args.workdir)),
        "step": step,
        "name": name,
        "ema_rate": model.ema_rate,
        "num_samples": args.num,
        **point,
        "fid": m["fid"],
        "sfid": m["sfid"],
        "precision": m["precision"],
        "recall": m["recall"],
        "accuracy": m.get("classifier_accuracy"),
        "inception_score": m["inception_score"],
        **nfe_lib.timing(records),
      }
      results.append(record)
      nfe_lib.save_results(os.path.join(args.out, "results.json"), results)
      nfe_lib.add_result(args.mirror, record, record_key)
      print(
        f"step {step} {name}: FID {m['fid']:.2f} P {m['precision']:.3f} R {m['recall']:.3f} "
        f"acc {m.get('classifier_accuracy', 0):.3f}",
        flush=True,
      )


def table(results):
  names = sorted({(r["name"], r["ema_rate"]) for r in results})
  steps = sorted({r["step"] for r in results})
  by = {(r["step"], r["name"], r["ema_rate"]): r["fid"] for r in results}
  lines = [
    "| step | " + " | ".join(f"{n} (EMA {e})" for n, e in names) + " |",
    "|---|" + "---|" * len(names),
  ]
  for s in steps:
    lines.append(
      f"| {s} | "
      + " | ".join(f"{by[(s, n, e)]:.2f}" if (s, n, e) in by else "" for n, e in names)
      + " |"
    )
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--every", type=int, default=2000)
  parser.add_argument("--steps", default="")
  parser.add_argument("--points", nargs="*", default=["ddpm:100:0"])
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=250)
  parser.add_argument("--ema_index", type=int, default=-1)
  parser.add_argument("--no_ema", action="store_true")
  parser.add_argument("--out", default=os.path.join(nfe_lib.RUNS, "plateau"))
  parser.add_argument(
    "--mirror", default=os.path.join(REPO, "experiments", "results", "plateau.json")
  )
  parser.add_argument("--watch", action="store_true")
  parser.add_argument("--until_step", type=int, default=10**9)
  parser.add_argument("--table", action="store_true")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  os.makedirs(os.path.dirname(args.mirror), exist_ok=True)
  path = os.path.join(args.out, "results.json")
  results = nfe_lib.load_results(path)
  if not args.table:
    while True:
      if args.steps:
        steps = [int(s) for s in args.steps.split(",")]
      else:
        steps = [s for s in checkpoint_steps(args.workdir) if s % args.every == 0]
      evaluate(args, steps, results)
      if not args.watch or (steps and max(steps) >= args.until_step):
        break
      time.sleep(120)
  print(table(results))


if __name__ == "__main__":
  main()
