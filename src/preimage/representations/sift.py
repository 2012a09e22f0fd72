"""Sparse SIFT keypoints as VLFeat's ``vl_sift`` finds them (:mod:`.sift_detector`), on Dosovitskiy & Brox's grid of
cells.

:func:`keypoint_map` lays one image's keypoint list on D&B's grid (see :class:`SIFT`); :class:`SIFT` is the
registered representation. The features are piecewise constant in the pixels where they are not discontinuous
(keypoints appear and vanish): Φ has no gradient, and :meth:`SIFT.surrogate` differentiates the descriptors with
the frames held fixed (the target's, in GD).
"""
from __future__ import annotations

import torch

from ..images import to_grey
from .base import Representation, float32_and_finite
from .registry import register_representation
from .sift_detector import DESCRIPTOR_SIZE, Keypoints, descriptors_at, find_keypoints, gaussian_octaves, sift_keypoints

__all__ = ["MAP_CHANNELS", "SIFT", "keypoint_map"]

#: per cell: the descriptor, x and y offsets within the cell (in cells), σ (pixels), angle (radians), 1
MAP_CHANNELS = DESCRIPTOR_SIZE + 5


def _frames_in_map(features: torch.Tensor, cell_size: int) -> torch.Tensor:
    """The frames ``(K, 4)`` float64 (x, y, σ, angle) a map ``(133, rows, cols)`` holds, cell by cell."""
    row, col = (features[MAP_CHANNELS - 1] == 1).nonzero().unbind(1)
    held = features[DESCRIPTOR_SIZE:, row, col].to(torch.float64)
    return torch.stack([(col + held[0]) * cell_size, (row + held[1]) * cell_size, held[2], held[3]], 1)



