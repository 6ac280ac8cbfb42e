"""The campaign's frozen model: a training workdir's checkpoint exported to one .npz and back."""

import json

import jax
import numpy as np
import pytest

from experiments import nfe_lib
from tests import tiny


def _equal_trees(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_export_round_trip(tmp_path):
  workdir = tiny.trained_workdir()
  model = nfe_lib.Model(workdir, step=2, ema_index=-1)
  assert model.classifier is not None and model.step == 2
  path = str(tmp_path / "frozen.npz")
  model.export(path)
  frozen = nfe_lib.Model(path)
  assert (frozen.step, frozen.ema_rate) == (2, model.ema_rate)
  assert frozen.config.to_dict() == model.config.to_dict()
  assert _equal_trees(frozen.params, model.params)
  assert _equal_trees(frozen.clf_params, model.clf_params)
  # The newest checkpoint differs from step 2: the export froze the asked step.
  newest = nfe_lib.Model(workdir, classifier=False)
  assert not _equal_trees(newest.params, frozen.params)


def test_frozen_model_with_other_shapes_refused(tmp_path):
  model = nfe_lib.Model(tiny.trained_workdir(), classifier=False)
  path = str(tmp_path / "frozen.npz")
  model.export(path)
  with np.load(path) as d:
    arrays = {k: d[k] for k in d.files}
  meta = json.loads(str(arrays["meta"]))
  meta["config"]["model"]["num_channels"] = 64
  arrays["meta"] = np.asarray(json.dumps(meta))
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match="has shape"):
    nfe_lib.Model(path)
