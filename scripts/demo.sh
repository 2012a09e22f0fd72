#!/usr/bin/env bash
# The main job on built-in data: `preimage compare` with its default config — GD (M&V), the
# shipped learned inverters (D&B) and the hybrid, on HOG, HOGb and DSIFT (grey) and EfficientNet-Lite0's stage4
# (colour) of the built-in test photos.
# Writes runs/compare/{report.md,results.json,results.csv,grid.png,tensorboard/}. Sets up .venv first
# when needed; replaces the outputs of its previous run (overwrite=true). Extra key=value arguments are
# passed on, e.g. device=cpu limit=2.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
exec .venv/bin/preimage compare overwrite=true "$@"
