"""Class maximizations of EfficientNet-Lite0 in each parametrization, scored under transforms they never saw.

    .venv/bin/python scripts/maximize_table.py [--out outputs/maximize_table] [--classes 281 967 948 417 980]
        [--figure docs/figures/maximize_efficientnet_lite0.png]

Runs ``preimage analyze maximize`` on ``efficientnet_lite0:logits`` (224 px) once per parametrization: M&V's
pixel space with their priors (preset ``maximize``), the same with random scalings and rotations at every step,
and the decorrelated Fourier space with transforms (``maximize_fourier``). Then it re-reads every image from
its ``.npy`` file and prints, per class, the softmax probability of the class for the image as it is and its
mean over 8 fixed shift / scale / rotation transforms the optimization did not draw
(``preimage.inversion.transforms.evaluation_transforms``: shifts ≤ 16 px, scale 0.8–1.2, rotation ≤ 15°), and
writes a labelled picture (rows: parametrizations; columns: classes).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.models import ResNet50_Weights

from preimage import build_representation
from preimage.analysis.transform_score import transformed_scores
from preimage.analysis.visualize import maximize
from preimage.images import grid, save_png

LAYER = "efficientnet_lite0:logits"
#: name → (preset, gd overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    "pixel (M&V)": ("maximize", {}),
    "pixel + transforms": ("maximize", {"scale": [0.9, 1.1], "rotate": 10.0}),
    "fourier + transforms": ("maximize_fourier", {}),
}
NORMALIZERS = ["builtin:rocket", "builtin:motorcycle_left", "builtin:hubble_deep_field", "builtin:retina"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/maximize_table"))
    parser.add_argument("--classes", type=int, nargs="+", default=[281, 967, 948, 417, 980])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/maximize_efficientnet_lite0.png"))
    args = parser.parse_args()
    names = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]  # ImageNet's class names, shipped with torchvision
    logits = build_representation(LAYER).eval()
    rows, labels = [], []
    print(f"{LAYER}, {args.size} px; softmax of the class: as made / mean over 8 unseen transforms\n")
    print("| parametrization | " + " | ".join(f"{c} {names[c]}" for c in args.classes) + " | mean | s |")
    print("|---" * (len(args.classes) + 3) + "|")
    for variant, (preset, gd) in VARIANTS.items():
        out = args.out / preset / ("transforms" if gd else "plain")
        tic = time.perf_counter()
        report = maximize(layers=[LAYER], out=out, channels=args.classes, size=args.size, preset=preset, gd=gd,
                          normalizer_images=NORMALIZERS, device="cpu", progress=False, overwrite=True)
        seconds = time.perf_counter() - tic
        images = torch.stack([torch.from_numpy(np.load(out / name)).permute(2, 0, 1) for name in report["arrays"]])
        scores = transformed_scores(logits, images, args.classes)
        cells = [f"{p:.3f} / {t:.3f}" for p, t in zip(scores["plain"], scores["transformed"])]
        mean_plain, mean_moved = np.mean(scores["plain"]), np.mean(scores["transformed"])
        print(f"| {variant} | " + " | ".join(cells) + f" | **{mean_plain:.3f} / {mean_moved:.3f}** | {seconds:.0f} |",
              flush=True)
        rows.append(list(images))
        labels.append(f"{variant}\nmean {mean_moved:.3f}\nunder transforms")
    cols = [f"{c} {names[c]}" for c in args.classes]
    save_png(grid(rows, col_labels=cols, row_labels=labels), args.figure)
    print(f"\nwrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
