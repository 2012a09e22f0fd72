"""Local binary patterns as VLFeat's ``vl_lbp`` computes them (uniform mapping, 58 patterns), in PyTorch.

Each interior pixel compares its 8 neighbours with itself (strictly brighter: bit 1), read from the east
neighbour clockwise on screen (E, SE, S, SW, W, NW, N, NE: bits 0…7, y pointing down). The 8-bit pattern maps
to one of 58 bins: the 56 patterns with one run of ones (``k`` ones, ``1 ≤ k ≤ 7``, the run starting at bit
``i``: bin ``7i + k − 1``), the two flat patterns together (bin 56), everything else (bin 57). Each pixel votes
for its bin in the four cells around it, bilinearly (pixel ``y`` sits at ``(y + ½)/c − ½`` in cell units), and
each cell's histogram ``h`` becomes ``√h / (√Σh + 1e-10)``.

The features are piecewise constant in the pixels: the exact gradient is zero almost everywhere.
:meth:`LBP.surrogate` keeps the features to the bit and gives a gradient from a smooth comparison (a logistic
step of width ``temperature`` grey levels), so that GD can descend it.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..images import to_grey
from .base import Representation, float32_and_finite
from .registry import register_representation

__all__ = ["LBP", "NUM_PATTERNS", "lbp", "soft_lbp", "uniform_bins"]

NUM_PATTERNS = 58
_FLAT, _OTHER = 56, 57
#: neighbour offsets (dy, dx) of bits 0…7: E, SE, S, SW, W, NW, N, NE
_NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
_NORM_EPS = 1e-10
_SURROGATE_EPS = 1e-6  # keeps the surrogate's √h differentiable at empty bins


@functools.lru_cache(maxsize=None)
def uniform_bins() -> torch.Tensor:
    """VLFeat's uniform mapping: ``(256,)`` int64, the bin of every 8-bit pattern (built once; do not modify)."""
    table = torch.full((256,), _OTHER, dtype=torch.int64)
    table[0x00] = table[0xFF] = _FLAT
    for start in range(8):
        for ones in range(1, 8):
            run = ((1 << ones) - 1) << start
            table[(run | (run >> 8)) & 0xFF] = 7 * start + ones - 1
    return table


@functools.lru_cache(maxsize=None)
def _uniform_codes() -> torch.Tensor:
    """``(57, 8)`` bits of one pattern per bin 0…55, then the all-zero and all-one patterns (both bin 56)."""
    table = uniform_bins()
    codes = [int((table == b).nonzero()[0]) for b in range(_FLAT)] + [0x00, 0xFF]
    return torch.tensor([[(c >> i) & 1 for i in range(8)] for c in codes], dtype=torch.float32)


def _differences(grey: torch.Tensor) -> torch.Tensor:
    """``(B, 8, H − 2, W − 2)``: each neighbour minus the centre, for the interior pixels, bits 0…7."""
    h, w = grey.shape[-2:]
    centre = grey[:, 0, 1:-1, 1:-1]
    return torch.stack([grey[:, 0, 1 + dy: h - 1 + dy, 1 + dx: w - 1 + dx] - centre for dy, dx in _NEIGHBOURS], 1)


def _cell_votes(length: int, cell_size: int, device: torch.device) -> torch.Tensor:
    """``(cells, length − 2)`` float32: the bilinear vote of interior pixel ``1 … length − 2`` for each cell."""
    cells = length // cell_size
    position = (torch.arange(1, length - 1, device=device, dtype=torch.float32) + 0.5) / float(cell_size) - 0.5
    first = torch.floor(position)
    upper = position - first
    votes = torch.zeros(cells + 2, length - 2, device=device)  # rows -1 … cells: out-of-range votes land there
    column = torch.arange(length - 2, device=device)
    index = (first.long() + 1).clamp(0, cells + 1)
    keep = first < cells  # VLFeat skips a pixel whose first cell is past the last
    votes[index[keep], column[keep]] += (1.0 - upper)[keep]
    votes[(index + 1).clamp(max=cells + 1)[keep], column[keep]] += upper[keep]
    return votes[1: cells + 1]


