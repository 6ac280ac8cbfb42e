"""The ImageNet command users are told to run, on a real TFDS array_record stand-in of
imagenet2012 (tests/imagenet_standin.py, read by the real tensorflow_datasets): the imagenet128
config's own data and preprocessing settings with only the model shrunk, through train,
resume, the classifier with its validation pass, unguided and classifier-guided sampling and
eval; and the wrong split refused before any work."""

import os

import numpy as np
import pytest
import tiny

from adm_jax import config_base
from adm_jax import experiment
from adm_jax import validation
from adm_jax.modes import evaluate
from adm_jax.modes import sample
from adm_jax.modes import train

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

# The model shrunk as a user would with flags (--config.model.num_channels=32 ...); 128 px,
# the data, preprocessing, diffusion and sampling settings are imagenet128's.
SHRUNK = {
  "model": dict(
    num_channels=32,
    num_res_blocks=1,
    channel_mult="1,1",
    attention_resolutions="",
    num_heads=1,
    dtype="float32",
  ),
  "classifier": dict(
    classifier_width=64,
    classifier_depth=1,
    channel_mult="1,1",
    dtype="float32",
    classifier_attention_resolutions="",
    iterations=2,
    batch_size=2,
    eval_every=2,
    eval_batches=1,
    checkpoint_every=2,
    log_every=1,
  ),
  "train": dict(
    batch_size=2,
    num_steps=2,
    log_every=1,
    checkpoint_every=1,
    grid_samples=0,
    progress=False,
    async_checkpoint=False,
  ),
  "sample": dict(num_samples=4, batch_size=2, sampler="ddim", steps=2),
  "data": dict(num_workers=2),
}


def imagenet128(data_dir, **sections):
  c = config_base.from_config_file("imagenet128")
  for section, values in SHRUNK.items():
    c[section].update(values)
  for section, values in sections.items():
    c[section].update(values)
  c.data.data_dir = data_dir
  return c


@pytest.mark.slow  # trains, samples and scores a 128 px model
@pytest.mark.xdist_group("inception")  # one Inception compilation with test_evaluation's
def test_imagenet_flow_on_a_real_tfds_standin(
  imagenet_standin_dir, random_inception_weights, tmp_path
):
  random_inception, _ = random_inception_weights
  workdir = str(tmp_path / "adm128")
  config = imagenet128(imagenet_standin_dir)
  assert config.data.eval_split == "validation" and config.model.image_size == 128
  exp = experiment.build(config, tiny.MESH)
  report = train.run(config, workdir, tiny.MESH, experiment=exp)
  assert report.step == 2 and np.isfinite(report.metrics["loss"])
  resumed = train.run(  # the same command with more steps (its compiled step reused)
    imagenet128(imagenet_standin_dir, train=dict(num_steps=3)), workdir, tiny.MESH, experiment=exp
  )
  assert resumed.step == 3 and tiny.checkpoint_steps(workdir)[-1] == 3
  clf = train.run_classifier(config, workdir, tiny.MESH)
  assert {"val_acc1", "val_loss"} <= set(clf.metrics)  # the validation pass ran, on labels
  unguided = sample.run(
    imagenet128(imagenet_standin_dir, sample=dict(output_dir="plain", classifier_scale=0.0)),
    workdir,
    tiny.MESH,
  )
  guided = sample.run(
    imagenet128(imagenet_standin_dir, sample=dict(output_dir="guided")), workdir, tiny.MESH
  )  # imagenet128's classifier scale, 0.5
  for report in (unguided, guided):
    with np.load(report.outputs["samples"]) as d:
      assert d["arr_0"].shape == (4, 128, 128, 3) and d["arr_0"].dtype == np.uint8
  assert not np.array_equal(
    np.load(unguided.outputs["samples"])["arr_0"], np.load(guided.outputs["samples"])["arr_0"]
  )
  scored = evaluate.run(
    imagenet128(
      imagenet_standin_dir, sample=dict(output_dir="guided", inception_weights=random_inception)
    ),
    workdir,
  )
  assert scored.metrics["feature_net"] == "inception_v3" and scored.metrics["n_samples"] == 4
  assert np.isfinite(scored.metrics["fid"]) and "validation" in scored.outputs["reference"]


def test_a_split_without_labels_is_refused_before_any_work(imagenet_standin_dir, tmp_path):
  workdir = str(tmp_path / "w")
  config = imagenet128(imagenet_standin_dir, data=dict(eval_split="test"))
  with pytest.raises(validation.ConfigError) as refused:
    train.run_classifier(config, workdir, tiny.MESH)
  message = str(refused.value)
  assert "data.eval_split='test' holds no labels" in message and "\n" not in message
  assert not os.path.exists(workdir)  # nothing created


def test_eval_with_inception_needs_its_weights_file(imagenet_standin_dir, tmp_path):
  config = imagenet128(imagenet_standin_dir)
  with pytest.raises(validation.ConfigError, match="needs sample.inception_weights"):
    evaluate.run(config, str(tmp_path))
