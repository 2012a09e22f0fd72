"""HOG / HOGb: parity with the real VLFeat ``vl_hog``, shapes, gradients, bad inputs."""
from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn.functional as F

from preimage.photos import TEST_PHOTOS, load_photo
from preimage.representations import build_representation
from preimage.representations.hog import HOG, hog

from vlfeat_hog import vlfeat_hog

PARITY_ATOL = 1e-4  # VLFeat is float32 with its own summation order; we measure ~2e-7
# One crop (top, left, height, width) per photo; most sizes are not multiples of the cell size.
CROPS = {
    "astronaut": (60, 180, 101, 77),
    "camera": (80, 200, 128, 96),
    "chelsea": (40, 120, 150, 203),
    "coffee": (100, 250, 101, 77),
    "coins": (50, 60, 128, 96),
    "moon": (150, 150, 150, 203),
}


def _crop(name: str) -> torch.Tensor:
    top, left, height, width = CROPS[name]
    return load_photo(name)[:, top : top + height, left : left + width]


def _as(x: torch.Tensor, mode: str) -> torch.Tensor:
    """``x`` (C, H, W) as colour (grey photos replicated: equal channels test VLFeat's tie rule) or grey."""
    if mode == "grey":
        return x if x.shape[0] == 1 else (0.299 * x[0:1] + 0.587 * x[1:2] + 0.114 * x[2:3])
    return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def _smooth_image(channels: int, size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A smooth random 0–255 image plus a little noise: generic gradient directions, no flat areas."""
    coarse = torch.rand(1, channels, 4, 4, dtype=dtype)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return 255 * (smooth + 0.05 * torch.rand(1, channels, size, size, dtype=dtype))


@pytest.mark.vlfeat
@pytest.mark.parametrize("spec", ["hog", "hogb"])
@pytest.mark.parametrize("mode", ["colour", "grey"])
@pytest.mark.parametrize("name", TEST_PHOTOS)
def test_matches_vlfeat_on_photos(libvl: ctypes.CDLL, name: str, mode: str, spec: str) -> None:
    x = _as(_crop(name), mode)
    ours = build_representation(spec)(x[None])[0]
    theirs = vlfeat_hog(libvl, 255 * x, bilinear_orientations=spec == "hogb")
    assert ours.shape == theirs.shape == (31, *HOG().output_shape(*x.shape[-2:])[1:])
    assert (ours - theirs).abs().max().item() <= PARITY_ATOL


@pytest.mark.vlfeat
@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("cell_size,orientations", [(4, 9), (8, 6), (6, 12), (5, 4), (8, 1)])
def test_matches_vlfeat_other_parameters(
    libvl: ctypes.CDLL, cell_size: int, orientations: int, bilinear: bool
) -> None:
    x = 255 * _crop("chelsea")
    ours = hog(x[None], cell_size=cell_size, orientations=orientations, bilinear_orientations=bilinear)[0]
    theirs = vlfeat_hog(libvl, x, cell_size=cell_size, orientations=orientations, bilinear_orientations=bilinear)
    assert ours.shape == theirs.shape == (3 * orientations + 4, *theirs.shape[1:])
    assert (ours - theirs).abs().max().item() <= PARITY_ATOL


@pytest.mark.vlfeat
@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("height,width", [(4, 4), (5, 7), (12, 4), (11, 13)])
def test_matches_vlfeat_on_tiny_images(libvl: ctypes.CDLL, height: int, width: int, bilinear: bool) -> None:
    x = 255 * _crop("coffee")[:, :height, :width]
    ours = hog(x[None], bilinear_orientations=bilinear)[0]
    theirs = vlfeat_hog(libvl, x, bilinear_orientations=bilinear)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= PARITY_ATOL


@pytest.mark.parametrize("bilinear", [False, True])
def test_texture_false_is_the_first_27_dims(bilinear: bool) -> None:
    x = 255 * _crop("astronaut")[None]
    full = hog(x, bilinear_orientations=bilinear)
    assert torch.equal(hog(x, bilinear_orientations=bilinear, texture=False), full[:, :27])


@pytest.mark.parametrize("cell_size", [4, 5, 8])
@pytest.mark.parametrize("height,width", [(64, 64), (101, 77), (9, 30)])
def test_output_shape_matches_output(cell_size: int, height: int, width: int) -> None:
    for texture in (True, False):
        rep = build_representation("hog", cell_size=cell_size, texture=texture)
        assert rep(torch.rand(2, 3, height, width)).shape == (2, *rep.output_shape(height, width))


@pytest.mark.parametrize("spec", ["hog", "hogb"])
def test_module_equals_functional_core(spec: str) -> None:
    x = _crop("coffee")[None]
    rep = build_representation(spec, orientations=6)
    expected = hog(255 * x, orientations=6, bilinear_orientations=spec == "hogb")
    assert torch.equal(rep(x), expected)
    grey = x.mean(dim=1, keepdim=True)
    assert torch.equal(rep(grey), hog(255 * grey, orientations=6, bilinear_orientations=spec == "hogb"))


def test_registry_metadata_and_scoring_view() -> None:
    rep = build_representation("hogb", cell_size=4, texture=False)
    assert rep.spec == "hogb" and not rep.grey and not rep.training
    assert rep.params == {"cell_size": 4, "orientations": 9, "texture": False}
    assert rep.bilinear_orientations and not build_representation("hog").bilinear_orientations
    features = build_representation("hog")(torch.rand(1, 3, 32, 40))
    assert build_representation("hog").scoring_view(features).shape == (1, 27, 4, 5)
    assert "cell_size=4" in repr(rep)


@pytest.mark.parametrize("bilinear", [False, True])
def test_batch_equals_each_alone(bilinear: bool) -> None:
    x = torch.stack([_crop("astronaut"), _as(_crop("camera"), "colour")[:, :101, :77]])
    together = hog(255 * x, bilinear_orientations=bilinear)
    for i in range(2):
        assert torch.equal(together[i : i + 1], hog(255 * x[i : i + 1], bilinear_orientations=bilinear))


@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("channels,size", [(1, 18), (3, 12)])
def test_gradcheck(bilinear: bool, channels: int, size: int) -> None:
    # Default tolerances: the forward value of HOGb's weight is acos(ratio) with the ratio near 1 for
    # gradients near a bin centre, whose float64 rounding puts ~1e-6 noise in the finite differences.
    x = _smooth_image(channels, size).requires_grad_()
    assert torch.autograd.gradcheck(lambda image: hog(image, cell_size=4, bilinear_orientations=bilinear), (x,))


@pytest.mark.parametrize("spec", ["hog", "hogb"])
def test_gradient_is_finite_on_flat_and_axis_aligned_images(spec: str) -> None:
    # Zero gradients (sqrt, atan2 at 0) and gradients exactly on a bin centre (acos at 1).
    x = torch.zeros(2, 1, 24, 24)
    x[1, :, :, 12:] = 0.5
    x.requires_grad_()
    build_representation(spec)(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    "bad",
    [
        torch.rand(3, 32, 32),  # no batch dimension
        torch.rand(1, 2, 32, 32),  # 2 channels
        torch.rand(1, 3, 3, 32),  # too small: VLFeat needs more than 3 pixels
        torch.randint(0, 255, (1, 3, 32, 32)),  # not float
    ],
)
def test_bad_input_raises(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        hog(bad)
    if bad.is_floating_point():
        with pytest.raises(ValueError):
            build_representation("hog")(bad)


def test_too_small_for_one_cell_and_bad_parameters_raise() -> None:
    with pytest.raises(ValueError, match="one cell"):
        hog(torch.rand(1, 1, 7, 40), cell_size=16)  # (7 + 8) // 16 == 0 rows
    assert hog(torch.rand(1, 1, 8, 40), cell_size=16).shape == (1, 31, 1, 3)
    with pytest.raises(ValueError):
        build_representation("hog", cell_size=0)
    with pytest.raises(ValueError):
        build_representation("hogb", bin_size=4)


@pytest.mark.vlfeat
@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("orientations", [1, 2, 3, 4, 9, 12])
def test_matches_vlfeat_on_hostile_gradients(libvl: ctypes.CDLL, orientations: int, bilinear: bool) -> None:
    """Integer noise and plane waves whose gradients sit exactly on bin centres and boundaries (diagonals,
    axes), where the orientation search is decided by float rounding of VLFeat's scores and by its ties."""
    generator = torch.Generator().manual_seed(orientations)
    yy, xx = torch.meshgrid(torch.arange(61.0), torch.arange(83.0), indexing="ij")
    images = [torch.randint(0, 256, (channels, 61, 83), generator=generator).float() for channels in (1, 3)]
    images += [((xx * a + yy * b) * 7 % 256)[None] for a, b in ((1, 1), (1, -1), (2, 0), (0, 3), (2, -1))]
    for x in images:
        for cell_size in (4, 8):
            ours = hog(x[None], cell_size=cell_size, orientations=orientations, bilinear_orientations=bilinear)[0]
            theirs = vlfeat_hog(libvl, x, cell_size=cell_size, orientations=orientations,
                                bilinear_orientations=bilinear)
            assert (ours - theirs).abs().max().item() <= PARITY_ATOL
