"""Print how our sparse SIFT map matches the one laid from the real VLFeat ``vl_sift`` (libvl.so.1) per test photo.

Per built-in test photo at full size: VLFeat's keypoints (every orientation) and ours, VLFeat's occupied 4-px
cells, the share of them we match (descriptor within 1e-3, offsets within 0.025 of a cell, σ within 0.5 %,
angle within 0.01 rad; the test asks ≥ 98 %), the extra cells we occupy (≤ 2 %), and seconds per image for
each (one thread). Uses the tests' ctypes wrapper (tests/vlfeat_sift.py).

    .venv/bin/python scripts/sift_parity.py
"""
from __future__ import annotations

import ctypes
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from vlfeat_sift import cells_by_hand, match_cells, vlfeat_sift  # noqa: E402

from preimage.images import to_grey  # noqa: E402
from preimage.photos import TEST_PHOTOS, load_photo  # noqa: E402
from preimage.representations.sift import keypoint_map  # noqa: E402
from preimage.representations.sift_detector import sift_keypoints  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    lib = ctypes.CDLL("libvl.so.1")
    print("| photo | size | VLFeat keypoints | ours | VLFeat cells | matched | extra | s VLFeat | s ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in TEST_PHOTOS:
        grey = 255 * to_grey(load_photo(name)[None])
        start = time.perf_counter()
        frames, descriptors = vlfeat_sift(lib, grey[0, 0])
        theirs_s = time.perf_counter() - start
        start = time.perf_counter()
        keypoints = sift_keypoints(grey)[0]
        ours_s = time.perf_counter() - start
        height, width = grey.shape[-2:]
        cells = cells_by_hand(frames, descriptors)
        matched, extra = match_cells(keypoint_map(keypoints, height, width), cells)
        print(f"| {name} | {height}×{width} | {len(frames)} | {len(keypoints.frames)} | {len(cells)} | "
              f"{100 * matched / len(cells):.1f} % | {100 * extra / len(cells):.1f} % | {theirs_s:.2f} | {ours_s:.2f} |")


if __name__ == "__main__":
    main()
