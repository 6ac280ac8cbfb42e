"""One process of a multi-process CPU run (started by test_distributed.py).

usage: python dist_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz
Each process has 2 CPU devices; together they train the tiny network for 3 steps over
one global mesh, exchanging gradients through jax.distributed's CPU collectives (gloo).
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from adm_jax import xla_env  # noqa: E402

xla_env.configure_for_cpu()
import jax  # noqa: E402
import numpy as np  # noqa: E402

from adm_jax import sharding as shd  # noqa: E402


def main():
  pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
  os.environ.update(
    JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
    JAX_NUM_PROCESSES=str(nproc),
    JAX_PROCESS_ID=str(pid),
  )
  assert shd.maybe_initialize_distributed("auto")
  assert jax.process_count() == nproc and jax.device_count() == 2 * nproc
  import tiny_train  # pylint: disable=g-import-not-at-top

  state, _ = tiny_train.train(shd.create_mesh(1), n_steps=3)
  if jax.process_index() == 0:
    leaves = jax.tree.leaves(state.params)
    np.savez(out, *leaves)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
