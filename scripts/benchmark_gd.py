"""GD speed: seconds per image and the overhead ratio over Φ's own forward+backward, measured side by side.

overhead ratio = GD wall time / (iterations × time of one forward+backward of Φ's data term at the same batch),
the latter timed as a block of as many back-to-back calls as GD makes iterations (a mean, like GD's; the fastest
of a few single calls would be biased low). Both are measured in this one run, in alternating rounds, and each
is the fastest of its rounds, so that load from other processes (which only ever adds time) hits neither more
than the other. CNN weights are
random (pretrained ones are not available here; speed does not depend on the values).

    .venv/bin/python scripts/benchmark_gd.py [--specs hog alexnet:pool5] [--batches 1 8] [--iterations 100]
"""
from __future__ import annotations

import argparse
import time

import torch

from preimage import build_representation, keep_freed_memory
from preimage.devices import resolve_device, synchronize
from preimage.inversion.gd import invert_gd
from preimage.inversion.objectives import FeatureReconstruction
from preimage.inversion.parametrization import PixelSpace
from preimage.inversion.presets import gd_config
from preimage.photos import TEST_PHOTOS, load_photo


def batch_of(n: int, channels: int, size: int) -> torch.Tensor:
    """n built-in photos, top-left size × size crops, with ``channels`` channels."""
    xs = []
    for i in range(n):
        x = load_photo(TEST_PHOTOS[i % len(TEST_PHOTOS)])[:, :size, :size]
        xs.append(x.expand(3, -1, -1) if channels == 3 else x.mean(0, keepdim=True))
    return torch.stack(xs)


def forward_backward_seconds(rep, images: torch.Tensor, pixels: PixelSpace, sigma0: float, calls: int,
                             device: torch.device) -> float:
    """Seconds per call of ``calls`` back-to-back forward+backward passes of the normalized data term, from a
    GD-like start: timed as one block, like GD's iterations, so both are means over a run of the same length."""
    with torch.no_grad():
        target = rep(images)
    term = FeatureReconstruction(rep, target)
    x = torch.randn_like(images)
    x = (x / x.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * sigma0).requires_grad_(True)
    torch.autograd.grad(term(pixels.to_image(x)).sum(), x)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        (g,) = torch.autograd.grad(term(pixels.to_image(x)).sum(), x)
    synchronize(device)
    return (time.perf_counter() - t0) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", nargs="+", default=["hog", "alexnet:pool5"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--iterations", type=int, default=100, help="GD iterations timed (the preset's schedule is cut to this)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of forward+backward and GD timing")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does: GD's freed tensors are not faulted back in at every step
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, {args.size}×{args.size}, {args.iterations} GD iterations")
    print(f"{args.rounds} alternating rounds; each time is the fastest of its rounds")
    print("| representation | batch | fwd+bwd ms | GD s / image (timed) | GD s / image (full preset) | overhead ratio |")
    print("|---|---|---|---|---|---|")
    for spec in args.specs:
        options = {"weights": "random"} if ":" in spec else {}
        rep = build_representation(spec, **options).to(device)
        full = gd_config("mv2015", rep)
        full_iterations = full.iterations
        cfg = gd_config("mv2015", rep, schedule=[[full.schedule[0][0], args.iterations]])
        for b in args.batches:
            images = batch_of(b, 1 if cfg.grey else 3, args.size).to(device)
            pixels = PixelSpace(mean=tuple(cfg.pixel_mean))
            sigma0 = cfg.sigma0(*images.shape[1:])
            fb, gd = float("inf"), float("inf")
            for _ in range(args.rounds):
                fb = min(fb, forward_backward_seconds(rep, images, pixels, sigma0, args.iterations, device))
                gd = min(gd, invert_gd(rep, images, cfg, device=device, progress=False).seconds)
            ratio = gd / (args.iterations * fb)
            per_image = gd / b
            print(f"| {spec} | {b} | {fb * 1e3:.1f} | {per_image:.2f} | {per_image * full_iterations / args.iterations:.1f} "
                  f"({full_iterations} it) | {ratio:.3f} |", flush=True)


if __name__ == "__main__":
    main()
