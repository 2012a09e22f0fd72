"""Checkpoint inference end to end against Φ + decoder alone, measured side by side in one run.

- Φ + decoder: images/s of the bundle's ``LearnedInverter`` on images already in memory, at the batch size;
- end to end: `preimage invert --method learned` on N image files (reading, checking, Φ + decoder, scoring the
  asked metrics, writing PNG, NPY, overview and metrics.json) as a whole process, net of start-up: the same
  command on one image is timed beside it, and the rate is (N − 1) / (t_N − t_1);
- ratio = end to end / Φ + decoder (the target is at least 2/3).

Rounds alternate between the measurements and each figure is the fastest of its rounds (load from other
processes only ever adds time). Also: the decoder channels-last against contiguous (speed, largest difference).

    .venv/bin/python scripts/benchmark_inference.py [--bundle checkpoints/hog.pt] [--images 96] [--size 227]
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from preimage.images import load_image
from preimage.imagesets import prepare_image
from preimage.inversion.bundles import bundle_file
from preimage.inversion.learned import LearnedInverter
from preimage.photos import TEST_PHOTOS, load_photo


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    """n different size × size crops (some mirrored) of the built-in photos as PNG files."""
    rng = np.random.default_rng(0)
    photos = [(load_photo(p).expand(3, -1, -1).permute(1, 2, 0).numpy() * 255).astype(np.uint8) for p in TEST_PHOTOS]
    paths = []
    for k in range(n):
        photo = photos[k % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        crop = photo[y:y + size, x:x + size][:, ::-1 if k % 2 else 1]
        paths.append(folder / f"img{k:03d}.png")
        Image.fromarray(np.ascontiguousarray(crop)).save(paths[-1])
    return paths


def model_rate(inverter: LearnedInverter, images: torch.Tensor, batch: int) -> float:
    """Images/s of Φ + decoder over all ``images``, ``batch`` at a time."""
    with torch.no_grad():
        inverter(images[:batch])
        start = time.perf_counter()
        for b in range(0, len(images), batch):
            inverter(images[b:b + batch])
        return len(images) / (time.perf_counter() - start)


def invert_seconds(bundle: Path, paths: list[Path], out: Path, batch: int, metrics: str | None) -> float:
    """Wall seconds of `preimage invert --method learned` on ``paths`` as a whole process."""
    extra = [f"metrics={metrics}"] if metrics else []
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "preimage.cli", "invert", "--method", "learned", "--checkpoint", str(bundle),
                    *map(str, paths), "--out", str(out), f"batch_size={batch}", "overwrite=true", "progress=false",
                    "device=cpu", *extra], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="checkpoints/hog.pt")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--metrics", nargs="+", default=["default", "[psnr]"],
                        help="metrics settings of invert to time ('default': all five)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bundle = bundle_file(args.bundle)
    inverter = LearnedInverter.from_bundle(bundle)
    grey = inverter.decoder.config.out_channels == 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_images(folder, args.images, args.size)
        images = torch.stack([prepare_image(load_image(p), size=None, grey=grey) for p in paths])
        best: dict[tuple, float] = {}
        for _ in range(args.rounds):
            for batch in args.batches:
                key = ("model", batch)
                best[key] = max(best.get(key, 0.0), model_rate(inverter, images, batch))
                for metrics in args.metrics:
                    chosen = None if metrics == "default" else metrics
                    for name, subset in (("one", paths[:1]), ("all", paths)):
                        key = (name, batch, metrics)
                        seconds = invert_seconds(bundle, subset, folder / "out", batch, chosen)
                        best[key] = min(best.get(key, float("inf")), seconds)
    print(f"{bundle}, {args.images} images of {args.size}×{args.size}, {torch.get_num_threads()} threads, "
          f"fastest of {args.rounds} alternating rounds")
    print("| batch | metrics | Φ + decoder images/s | invert end to end images/s (net of start-up) | ratio | start-up s |")
    print("|---|---|---|---|---|---|")
    for batch in args.batches:
        for metrics in args.metrics:
            net = (args.images - 1) / (best[("all", batch, metrics)] - best[("one", batch, metrics)])
            model = best[("model", batch)]
            print(f"| {batch} | {metrics} | {model:.1f} | {net:.1f} | {net / model:.2f} | "
                  f"{best[('one', batch, metrics)]:.2f} |")
    contiguous = LearnedInverter(inverter.representation, inverter.decoder, inverter.manifest)
    contiguous.decoder = copy.deepcopy(inverter.decoder).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        difference = float((contiguous(images[:8]) - inverter(images[:8])).abs().max())
    rates = {name: max(model_rate(m, images[:32], 8) for _ in range(args.rounds))
             for name, m in (("channels-last", inverter), ("contiguous", contiguous))}
    print(f"decoder channels-last {rates['channels-last']:.1f} images/s vs contiguous {rates['contiguous']:.1f} "
          f"(batch 8): ×{rates['channels-last'] / rates['contiguous']:.2f}; largest difference {difference:.1e}")


if __name__ == "__main__":
    main()
