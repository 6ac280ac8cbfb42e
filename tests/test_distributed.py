"""Two processes on localhost (jax.distributed, CPU collectives) train like one process."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
import tiny_train

from adm_jax import sharding as shd

pytestmark = pytest.mark.slow  # whole runs: each test trains, samples or runs a notebook

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
  out = tmp_path / "params.npz"
  port = str(_free_port())
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
  procs = [
    subprocess.Popen(
      [sys.executable, os.path.join(HERE, "dist_worker.py"), str(i), "2", port, str(out)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=300)[0])
    except subprocess.TimeoutExpired:
      p.kill()
      logs.append(p.communicate()[0])
  assert all(p.returncode == 0 for p in procs), "\n---\n".join(log[-3000:] for log in logs)
  distributed = np.load(out)
  single, _ = tiny_train.train(shd.create_mesh(1, jax.devices()[:4]), n_steps=3)
  leaves = jax.tree.leaves(single.params)
  assert len(leaves) == len(distributed.files)
  for i, leaf in enumerate(leaves):
    np.testing.assert_allclose(distributed[f"arr_{i}"], leaf, rtol=2e-5, atol=2e-6)
