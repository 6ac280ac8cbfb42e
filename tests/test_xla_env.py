"""xla_env: the CPU flags the entry points add, and the cheap code generation tests ask for."""

import pytest

from adm_jax import xla_env


@pytest.mark.parametrize("fast_compile", [False, True])
def test_cpu_flags_added_once_and_fast_compile_only_when_asked(monkeypatch, fast_compile):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=2")
  flags = xla_env.configure_for_cpu(fast_compile=fast_compile).split()
  known = {
    name
    for name in {**xla_env.CPU_FLAGS, **xla_env.FAST_COMPILE_FLAGS}
    if xla_env.jaxlib_knows(name)
  }
  for name, value in xla_env.CPU_FLAGS.items():
    assert (f"--{name}={value}" in flags) == (name in known)
  # A flag the user set is kept as it is; the other fast flag only when asked for.
  assert "--xla_backend_optimization_level=2" in flags
  assert "--xla_backend_optimization_level=0" not in flags
  expensive = "--xla_llvm_disable_expensive_passes=true"
  assert (expensive in flags) == (fast_compile and "xla_llvm_disable_expensive_passes" in known)
  assert xla_env.configure_for_cpu(fast_compile=fast_compile).split() == flags  # idempotent


def test_nothing_added_when_an_accelerator_is_the_backend(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  monkeypatch.setenv("XLA_FLAGS", "")
  assert xla_env.configure_for_cpu(fast_compile=True) == ""
