"""The built-in photographs: those scikit-image ships inside its wheel (no download).

They are split once, by source photograph, into a test set (never used for training: evaluation,
the Table-1 reproduction, parity tests) and a training set (learned inverters). The two stereo views
of the motorcycle are one source and stay together.

Convention: :func:`load_photo` returns float32 ``(C, H, W)`` in ``[0, 1]``, ``C = 3`` for colour
photographs and ``C = 1`` for grey ones.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .images import load_image

TEST_PHOTOS: tuple[str, ...] = ("astronaut", "camera", "chelsea", "coffee", "coins", "moon")
TRAIN_PHOTOS: tuple[str, ...] = (
    "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "clock_motion", "text",
    "page", "brick", "grass", "gravel", "retina", "ihc", "cell", "microaneurysms",
)
_FILES = {
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
}


def _data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def photo_path(name: str) -> Path:
    """Path of the built-in photo ``name`` inside the installed scikit-image."""
    if name not in TEST_PHOTOS + TRAIN_PHOTOS:
        raise ValueError(f"unknown built-in photo {name!r}; valid: {', '.join(TEST_PHOTOS + TRAIN_PHOTOS)}")
    return _data_dir() / _FILES.get(name, f"{name}.png")


def load_photo(name: str) -> torch.Tensor:
    """The built-in photo ``name`` as float32 ``(C, H, W)`` in ``[0, 1]`` (C = 1 grey, 3 colour)."""
    return load_image(photo_path(name))
