"""Shared test set-up: XLA flags before jax, float64 schedules, fixture loading."""

import json
import os
import pathlib

# 8 fake CPU devices for the sharding tests (set before jax is imported); tests that
# want one device build their mesh from jax.devices()[:1].
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()

from adm_jax import xla_env  # noqa: E402

# The tests compile hundreds of tiny programs and run each a few times: compilation, not
# execution, is their cost, so LLVM skips its expensive optimisation passes here (the same HLO
# and ops; only the generated CPU code is less tuned). Subprocesses inherit XLA_FLAGS.
xla_env.configure_for_cpu(fast_compile=True)

import jax
import numpy as np
import pytest

# Many tests build the same small networks again (a resumed run re-jits its train step):
# the persistent compilation cache turns those recompilations into cache reads.
jax.config.update(
  "jax_compilation_cache_dir",
  os.environ.get("ADM_JAX_TEST_CACHE", "/tmp/adm_jax_test_compile_cache"),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def one_device_env():
  """The environment of a subprocess that runs adm_jax on one CPU device: this session's XLA
  flags less the fake device count, and its persistent compilation cache."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(
    f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f
  )
  env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
  # The checkout under test, whatever copy of adm_jax is installed.
  env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
  return env


FIXTURES = pathlib.Path(
  os.environ.get("ADM_JAX_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures")
)
FIXTURE_SETS = ("gd_tiny_cond", "gd_tiny_uncond")


class FixtureSet:
  """One reference fixture set: config, reference arrays and tolerances."""

  def __init__(self, name):
    self.name = name
    self.dir = FIXTURES / name
    if not self.dir.is_dir():
      pytest.fail(f"fixture set {name} not found under {FIXTURES} (set ADM_JAX_FIXTURES)")
    self.config = json.loads((self.dir / "config.json").read_text())
    self.tol = json.loads((self.dir / "tolerances.json").read_text())
    self.ref = dict(np.load(self.dir / "reference.npz"))
    self.extra = dict(np.load(self.dir / "reference_extra.npz"))

  def __getitem__(self, key):
    return self.ref[key] if key in self.ref else self.extra[key]

  def has(self, key):
    return key in self.ref or key in self.extra

  def check(self, key, mine, per_item=True):
    """Asserts |mine - reference| within the fixture's float32 tolerance for `key`."""
    ref = np.asarray(self[key])
    mine = np.asarray(mine)
    assert mine.shape == ref.shape, f"{self.name}/{key}: shape {mine.shape} != {ref.shape}"
    tol = self.tol[key]
    err = np.abs(mine.astype(np.float64) - ref.astype(np.float64))
    if per_item and "atol_per_item" in tol:
      atol = np.asarray(tol["atol_per_item"]).reshape((-1,) + (1,) * (ref.ndim - 1))
    else:
      atol = tol["atol"]
    bad = err > atol
    assert not bad.any(), (
      f"{self.name}/{key}: max err {err.max():.3g} (per item "
      f"{err.reshape(err.shape[0], -1).max(1)}) > atol {np.ravel(atol)}"
    )


_cache = {}


def load_fixture(name):
  if name not in _cache:
    _cache[name] = FixtureSet(name)
  return _cache[name]


@pytest.fixture(params=FIXTURE_SETS, scope="session")
def fx(request):
  return load_fixture(request.param)


@pytest.fixture(scope="session")
def imagenet_standin_dir(tmp_path_factory):
  """A prepared TFDS imagenet2012 stand-in (tests/imagenet_standin.py; read by the real
  tensorflow_datasets, no TensorFlow): ImageNet-sized JPEGs, test split labelled -1."""
  pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("array_record")
  import imagenet_standin  # pylint: disable=g-import-not-at-top  (tests/ is on the path)

  directory = tmp_path_factory.mktemp("imagenet2012_standin")
  imagenet_standin.write_imagenet2012_standin(str(directory))
  return str(directory)


def random_inception_params():
  """Inception-V3 parameters of random values (the FID weights are not downloaded)."""
  from adm_jax.evaluation import inception  # pylint: disable=g-import-not-at-top

  leaves, treedef = jax.tree.flatten(inception.abstract_params())
  keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
  return jax.tree.unflatten(
    treedef,
    [
      jax.random.uniform(k, a.shape, minval=0.5, maxval=1.0)
      if a.ndim == 1
      else jax.random.normal(k, a.shape) * (1.0 / np.sqrt(np.prod(a.shape[:-1])))
      for k, a in zip(keys, leaves)
    ],
  )


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory):
  """(path of an npz of the random Inception-V3 parameters, the parameters): one file per
  session, so that the feature function is compiled once per worker."""
  from adm_jax.evaluation import inception  # pylint: disable=g-import-not-at-top

  params = random_inception_params()
  path = str(tmp_path_factory.mktemp("inception") / "inception.npz")
  np.savez(path, **inception.params_to_state_dict(params))
  return path, params


def nchw_to_nhwc(x):
  return np.transpose(np.asarray(x), (0, 2, 3, 1))


def nhwc_to_nchw(x):
  return np.transpose(np.asarray(x), (0, 3, 1, 2))
