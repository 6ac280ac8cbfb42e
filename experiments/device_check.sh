#!/usr/bin/env bash
# One-shot accelerator check, < 8 minutes on one NVIDIA H100 / H200 (see adm_jax/device_check.py):
#   pip install -e ".[cuda12]" && bash experiments/device_check.sh
# Prints one table (parity with the CPU, ADM-128 bf16 images/s and MFU at the largest fitting
# batch, guided sampling steps/s, peak memory) and writes device_check.json; exits 1 when the
# parity is outside its tolerance. Extra arguments go to python -m adm_jax.device_check.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import jax; print(jax.devices())"
python -m adm_jax.device_check "$@"
