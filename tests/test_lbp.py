"""LBP: parity with the real VLFeat ``vl_lbp``, the uniform mapping, the surrogate gradient, bad input."""
from __future__ import annotations

import ctypes

import pytest
import torch

from preimage.images import to_grey
from preimage.photos import TEST_PHOTOS, load_photo
from preimage.representations import build_representation
from preimage.representations.lbp import LBP, lbp, soft_lbp, uniform_bins

from vlfeat_lbp import vlfeat_lbp

PARITY_ATOL = 1e-5
#: (top, left, height, width) per photo: sides that are and are not multiples of the cells
CROPS = {"astronaut": (60, 180, 101, 77), "camera": (80, 200, 128, 96), "chelsea": (40, 120, 150, 203),
         "coffee": (100, 250, 64, 131), "coins": (50, 60, 128, 96), "moon": (150, 150, 150, 203)}


def _grey_crop(name: str) -> torch.Tensor:
    top, left, height, width = CROPS[name]
    return to_grey(load_photo(name)[None, :, top: top + height, left: left + width])


@pytest.mark.vlfeat
@pytest.mark.parametrize("cell_size", [16, 8, 5])
@pytest.mark.parametrize("name", TEST_PHOTOS)
def test_matches_vlfeat_on_photos(libvl: ctypes.CDLL, name: str, cell_size: int) -> None:
    """8-bit photos: many ties between neighbours, which the strict comparison must break as VLFeat does."""
    grey = _grey_crop(name)
    ours = build_representation("lbp", cell_size=cell_size)(grey)[0]
    theirs = vlfeat_lbp(libvl, 255 * grey[0, 0], cell_size)
    assert ours.shape == theirs.shape == (58, grey.shape[-2] // cell_size, grey.shape[-1] // cell_size)
    assert (ours - theirs).abs().max().item() <= PARITY_ATOL


@pytest.mark.vlfeat
def test_colour_is_seen_through_its_grey_and_batches_are_independent(libvl: ctypes.CDLL) -> None:
    photos = torch.stack([load_photo("astronaut")[:, :96, :80], load_photo("coffee")[:, 100:196, 40:120]])
    ours = LBP()(photos)
    for image, features in zip(photos, ours):
        grey = 255 * (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])
        assert (features - vlfeat_lbp(libvl, grey)).abs().max().item() <= PARITY_ATOL


def test_uniform_mapping_written_out() -> None:
    """Bin 7i + k − 1 for k ones starting at bit i (wrapping), 56 for the flat patterns, 57 for the rest."""
    table = uniform_bins()
    assert table[0b00000001] == 0 and table[0b00000011] == 1 and table[0b01111111] == 6
    assert table[0b00000010] == 7 and table[0b10000001] == 7 * 7 + 1  # two ones from bit 7, wrapping to bit 0
    assert table[0b11111110] == 7 + 6 and table[0x00] == table[0xFF] == 56
    assert table[0b00000101] == 57 and table[0b01010101] == 57
    assert sorted(table.unique().tolist()) == list(range(58)) and int((table == 57).sum()) == 256 - 58


def test_one_bright_pixel_by_hand() -> None:
    """A single pixel brighter than its flat surround, in a 4×4 image with one cell of 4: its four neighbours
    see it as their one brighter neighbour, the pixel itself sees none (flat pattern)."""
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 1, 1] = 10.0
    features = lbp(image, cell_size=4)[0, :, 0, 0]
    # interior pixels: (1,1) flat (bin 56); (1,2) has it as W (bit 4: bin 7·4 = 28), (2,1) as N (bit 6: bin 42),
    # (2,2) as NW (bit 5: bin 35). Rows and columns 1 and 2 sit at (y + ½)/4 − ½ = −0.125 and 0.125 cells:
    # cell 0 gets weight 0.875 from each (the upper share of a pixel below cell 0, the lower share of one above)
    position = (torch.tensor([1.0, 2.0]) + 0.5) / 4 - 0.5
    floor = torch.floor(position)
    weight = torch.where(floor < 0, position - floor, 1 - (position - floor))  # the vote for cell 0
    votes = {56: weight[0] * weight[0], 28: weight[0] * weight[1], 42: weight[1] * weight[0], 35: weight[1] * weight[1]}
    histogram = torch.zeros(58)
    for k, v in votes.items():
        histogram[k] = v
    expected = histogram.sqrt() / (histogram.sum().sqrt() + 1e-10)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)


def test_surrogate_keeps_the_features_and_has_a_gradient() -> None:
    x = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    plain, stand_in = LBP(), LBP().surrogate()
    assert torch.equal(stand_in(x), plain(x))
    assert not plain(x.requires_grad_(True)).requires_grad  # Φ itself: piecewise constant, no gradient
    target = plain(torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(1)))
    (grad,) = torch.autograd.grad((stand_in(x) - target).square().sum(), x)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()


def test_surrogate_gradient_is_the_soft_lbps_and_that_is_smooth() -> None:
    """The straight-through gradient equals soft_lbp's, which agrees with finite differences (gradcheck)."""
    grey = 255 * torch.rand(1, 1, 12, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    weights = torch.rand(1, 58, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = grey.clone().requires_grad_(True)
    (through,) = torch.autograd.grad((lbp(x, 4, temperature=8.0) * weights).sum(), x)
    (soft,) = torch.autograd.grad((soft_lbp(x, 4, 8.0) * weights).sum(), x)
    torch.testing.assert_close(through, soft)
    assert torch.autograd.gradcheck(lambda g: soft_lbp(g, 4, 8.0), (x,), eps=1e-4, atol=1e-6)
    sharp = soft_lbp(grey, 4, 1e-3)  # tends to LBP as the comparisons sharpen (no ties in random pixels)
    assert (sharp - lbp(grey, 4)).abs().max() < 1e-2


@pytest.mark.parametrize("shape, match", [((1, 3, 15, 40), r"lbp: image of 15x40 pixels is smaller than the 16x16"),
                                          ((1, 2, 32, 32), r"lbp: expected a \(B, 3, H, W\) or \(B, 1, H, W\)")])
def test_bad_input_is_one_line(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LBP()(torch.rand(*shape))
    with pytest.raises(ValueError, match="cell_size must be a positive integer"):
        build_representation("lbp", cell_size=0)


def test_gd_descends_the_surrogate_and_refuses_lbp_itself() -> None:
    """The default preset turns the surrogate on; GD on Φ itself (or maximizing it) is refused in one line."""
    import preimage

    x = to_grey(load_photo("camera")[None, :, 100:164, 100:164])
    result = preimage.invert(x, "lbp", method="gd", schedule=[[0.004, 60]])
    start = preimage.invert(x, "lbp", method="gd", schedule=[[1e-12, 1]])  # ≈ the random start
    assert result.normalized_loss[0] < 0.5 * start.normalized_loss[0]
    with pytest.raises(ValueError, match="lbp: its features have no gradient GD can follow"):
        preimage.invert(x, "lbp", method="gd", surrogate=False)
    with pytest.raises(ValueError, match="lbp: its features have no gradient GD can follow"):
        preimage.maximize("lbp", 3, size=32)
