#!/usr/bin/env bash
# CUDA check on a machine with a GPU: GD, learned and hybrid inversion and a 50-step training against the CPU,
# then throughput, GD speed and training speed (scripts/gpu_check.py). `scripts/gpu_check.sh --device cpu` tests it
# without one. PREIMAGE_PYTHON=python3 runs it with that interpreter as it is, for a GPU machine whose Python already
# holds torch and the project's needs (src/ on PYTHONPATH) and cannot download them, instead of creating .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PREIMAGE_PYTHON:-}" ]; then
  exec "$PREIMAGE_PYTHON" scripts/gpu_check.py "$@"
fi
scripts/setup_venv.sh
exec .venv/bin/python scripts/gpu_check.py "$@"
