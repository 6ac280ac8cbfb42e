"""XLA settings for CPU runs, applied by the entry points (main, bench) before JAX starts a backend.

On the CPU backend of jaxlib 0.10 the YNNPACK convolution fusion is about twice as slow as
plain XLA convolutions (measured in ../shared/cpu-perf-notes.md), so CPU runs turn it off.
Nothing happens on import: `configure_for_cpu()` adds the flag only when
  * the CPU will be JAX's backend (JAX_PLATFORMS says cpu, or no accelerator plugin / libtpu
    is installed),
  * the user has not set the flag already, and
  * the running jaxlib knows the flag (an unknown XLA flag aborts the process at start-up);
    this is read from jaxlib's library once and cached per jaxlib build.
XLA reads XLA_FLAGS when the first backend starts, not at `import jax`, so calling this at the
top of an entry point's main() is early enough.
"""

import glob
import importlib.metadata
import importlib.util
import json
import logging
import mmap
import os
from typing import Dict, Optional

log = logging.getLogger(__name__)

CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
# Cheaper CPU code generation: the same HLO passes, buffers and ops; only LLVM optimises less.
# For programs compiled far more often than they run (tests, the fault drill, memory analysis).
FAST_COMPILE_FLAGS = {
  "xla_backend_optimization_level": "0",
  "xla_llvm_disable_expensive_passes": "true",
}
_ACCELERATOR_MODULES = (
  "libtpu",
  "jax_cuda12_plugin",
  "jax_cuda13_plugin",
  "jax_rocm60_plugin",
  "jax_rocm7_plugin",
)
_CACHE = os.path.join(
  os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "adm_jax", "xla_flags.json"
)


def cpu_is_backend() -> bool:
  """Whether JAX will run on the CPU (decided before it starts)."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  if any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_MODULES):
    return False
  # JAX finds PJRT plugins (CUDA, ROCm, TPU) as jax_plugins.* modules or entry points.
  if importlib.util.find_spec("jax_plugins") is not None:
    return False
  return not list(importlib.metadata.entry_points(group="jax_plugins"))


def _jaxlib_library() -> Optional[str]:
  spec = importlib.util.find_spec("jaxlib")
  if spec is None or not spec.submodule_search_locations:
    return None
  libraries = glob.glob(
    os.path.join(list(spec.submodule_search_locations)[0], "**", "*.so*"), recursive=True
  )
  return max(libraries, key=os.path.getsize) if libraries else None


def jaxlib_knows(flag: str) -> bool:
  """Whether the installed jaxlib defines XLA flag `flag` (its name is in jaxlib's library)."""
  library = _jaxlib_library()
  if library is None:
    return False
  stat = os.stat(library)
  key = f"{library}:{stat.st_size}:{int(stat.st_mtime)}:{flag}"
  try:
    with open(_CACHE) as f:
      cache: Dict[str, bool] = json.load(f)
  except (OSError, ValueError):
    cache = {}
  if key not in cache:
    with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
      cache[key] = data.find(flag.encode()) >= 0
    try:
      os.makedirs(os.path.dirname(_CACHE), exist_ok=True)
      with open(_CACHE, "w") as f:
        json.dump(cache, f)
    except OSError:
      pass
  return cache[key]


def configure_for_cpu(fast_compile: bool = False) -> str:
  """Adds the CPU flags to XLA_FLAGS where they apply (see the module docstring), and
  FAST_COMPILE_FLAGS when `fast_compile`; returns XLA_FLAGS."""
  flags = os.environ.get("XLA_FLAGS", "")
  if not cpu_is_backend():
    return flags
  wanted = dict(CPU_FLAGS, **(FAST_COMPILE_FLAGS if fast_compile else {}))
  for name, value in wanted.items():
    if name in flags:
      continue
    if not jaxlib_knows(name):
      log.info("jaxlib does not know XLA flag %s; not set", name)
      continue
    flags = f"{flags} --{name}={value}".strip()
  os.environ["XLA_FLAGS"] = flags
  return flags
