"""The bundles shipped in checkpoints/: they load safely, fit the size budget and reconstruct unseen photos.

A decoder that collapsed to a constant image still loads and runs; only a score on real photos catches it.
The bar: on the 6 built-in test photos (never used in training), the learned reconstruction's image_error is
below 0.8 × that of each photo's own mean grey level, the best a constant image can do (normalized
descriptors do not even tell the mean).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from preimage.common import grey_square
from preimage.evaluation.metrics import image_error
from preimage.inversion.learned import LearnedInverter, load_bundle
from preimage.photos import TEST_PHOTOS

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
SHIPPED = ("hog", "hogb", "dsift")


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """The test photos, grey, 128×128: (6, 1, 128, 128)."""
    return torch.stack([grey_square(name, 128) for name in TEST_PHOTOS])


@pytest.mark.parametrize("spec", SHIPPED)
def test_bundle_loads_within_budget_and_says_what_it_inverts(spec: str) -> None:
    path = CHECKPOINTS / f"{spec}.pt"
    assert path.stat().st_size <= 20 * 2**20
    manifest, _ = load_bundle(path, spec)
    assert manifest["spec"] == spec and manifest["decoder"]["out_channels"] == 1
    assert manifest["steps"] > 0 and manifest["data"]["sources"]


@pytest.mark.parametrize("spec", SHIPPED)
def test_bundle_beats_the_best_constant_image_on_unseen_photos(spec: str, photos: torch.Tensor) -> None:
    inverter = LearnedInverter.from_bundle(CHECKPOINTS / f"{spec}.pt")
    with torch.no_grad():
        reconstructions = inverter(photos)
    assert reconstructions.shape == photos.shape
    flat = photos.mean(dim=(1, 2, 3), keepdim=True).expand_as(photos)
    learned, constant = image_error(reconstructions, photos).mean(), image_error(flat, photos).mean()
    assert learned < 0.8 * constant, f"{spec}: image_error {learned:.3f} vs {constant:.3f} for a flat image"
