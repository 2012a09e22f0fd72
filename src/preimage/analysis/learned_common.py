"""What the learned-inverter analyses share: their checked inputs (a bundle, images, an output folder), Φ and the
decoder run a few images at a time, and the report's common parts."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import check_int
from ..devices import resolve_device
from ..imagesets import BUILTIN, list_images, prepare_image
from ..images import load_image
from ..inversion.bundles import bundle_file
from ..inversion.learned import LearnedInverter
from ..outputs import prepare_output_dir, unique_stems
from .common import check_size, enlarge, fit, random_weight_note

__all__ = ["bundle_record", "check_seed", "decode", "features_of", "floats", "inverter_notes", "learned_inputs",
           "listed_images", "load_inverter", "mean", "variant_grid", "view"]

_CHUNK = 16  # images per forward pass when computing features of an image set


def load_inverter(checkpoint: str | Path, device: torch.device | str = "cpu") -> tuple[LearnedInverter, Path]:
    """The bundle's inverter (its own representation) in eval mode on ``device``, and the file it came from.

    Raises:
        ValueError: ``checkpoint`` is not a shipped name or a bundle file, or any
            :class:`~preimage.inversion.bundles.BundleError` (a ``ValueError``, one line).
    """
    if not checkpoint or not isinstance(checkpoint, (str, Path)):
        raise ValueError(f"checkpoint must be a shipped inverter's name or a bundle's path, got {checkpoint!r}")
    path = bundle_file(checkpoint)
    return LearnedInverter.from_bundle(path, device=device), path


def listed_images(item: str) -> list[tuple[str, Path]]:
    """``(name, path)`` of the images one item names: ``builtin`` or a folder (all their images), else one file."""
    if item in (BUILTIN, f"{BUILTIN}:test") or Path(item).is_dir():
        return list_images(item)
    return list_images([item])


def learned_inputs(images: Any, checkpoint: Any, out: Any, size: Any, device: Any, *, count: str | None = None,
            limit: int | None = None, overwrite: bool = False
            ) -> tuple[LearnedInverter, Path, Path, list[str], list[str], torch.Tensor, torch.device]:
    """Checked inputs: ``(inverter, bundle path, out folder, names, stems, (N, C, size, size) images, device)``.

    ``images``: a list of files / ``builtin:NAME`` / folders / ``builtin`` (the built-in test photos), or one
    of those as a string. ``count`` is ``"two"`` (exactly 2) or ``"several"`` (>= 2).
    """
    check_size(size)
    dev = resolve_device(device)
    inverter, path = load_inverter(checkpoint, dev)
    items = [images] if isinstance(images, (str, Path)) else list(images or [])
    if not items:
        raise ValueError("images must be a non-empty list of image files, folders, builtin:NAME or builtin")
    listed = [entry for item in items for entry in listed_images(str(item))][:limit]
    if count == "two" and len(listed) != 2:
        raise ValueError(f"interpolate needs exactly 2 images (a and b), got {len(listed)}")
    if count == "several" and len(listed) < 2:
        raise ValueError(f"this analysis needs at least 2 images (its normalizer compares them), got {len(listed)}")
    fit(inverter.representation, size)  # a one-line error if Φ takes no size x size images
    grey = inverter.decoder.config.out_channels == 1
    batch = torch.stack([prepare_image(load_image(p), size=size, grey=grey) for _, p in listed])
    out = prepare_output_dir(out, clear=overwrite, inputs=[p for _, p in listed])
    return inverter, path, out, [n for n, _ in listed], unique_stems([p for _, p in listed]), batch, dev


@torch.no_grad()
def features_of(inverter: LearnedInverter, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Φ of ``(N, C, H, W)`` images, a few at a time, on ``device``."""
    return torch.cat([inverter.representation(images[i:i + _CHUNK].to(device))
                      for i in range(0, len(images), _CHUNK)])


@torch.no_grad()
def decode(inverter: LearnedInverter, features: torch.Tensor, size: int) -> torch.Tensor:
    """Reconstructions of ``features`` at ``size × size``, a few at a time, on the CPU."""
    return torch.cat([inverter.invert_features(features[i:i + _CHUNK], (size, size)).cpu()
                      for i in range(0, len(features), _CHUNK)])


def bundle_record(inverter: LearnedInverter, path: Path) -> dict[str, Any]:
    manifest = inverter.manifest
    return {"path": str(path), **{k: manifest.get(k) for k in (
        "spec", "params", "image_size", "feature_shape", "steps", "data", "metrics", "package_version")}}


def inverter_notes(inverter: LearnedInverter, size: int) -> list[str]:
    notes = random_weight_note([inverter.representation])
    trained = inverter.manifest.get("image_size")
    if trained and list(trained) != [size, size]:
        notes.append(f"images are {size}x{size}; the decoder was trained on {trained[0]}x{trained[1]} crops "
                     "(fully convolutional for spatial features, so it runs at any size)")
    return notes


def check_seed(seed: Any) -> int:
    return check_int("seed", seed, minimum=None)


def floats(values: torch.Tensor) -> list[float]:
    return [float(v) for v in values.detach().cpu().reshape(-1)]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def view(image: torch.Tensor) -> torch.Tensor:
    """An image enlarged (nearest) to at least 96 pixels tall, for the picture."""
    return enlarge(image.cpu())


def variant_grid(originals: torch.Tensor, recon: dict[str, torch.Tensor], stems: Sequence[str],
                 errors: dict[str, list[float]], titles: dict[str, str]
                 ) -> tuple[list[list[torch.Tensor]], list[str], list[str]]:
    """The picture of an analysis that decodes variants of each image's features: ``(rows, row labels, column
    labels)``, a row per image (the original, then each variant of ``recon``, in its order), each row labelled with
    the variants' image_error, each column with its title and mean error."""
    rows = [[view(originals[i]), *(view(images[i]) for images in recon.values())] for i in range(len(stems))]
    row_labels = [f"{s}\nerr " + " / ".join(f"{errors[v][i]:.2f}" for v in recon) for i, s in enumerate(stems)]
    columns = ["original", *(f"{titles[v]}\nerr {mean(errors[v]):.3f}" for v in recon)]
    return rows, row_labels, columns
