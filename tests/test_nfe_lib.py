"""The campaign's frozen model: a training workdir's checkpoint exported to one .npz and back."""

import json
import shutil

import jax
import numpy as np
import pytest

from experiments import nfe_lib
from tests import tiny


def _equal_trees(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """The tiny trained workdir's step-2 model and classifier, and their export (one per module)."""
  model = nfe_lib.Model(tiny.trained_workdir(), step=2, ema_index=-1)
  path = str(tmp_path_factory.mktemp("frozen") / "frozen.npz")
  model.export(path)
  return model, path


def _copy(path, tmp_path):
  copy = str(tmp_path / "frozen.npz")
  shutil.copyfile(path, copy)
  return copy


def test_export_round_trip(exported):
  model, path = exported
  assert model.classifier is not None and model.step == 2
  frozen = nfe_lib.Model(path)
  assert (frozen.step, frozen.ema_rate) == (2, model.ema_rate)
  assert frozen.config.to_dict() == model.config.to_dict()
  assert _equal_trees(frozen.params, model.params)
  assert _equal_trees(frozen.clf_params, model.clf_params)
  # The newest checkpoint differs from step 2: the export froze the asked step.
  newest = nfe_lib.Model(tiny.trained_workdir(), classifier=False)
  assert not _equal_trees(newest.params, frozen.params)


def test_frozen_model_with_other_shapes_refused(exported, tmp_path):
  path = _copy(exported[1], tmp_path)
  with np.load(path) as d:
    arrays = {k: d[k] for k in d.files}
  meta = json.loads(str(arrays["meta"]))
  meta["config"]["model"]["num_channels"] = 64
  arrays["meta"] = np.asarray(json.dumps(meta))
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match="has shape"):
    nfe_lib.Model(path)


def test_ode_deficit_on_a_frozen_model_keeps_other_runs(tmp_path, monkeypatch):
  """ode_deficit.py takes a frozen .npz (its step and EMA) and merges its records into the
  mirror file, keeping the records of other runs (the metric is replaced: the feature network
  is not what is tested here)."""
  from experiments import ode_deficit

  model = nfe_lib.Model(tiny.trained_workdir(), classifier=False)
  path = str(tmp_path / "frozen.npz")
  model.export(path)
  mirror = tmp_path / "ode_deficit.json"
  other = {"experiment": "switch:3:1:anc_ddim", "step": model.step, "ema_rate": model.ema_rate}
  other.update(num_samples=2, model="an earlier run", fid=76.0)
  mirror.write_text(json.dumps([other]))
  scored = []

  def fake_score(images, labels, npz_path, reference):
    scored.append(images.shape)
    return dict.fromkeys(("fid", "sfid", "precision", "recall", "inception_score"), 1.0)

  monkeypatch.setattr(nfe_lib, "reference_stats", lambda: "reference.npz")
  monkeypatch.setattr(nfe_lib, "score", fake_score)
  argv = ["ode_deficit.py", f"--workdir={path}", f"--out={tmp_path / 'out'}", f"--mirror={mirror}"]
  monkeypatch.setattr("sys.argv", argv + ["--num=2", "--batch=2", "switch:3:1:anc_ddim"])
  ode_deficit.main()
  records = json.loads(mirror.read_text())
  assert other in records and len(records) == 2
  (new,) = [r for r in records if r["model"] == path]
  assert (new["step"], new["ema_rate"], new["first_steps"]) == (model.step, model.ema_rate, 1)
  assert scored == [(2, *model.image_shape)]
  monkeypatch.setattr("sys.argv", argv + ["--step=1", "switch:3:1:anc_ddim"])
  with pytest.raises(SystemExit, match="holds only step"):
    ode_deficit.main()


def _add_records(path, worker, count):
  for i in range(count):
    nfe_lib.add_result(path, {"worker": worker, "i": i}, lambda r: (r["worker"], r["i"]))


def test_processes_sharing_one_results_file_keep_every_record(tmp_path):
  import multiprocessing  # pylint: disable=g-import-not-at-top

  path = str(tmp_path / "results.json")
  nfe_lib.save_results(path, [{"worker": "earlier run", "i": 0}])
  context = multiprocessing.get_context("spawn")
  workers = [context.Process(target=_add_records, args=(path, w, 25)) for w in ("a", "b")]
  for w in workers:
    w.start()
  for w in workers:
    w.join(60)
    assert w.exitcode == 0
  records = nfe_lib.load_results(path)
  assert len(records) == 51 and {"worker": "earlier run", "i": 0} in records
  # A record with the key of an existing one replaces it.
  merged = nfe_lib.add_result(
    path, {"worker": "a", "i": 3, "v": 1}, lambda r: (r["worker"], r["i"])
  )
  assert len(merged) == 51 and {"worker": "a", "i": 3, "v": 1} in merged


def test_solver_plot_draws_one_curve_per_sampler_and_schedule(tmp_path):
  from experiments import solver_nfe  # pylint: disable=g-import-not-at-top

  def point(sampler, nfe, schedule, scale=0.0, **options):
    return dict(
      sampler=sampler,
      nfe=nfe,
      time_schedule=schedule,
      classifier_scale=scale,
      num_samples=1000,
      fid=10.0 / nfe,
      options=options,
    )

  points = [point("ddim", n, f"respacing '{n}'", respacing=str(n)) for n in (5, 10, 20)]
  points += [point("ddpm", n, f"respacing '{n}'", respacing=str(n)) for n in (25, 250)]
  points += [point("dpmpp_2m", n, s) for n in (5, 10) for s in ("logsnr", "time_uniform")]
  points += [point("ddim", 10, "respacing '10'", scale=1.0, respacing="10", clip_guided=False)]
  assert {solver_nfe.curve_key(p) for p in points} == {
    ("ddim", "respacing"),
    ("ddpm", "respacing"),
    ("dpmpp_2m", "logsnr"),
    ("dpmpp_2m", "time_uniform"),
  }
  path = solver_nfe.plot(points, str(tmp_path / "fid_vs_nfe.png"), floor=0.75)
  from PIL import Image  # pylint: disable=g-import-not-at-top

  with Image.open(path) as image:  # one panel: the scale-1 point has an option and is left out
    assert image.size[0] < 1000
