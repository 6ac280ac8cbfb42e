"""Installable as a package: dependencies that keep a runtime's accelerator jax, the console
script, configs found by name from any directory."""

import os
import subprocess
import sys

from conftest import REPO_ROOT
import pytest

from adm_jax import config_base

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def project():
  with open(REPO_ROOT / "pyproject.toml", "rb") as f:
    return tomllib.load(f)["project"]


def test_dependencies_never_pin_or_cap_jax():
  # An upper bound or pin on jax (or on flax / optax, which require jax) makes pip replace
  # Colab's or a TPU VM's accelerator jax with a CPU-only one; so does asking for jaxlib.
  deps = project()["dependencies"]
  names = {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip(): d for d in deps}
  assert "jax" in names and "jaxlib" not in names
  for name in ("jax", "flax", "optax", "orbax-checkpoint"):
    spec = names[name]
    assert "<" not in spec and "==" not in spec and "~=" not in spec and "[" not in spec, spec
  extras = project()["optional-dependencies"]
  assert extras["cuda12"] == ["jax[cuda12]"] and extras["tpu"] == ["jax[tpu]"]
  for extra in ("tfds", "torch", "tensorboard", "dev"):
    assert extra in extras
  # The README's install line (pip install -r requirements.txt) installs this package.
  lines = [ln.strip() for ln in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
  assert [ln for ln in lines if ln and not ln.startswith("#")] == ["-e ."]


def test_console_script_is_the_main_module():
  assert project()["scripts"]["adm-jax"] == "adm_jax.main:cli"
  # (main defines absl flags; importing it beside adm_jax.bench in one process would clash)
  source = (REPO_ROOT / "adm_jax" / "main.py").read_text()
  assert "\ndef cli():\n" in source and "app.run(main, flags_parser=parse_flags)" in source


def test_configs_are_found_by_name_from_any_directory(tmp_path):
  assert config_base.resolve_config_path("imagenet128") == str(
    REPO_ROOT / "configs" / "imagenet128.py"
  )
  assert config_base.resolve_config_path("imagenet:256").endswith("configs/imagenet.py:256")
  assert config_base.from_config_file("imagenet:256").model.image_size == 256
  with pytest.raises(
    FileNotFoundError,
    match="config 'imagenet1024' not found: give a file path "
    "or one of the names .*fashion_mnist.*imagenet128",
  ):
    config_base.resolve_config_path("imagenet1024")
  # From another directory, with the package importable: the name still resolves.
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  out = subprocess.run(
    [
      sys.executable,
      "-c",
      "from adm_jax import config_base as c; "
      "print(c.from_config_file('fashion_mnist:quick').train.num_steps)",
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 0 and out.stdout.strip().isdigit(), out.stderr[-1000:]


def test_configs_ship_inside_the_package_mapping():
  with open(REPO_ROOT / "pyproject.toml", "rb") as f:
    setuptools = tomllib.load(f)["tool"]["setuptools"]
  assert setuptools["package-dir"]["adm_jax.configs"] == "configs"
  assert "adm_jax.configs" in setuptools["packages"]
  assert (REPO_ROOT / "configs" / "__init__.py").exists()
  listed = set(setuptools["packages"])
  on_disk = {"adm_jax"} | {
    f"adm_jax.{d}"
    for d in os.listdir(REPO_ROOT / "adm_jax")
    if (REPO_ROOT / "adm_jax" / d / "__init__.py").exists()
  }
  assert on_disk <= listed, on_disk - listed  # a new subpackage must be listed to install
