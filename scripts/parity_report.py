"""Print the measured differences to the real VLFeat (libvl.so.1) that the parity tests bound.

HOG/HOGb: max abs difference over all 31 dims, per built-in test photo crop, colour and grey (the test
bound is 1e-4). DSIFT: max abs difference and the count of descriptors off by more than 1e-3 (the test
bound: at most 0.1 %). Uses the tests' own ctypes wrappers (tests/vlfeat_hog.py, tests/vlfeat_dsift.py).

    .venv/bin/python scripts/parity_report.py
"""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from vlfeat_dsift import vlfeat_dsift  # noqa: E402
from vlfeat_hog import vlfeat_hog  # noqa: E402

from preimage import build_representation  # noqa: E402
from preimage.images import to_grey  # noqa: E402
from preimage.photos import TEST_PHOTOS, load_photo  # noqa: E402
from preimage.representations.dsift import dsift  # noqa: E402

HOG_CROP = (13, 21, 101, 77)  # top, left, height, width: neither side a multiple of 8
DSIFT_CROP = (97, 40, 181, 203)  # neither side a multiple of the 15-px step


def main() -> None:
    lib = ctypes.CDLL("libvl.so.1")
    print(f"crops: HOG {HOG_CROP[2]}×{HOG_CROP[3]}, DSIFT {DSIFT_CROP[2]}×{DSIFT_CROP[3]} (bin 5, step 15)")
    print("| photo | hog colour | hog grey | hogb colour | hogb grey | dsift max | dsift > 1e-3 |")
    print("|---|---|---|---|---|---|---|")
    for name in TEST_PHOTOS:
        photo = load_photo(name)
        photo = photo.expand(3, -1, -1) if photo.shape[0] == 1 else photo
        top, left, h, w = HOG_CROP
        colour = photo[:, top:top + h, left:left + w]
        cells = []
        for spec in ("hog", "hogb"):
            rep = build_representation(spec)
            for x in (colour, to_grey(colour)):
                ours = rep(x[None])[0]
                theirs = vlfeat_hog(lib, 255 * x, bilinear_orientations=spec == "hogb")
                cells.append(f"{(ours - theirs).abs().max().item():.1e}")
        top, left, h, w = DSIFT_CROP
        grey = (255 * to_grey(photo)[0, top:top + h, left:left + w]).numpy().astype(np.float32)
        ref, _ = vlfeat_dsift(lib, grey, bin_size=5, step=15)
        ours = dsift(torch.from_numpy(grey)[None, None], bin_size=5, step=15)[0]
        ours = ours.flatten(1).T.numpy()  # (rows·cols, 128), frames row by row as VLFeat
        diff = np.abs(ours - ref).max(axis=1)
        print(f"| {name} | " + " | ".join(cells) + f" | {diff.max():.1e} | {(diff > 1e-3).sum()} / {len(diff)} |")


if __name__ == "__main__":
    main()
