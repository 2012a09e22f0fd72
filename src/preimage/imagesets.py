"""Image sets as the jobs read them: the built-in test photos, a folder, files; the one square crop."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .images import load_images, to_grey
from .photos import TEST_PHOTOS, load_photo, photo_path

__all__ = ["BUILTIN", "IMAGE_SUFFIXES", "grey_square", "list_images", "load_image_set", "prepare_image",
           "resolve_image_path", "square"]

BUILTIN = "builtin"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


def resolve_image_path(item: str) -> Path:
    """``builtin:NAME`` → the built-in photo's file; anything else is a path."""
    prefix = f"{BUILTIN}:"
    return photo_path(item[len(prefix):]) if item.startswith(prefix) else Path(item)


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, H, W)`` → ``(C, size, size)`` in ``[0, 1]``: the shorter side resized to ``size`` (bicubic,
    antialiased), then the central square cropped.

    The one square crop of every job (compare, the analyses, the scripts): resizing the whole photo first
    and antialiasing it keeps the crop free of aliasing when a large photo is shrunk, as torchvision's
    ImageNet ``Resize`` + ``CenterCrop`` do.
    """
    x = image[None]
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                      antialias=True, align_corners=False)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[0, :, top:top + size, left:left + size].clamp(0, 1)


def prepare_image(image: torch.Tensor, *, size: int | None, grey: bool) -> torch.Tensor:
    """The image as a job sees it: grey (or RGB, grey files replicated), then :func:`square` if ``size`` is set."""
    image = to_grey(image) if grey else image.expand(3, -1, -1).contiguous()
    return square(image, size) if size else image


def grey_square(name: str, size: int) -> torch.Tensor:
    """Built-in photo ``name`` as grey ``(1, size, size)`` in [0, 1] (:func:`prepare_image`)."""
    return prepare_image(load_photo(name), size=size, grey=True)


def list_images(images: str | Sequence[str], *, exclude: Path | None = None) -> list[tuple[str, Path]]:
    """``(name, path)`` of every image: ``builtin`` (the built-in test photos, never used in training), a folder
    (recursive, sorted; files under ``exclude``, a job's own output folder inside it, left out), one file, or a list of
    files / ``builtin:NAME``."""
    if isinstance(images, str):
        if images in (BUILTIN, f"{BUILTIN}:test"):
            return [(f"{BUILTIN}:{n}", resolve_image_path(f"{BUILTIN}:{n}")) for n in TEST_PHOTOS]
        root = Path(images)
        if root.is_file():
            return [(str(root), root)]
        if not root.is_dir():
            raise ValueError(f"images: {root} is neither a folder nor an image file (or `builtin`)")
        skip = exclude.resolve() if exclude is not None and not root.resolve().is_relative_to(exclude.resolve()) else None
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and not (skip is not None and p.resolve().is_relative_to(skip)))
        if not found:
            raise ValueError(f"images: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        return [(str(p), p) for p in found]
    items = [str(i) for i in images]
    if not items:
        raise ValueError("images: an empty list")
    return [(i, resolve_image_path(i)) for i in items]


def load_image_set(images: str | Sequence[str], *, limit: int | None = None, size: int | None = None,
                   grey: bool = True, exclude: Path | None = None) -> tuple[list[str], list[Path], list[torch.Tensor]]:
    """Names, paths and prepared images (:func:`prepare_image`) of an image set (:func:`list_images`)."""
    listed = list_images(images, exclude=exclude)[:limit]
    paths = [p for _, p in listed]
    return [n for n, _ in listed], paths, [prepare_image(x, size=size, grey=grey) for x in load_images(paths)]
