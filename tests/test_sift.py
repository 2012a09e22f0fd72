"""Sparse SIFT: parity with the real VLFeat ``vl_sift``, D&B's grid rules written out by hand, bad input."""
from __future__ import annotations

import ctypes
import pytest
import torch

import preimage

from preimage.images import to_grey
from preimage.photos import TEST_PHOTOS, load_photo
from preimage.representations import build_representation
from preimage.representations.sift import SIFT, _frames_in_map, keypoint_map
from preimage.representations.sift_detector import Keypoints, descriptors_at, num_octaves, sift_keypoints

from vlfeat_sift import cells_by_hand, match_cells, vlfeat_sift

CELL = 4
#: (top, left, height, width) per photo: sides that are and are not multiples of the cell
CROPS = {"astronaut": (0, 0, 512, 512), "camera": (80, 100, 301, 257), "chelsea": (0, 0, 300, 451),
         "coffee": (100, 150, 227, 226), "coins": (0, 0, 303, 384), "moon": (150, 150, 150, 203)}


def _grey(name: str) -> torch.Tensor:
    top, left, height, width = CROPS[name]
    return 255 * to_grey(load_photo(name)[None, :, top: top + height, left: left + width])


@pytest.mark.vlfeat
@pytest.mark.parametrize("name", TEST_PHOTOS)
def test_occupied_cells_match_vlfeat(libvl: ctypes.CDLL, name: str) -> None:
    """≥ 98 % of VLFeat's occupied cells matched (descriptor within 1e-3, offsets within 0.025 of a cell, σ
    within 0.5 %, angle within 0.01 rad), ≤ 2 % extra occupied cells."""
    grey = _grey(name)
    frames, descriptors = vlfeat_sift(libvl, grey[0, 0])
    theirs = cells_by_hand(frames, descriptors, CELL)
    ours = build_representation("sift")(grey / 255)[0]
    height, width = grey.shape[-2:]
    assert ours.shape == (133, -(-height // CELL), -(-width // CELL))
    matched, extra = match_cells(ours, theirs)
    assert len(theirs) > 50
    assert matched >= 0.98 * len(theirs), f"{matched} of {len(theirs)} cells matched"
    assert extra <= 0.02 * len(theirs)
    occupied = ours[132] == 1
    assert (ours[:, ~occupied] == 0).all()


@pytest.mark.vlfeat
def test_keypoint_list_matches_vlfeat(libvl: ctypes.CDLL) -> None:
    """The lists agree one for one, in VLFeat's order: the same frames (to float64 rounding: the blur sums in
    VLFeat's order), the descriptors within float32 rounding of their sums."""
    grey = 255 * to_grey(load_photo("coins")[None])
    frames, descriptors = vlfeat_sift(libvl, grey[0, 0])
    ours = sift_keypoints(grey)[0]
    assert len(frames) == len(ours.frames) > 200
    assert (ours.frames - frames).abs().max() <= 1e-9
    assert (ours.descriptors - descriptors).abs().max() <= 1e-6


@pytest.mark.vlfeat
def test_batches_are_independent_and_colour_is_seen_through_its_grey(libvl: ctypes.CDLL) -> None:
    photos = torch.stack([load_photo("chelsea")[:, :120, :160], load_photo("coffee")[:, 100:220, 40:200]])
    lists = SIFT().keypoints(photos)
    for image, keypoints in zip(photos, lists):
        grey = 255 * (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])
        frames, descriptors = vlfeat_sift(libvl, grey)
        assert len(frames) == len(keypoints.frames) > 10
        # the two greys differ in the last bits (the order of the weighted sum), which moves frames a little
        assert (keypoints.frames - frames).abs().max() <= 1e-3
        assert (keypoints.descriptors - descriptors).abs().max() <= 1e-3


def test_grid_rules_by_hand() -> None:
    """A made-up list: two keypoints in one cell (the larger σ wins), a tie in σ (the first wins), a keypoint on
    a cell's corner (it belongs to the cell below and to the right), the last partial cell."""
    frames = torch.tensor([[5.0, 6.0, 2.0, 0.5],     # cell (1, 1), loses to the next one
                           [7.5, 4.0, 3.0, 1.5],     # cell (1, 1): larger σ
                           [1.0, 1.0, 2.5, 2.0],     # cell (0, 0): first of a tie
                           [3.0, 2.0, 2.5, 3.0],     # cell (0, 0): same σ, later: dropped
                           [8.0, 0.0, 1.0, 4.0],     # cell (0, 2): on the corner
                           [9.9, 10.5, 1.5, 6.0]],   # cell (2, 2): the last, partial cell of a 11×10 image
                          dtype=torch.float64)
    descriptors = torch.arange(6, dtype=torch.float32)[:, None].expand(6, 128) / 10
    out = keypoint_map(Keypoints(frames, descriptors), height=11, width=10, cell_size=4)
    assert out.shape == (133, 3, 3)
    expected = {(1, 1): (1, [7.5 / 4 - 1, 0.0, 3.0, 1.5]), (0, 0): (2, [0.25, 0.25, 2.5, 2.0]),
                (0, 2): (4, [0.0, 0.0, 1.0, 4.0]), (2, 2): (5, [9.9 / 4 - 2, 10.5 / 4 - 2, 1.5, 6.0])}
    for (row, col), (index, tail) in expected.items():
        assert torch.allclose(out[:128, row, col], torch.full((128,), index / 10))
        assert torch.allclose(out[128:, row, col], torch.tensor(tail + [1.0]))
    assert out[:, [0, 1, 2, 2, 1], [1, 0, 0, 1, 2]].abs().sum() == 0


def test_flat_image_has_no_keypoints_and_gd_says_so_in_one_line() -> None:
    flat = torch.full((1, 3, 64, 64), 0.4)
    assert len(sift_keypoints(255 * to_grey(flat))[0].frames) == 0
    assert SIFT()(flat).abs().sum() == 0
    with pytest.raises(ValueError, match="all zero"):
        preimage.invert(flat, "sift")


def test_octaves_as_vlfeat_counts_them() -> None:
    assert [num_octaves(s, s) for s in (8, 16, 31, 32, 224, 512)] == [1, 1, 1, 2, 4, 6]
    assert num_octaves(300, 451) == 5


def test_bad_input_one_line() -> None:
    with pytest.raises(ValueError, match="smaller than the 4x4"):
        SIFT()(torch.rand(1, 1, 3, 10))
    with pytest.raises(ValueError, match="cell_size must be a positive integer"):
        build_representation("sift", cell_size=0)


def test_no_gradient() -> None:
    assert not SIFT().differentiable


def test_surrogate_features_are_phi_to_the_bit_with_a_gradient() -> None:
    x = load_photo("chelsea")[None, :, 40:104, 100:164].clone().requires_grad_(True)
    features = SIFT().surrogate()(x)
    assert torch.equal(features, SIFT()(x.detach()))
    assert SIFT().surrogate().differentiable
    (features * torch.randn_like(features)).sum().backward()
    assert x.grad is not None and int((x.grad != 0).sum()) > 0.5 * x.grad.numel()


def test_surrogate_gradient_is_the_descriptors_derivative_at_fixed_frames() -> None:
    """Finite differences of the descriptors computed at the unperturbed image's frames (``detect_on``) against
    the surrogate's gradient, along a random direction."""
    generator = torch.Generator().manual_seed(0)
    grey = 255 * to_grey(load_photo("chelsea")[None, :, 40:104, 100:164])
    reference = sift_keypoints(grey)[0]
    weights = torch.randn(reference.descriptors.shape, generator=generator)
    direction = torch.randn(grey.shape, generator=generator)
    pixels = grey.clone().requires_grad_(True)
    (sift_keypoints(pixels, differentiable=True)[0].descriptors * weights).sum().backward()
    analytic = float((pixels.grad * direction).sum())
    step = 0.1  # grey levels: large beside float32 noise, small beside the descriptors' curvature
    plus = sift_keypoints(grey + step * direction, detect_on=grey)[0]
    minus = sift_keypoints(grey - step * direction, detect_on=grey)[0]
    assert torch.equal(plus.frames, reference.frames) and torch.equal(minus.frames, reference.frames)
    numeric = float(((plus.descriptors - minus.descriptors) * weights).sum()) / (2 * step)
    assert abs(analytic) > 1e-3
    assert abs(numeric - analytic) <= 0.05 * abs(analytic)


def test_descriptors_at_given_frames_are_vlfeats_where_the_level_agrees() -> None:
    """``descriptors_at`` reads each frame at the octave and level ``vl_sift_keypoint_init`` gives its σ; for the
    detected frames that is, for most, where they were found (not where the refined level crossed a boundary), and
    there the descriptors are the same."""
    grey = 255 * to_grey(load_photo("coins")[None])
    keypoints = sift_keypoints(grey)[0]
    again = descriptors_at(grey, [keypoints.frames])[0]
    same = (again - keypoints.descriptors).abs().max(1).values <= 1e-6
    assert len(same) > 200 and same.float().mean() >= 0.85  # coins: 277 of 309


def test_surrogate_steered_by_the_target_frames() -> None:
    """With ``target`` (as GD's data term passes Φ0) the values are still Φ(x); the gradient is that of x's
    descriptors at Φ0's frames, checked by finite differences of :func:`descriptors_at` (frames fixed)."""
    generator = torch.Generator().manual_seed(1)
    photo = to_grey(load_photo("chelsea")[None, :, 40:104, 100:164])
    target = SIFT()(photo)
    x = (photo + 0.1 * torch.randn(photo.shape, generator=generator)).clamp(0, 1)
    steered = SIFT().surrogate()
    assert steered.steered_by_target and not SIFT().steered_by_target
    pixels = x.clone().requires_grad_(True)
    features = steered(pixels, target=target)
    assert torch.equal(features, SIFT()(x))
    weights = torch.randn(target.shape, generator=generator)
    (features * weights).sum().backward()
    occupied = target[0, 132] == 1
    frames = [_frames_in_map(target[0], 4)]
    rows, cols = occupied.nonzero().unbind(1)
    cell_weights = weights[0, :128, rows, cols].T  # (K, 128), cells in the order _frames_in_map lists them
    direction = torch.randn(x.shape, generator=generator)
    step = 1e-3
    plus = descriptors_at(255 * (x + step * direction), frames)[0]
    minus = descriptors_at(255 * (x - step * direction), frames)[0]
    numeric = float(((plus - minus) * cell_weights).sum()) / (2 * step)
    analytic = float((pixels.grad * direction).sum())
    assert abs(analytic) > 1e-3 and abs(numeric - analytic) <= 0.05 * abs(analytic)
