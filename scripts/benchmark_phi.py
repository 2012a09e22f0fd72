"""Φ speed against VLFeat's C: HOG and DSIFT forward, and forward + backward, measured side by side in one run.

VLFeat is called through ctypes exactly as the parity tests call it (tests/vlfeat_hog.py, tests/vlfeat_dsift.py;
Debian's libvlfeat1), on the same grey image in 0–255, UoCTTI HOG with cell 8 (hogb: with bilinear orientation
assignment) and DSIFT with bin 5, step 15. Ours: ``build_representation("hog" | "hogb" | "dsift")`` on
``(B, 1, S, S)`` in [0, 1]; forward+backward is the gradient of the sum of the features with respect to the pixels
(what GD asks of Φ at every step). Ratios are ours / VLFeat's
forward per image; each time is the fastest of --rounds alternating rounds of --repeats calls.

    .venv/bin/python scripts/benchmark_phi.py [--sizes 192 512] [--threads 1 2] [--batch 8]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the parity tests' VLFeat drivers
from conftest import _load_libvl  # noqa: E402
from vlfeat_dsift import vlfeat_dsift  # noqa: E402
from vlfeat_hog import vlfeat_hog  # noqa: E402

from preimage import build_representation  # noqa: E402
from preimage.imagesets import grey_square  # noqa: E402
from preimage.photos import TEST_PHOTOS  # noqa: E402


def fastest(call: Callable[[], object], repeats: int) -> float:
    """Seconds of one call, the fastest of ``repeats``."""
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def ours(spec: str, images: torch.Tensor, backward: bool) -> Callable[[], object]:
    rep = build_representation(spec)

    def forward() -> object:
        with torch.no_grad():
            return rep(images)

    def forward_backward() -> object:
        x = images.clone().requires_grad_(True)
        return torch.autograd.grad(rep(x).sum(), x)

    return forward_backward if backward else forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[192, 512])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lib = _load_libvl()
    if lib is None:
        sys.exit("benchmark_phi: VLFeat (libvl.so.1) not found: apt-get install -y libvlfeat1")
    print("| Φ | size | threads | batch | VLFeat forward ms / image | ours forward ms / image | ratio | "
          "ours forward+backward ms / image | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        image = grey_square(TEST_PHOTOS[0], size)  # (1, S, S) in [0, 1]
        pixels = image * 255
        vlfeat = {"hog": lambda: vlfeat_hog(lib, pixels, cell_size=8),
                  "hogb": lambda: vlfeat_hog(lib, pixels, cell_size=8, bilinear_orientations=True),
                  "dsift": lambda: vlfeat_dsift(lib, pixels[0].numpy().astype(np.float32), bin_size=5, step=15)}
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in sorted({1, args.batch}):
                images = image.expand(batch, -1, -1, -1).contiguous()  # ours take [0, 1] (× 255 inside)
                for spec in ("hog", "hogb", "dsift"):
                    calls = {"c": vlfeat[spec], "f": ours(spec, images, False), "fb": ours(spec, images, True)}
                    best = {k: float("inf") for k in calls}
                    for _ in range(args.rounds):
                        for k, call in calls.items():
                            best[k] = min(best[k], fastest(call, args.repeats))
                    c, f, fb = best["c"] * 1e3, best["f"] * 1e3 / batch, best["fb"] * 1e3 / batch
                    print(f"| {spec} | {size} | {threads} | {batch} | {c:.2f} | {f:.2f} | {f / c:.2f} | {fb:.2f} | "
                          f"{fb / c:.2f} |")


if __name__ == "__main__":
    main()
