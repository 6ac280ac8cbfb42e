"""The import graph of adm_jax reads one way (ARCHITECTURE in README): no cycles, no import
from a lower layer to a higher one, leaves that import no other part, no function-local
imports of adm_jax, and no config key read with .get() (every key is declared)."""

import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "adm_jax"

# Layers, lowest first; a module may import its own layer (without cycles) and the ones below.
LAYERS = [
  (
    "leaves",
    (
      "adm_jax",
      "adm_jax.xla_env",
      "adm_jax.config_base",
      "adm_jax.diffusion",
      "adm_jax.models",
      "adm_jax.data",
      "adm_jax.report",
      "adm_jax.files",
    ),
  ),
  (
    "library",
    (
      "adm_jax.networks",
      "adm_jax.guidance",
      "adm_jax.sharding",
      "adm_jax.convert",
      "adm_jax.sampling",
      "adm_jax.evaluation",
      "adm_jax.workdir",
      "adm_jax.plots",
    ),
  ),
  ("training", ("adm_jax.training",)),
  (
    "experiment",
    ("adm_jax.experiment", "adm_jax.restore", "adm_jax.validation", "adm_jax.memory_plan"),
  ),
  ("modes", ("adm_jax.modes", "adm_jax.benchmarks")),
  ("entry points", ("adm_jax.main", "adm_jax.bench", "adm_jax.device_check")),
]
# Leaves know nothing of each other (diffusion and models meet only through model_fn).
LEAVES = (
  "adm_jax.diffusion",
  "adm_jax.models",
  "adm_jax.data",
  "adm_jax.config_base",
  "adm_jax.xla_env",
  "adm_jax.report",
  "adm_jax.files",
)


def module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def group_of(name: str) -> str:
  """The layer entry a module belongs to (longest matching prefix)."""
  best = ""
  for _, prefixes in LAYERS:
    for prefix in prefixes:
      if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
        best = prefix
  assert best, f"{name} is in no layer of tests/test_architecture.py"
  return best


def layer_of(name: str) -> int:
  group = group_of(name)
  return next(i for i, (_, prefixes) in enumerate(LAYERS) if group in prefixes)


def imports(path: pathlib.Path):
  """(adm_jax modules imported, function-local ones) of one source file."""
  tree = ast.parse(path.read_text())
  names, local = set(), set()
  top_level = {id(node) for node in tree.body}
  for node in ast.walk(tree):
    found = []
    if isinstance(node, ast.Import):
      found = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    found = [n for n in found if n == "adm_jax" or n.startswith("adm_jax.")]
    modules = {n for n in found if _is_module(n)}
    names |= modules
    if modules and id(node) not in top_level:
      local |= modules
  return names, local


def _is_module(name: str) -> bool:
  rel = pathlib.Path(*name.split(".")[1:])
  return (
    name == "adm_jax" or (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel).is_dir()
  )


def graph():
  edges, local = {}, {}
  for path in sorted(PACKAGE.rglob("*.py")):
    name = module_name(path)
    deps, fn_local = imports(path)
    edges[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    local[name] = fn_local
  return edges, local


def test_no_import_cycle():
  edges, _ = graph()
  state = {}

  def visit(node, stack):
    state[node] = "open"
    for dep in sorted(edges.get(node, ())):
      if state.get(dep) == "open":
        cycle = stack[stack.index(dep) :] + [dep]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if dep not in state:
        visit(dep, stack + [dep])
    state[node] = "done"

  for node in sorted(edges):
    if node not in state:
      visit(node, [node])


def test_imports_point_down_and_leaves_stay_leaves():
  edges, _ = graph()
  upward, across = [], []
  for name, deps in edges.items():
    for dep in deps:
      if layer_of(dep) > layer_of(name):
        upward.append(
          f"{name} ({LAYERS[layer_of(name)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
        )
      if group_of(name) in LEAVES and group_of(dep) != group_of(name) and dep != "adm_jax":
        across.append(f"{name} imports {dep}")
  assert not upward, upward
  assert not across, across


def test_no_function_local_imports_of_adm_jax():
  _, local = graph()
  found = {name: sorted(mods) for name, mods in local.items() if mods}
  assert not found, found


def test_the_graph_is_the_real_one():
  # The checks above would pass on an empty graph: make sure they see the known arrows.
  edges, _ = graph()
  assert "adm_jax.experiment" in edges["adm_jax.modes.train"]
  assert "adm_jax.diffusion.losses" in edges["adm_jax.diffusion.gaussian"]
  assert "adm_jax.diffusion.gaussian" not in edges["adm_jax.diffusion.losses"]
  assert "adm_jax.networks" in edges["adm_jax.experiment"]
  assert "adm_jax.modes" in edges["adm_jax.main"]


def test_main_imports_only_the_modes_and_its_own_helpers():
  edges, _ = graph()
  allowed = {
    "adm_jax.config_base",
    "adm_jax.modes",
    "adm_jax.report",
    "adm_jax.sharding",
    "adm_jax.xla_env",
  }
  assert edges["adm_jax.main"] <= allowed, edges["adm_jax.main"] - allowed


def test_sampling_and_evaluation_build_no_training_objects():
  # Restoring parameters for sampling needs no optimizer, train state or train step.
  edges, _ = graph()
  for name in (
    "adm_jax.restore",
    "adm_jax.modes.sample",
    "adm_jax.modes.nll",
    "adm_jax.modes.evaluate",
  ):
    assert not edges[name] & {
      "adm_jax.experiment",
      "adm_jax.training.step",
      "adm_jax.training.update",
      "adm_jax.training.loop",
    }, name


NETWORK_CONSTRUCTORS = re.compile(r"\bmodels\.(create_model|create_classifier|create_sr_model)\(")


def test_networks_are_built_in_one_module():
  # adm_jax.networks is the one place a Flax network is constructed from a config or flags.
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    name = module_name(path)
    if name.startswith("adm_jax.models") or name == "adm_jax.networks":
      continue
    if NETWORK_CONSTRUCTORS.search(path.read_text()):
      found.append(name)
  assert not found, found


def test_nothing_outside_the_package_is_read_at_run_time():
  # ../shared (reference fixtures, the harness) belongs to the tests and to comparisons whose
  # path is given on the command line; the product never reaches for it.
  offenders = []
  for path in sorted(PACKAGE.rglob("*.py")):
    for number, line in enumerate(path.read_text().splitlines(), 1):
      if re.search(r"[\"'](\.\./)*shared[\"'/]|ref-harness[/\"']|\"\.\.\"", line):
        offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
  assert not offenders, offenders


CONFIG_GET = re.compile(r"\b(config|cfg|scfg|ccfg|data_config|c|t|s|m)\.(\w+\.)*get\(")


def test_config_keys_are_read_as_declared_attributes():
  # `.get(key, default)` on a config silently accepts a typo'd or undeclared key.
  offenders = []
  for path in sorted(PACKAGE.rglob("*.py")):
    for number, line in enumerate(path.read_text().splitlines(), 1):
      if CONFIG_GET.search(line) and "models/config.py" not in str(path):
        offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
  assert not offenders, offenders
