"""The bundles shipped in checkpoints/: they load safely, fit the size budget and reconstruct unseen photos.

A decoder that collapsed to a constant image still loads and runs; only a score on real photos catches it.
The bar: on the 6 built-in test photos (never used in training), the learned reconstruction's image_error is
below 0.8 × that of each photo's own mean grey level (or colour), the best a constant image can do.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from preimage.imagesets import prepare_image
from preimage.metrics import image_error
from preimage.inversion.bundles import load_bundle, save_bundle
from preimage.inversion.learned import LearnedInverter
from preimage.photos import TEST_PHOTOS, load_photo

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
#: spec → (colour?, the test photos' side: the CNN bundles at D&B's 224 px)
SHIPPED = {"hog": (False, 128), "hogb": (False, 128), "dsift": (False, 128), "lbp": (False, 128), "sift": (False, 128),
           **{f"efficientnet_lite0:{layer}": (True, 224) for layer in ("stem", "stage1", "stage2", "stage3", "stage4",
                                                                          "stage5", "stage6", "stage7", "head", "pool",
                                                                          "logits", "prob")}}
#: spatial maps (the vectors pool, logits and prob have no grid)
SPATIAL = [s for s in SHIPPED if s.startswith("efficientnet_lite0:") and s.rpartition(":")[2] not in ("pool", "logits", "prob")]
#: all shipped bundles together, bytes
BUDGET = 100 * 10**6


def bundle_file(spec: str) -> Path:
    return CHECKPOINTS / f"{spec.replace(':', '_')}.pt"


def photos(colour: bool, side: int) -> torch.Tensor:
    """The test photos, (6, C, side, side)."""
    return torch.stack([prepare_image(load_photo(name), size=side, grey=not colour) for name in TEST_PHOTOS])


def errors_against_own_mean(spec: str, colour: bool, side: int) -> tuple[float, float]:
    """Mean image_error on the test photos of ``spec``'s bundle and of a flat image of each photo's own mean."""
    images = photos(colour, side)
    with torch.no_grad():
        reconstructions = LearnedInverter.from_bundle(bundle_file(spec))(images)
    assert reconstructions.shape == images.shape
    flat = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    return float(image_error(reconstructions, images).mean()), float(image_error(flat, images).mean())


@pytest.mark.parametrize("spec", SHIPPED)
def test_bundle_loads_within_budget_and_says_what_it_inverts(spec: str) -> None:
    path = bundle_file(spec)
    assert path.stat().st_size <= 20 * 2**20
    manifest, _ = load_bundle(path, spec)
    assert manifest["spec"] == spec and manifest["decoder"]["out_channels"] == (3 if SHIPPED[spec][0] else 1)
    assert manifest["steps"] > 0 and manifest["data"]["sources"]


def test_every_shipped_bundle_is_tested_and_all_fit_the_budget() -> None:
    files = sorted(CHECKPOINTS.glob("*.pt"))
    assert sorted(bundle_file(spec) for spec in SHIPPED) == files
    assert sum(f.stat().st_size for f in files) <= BUDGET


@pytest.mark.parametrize("spec", [s for s, (colour, _) in SHIPPED.items() if colour or s in ("lbp", "sift")])
def test_bundle_round_trip(spec: str, tmp_path: Path) -> None:
    """Loaded, saved again and reloaded: the same manifest, weights and reconstructions."""
    inverter = LearnedInverter.from_bundle(bundle_file(spec))
    half = inverter.manifest.get("weights_dtype") == "float16"  # stored at half size, loaded as float32
    again = save_bundle(tmp_path / "again.pt", inverter.decoder, inverter.manifest, float16=half)
    manifest, state = load_bundle(again, spec)
    original_manifest, original_state = load_bundle(bundle_file(spec), spec)
    assert manifest == original_manifest and state.keys() == original_state.keys()
    assert all(torch.equal(state[k], original_state[k]) for k in state)
    x = photos(SHIPPED[spec][0], 96)[:2]
    with torch.no_grad():
        assert torch.equal(LearnedInverter.from_bundle(again)(x), inverter(x))


#: known shortfalls, kept visible: strict, so a test fails the day a retrained bundle meets the bar
#: (test-photo figures at 224 px; the bar is 0.8 × 0.549, each photo's own mean colour: checkpoints/README.md)
SHORTFALLS = {
    "lbp": "image_error 0.587 against 0.8 x 0.616 for each photo's own mean grey: LBP keeps no brightness",
    "efficientnet_lite0:stage6": "image_error 0.50: 600 CPU steps on 128-px crops (4×4 maps) teach a stride-32 map little",
    "efficientnet_lite0:stage7": "image_error 0.448 (own mean colour 0.549; the bar 0.8 x it, 0.439): stacked on stage6's",
    "efficientnet_lite0:head": "image_error 0.559 (own mean colour 0.549): a stride-32 map of 1280 channels",
    "efficientnet_lite0:pool": "image_error 0.616: a 1280-d vector keeps no layout; a linear read-out of ~430 photos",
    "efficientnet_lite0:logits": "image_error 0.620: a 1000-d vector keeps no layout; a linear read-out of ~430 photos",
    "efficientnet_lite0:prob": "image_error 0.620: as logits (its read-out takes the centred log-probabilities)",
}


@pytest.mark.parametrize("spec", [pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=SHORTFALLS[s]))
                                  if s in SHORTFALLS else s for s in SHIPPED])
def test_bundle_beats_the_best_constant_image_on_unseen_photos(spec: str) -> None:
    learned, constant = errors_against_own_mean(spec, *SHIPPED[spec])
    assert learned < 0.8 * constant, f"{spec}: image_error {learned:.3f} vs {constant:.3f} for a flat image"


#: the deepest map misses the looser bar on the test photos with the checkpoint validation chose
OWN_COLOUR_SHORTFALLS = {
    "efficientnet_lite0:head": "image_error 0.559 against 0.549 on the test photos (0.299 against 0.304 on 46 held-out "
                               "photos, 0.419 against 0.380 on 74 check photos)",
}


@pytest.mark.parametrize("spec", [pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=OWN_COLOUR_SHORTFALLS[s]))
                                  if s in OWN_COLOUR_SHORTFALLS else s for s in SPATIAL])
def test_spatial_network_bundle_beats_each_photos_own_mean_colour(spec: str) -> None:
    """The whole-network study's bar for the layers with a grid, looser than the one above: at 224 px the learned
    reconstruction is closer to each photo than a flat image of that photo's own mean colour."""
    learned, constant = errors_against_own_mean(spec, True, 224)
    assert learned < constant, f"{spec}: image_error {learned:.3f} vs {constant:.3f} for each own mean colour"


