"""The pyramid parametrization's collapse (variables → image, and its gradient back), written out and by autograd.

``PyramidSpace.to_image`` collapses the levels coarsest first with its own exact 2× bilinear doublings (and torch's
``F.interpolate`` where a side does not double), and computes its gradient with the doublings' adjoints written out,
each level's gradient written into one buffer. The reference here is the same sum made of ``F.interpolate``, the
level weights and the pixel affine as separate operations, differentiated by autograd (what ``fast`` ran before).
Both are checked against each other (forward and gradient, largest difference relative to the largest value), then
timed in alternating rounds, each figure the fastest of ``--rounds`` (load from other processes only adds time), in
ms per call of forward + backward on random variables, ``--batch`` colour images of each ``--sizes`` side:

    .venv/bin/python scripts/benchmark_pyramid.py [--sizes 128 224 448] [--batch 6] [--calls 50] [--rounds 3]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from preimage import keep_freed_memory
from preimage.inversion.parametrization import PyramidSpace


def autograd_collapse(space: PyramidSpace, z: torch.Tensor) -> torch.Tensor:
    """The image of variables ``z``, each level weighted and upsampled by ``F.interpolate``, for autograd."""
    sides = space.sides
    levels = z.split([h * w for h, w in sides], dim=2)
    pixels = None
    for k in reversed(range(len(sides))):
        level = levels[k].unflatten(2, sides[k]) * space.step**k
        pixels = level if pixels is None else level + F.interpolate(pixels, size=sides[k], mode="bilinear",
                                                                    align_corners=False)
    return space.pixel.to_image(pixels)


def forward_backward(collapse, z: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    variables = z.detach().requires_grad_(True)
    image = collapse(variables)
    (grad,) = torch.autograd.grad((image * weights).sum(), variables)
    return image.detach(), grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 224, 448])
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--calls", type=int, default=50, help="calls timed as one block per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, colour")
    print("| side | written out ms | autograd ms | autograd / written out | max rel. difference image / gradient |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        space = PyramidSpace(3, size, size)
        g = torch.Generator().manual_seed(size)
        z = torch.randn(space.variable_shape(args.batch), generator=g) * 20
        weights = torch.randn(args.batch, 3, size, size, generator=g)
        variants = {"written out": space.to_image, "autograd": lambda v, s=space: autograd_collapse(s, v)}
        (image, grad), (ref_image, ref_grad) = (forward_backward(f, z, weights) for f in variants.values())
        image_diff = float((image - ref_image).abs().max() / ref_image.abs().max())
        grad_diff = float((grad - ref_grad).abs().max() / ref_grad.abs().max())
        best = {name: float("inf") for name in variants}
        for _ in range(args.rounds):
            for name, collapse in variants.items():
                forward_backward(collapse, z, weights)  # warm-up
                tic = time.perf_counter()
                for _ in range(args.calls):
                    forward_backward(collapse, z, weights)
                best[name] = min(best[name], (time.perf_counter() - tic) / args.calls * 1000)
        print(f"| {size} | {best['written out']:.2f} | {best['autograd']:.2f} | "
              f"{best['autograd'] / best['written out']:.2f} | {image_diff:.1e} / {grad_diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
