"""XLA settings applied before JAX starts.

On the CPU backend of jaxlib 0.10 the YNNPACK convolution fusion is about twice as
slow as plain XLA convolutions (measured in ../shared/cpu-perf-notes.md), so CPU runs
turn it off. Import this module before `jax` (``adm_jax.main`` and the tests do).
"""
import os

_CPU_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def configure_xla_flags() -> None:
  """Adds the CPU convolution flag to XLA_FLAGS unless the user set it already."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + _CPU_FLAG).strip()


configure_xla_flags()
