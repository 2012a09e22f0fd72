#!/usr/bin/env bash
# Create or refresh .venv: torch/torchvision at the versions this machine holds on disk, then the project.
# Does nothing when .venv is already up to date with pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="torch==2.14.1 torchvision==0.29.1"
stamp=.venv/.preimage-stamp
want="$(sha256sum pyproject.toml | cut -c1-16) ${TORCH}"
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
echo "setting up .venv with $($PY --version) (torch takes a few minutes the first time)..." >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check $TORCH 2>&1 | grep -v "is ignored" >&2 || true
.venv/bin/python -c "import torch, torchvision" || { echo "torch install failed" >&2; exit 1; }
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored" >&2 || true
.venv/bin/python -c "import preimage" || { echo "project install failed" >&2; exit 1; }
echo "$want" > "$stamp"
