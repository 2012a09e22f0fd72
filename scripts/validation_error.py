"""Validation image_error of inverter bundles on one training config's validation set, side by side.

A bundle is chosen by its run's validation image_error; bundles of different runs (other data, another
validation split) are compared here on one set: the validation crops that ``--config`` (with its overrides, and
``--layer``'s ``per_layer`` keys for a sweep's config) gives, and the whole validation photos those crops are cut
from (each squared to the crop's side as the test photos are: shorter side resized, centre crop). image_error is
normalized over each set, as the training's ``val/image_error``; beside each, the two constant baselines and each
bundle's reconstructions replaced by flat images of their own mean colour. With ``--train-crops N``, also the first
``N`` training crops the config gives (seed 0; grey and jittered as training has them): how far a bundle's error on
crops of the photos it was trained on lies below its error on the validation sets (how much it has memorized).
With ``--average``, also the mean of the bundles' reconstructions: what an ensemble of their decoders would score.

    .venv/bin/python scripts/validation_error.py --config configs/train/efficientnet_lite0_layers.yaml --layer pool \\
        --bundles checkpoints/efficientnet_lite0_pool.pt runs/vec_gc/efficientnet_lite0_pool/bundle.pt [key=value ...]
"""
from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import torch

from preimage.imagesets import prepare_image
from preimage.inversion.learned import LearnedInverter
from preimage.metrics import flat_colour, image_error
from preimage.schemas import TrainConfig, load_config
from preimage.training.datamodule import ImageDataModule
from preimage.training.sources import BuiltinPhotos, ImageFolder, Mixture
from preimage.training.sweep import layer_config, layer_spec
from preimage.training.train import resolve_config


def validation_sets(config: str, layer: str | None, overrides: list[str],
                    train_crops: int = 0) -> dict[str, torch.Tensor]:
    """``{"crops": (N, C, S, S), "photos": (M, C, S, S)}`` in ``[0, 1]``: the validation crops of a training config,
    and the whole validation-split photos of its sources, squared to ``S``; with ``train_crops``, also
    ``"training crops"``: the first ``train_crops`` crops of its training loader (torch seeded 0)."""
    c = resolve_config(load_config(TrainConfig, config, overrides, where="train"))
    if c["layers"]:
        if layer is None:
            raise SystemExit("--layer: the config is a sweep over layers; name the one whose data to use")
        c = layer_config(c, layer, layer_spec(c["representation"], layer), Path(c["run_dir"]))
    datamodule = ImageDataModule(**c["data"])
    datamodule.setup("validate")
    val = datamodule.data_val
    parts = val.parts if isinstance(val, Mixture) else [val]
    photos = [photo for part in parts if isinstance(part, (BuiltinPhotos, ImageFolder)) for photo in part.photos()]
    size, grey = datamodule.hparams.crop, datamodule.hparams.grey
    sets = {"crops": torch.cat(list(datamodule.val_dataloader())),
            "photos": torch.stack([prepare_image(photo, size=size, grey=grey) for photo in photos])}
    if train_crops:
        torch.manual_seed(0)
        batches = math.ceil(train_crops / datamodule.hparams.batch_size)
        sets["training crops"] = torch.cat(list(itertools.islice(datamodule.train_dataloader(), batches)))[:train_crops]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a training config YAML")
    parser.add_argument("--layer", help="for a sweep's config: the layer whose data keys to use")
    parser.add_argument("--bundles", nargs="+", required=True)
    parser.add_argument("--train-crops", type=int, default=0, metavar="N",
                        help="also score the first N training crops (what the bundles may have memorized)")
    parser.add_argument("--average", action="store_true",
                        help="also score the mean of the bundles' reconstructions (an ensemble of their decoders)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = parser.parse_args()
    sets = validation_sets(args.config, args.layer, args.overrides, args.train_crops)
    inverters = {path: LearnedInverter.from_bundle(path) for path in args.bundles}
    for kind, images in sets.items():
        name = kind if kind == "training crops" else f"validation {kind}"
        print(f"{len(images)} {name} of {args.config}" + (f" ({args.layer})" if args.layer else ""))
        shared = flat_colour(images, shared=True)
        print(f"  one flat image of the set's mean colour: {float(image_error(shared, images).mean()):.4f}")
        print(f"  flat images of each one's own mean colour: "
              f"{float(image_error(flat_colour(images), images).mean()):.4f}")
        recons = {}
        for path, inverter in inverters.items():
            with torch.no_grad():
                recons[path] = torch.cat([inverter(batch).clamp(0, 1) for batch in images.split(32)])
        if args.average:
            recons["the mean of these"] = torch.stack(list(recons.values())).mean(0)
        for path, recon in recons.items():
            print(f"  {path}: image_error {float(image_error(recon, images).mean()):.4f} "
                  f"(its own mean colour: {float(image_error(flat_colour(recon), images).mean()):.4f})")


if __name__ == "__main__":
    main()
