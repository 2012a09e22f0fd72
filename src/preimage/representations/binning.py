"""Spatial binning of per-pixel orientation votes, shared by HOG and DSIFT: scatter forward, gather backward.

Both descriptors give every pixel a few weighted votes (orientation bin, magnitude) and spread each vote
over the two nearest spatial bins along y and along x (a tent). Building the dense per-pixel histogram
``(B, orientations, H, W)`` and filtering it, as a convolution would, touches every orientation at every
pixel; here each vote is added straight into its four spatial bins (``scatter_add_``) and the backward
pass reads the four bins back (``index_select``), so the cost is four additions per vote.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class AxisTaps(NamedTuple):
    """Along one image axis, per pixel: the two consecutive spatial bins its tent reaches.

    ``first`` is a padded bin index in ``[0, bins]``: padded index ``p`` is bin ``p - 1``, so ``-1`` and
    ``bins`` are the two out-of-grid bins, whose votes are dropped. ``weight_first`` goes to padded bin
    ``first`` and ``weight_next`` to ``first + 1``.

    Shape: each ``(N,)`` for the ``N`` pixels along the axis (``first`` integer, the weights float64).
    """

    first: torch.Tensor
    weight_first: torch.Tensor
    weight_next: torch.Tensor


class BinLayout(NamedTuple):
    """Where the votes of an ``H × W`` pixel grid go in a ``rows × cols`` grid of spatial bins.

    ``base`` is each pixel's upper-left padded bin, ``(y_first · stride + x_first)``, ``(H·W,)`` long;
    ``weights`` the tent weights of its upper-left, upper-right, lower-left and lower-right bins ``(4, H·W)``.
    The padded grid is ``(rows + 2) × stride`` with ``stride = cols + 2``.
    """

    base: torch.Tensor
    weights: torch.Tensor
    rows: int
    cols: int

    @property
    def stride(self) -> int:
        return self.cols + 2

    @property
    def plane(self) -> int:
        """Entries of one orientation's padded grid."""
        return (self.rows + 2) * self.stride

    @property
    def offsets(self) -> tuple[int, int, int, int]:
        """Flat offsets of the four bins from the upper-left one, in ``weights``' order."""
        return 0, 1, self.stride, self.stride + 1


def bin_layout(
    y: AxisTaps, x: AxisTaps, rows: int, cols: int, dtype: torch.dtype, device: torch.device | str
) -> BinLayout:
    """The :class:`BinLayout` of the pixel grid ``len(y.first) × len(x.first)``."""
    base = (y.first.long()[:, None] * (cols + 2) + x.first.long()).reshape(-1)
    weights = torch.stack([(wy[:, None] * wx).reshape(-1) for wy in (y.weight_first, y.weight_next)
                           for wx in (x.weight_first, x.weight_next)])
    return BinLayout(base.to(device), weights.to(device=device, dtype=dtype), rows, cols)


def _flat_index(bins: torch.Tensor, layout: BinLayout, planes: int) -> torch.Tensor:
    """Each vote's index in the padded flat grid of all images' planes (its bin's upper-left spatial bin)."""
    b, k, h, w = bins.shape
    index = bins.reshape(b, k, h * w) * layout.plane
    index += layout.base
    if b > 1:
        index += torch.arange(b, device=bins.device).view(b, 1, 1) * (planes * layout.plane)
    return index.view(-1)


class _ScatterBins(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: torch.Tensor, bins: torch.Tensor, layout: BinLayout, planes: int,
                forward_values: torch.Tensor | None, forward_bins: torch.Tensor | None) -> torch.Tensor:
        b = values.shape[0]
        length = b * planes * layout.plane
        index = _flat_index(bins, layout, planes)
        ctx.save_for_backward(index)
        ctx.layout, ctx.planes, ctx.shape = layout, planes, values.shape
        if forward_values is not None:  # straight through: these votes' sums, the gradient of ``values``'
            values, index = forward_values, _flat_index(forward_bins, layout, planes)
        votes = values.reshape(b, values.shape[1], -1)
        padded = values.new_zeros(length + layout.stride + 1)
        for offset, weight in zip(layout.offsets, layout.weights):
            padded.narrow(0, offset, length).scatter_add_(0, index, (votes * weight).view(-1))
        return padded[:length].view(b, planes, layout.rows + 2, layout.stride)[:, :, 1:-1, 1:-1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (index,) = ctx.saved_tensors
        layout, planes = ctx.layout, ctx.planes
        b, k, h, w = ctx.shape
        length = b * planes * layout.plane
        padded = grad.new_zeros(length + layout.stride + 1)
        padded[:length].view(b, planes, layout.rows + 2, layout.stride)[:, :, 1:-1, 1:-1] = grad
        total = torch.zeros(b, k, h * w, dtype=grad.dtype, device=grad.device)
        for offset, weight in zip(layout.offsets, layout.weights):
            total.addcmul_(padded.narrow(0, offset, length).index_select(0, index).view(b, k, h * w), weight)
        return total.view(ctx.shape), None, None, None, None, None


def scatter_bins(values: torch.Tensor, bins: torch.Tensor, layout: BinLayout, planes: int, *,
                 forward_values: torch.Tensor | None = None, forward_bins: torch.Tensor | None = None) -> torch.Tensor:
    """Sum weighted votes into orientation planes of spatial bins.

    ``out[b, bins[b, k, y, x], r, c] += values[b, k, y, x] · tent(y → r) · tent(x → c)`` for the two
    bins ``r`` and two bins ``c`` of ``layout``; differentiable in ``values`` (the bins are constant).
    Straight through: given ``forward_values`` and ``forward_bins`` (other votes, no gradient), the output is
    their sum instead, and the gradient still that of ``values``' sum (a surrogate for descent).

    Shape:
        - values: :math:`(B, K, H, W)` float, ``K`` votes per pixel.
        - bins: :math:`(B, K, H, W)` integer in ``[0, planes)``.
        - forward_values, forward_bins: :math:`(B, K', H, W)`, likewise.
        - Output: :math:`(B, planes, rows, cols)`.
    """
    if (forward_values is None) != (forward_bins is None):
        raise ValueError("scatter_bins: give both forward_values and forward_bins, or neither")
    return _ScatterBins.apply(values, bins, layout, planes, forward_values, forward_bins)


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a small 1-D table (``index_select``: several times faster than indexing on CPU)."""
    return table.index_select(0, index.reshape(-1)).view(index.shape)


def correctly_rounded_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt`` rounded to the nearest float, as C's ``sqrtf``; no gradient.

    torch's vectorised float32 ``sqrt`` on CPU can be one unit in the last place off, numpy's is IEEE's;
    CUDA's default ``sqrt`` is IEEE's too (and other dtypes than float32/float64 are left to torch).
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return x.detach().sqrt()
    return torch.from_numpy(np.sqrt(x.detach().contiguous().numpy()))
