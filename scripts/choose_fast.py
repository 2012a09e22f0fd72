"""Choose the ``fast`` preset's schedules on a broad set of images, not on the test photos.

    .venv/bin/python scripts/choose_fast.py [--specs hog hogb dsift] [--sizes 128 192 256] [--crops 40]
        [--textures 8] [--variants 'hog=80' 'hog=100 lo=0.25' 'cnn=100' ...] [--out reports/fast_choice]
        [--validation photos|crops]

The set: per size, ``--crops`` random square crops (seeded) of the photographs that are neither built-in test
photos nor the six OpenCV photos the README reports as a test (data/extra_photos and the other 19 of
data/debian_photos: ``scripts/extra_photos.py`` writes them), each at a random zoom (its shorter side resized
to 1–2.5× the crop), a quarter of them with their contrast cut to 3–40 % (hazy, flat scenes) and re-quantized to
8 bits; and ``--textures`` random 1/f^β noise images (β from 0.5 to 2.5: from grainy to smooth like a sky or water,
the content fast's earlier schedule lost on). Grey for HOG, HOGb and DSIFT; colour (no textures) for network layers.
With ``--validation photos`` (or ``crops``) the set is instead the held-out photos, squared to 224 px (or the
validation crops), of the head's data in EfficientNet-Lite0's inverter config (``scripts/validation_error.py``),
``--crops`` of them evenly spaced: photos no shipped inverter was trained on, so the set to choose
``learned_start`` on (the crops above are cut from the photos the inverters learned).

Every candidate is ``fast`` with its Adam schedule replaced: ``SPEC=N`` (``cnn=N``: every network layer) gives ten
phases of N/10 iterations with the per-pixel step falling geometrically from ``hi`` (48) to ``lo`` (0.5) grey
levels; with the word ``glide`` the step glides from ``hi`` to ``lo`` in N − ``hold`` iterations and stays at ``lo``
for ``hold`` (default 10; the shipped network-layer schedules hold 1) (``gd.glide``); ``relative`` or ``absolute``
sets ``gd.relative_step`` (steps in units of the reconstruction's own contrast); any other ``KEY=VALUE`` sets that GD
setting (``parametrization=fourier``, ``clamp=false``; alone, e.g. ``learned_start=false``, it changes ``fast`` as
it is at every representation). The reference — mv2015 for HOG, HOGb and DSIFT, tuned for
network layers, the presets fast must match — is run once per representation and size (cached in ``--out``).
Printed per candidate: the set's mean error (%; M&V's feature_error for HOG, HOGb and DSIFT, the normalized error
‖Φ(x*) − Φ(x0)‖² / ‖Φ(x0)‖² for network layers) beside the reference's, the share of images where it is at most the
reference's, and its seconds over the reference's.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from preimage import build_representation, keep_freed_memory
from preimage.images import load_images, to_grey
from preimage.inversion.gd import invert_gd
from preimage.inversion.presets import gd_config
from preimage.metrics import feature_error, normalized_loss
from validation_error import validation_sets

INVERTER_CONFIG = "configs/train/efficientnet_lite0_layers.yaml"

OPENCV_TEST = {"baboon", "building", "fruits", "home", "messi5", "squirrel_cls"}
OPTIONS = {"hog": {"texture": False}, "hogb": {"texture": False}, "dsift": {}}
SHALLOW_REFERENCE, NETWORK_REFERENCE = "mv2015", "tuned"


def tuning_photos() -> list[Path]:
    photos = sorted(Path("data/extra_photos").glob("*")) + sorted(
        p for p in Path("data/debian_photos").glob("*") if p.stem not in OPENCV_TEST)
    if not photos:
        raise SystemExit("no tuning photos: run scripts/extra_photos.py first")
    return photos


def photo_crops(photos: list[torch.Tensor], size: int, count: int, g: torch.Generator) -> list[torch.Tensor]:
    """Random ``(C, size, size)`` crops at a random zoom, a quarter of them with their contrast cut."""
    out = []
    for _ in range(count):
        x = photos[int(torch.randint(len(photos), (1,), generator=g))][None]
        zoom = math.exp(float(torch.empty(1).uniform_(0, math.log(2.5), generator=g)))
        h, w = x.shape[-2:]
        scale = size * zoom / min(h, w)
        h, w = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (int(torch.randint(n - size + 1, (1,), generator=g)) for n in (h, w))
        crop = x[0, :, top:top + size, left:left + size]
        if float(torch.rand(1, generator=g)) < 0.25:
            factor = float(torch.empty(1).uniform_(0.03, 0.4, generator=g))
            crop = ((crop - crop.mean()) * factor + crop.mean()).mul(255).round().div(255)
        out.append(crop)
    return out


def textures(size: int, count: int, g: torch.Generator) -> list[torch.Tensor]:
    """1/f^β amplitude-spectrum noise, β evenly from 0.5 to 2.5, contrast 3–25 %, 8-bit."""
    fy, fx = torch.fft.fftfreq(size)[:, None], torch.fft.rfftfreq(size)[None]
    radius = (fx**2 + fy**2).sqrt().clamp_min(1 / size)
    out = []
    for k in range(count):
        beta = 0.5 + 2.0 * k / max(1, count - 1)
        spectrum = torch.complex(*(torch.randn(size, size // 2 + 1, generator=g) for _ in range(2))) / radius**beta
        x = torch.fft.irfft2(spectrum, s=(size, size))
        contrast = float(torch.empty(1).uniform_(0.03, 0.25, generator=g))
        out.append((0.5 + contrast * (x - x.mean()) / x.std()).clamp(0, 1).mul(255).round().div(255)[None])
    return out


def schedule(iterations: int, hi: float, lo: float, glide: bool, hold: int = 10, phases: int = 10) -> list[list[float]]:
    if glide:
        return [[hi, iterations - hold], [lo, hold]]
    per = iterations // phases
    return [[float(f"{v:.3g}"), per] for v in np.geomspace(hi, lo, phases)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", nargs="+", default=["hog", "hogb", "dsift"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 192, 256])
    parser.add_argument("--crops", type=int, default=40)
    parser.add_argument("--textures", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=["fast"],
                        help="'fast' (the preset as it is) or 'SPEC=N [hi=H] [lo=L] [KEY=VALUE ...]' "
                             "(N iterations for SPEC)")
    parser.add_argument("--out", default="reports/fast_choice", help="the references' cached results (not committed)")
    parser.add_argument("--validation", choices=["photos", "crops"],
                        help="network layers: the held-out photos or validation crops of the inverters' config "
                             "(224 px; --sizes ignored) instead of the crops of the photos they were trained on")
    args = parser.parse_args()
    if args.validation and any(spec in OPTIONS for spec in args.specs):
        parser.error("--validation is for network layers (the held-out photos are colour, 224 px)")
    keep_freed_memory()  # as the CLI does: GD's freed tensors are not faulted back in at every step
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    colour = load_images(tuning_photos())
    held_out = validation_sets(INVERTER_CONFIG, "head", [])[args.validation] if args.validation else None
    for spec in args.specs:
        network = spec not in OPTIONS
        rep = build_representation(spec, **OPTIONS.get(spec, {}))
        reference, key, n_textures = (NETWORK_REFERENCE, "cnn", 0) if network else (SHALLOW_REFERENCE, spec, args.textures)
        photos = [x.expand(3, -1, -1) if network else to_grey(x) for x in colour]

        def error(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                features = rep.scoring_view(rep(images))
            return normalized_loss(features, target) if network else feature_error(features, target)

        for size in args.sizes if held_out is None else [held_out.shape[-1]]:
            if held_out is not None:
                images, n_textures = held_out[::max(1, len(held_out) // args.crops)][:args.crops].contiguous(), 0
            else:
                g = torch.Generator().manual_seed(size)
                images = torch.stack(photo_crops(photos, size, args.crops, g) + (textures(size, n_textures, g) if n_textures else []))
            with torch.no_grad():
                target = rep.scoring_view(rep(images))
            held_out_tag = f"validation-{args.validation}_" if args.validation else ""
            cache = out / f"{held_out_tag}{reference}_{spec.replace(':', '_')}_{size}_{args.crops}_{n_textures}.pt"
            if not cache.exists():
                result = invert_gd(rep, images, gd_config(reference, spec), progress=False)
                torch.save({"images": result.images[:, 0], "seconds": result.seconds}, cache)
            base = torch.load(cache)
            base_error = error(base["images"], target)
            print(f"{spec} {size}px, {len(images)} images: {reference} {100 * base_error.mean():.2f} % "
                  f"(photos {100 * base_error[:args.crops].mean():.2f}, textures {100 * base_error[args.crops:].mean():.2f})"
                  f" {base['seconds'] / len(images):.2f} s/image", flush=True)
            for variant in args.variants:
                flags = {w for w in variant.split() if "=" not in w} - {"fast"}
                words = dict(w.rsplit("=", 1) for w in variant.split() if "=" in w)
                if key not in words and {"cnn", *OPTIONS} & words.keys():
                    continue  # a schedule for other representations
                overrides = {k: yaml.safe_load(v) for k, v in words.items() if k not in (key, "hi", "lo", "hold")}
                if key in words:
                    overrides["glide"] = "glide" in flags
                    overrides["schedule"] = schedule(int(words[key]), float(words.get("hi", 48)), float(words.get("lo", 0.5)),
                                                     overrides["glide"], int(words.get("hold", 10)))
                if flags & {"relative", "absolute"}:
                    overrides["relative_step"] = "relative" in flags
                config = gd_config("fast", spec, overrides)
                tic = time.perf_counter()
                result = invert_gd(rep, images, config, progress=False)
                seconds = time.perf_counter() - tic
                errors = error(result.images[:, 0], target)
                wins = (errors <= base_error).double()
                print(f"  {variant:28s} {100 * errors.mean():6.2f} % (photos {100 * errors[:args.crops].mean():.2f}, "
                      f"textures {100 * errors[args.crops:].mean():.2f})  at most the reference's on {100 * wins.mean():.0f} % "
                      f"(photos {100 * wins[:args.crops].mean():.0f}, textures {100 * wins[args.crops:].mean():.0f})  "
                      f"time {seconds / base['seconds']:.2f}× ({config.iterations} it)", flush=True)


if __name__ == "__main__":
    main()
