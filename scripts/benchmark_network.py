"""EfficientNet-Lite0 on the CPU with and without a channels-last input, measured side by side in one run.

``EfficientNetLite0Layer`` runs its network on a channels-last copy of its input on the CPU (``channels_last``,
oneDNN's faster convolutions); this measures what that buys, against the same representation with it switched
off, in alternating rounds (each figure the fastest of ``--rounds``, so that load from other processes, which
only adds time, hits neither side more):

- Φ forward and forward + backward (the gradient of the features' squared sum with respect to the pixels, what
  GD asks of Φ at every step), ms per batch, at batch 1 and ``--batch`` on 224-px random images;
- GD: whole runs of the presets ``tuned`` and ``fast`` on the first ``--photos`` built-in test photos at 224 px
  (colour), seconds per image, and ``fast``'s time over ``tuned``'s under each layout (the two share Φ, so a faster
  Φ leaves more of ``fast``'s time to its own per-step work: its pyramid and Adam).

    .venv/bin/python scripts/benchmark_network.py [--layers stem stage2 stage4 stage6 head logits]
        [--gd-layers stage4 logits] [--photos 2] [--batch 6] [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from preimage import build_representation
from preimage.imagesets import load_image_set
from preimage.inversion.gd import invert_gd
from preimage.inversion.presets import gd_config

LAYOUTS = {"contiguous": False, "channels-last": True}


def phi_ms(rep, images: torch.Tensor, backward: bool) -> float:
    """Milliseconds of one Φ forward (and backward) on ``images``."""
    x = images.clone().requires_grad_(backward)
    tic = time.perf_counter()
    if backward:
        rep(x).square().sum().backward()
    else:
        with torch.no_grad():
            rep(x)
    return 1000 * (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="*", default=["stem", "stage2", "stage4", "stage6", "head", "logits"])
    parser.add_argument("--gd-layers", nargs="*", default=["stage4", "logits"])
    parser.add_argument("--photos", type=int, default=2)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} threads; fastest of {args.rounds} alternating rounds\n")
    print("| layer | batch | pass | contiguous ms | channels-last ms | speed-up |\n|---|---|---|---|---|---|")
    for layer in args.layers:
        rep = build_representation(f"efficientnet_lite0:{layer}")
        for batch in (1, args.batch):
            images = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            for backward in (False, True):
                best = {name: float("inf") for name in LAYOUTS}
                phi_ms(rep, images, backward)  # one-off set-up (oneDNN primitives) outside the rounds
                for _ in range(args.rounds):
                    for name, flag in LAYOUTS.items():
                        rep.channels_last = flag
                        best[name] = min(best[name], phi_ms(rep, images, backward))
                a, b = best["contiguous"], best["channels-last"]
                print(f"| {layer} | {batch} | {'forward+backward' if backward else 'forward'} | {a:.1f} | {b:.1f} | "
                      f"{a / b:.2f}× |", flush=True)
    if not args.gd_layers:
        return
    photos = torch.stack(load_image_set("builtin", size=224, grey=False)[2][: args.photos])
    print(f"\nGD on {len(photos)} test photos at 224 px (seconds per image)\n")
    print("| layer | preset | contiguous s | channels-last s | speed-up |\n|---|---|---|---|---|")
    for layer in args.gd_layers:
        rep = build_representation(f"efficientnet_lite0:{layer}")
        best = {(preset, name): float("inf") for preset in ("tuned", "fast") for name in LAYOUTS}
        for _ in range(args.rounds):
            for preset in ("tuned", "fast"):
                config = gd_config(preset, rep)
                for name, flag in LAYOUTS.items():
                    rep.channels_last = flag
                    seconds = invert_gd(rep, photos, config, progress=False).seconds
                    best[preset, name] = min(best[preset, name], seconds / len(photos))
        for preset in ("tuned", "fast"):
            a, b = best[preset, "contiguous"], best[preset, "channels-last"]
            print(f"| {layer} | {preset} | {a:.2f} | {b:.2f} | {a / b:.2f}× |", flush=True)
        print(f"| {layer} | fast over tuned | {best['fast', 'contiguous'] / best['tuned', 'contiguous']:.3f} | "
              f"{best['fast', 'channels-last'] / best['tuned', 'channels-last']:.3f} | |", flush=True)


if __name__ == "__main__":
    main()
