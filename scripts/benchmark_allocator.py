"""GD on the CPU with glibc's default allocator against :func:`preimage.keep_freed_memory`, side by side.

The allocator setting is process-wide and cannot be undone, so every measurement is a child process of this one:
the two settings alternate (default, kept, default, kept, ...) for ``--rounds`` rounds, each child running GD with
each preset on the built-in test photos (224 px, colour, one batch) at each layer, warmed up by a few steps first.
Printed per layer and preset: each setting's median seconds per image and minor page faults per GD step, and their
ratio (default over kept: above 1, keeping freed memory is faster).

    .venv/bin/python scripts/benchmark_allocator.py [--layers stem stage2 stage4 logits] [--presets tuned fast]
        [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SETTINGS = ("default", "kept")


def child(layers: list[str], presets: list[str], keep: bool) -> None:
    """Run GD and print ``{layer/preset: [seconds per image, faults per step]}`` as one JSON line."""
    import resource

    import torch

    import preimage
    from preimage import build_representation
    from preimage.imagesets import load_image_set
    from preimage.inversion.gd import invert_gd
    from preimage.inversion.presets import gd_config

    if keep and not preimage.keep_freed_memory():
        raise SystemExit("keep_freed_memory() did not apply here (not glibc, or MALLOC_* set)")
    images = torch.stack(load_image_set("builtin", size=224, grey=False)[2])
    out = {}
    for layer in layers:
        rep = build_representation(f"efficientnet_lite0:{layer}")
        for preset in presets:
            config = gd_config(preset, rep)
            warm = gd_config(preset, rep, {"schedule": [list(config.schedule[0][:1]) + [5]]})
            invert_gd(rep, images, warm, progress=False)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            result = invert_gd(rep, images, config, progress=False)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            out[f"{layer}/{preset}"] = [result.seconds / len(images), faults / config.iterations]
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", default=["stem", "stage2", "stage4", "logits"])
    parser.add_argument("--presets", nargs="+", default=["tuned", "fast"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.layers, args.presets, args.child == "kept")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    runs: dict[str, list[dict[str, list[float]]]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for setting in SETTINGS:
            command = [sys.executable, __file__, "--child", setting, "--layers", *args.layers, "--presets", *args.presets]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"the {setting} child failed:\n{done.stderr[-2000:]}")
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds}: {setting} done", file=sys.stderr, flush=True)
    print(f"GD per image, built-in test photos at 224 px, median of {args.rounds} alternating rounds")
    print("| layer | preset | default s/image | kept s/image | default / kept | page faults per step, default | kept |")
    print("|---|---|---|---|---|---|---|")
    for key in runs["default"][0]:
        (sd, fd), (sk, fk) = ([statistics.median(run[key][i] for run in runs[s]) for i in (0, 1)] for s in SETTINGS)
        layer, preset = key.split("/")
        print(f"| {layer} | {preset} | {sd:.2f} | {sk:.2f} | {sd / sk:.2f} | {fd:,.0f} | {fk:,.0f} |")


if __name__ == "__main__":
    main()
