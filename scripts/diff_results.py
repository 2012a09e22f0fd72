"""Compare two `preimage compare` results.json files record by record (same image × representation × method).

Prints, per score, the largest absolute difference over all records and whether every one is within --tol
(timings are not compared: they differ from run to run). Exit 1 if records are missing or a score differs.

    .venv/bin/python scripts/diff_results.py runs/before/results.json runs/after/results.json [--tol 1e-6]
"""
from __future__ import annotations

import argparse
import json
import math
import sys

SCORES = ("feature_error", "normalized_loss", "image_error", "psnr", "ssim", "final_data_loss")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()
    key = lambda r: (r["image"], r["representation"], r["method"])  # noqa: E731
    before = {key(r): r for r in json.load(open(args.before))["records"]}
    after = {key(r): r for r in json.load(open(args.after))["records"]}
    missing = sorted(set(before) ^ set(after))
    if missing:
        print(f"records in one file only: {missing}")
    ok = not missing
    for score in SCORES:
        diffs = []
        for k in set(before) & set(after):
            a, b = before[k].get(score), after[k].get(score)
            if a is None or b is None:
                if (a is None) != (b is None):
                    diffs.append(math.inf)
                continue
            diffs.append(abs(a - b))
        worst = max(diffs, default=0.0)
        ok &= worst <= args.tol
        print(f"{score:>16}: max |after - before| = {worst:.3g} over {len(diffs)} records "
              f"({'within' if worst <= args.tol else 'OVER'} {args.tol:g})")
    print(f"{len(set(before) & set(after))} records compared: {'all agree' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
