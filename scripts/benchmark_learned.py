"""Learned-inverter speed: training and inference throughput, and learned vs GD seconds per image, in one run.

- training throughput: images/s of full training steps (Φ on the batch, decoder forward+backward, AdamW
  step) of `preimage train`'s module on the config's batch, data loading excluded;
- inference throughput: images/s of a shipped bundle (Φ + decoder, one forward) at batch 1 and 64;
- learned vs GD: seconds per image of both on the same images (GD at the mv2015 preset, batch of 6).

    .venv/bin/python scripts/benchmark_learned.py [--spec hog] [--size 192] [--steps 10]
"""
from __future__ import annotations

import argparse
import time

import torch

from preimage.imagesets import grey_square
from preimage.devices import resolve_device, synchronize
from preimage.inversion.gd import invert_gd
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.presets import gd_config
from preimage.photos import TEST_PHOTOS
from preimage.training.train import build, resolve_config
from preimage.config import config_dir, load_yaml


def training_throughput(spec: str, steps: int, device: torch.device) -> tuple[float, int]:
    """Images/s of `steps` training steps of configs/train/<spec>.yaml's module (fastest of 3 timed blocks)."""
    torch.manual_seed(0)
    c = resolve_config(load_yaml(config_dir() / "train" / f"{spec}.yaml"))
    _, datamodule, module = build(c)
    module = module.to(device)
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader())).to(device)
    optimizer = torch.optim.AdamW(module.decoder.parameters(), lr=1e-3)
    best = float("inf")
    for _ in range(3):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            loss = module.model_step(batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return steps * batch.shape[0] / best, batch.shape[0]


def inference_throughput(inverter: LearnedInverter, images: torch.Tensor, batch: int, device: torch.device) -> float:
    """Images/s of one forward pass (Φ + decoder) at this batch size (fastest of 5)."""
    x = images[torch.arange(batch) % len(images)].to(device)
    best = float("inf")
    with torch.no_grad():
        inverter(x[:1])
        for _ in range(5):
            synchronize(device)
            start = time.perf_counter()
            inverter(x)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="hog", help="a representation with a shipped bundle checkpoints/<spec>.pt")
    parser.add_argument("--size", type=int, default=192, help="test images: grey, size × size")
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed block")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads")

    rate, batch = training_throughput(args.spec, args.steps, device)
    print(f"training ({args.spec}, configs/train/{args.spec}.yaml, batch {batch}): {rate:.1f} images/s")

    images = torch.stack([grey_square(n, args.size) for n in TEST_PHOTOS])
    inverter = LearnedInverter.from_bundle(f"checkpoints/{args.spec}.pt", device=device)
    for b in (1, 64):
        print(f"inference ({args.spec}, {args.size}×{args.size}, batch {b}): "
              f"{inference_throughput(inverter, images, b, device):.1f} images/s")

    with torch.no_grad():
        synchronize(device)
        start = time.perf_counter()
        for x in images:
            inverter(x[None].to(device))
        synchronize(device)
        learned = (time.perf_counter() - start) / len(images)
    gd = invert_gd(inverter.representation, images, gd_config("mv2015", inverter.representation),
                   device=device, progress=False).seconds / len(images)
    print(f"learned {learned:.4f} s/image (one at a time) vs GD mv2015 {gd:.2f} s/image (batch of {len(images)}): "
          f"learned is {gd / learned:.0f}× faster")


if __name__ == "__main__":
    main()
