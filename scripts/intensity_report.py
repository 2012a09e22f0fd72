"""How much of a compare run's image_error is the reconstructions' brightness and contrast, per image.

For each reconstruction saved by `preimage compare` (run_dir/reconstructions/<spec>/<method>/<stem>.npy)
of the built-in test photos, prints its image_error as scored (clamped to [0, 1]), the image_error with its
mean set to the photo's (what a Φ blind to an intensity offset, like DSIFT, cannot tell), and with the best
gain and offset fitted to the photo (least squares: neither can be told), with the means and the stds.
The normalizer is the set's, as in the compare table, so the last line's means are comparable to it.

    .venv/bin/python scripts/intensity_report.py runs/compare dsift learned
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from preimage.imagesets import grey_square
from preimage.metrics import image_error
from preimage.photos import TEST_PHOTOS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a `preimage compare` run directory (default images, grey)")
    parser.add_argument("spec", help="representation, e.g. dsift")
    parser.add_argument("method", help="gd, learned or hybrid")
    parser.add_argument("--size", type=int, default=192, help="the compare run's image_size")
    args = parser.parse_args()
    folder = args.run_dir / "reconstructions" / args.spec / args.method
    photos = torch.stack([grey_square(name, args.size) for name in TEST_PHOTOS]).double()
    recon = torch.stack([torch.from_numpy(np.load(folder / f"{n}.npy")).reshape(photos.shape[1:])
                         for n in TEST_PHOTOS]).double().clamp(0.0, 1.0)
    mean_fixed = recon - recon.mean(dim=(1, 2, 3), keepdim=True) + photos.mean(dim=(1, 2, 3), keepdim=True)
    affine = []
    for r, x in zip(recon, photos):
        design = torch.stack([r.reshape(-1), torch.ones(r.numel(), dtype=r.dtype)], dim=1)
        coef = torch.linalg.lstsq(design, x.reshape(-1, 1)).solution
        affine.append((design @ coef).reshape(r.shape))
    errors = [image_error(v, photos) for v in (recon, mean_fixed, torch.stack(affine))]
    print(f"{'photo':10s} {'image_error':>11s} {'mean fixed':>10s} {'gain+offset':>11s} "
          f"{'mean r / x':>11s} {'std r / x':>11s}")
    for i, name in enumerate(TEST_PHOTOS):
        r, x = recon[i], photos[i]
        print(f"{name:10s} {errors[0][i]:11.3f} {errors[1][i]:10.3f} {errors[2][i]:11.3f} "
              f"{r.mean():5.3f}/{x.mean():5.3f} {r.std():5.3f}/{x.std():5.3f}")
    print(f"{'mean':10s} {errors[0].mean():11.3f} {errors[1].mean():10.3f} {errors[2].mean():11.3f}")


if __name__ == "__main__":
    main()
