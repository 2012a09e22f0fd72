"""Start a deep layer's decoder from a shallower layer's bundle (``preimage.training.stacking``): fit a small network
from the deep features back to the shallow ones on the training crops of a config, fold it into the shallow
decoder, and write the result as a bundle for ``preimage train init=BUNDLE`` to fine-tune end to end.

    .venv/bin/python scripts/stack_decoder.py --config configs/train/efficientnet_lite0_layers.yaml --layer stage7 \\
        --on checkpoints/efficientnet_lite0_stage6.pt --out runs/stack_inits/stage7_init.pt [key=value ...]
    preimage train --config configs/train/efficientnet_lite0_layers.yaml 'layers=[stage7]' run_dir=runs/stacked \\
        init=runs/stack_inits/stage7_init.pt decoder.pre_convs=5 ...

(the bundle is written outside the run_dir, which ``preimage train`` wants empty or its own.)

The crops are the config's training stream (``--layer``'s ``per_layer`` keys for a sweep's config; torch seeded with
its ``seed``); the bundle's decoder has ``--convs`` more ``pre_convs`` than the shallow one. Printed: the adapter's
mean squared error on the training crops and on the validation crops (in the shallow decoder's input units, beside
the shallow features' own variance), and the validation image_error of the stacked decoder beside the shallow
decoder's on the true shallow features.
"""
from __future__ import annotations

import argparse
import itertools
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from preimage.inversion.bundles import save_bundle
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.networks import Decoder
from preimage.metrics import image_error
from preimage.representations import build_representation
from preimage.schemas import TrainConfig, load_config
from preimage.training.datamodule import ImageDataModule
from preimage.training.stacking import build_adapter, fit_adapter, stack_decoder
from preimage.training.sweep import layer_config, layer_spec
from preimage.training.train import resolve_config


def features(images: list[torch.Tensor], deep: torch.nn.Module, shallow: LearnedInverter) -> tuple[torch.Tensor, ...]:
    """The deep features and the shallow decoder's input for each batch of ``images``, concatenated."""
    with torch.no_grad():
        pairs = [(deep(x), shallow.decoder.config.prepare(shallow.representation(x))) for x in images]
    return torch.cat([d for d, _ in pairs]), torch.cat([s for _, s in pairs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a training config YAML")
    parser.add_argument("--layer", help="for a sweep's config: the layer to start a decoder for")
    parser.add_argument("--on", required=True, help="the shallower layer's bundle (a path or a shipped name)")
    parser.add_argument("--out", required=True, type=Path, help="the bundle to write")
    parser.add_argument("--crops", type=int, default=3072, help="training crops to fit the adapter on")
    parser.add_argument("--steps", type=int, default=2000, help="AdamW steps of the adapter (batches of 64)")
    parser.add_argument("--convs", type=int, default=2, help="convolutions of the adapter")
    parser.add_argument("--kernel", type=int, choices=(1, 3), default=3,
                        help="their kernel: 3, or 1 where the deep layer maps each cell of the shallow one alone")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = parser.parse_args()
    if args.crops < 2 or args.steps < 1:
        raise SystemExit("--crops must be at least 2 and --steps at least 1")
    c = resolve_config(load_config(TrainConfig, args.config, args.overrides, where="train"))
    if c["layers"]:
        if args.layer is None:
            raise SystemExit("--layer: the config is a sweep over layers; name the one to start a decoder for")
        c = layer_config(c, args.layer, layer_spec(c["representation"], args.layer), Path(c["run_dir"]))
    representation = build_representation(c["representation"], **c["representation_options"]).eval()
    shallow = LearnedInverter.from_bundle(args.on)
    if not isinstance(shallow.decoder, Decoder):
        raise SystemExit(f"--on {args.on}: an ensemble of decoders; stack on one of its members' bundles")
    crop = int(c["data"]["crop"])
    sizes = [(crop, crop), (crop + 3, crop + 2), tuple(shallow.decoder.image_size)]
    if representation.grid_step is None or representation.grid_step != shallow.representation.grid_step or any(
            representation.grid_offset(*s) != shallow.representation.grid_offset(*s)
            or representation.output_shape(*s)[1:] != shallow.representation.output_shape(*s)[1:] for s in sizes):
        raise SystemExit(f"{representation.spec} and {shallow.representation.spec} ({args.on}) do not lie on one "
                         "grid: a decoder can be stacked only on a layer of the same stride")
    started = time.time()
    datamodule = ImageDataModule(**c["data"])
    datamodule.setup("fit")
    torch.manual_seed(c["seed"])
    batches = math.ceil(args.crops / datamodule.hparams.batch_size)
    train = list(itertools.islice(datamodule.train_dataloader(), batches))
    deep, target = features(train, representation, shallow)
    deep, target = deep[: args.crops], target[: args.crops]
    scale = float(f"{1.0 / float(deep.std()):.4g}")
    val_images = list(datamodule.val_dataloader())
    val_deep, val_target = features(val_images, representation, shallow)
    print(f"{len(deep)} training and {len(val_deep)} validation crops of {c['representation']} and "
          f"{shallow.representation.spec}: {time.time() - started:.0f} s", flush=True)
    adapter = build_adapter(deep.shape[1], target.shape[1], shallow.decoder.config.width, args.convs, args.kernel,
                            shallow.decoder.config.leaky_slope)
    generator = torch.Generator().manual_seed(c["seed"])
    train_mse = fit_adapter(adapter, deep * scale, target, steps=args.steps, generator=generator)
    with torch.no_grad():
        val_mse = float((adapter(val_deep * scale) - val_target).pow(2).mean())
    variance = float(val_target.var(dim=(0, 2, 3)).mean())
    decoder = stack_decoder(adapter, shallow.decoder.cpu(), tuple(representation.output_shape(
        *shallow.decoder.image_size)), scale)
    stacked = LearnedInverter(representation, decoder).eval()
    images = torch.cat(val_images)
    with torch.no_grad():
        size = tuple(images.shape[-2:])
        error = float(image_error(stacked.invert_features(val_deep, size), images).mean())
        reference = float(image_error(shallow.invert_features(val_target / shallow.decoder.config.input_scale, size),
                                      images).mean())
    print(f"adapter ({args.steps} steps, {time.time() - started:.0f} s): mean squared error {train_mse:.4f} on the "
          f"training crops, {val_mse:.4f} on the validation crops (the shallow features' variance {variance:.4f})")
    print(f"validation image_error: stacked decoder {error:.4f}; {shallow.representation.spec}'s decoder on "
          f"{shallow.representation.spec}'s features {reference:.4f}")
    metrics = {"val/image_error": error, "val/adapter_mse": val_mse, "train/adapter_mse": train_mse}
    manifest = {"spec": representation.spec, "params": representation.params,
                "data": {**c["data"], "sources": datamodule.source_configs}, "steps": 0, "metrics": metrics,
                "stacked_on": str(args.on), "adapter": {"crops": len(deep), "steps": args.steps, "convs": args.convs,
                                                             "kernel": args.kernel},
                "command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    save_bundle(args.out, decoder, manifest)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