def keypoint_map(keypoints: Keypoints, height: int, width: int, cell_size: int = 4) -> torch.Tensor:
    """D&B's sparse SIFT map ``(133, ⌈H/c⌉, ⌈W/c⌉)`` of one image's keypoints.

    Each cell ``(⌊y/c⌋, ⌊x/c⌋)`` that holds keypoints keeps the one with the largest σ (ties: the first in
    the list) as ``[descriptor (128), x/c − column, y/c − row, σ (pixels), angle (radians), 1]``; every
    other cell is 0.
    """
    frames, descriptors = keypoints.frames, keypoints.descriptors
    rows, cols = -(-height // cell_size), -(-width // cell_size)
    out = torch.zeros(MAP_CHANNELS, rows * cols, dtype=torch.float32, device=descriptors.device)
    if not len(frames):
        return out.view(MAP_CHANNELS, rows, cols)
    x, y, sigma, angle = frames.unbind(1)
    row, col = (y / cell_size).floor().long(), (x / cell_size).floor().long()
    cell = row * cols + col
    order = torch.arange(len(frames), device=frames.device)
    order = order[torch.sort(-sigma[order], stable=True).indices]  # largest σ first, list order among equals
    order = order[torch.sort(cell[order], stable=True).indices]
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    chosen = order[first]
    values = torch.cat([descriptors[chosen].to(torch.float64),
                        torch.stack([x[chosen] / cell_size - col[chosen], y[chosen] / cell_size - row[chosen],
                                     sigma[chosen], angle[chosen], torch.ones_like(sigma[chosen])], 1)], 1)
    out[:, cell[chosen]] = values.T.to(torch.float32)
    return out.view(MAP_CHANNELS, rows, cols)


class SIFT(Representation):
    r"""VLFeat's sparse SIFT keypoints of the grey image ``255 · (0.299 R + 0.587 G + 0.114 B)``, laid on a grid
    of ``cell_size``-px cells as Dosovitskiy & Brox do (see :func:`keypoint_map`).

    Args:
        cell_size: cell side in pixels (D&B: 4).
        surrogate: ``False`` for Φ itself (no gradient); ``True`` for :meth:`surrogate`'s stand-in: the same
            features, with the gradient the descriptors have when every frame is held where it was found.

    Shape:
        - Input: :math:`(B, 3, H, W)` RGB or :math:`(B, 1, H, W)` grey, in ``[0, 1]``.
        - Output: :math:`(B, 133, \lceil H/c \rceil, \lceil W/c \rceil)`: per cell 128 descriptor values,
          the keypoint's offsets in the cell, σ in pixels, orientation in radians and 1; 0 where no keypoint.

    Example:
        >>> SIFT()(torch.rand(1, 3, 32, 40)).shape
        torch.Size([1, 133, 8, 10])
    """

    grey = True

    def __init__(self, cell_size: int = 4, surrogate: bool = False) -> None:
        if isinstance(cell_size, bool) or not isinstance(cell_size, int) or cell_size < 1:
            raise ValueError(f"sift: cell_size must be a positive integer, got {cell_size!r}")
        super().__init__(cell_size=cell_size)
        self.cell_size, self.is_surrogate = cell_size, bool(surrogate)
        self.min_size = (max(cell_size, 3), max(cell_size, 3))
        self.spec = "sift"

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        """Only the surrogate has a gradient."""
        return self.is_surrogate

    @property
    def steered_by_target(self) -> bool:  # type: ignore[override]
        """The surrogate's gradient reads the target's frames (``forward(x, target=Φ0)``)."""
        return self.is_surrogate

    @property
    def grid_step(self) -> int:
        """Cell ``(r, c)`` holds the keypoints centred in pixels ``[r·c, (r+1)·c)``."""
        return self.cell_size

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return MAP_CHANNELS, -(-height // self.cell_size), -(-width // self.cell_size)

    def surrogate(self) -> "SIFT":
        """The same features to the bit, with a gradient where Φ's is zero or undefined (keypoints appear, move
        and vanish in jumps): that of the descriptors at frames held fixed — the target's, where GD's data term
        passes it (``forward(x, target=Φ0)``: x's descriptors at Φ0's keypoints are drawn to Φ0's, wherever x's
        own keypoints are), else ``x``'s own. The frame channels carry no gradient."""
        return SIFT(self.cell_size, surrogate=True)

    def keypoints(self, x: torch.Tensor) -> list[Keypoints]:
        """The keypoint list of each image of ``x`` (``(B, 3|1, H, W)`` in ``[0, 1]``)."""
        self.check_input(x)
        return sift_keypoints(255 * to_grey(x), differentiable=self.is_surrogate)

    @float32_and_finite
    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Φ(x); for the surrogate with ``target`` (a map per image of ``x``, as GD's data term passes it), the
        gradient is that of ``x``'s descriptors at the frames ``target`` holds (the values are still Φ(x))."""
        h, w = x.shape[-2:]
        if target is None or not self.is_surrogate:
            return torch.stack([keypoint_map(k, h, w, self.cell_size) for k in self.keypoints(x)])
        self.check_input(x)
        grey = 255 * to_grey(x)
        pyramid = list(gaussian_octaves(grey))  # one pyramid, with autograd: detected in detached, described with it
        with torch.no_grad():
            own = find_keypoints(((o, levels.detach(), levels.detach()) for o, levels in pyramid), grey, own_frames=True)
            features = torch.stack([keypoint_map(k, h, w, self.cell_size) for k in own])
        frames = [_frames_in_map(t, self.cell_size) for t in target]
        rows, cols = features.shape[-2:]
        steered = []
        for f, d in zip(frames, descriptors_at(grey, frames, pyramid)):
            cell = (f[:, 1] / self.cell_size).floor().long() * cols + (f[:, 0] / self.cell_size).floor().long()
            values = torch.cat([d.T, d.new_zeros(MAP_CHANNELS - DESCRIPTOR_SIZE, len(d))])  # frames: no gradient
            steered.append(d.new_zeros(MAP_CHANNELS, rows * cols).index_copy(1, cell, values).view(-1, rows, cols))
        steered_map = torch.stack(steered)
        return features + (steered_map - steered_map.detach())


@register_representation("sift")
def build_sift(*, cell_size: int = 4) -> SIFT:
    """VLFeat's SIFT keypoints (every octave, 3 levels, peak threshold 0, edge threshold 10) in cells of
    ``cell_size`` pixels, on the grey image."""
    return SIFT(cell_size=cell_size)