def _pool(memberships: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Bilinear pooling of per-pixel bin memberships ``(B, K, H', W')`` into cells ``(B, K, rows, cols)``."""
    return torch.einsum("ry,bkyx,cx->bkrc", rows, memberships, cols)


def _normalise(histograms: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    return torch.sqrt(histograms + eps) / (torch.sqrt(histograms.sum(1, keepdim=True) + eps) + _NORM_EPS)


def _votes(grey: torch.Tensor, cell_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = _cell_votes(grey.shape[-2], cell_size, grey.device).to(grey.dtype)
    return rows, _cell_votes(grey.shape[-1], cell_size, grey.device).to(grey.dtype)


def lbp(grey: torch.Tensor, cell_size: int = 16, temperature: float | None = None) -> torch.Tensor:
    r"""VLFeat's uniform LBP histograms of grey images in VLFeat's units (0–255).

    Args:
        grey: :math:`(B, 1, H, W)` float.
        cell_size: cell side ``c`` in pixels.
        temperature: ``None``: no gradient (the features are piecewise constant). A width in grey levels: the
            same features to the bit, with the gradient of :func:`soft_lbp` (straight-through: the surrogate
            that GD descends).

    Returns:
        :math:`(B, 58, \lfloor H/c \rfloor, \lfloor W/c \rfloor)`, channel ``k`` = VLFeat's dimension ``k``.
    """
    differences = _differences(grey.detach())
    weights = (1 << torch.arange(8, device=grey.device)).view(1, 8, 1, 1)
    codes = ((differences > 0).long() * weights).sum(1)
    memberships = F.one_hot(uniform_bins().to(grey.device)[codes], NUM_PATTERNS).permute(0, 3, 1, 2).to(grey.dtype)
    features = _normalise(_pool(memberships, *_votes(grey, cell_size)))
    if temperature is None:
        return features
    smooth = soft_lbp(grey, cell_size, temperature)
    return features + (smooth - smooth.detach())


def soft_lbp(grey: torch.Tensor, cell_size: int, temperature: float) -> torch.Tensor:
    r"""LBP with soft comparisons: bit ``i`` is 1 with probability ``σ((neighbour_i − centre) / T)``, the bits
    independent; each pixel votes for every bin with its probability (bin 57: what the others leave); then
    pooled and normalized as :func:`lbp` (with ``1e-6`` under each square root, so empty bins have a gradient).
    Smooth in the pixels; tends to :func:`lbp` as ``T → 0``.

    Shape: as :func:`lbp`.
    """
    scaled = _differences(grey) / temperature
    on, off = F.logsigmoid(scaled), F.logsigmoid(-scaled)  # log P(bit = 1), log P(bit = 0)
    bits = _uniform_codes().to(grey.device, grey.dtype)
    p = (torch.einsum("ci,biyx->bcyx", bits, on) + torch.einsum("ci,biyx->bcyx", 1 - bits, off)).exp()
    uniform = torch.cat([p[:, :_FLAT], p[:, _FLAT:].sum(1, keepdim=True)], 1)
    soft = torch.cat([uniform, (1 - uniform.sum(1, keepdim=True)).clamp(min=0)], 1)
    return _normalise(_pool(soft, *_votes(grey, cell_size)), _SURROGATE_EPS)


class LBP(Representation):
    r"""VLFeat's ``vl_lbp`` (uniform, not transposed) of the grey image ``255 · (0.299 R + 0.587 G + 0.114 B)``.

    Args:
        cell_size: cell side in pixels (D&B and VLFeat's example: 16).
        temperature: ``None`` for Φ itself (no gradient); a width in grey levels for the surrogate
            (:meth:`surrogate`: the same features, a gradient from soft comparisons).

    Shape:
        - Input: :math:`(B, 3, H, W)` RGB or :math:`(B, 1, H, W)` grey, in ``[0, 1]``.
        - Output: :math:`(B, 58, \lfloor H/c \rfloor, \lfloor W/c \rfloor)`, rows along y.

    Example:
        >>> LBP()(torch.rand(2, 3, 64, 48)).shape
        torch.Size([2, 58, 4, 3])
    """

    grey = True
    #: the surrogate's comparison width, grey levels (0–255)
    SURROGATE_TEMPERATURE = 4.0

    def __init__(self, cell_size: int = 16, temperature: float | None = None) -> None:
        if isinstance(cell_size, bool) or not isinstance(cell_size, int) or cell_size < 1:
            raise ValueError(f"lbp: cell_size must be a positive integer, got {cell_size!r}")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"lbp: temperature must be positive, got {temperature!r}")
        super().__init__(cell_size=cell_size)
        self.cell_size, self.temperature = cell_size, temperature
        self.min_size = (max(cell_size, 3), max(cell_size, 3))
        self.spec = "lbp"

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        """Only the surrogate (``temperature`` set) has a gradient."""
        return self.temperature is not None

    @property
    def grid_step(self) -> int:
        """Cell ``(r, c)`` pools pixels around ``[r·c, (r+1)·c)`` (bilinearly, half a cell beyond)."""
        return self.cell_size

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return NUM_PATTERNS, height // self.cell_size, width // self.cell_size

    def surrogate(self) -> "LBP":
        """The same features to the bit, with the gradient of soft comparisons (width
        :attr:`SURROGATE_TEMPERATURE` grey levels) in place of the exact one, which is zero almost everywhere."""
        return LBP(self.cell_size, self.SURROGATE_TEMPERATURE)

    @float32_and_finite
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return lbp(255 * to_grey(x), self.cell_size, self.temperature)


@register_representation("lbp")
def build_lbp(*, cell_size: int = 16) -> LBP:
    """VLFeat's uniform LBP (58 patterns) in cells of ``cell_size`` pixels, on the grey image."""
    return LBP(cell_size=cell_size)
