#!/usr/bin/env bash
# Build the wheel, install it outside the checkout (no editable install, no repository on the path) and run
# `preimage list`, a small GD inversion with preset=mv2015 and a small compare that must find the shipped
# bundles, all from another folder. Uses .venv's torch & co (sets it up first when needed); prints what ran.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation . -w "$work/dist" >/dev/null
rm -rf build
.venv/bin/python -m pip install -q --no-deps --target "$work/site" "$work"/dist/preimage-*.whl
py="$PWD/.venv/bin/python"
cd "$work"
run() { echo "+ preimage $*"; PYTHONPATH="$work/site" "$py" -m preimage.cli "$@"; }
where="$(PYTHONPATH="$work/site" "$py" -c 'import preimage; print(preimage.__file__)')"
case "$where" in "$work/site/"*) echo "preimage imported from the wheel: $where" ;;
  *) echo "wheel check: preimage was imported from $where, not from the wheel" >&2; exit 1 ;; esac
run list | cut -c1-120
run invert -r hog builtin:camera builtin:coins --out "$work/inverted" preset=mv2015 "gd.schedule=[[0.004,5]]" \
  progress=false device=cpu
run compare run_dir="$work/compare" limit=2 image_size=64 "gd.schedule=[[0.004,5]]" hybrid.iterations=5 device=cpu \
  tensorboard=false 2>/dev/null | grep -E "^\| (representation|hog|hogb|dsift|efficientnet_lite0:stage4) "
"$py" - "$work/compare/results.json" <<'PY'
import json, sys
learned = {r["representation"] for r in json.load(open(sys.argv[1]))["records"] if r["method"] == "learned"}
missing = {"hog", "hogb", "dsift", "efficientnet_lite0:stage4"} - learned
if missing:
    sys.exit(f"wheel check: compare did not find the shipped bundle(s) of {', '.join(sorted(missing))}")
PY
echo "wheel check passed: list, invert (preset=mv2015) and compare (shipped bundles) work from an installed wheel"