@pytest.mark.parametrize("spec", [s for s in SHIPPED if s.startswith("efficientnet_lite0:") and s not in SPATIAL])
def test_vector_bundle_beats_one_flat_image_of_the_photos_mean_colour(spec: str) -> None:
    """The whole-network study's bar for the vectors (pool, logits, prob), which keep no layout: at 224 px the learned
    reconstruction is closer to the photos than one flat image of all of their mean colour, the best single
    constant image (each photo's own mean colour is the 0.8 bar's, above: strict xfails)."""
    images = photos(True, 224)
    with torch.no_grad():
        learned = float(image_error(LearnedInverter.from_bundle(bundle_file(spec))(images), images).mean())
    flat = images.mean(dim=(0, 2, 3), keepdim=True).expand_as(images)
    constant = float(image_error(flat, images).mean())
    assert learned < constant, f"{spec}: image_error {learned:.3f} vs {constant:.3f} for one flat image"


@pytest.mark.parametrize("side", [128, 192, 227])
def test_lbp_bundle_beats_each_photos_own_mean_grey(side: int) -> None:
    """LBP keeps no brightness; a flat image of each photo's own mean grey knows it. The learned reconstruction must
    still be closer to the photo than that flat image, at three sides (the suite's 0.8 bar above it misses)."""
    learned, constant = errors_against_own_mean("lbp", False, side)
    assert learned < constant, f"lbp at {side} px: image_error {learned:.3f} vs {constant:.3f} for each own mean grey"


@pytest.mark.parametrize("spec", SPATIAL)
def test_network_bundle_holds_at_sides_off_the_stride(spec: str) -> None:
    """At 227 and 226 px (no layer's stride divides them; "SAME" padding lies differently at each) the
    reconstruction is painted where the feature grid lies: image_error within 15 % of that at 224 px (decoders
    resized to the image scored up to 3.5x worse; decoders that never saw those paddings up to 1.3x)."""
    inverter = LearnedInverter.from_bundle(bundle_file(spec))
    errors = []
    for side in (224, 227, 226):
        images = photos(True, side)
        with torch.no_grad():
            errors.append(float(image_error(inverter(images), images).mean()))
    assert max(errors[1:]) <= 1.15 * errors[0], f"{spec}: image_error {errors[1:]} at 227 and 226 px, {errors[0]:.4f} at 224"
