#!/usr/bin/env bash
# CUDA check on a machine with a GPU: GD, learned and hybrid inversion and a 50-step training against the CPU,
# then throughput and GD speed (scripts/gpu_check.py). `scripts/gpu_check.sh --device cpu` tests it without one.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
exec .venv/bin/python scripts/gpu_check.py "$@"
