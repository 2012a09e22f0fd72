#!/usr/bin/env bash
# The main job on built-in data: GD-invert the HOG of two built-in photos at M&V's mv2015 preset, write
# the reconstructions, metrics.json and overview.png (originals beside reconstructions) to outputs/demo.
# Sets up .venv first when needed. Extra key=value arguments are passed on, e.g. device=cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
exec .venv/bin/preimage invert --representation hog builtin:camera builtin:coins --out outputs/demo "$@"
