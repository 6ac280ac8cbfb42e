"""Every experiment config loads and builds its networks abstractly (jax.eval_shape)."""

import glob
import os

import jax
import numpy as np
import pytest

from adm_jax import config_base
from adm_jax import models
from adm_jax import networks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
  p
  for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
  if not os.path.basename(p).startswith("_")
)
# Tracing the init of a 256 / 512 px network takes seconds: those run in the full suite only.
SMALL = ("fashion_mnist.py", "cifar10.py", "imagenet64.py", "classifier64.py", "imagenet.py")
CONFIG_PARAMS = [
  pytest.param(
    p, id=os.path.basename(p), marks=() if os.path.basename(p) in SMALL else pytest.mark.slow
  )
  for p in CONFIGS
]


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("path", CONFIG_PARAMS)
def test_config_builds_abstractly(path):
  config = config_base.from_config_file(path)
  with open(path) as f:
    doc = f.read().split('"""')[1]
  assert "python -m adm_jax.main" in doc, "docstring gives the launch command"
  assert count(networks.unet(config).abstract_params()) > 0
  assert networks.diffusion_process(config).num_timesteps >= 1
  if os.path.basename(path).startswith(("classifier", "imagenet")):
    assert count(networks.classifier(config).abstract_params()) > 0


@pytest.mark.slow  # traces the init of every paper-size network
@pytest.mark.parametrize(
  "name, released",
  [
    ("imagenet64", "64x64_diffusion"),
    ("imagenet128", "128x128_diffusion"),
    ("imagenet256", "256x256_diffusion"),
    ("imagenet256_uncond", "256x256_diffusion_uncond"),
    ("imagenet512", "512x512_diffusion"),
    ("upsample64_256", "64_256_upsampler"),
    ("upsample128_512", "128_512_upsampler"),
    ("lsun_bedroom", "lsun_bedroom"),
  ],
)
def test_paper_configs_match_released_networks(name, released):
  config = config_base.from_config_file(os.path.join(REPO, "configs", name + ".py"))
  ours = networks.unet(config).abstract_params()
  theirs = networks.from_flags(
    models.released_kind(released), models.released_config(released)
  ).abstract_params()
  assert jax.tree.map(lambda a: a.shape, ours) == jax.tree.map(lambda a: a.shape, theirs)


def test_quick_variant_and_bad_variant():
  path = os.path.join(REPO, "configs", "fashion_mnist.py")
  quick = config_base.from_config_file(path, "quick")
  assert quick.model.image_size == 16 and quick.train.num_steps < 1000  # the ~3 min first look
  with pytest.raises(ValueError, match="unknown variant"):
    config_base.from_config_file(path, "slow")
