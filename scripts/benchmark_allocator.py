"""GD and training on the CPU with glibc's default allocator against :func:`preimage.keep_freed_memory`, side by side.

The allocator setting is process-wide and cannot be undone, so every measurement is a child process of this one:
the two settings alternate (default, kept, default, kept, ...) for ``--rounds`` rounds, each child running GD with
each preset on the built-in test photos (224 px, colour, one batch) at each EfficientNet-Lite0 layer, warmed up by a
few steps first, then the training steps of each ``--train-configs`` config (``benchmark_learned.py``'s training
throughput: Φ, decoder forward and backward, AdamW, on the config's batch). Printed: per layer and preset each
setting's median seconds per image and minor page faults per GD step, per config its median images per second, and
their ratios (above 1, keeping freed memory is faster).

    .venv/bin/python scripts/benchmark_allocator.py [--layers stem stage2 stage4 logits] [--presets tuned fast]
        [--train-configs efficientnet_lite0_stage4 hog] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SETTINGS = ("default", "kept")


def child(layers: list[str], presets: list[str], train_configs: list[str], keep: bool) -> None:
    """Run GD and training; print ``{layer/preset: [seconds per image, faults per step], config: [images/s]}`` as
    one JSON line."""
    import resource

    import torch
    from benchmark_learned import training_throughput

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
            warm = gd_config(preset, rep, {"schedule": [[config.schedule[0][0], 5]]})  # the first rate, 5 steps
            invert_gd(rep, images, warm, progress=False)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            result = invert_gd(rep, images, config, progress=False)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            out[f"{layer}/{preset}"] = [result.seconds / len(images), faults / config.iterations]
    for name in train_configs:
        out[name] = [training_throughput(name, 6, torch.device("cpu"))[0]]
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", default=["stem", "stage2", "stage4", "logits"])
    parser.add_argument("--presets", nargs="+", default=["tuned", "fast"])
    parser.add_argument("--train-configs", nargs="*", default=["efficientnet_lite0_stage4", "hog"],
                        help="configs/train/NAME.yaml whose training steps are timed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.layers, args.presets, args.train_configs, args.child == "kept")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    runs: dict[str, list[dict[str, list[float]]]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for setting in SETTINGS:
            command = [sys.executable, __file__, "--child", setting, "--layers", *args.layers, "--presets", *args.presets,
                       "--train-configs", *args.train_configs]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"the {setting} child failed:\n{done.stderr[-2000:]}")
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds}: {setting} done", file=sys.stderr, flush=True)
    print(f"GD per image, built-in test photos at 224 px, median of {args.rounds} alternating rounds")
    print("| layer | preset | default s/image | kept s/image | default / kept | page faults per step, default | kept |")
    print("|---|---|---|---|---|---|---|")
    for key in [k for k in runs["default"][0] if "/" in k]:
        (sd, fd), (sk, fk) = ([statistics.median(run[key][i] for run in runs[s]) for i in (0, 1)] for s in SETTINGS)
        layer, preset = key.split("/")
        print(f"| {layer} | {preset} | {sd:.2f} | {sk:.2f} | {sd / sk:.2f} | {fd:,.0f} | {fk:,.0f} |")
    if args.train_configs:
        print(f"\nTraining steps (benchmark_learned.py's throughput), median of {args.rounds} alternating rounds")
        print("| config | default images/s | kept images/s | kept / default |")
        print("|---|---|---|---|")
        for name in args.train_configs:
            default, kept = (statistics.median(run[name][0] for run in runs[s]) for s in SETTINGS)
            print(f"| {name} | {default:.1f} | {kept:.1f} | {kept / default:.2f} |")


if __name__ == "__main__":
    main()
