"""How much of a bundle's image_error is colour: its reconstructions against flat images of colours, on the test photos.

For each size, on the 6 built-in test photos (resized and centre-cropped, as the shipped-bundle tests take them):
image_error of the bundle's reconstructions; of flat images of each reconstruction's own mean colour (what the
decoder got of the colour alone); and of flat images of each photo's true mean colour (the best constant image).
When the first two are close and well above the third, the decoder's error is mostly a wrong colour.

    .venv/bin/python scripts/learned_colour_error.py [--bundle checkpoints/efficientnet_lite0_pool.pt] [--sizes 128 160 224]
"""
from __future__ import annotations

import argparse

import torch

from preimage.imagesets import prepare_image
from preimage.metrics import flat_colour, image_error
from preimage.inversion.learned import LearnedInverter
from preimage.photos import TEST_PHOTOS, load_photo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="checkpoints/efficientnet_lite0_pool.pt")
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 160, 224])
    args = parser.parse_args()
    inverter = LearnedInverter.from_bundle(args.bundle)
    grey = inverter.decoder.config.out_channels == 1
    print(f"{args.bundle} on the {len(TEST_PHOTOS)} test photos: mean image_error")
    print("| size | reconstructions | their own mean colour | the photos' mean colour |")
    print("|---|---|---|---|")
    for side in args.sizes:
        images = torch.stack([prepare_image(load_photo(name), size=side, grey=grey) for name in TEST_PHOTOS])
        with torch.no_grad():
            recon = inverter(images)
        errors = [float(image_error(x, images).mean()) for x in (recon, flat_colour(recon), flat_colour(images))]
        print(f"| {side} | " + " | ".join(f"{e:.3f}" for e in errors) + " |")


if __name__ == "__main__":
    main()
