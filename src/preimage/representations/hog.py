"""HOG in VLFeat's UoCTTI variant (``vl_hog``, as in DPM v5), differentiable, in PyTorch.

Two registry entries: ``hog`` (hard orientation assignment) and ``hogb`` (bilinear orientation
assignment, VLFeat's ``vl_hog_set_use_bilinear_orientation_assignments``; M&V's HOGb). Both match
VLFeat to float32 rounding (checked to 1e-4 against the real library in ``tests/test_hog.py``).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .base import Representation, float32_and_finite, saturate
from .binning import AxisTaps, BinLayout, bin_layout, correctly_rounded_sqrt, lookup, scatter_bins
from .registry import register_representation

_BLOCK_EPS = 1e-4  # added to each block's squared L2 norm (VLFeat, "as implemented in UOCTTI code")
_CLAMP = 0.2  # saturation of the block-normalized histograms
_TEXTURE_SCALE = 1.0 / math.sqrt(18.0)  # VLFeat uses 1/sqrt(18) whatever the number of orientations


def hog_min_size(cell_size: int) -> int:
    """Smallest image side VLFeat accepts: over 3 pixels and at least one cell (``side >= cell - cell // 2``)."""
    return max(4, cell_size - cell_size // 2)


def hog_grid(height: int, width: int, cell_size: int) -> tuple[int, int]:
    """Number of cells ``(rows, cols)``: as many as fit, the last one at least half inside the image."""
    return (height + cell_size // 2) // cell_size, (width + cell_size // 2) // cell_size


def _check_params(cell_size: int, orientations: int) -> None:
    if cell_size < 1 or orientations < 1:
        raise ValueError(f"hog: cell_size and orientations must be >= 1, got {cell_size} and {orientations}")


def _check_image(image: torch.Tensor, cell_size: int, orientations: int) -> None:
    _check_params(cell_size, orientations)
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"hog: expected a float (B, C, H, W) tensor, got {shape}")
    if image.shape[1] not in (1, 3):
        raise ValueError(f"hog: expected 1 or 3 channels, got {image.shape[1]}")
    side = hog_min_size(cell_size)
    if min(image.shape[-2:]) < side:
        raise ValueError(
            f"hog: image of {image.shape[-2]}x{image.shape[-1]} pixels is smaller than the {side}x{side} "
            f"needed for one cell of {cell_size} pixels"
        )


def _gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences ``(gx, gy)``, each ``(B, 1, H - 2, W - 2)`` (the outer pixel ring gets none).

    For colour input each pixel keeps the channel with the largest squared gradient (the first on ties).
    """
    gx = image[..., 1:-1, 2:] - image[..., 1:-1, :-2]
    gy = image[..., 2:, 1:-1] - image[..., :-2, 1:-1]
    if image.shape[1] == 1:
        return gx, gy
    best_x, best_y = gx[:, :1], gy[:, :1]
    best_g2 = (best_x * best_x + best_y * best_y).detach()
    for c in range(1, image.shape[1]):  # a running maximum, as VLFeat's (and faster than argmax over dim 1)
        x, y = gx[:, c : c + 1], gy[:, c : c + 1]
        g2 = (x * x + y * y).detach()
        better = (g2 > best_g2).to(x.dtype)  # selecting by 0/1 products: exact, faster than torch.where on CPU
        best_x, best_y = x * better + best_x * (1 - better), y * better + best_y * (1 - better)
        best_g2 = torch.maximum(g2, best_g2)
    return best_x, best_y


class _DirectionTables(NamedTuple):
    """Per entry ``i``, the directed direction ``j = i - 1`` (angle ``(j - n)π/n``), ``j`` in ``[-1, 2n + 2]``.

    ``cos``/``sin``: of undirected bin ``k = j mod n`` (VLFeat's float table when the dtype is float32);
    ``k`` itself; ``directed``: the directed bin of direction ``j``, ``(j + n) mod 2n``; ``wins_tie``: whether
    ``j`` wins a tie against ``j + 1`` (VLFeat keeps the lower undirected bin: ``j`` loses when ``k == n - 1``);
    ``loser_wins_tie[2i + a]``: for the best at entry ``i``, whether its neighbour on the side ``a`` (1: ``i + 1``,
    0: ``i − 1``) has a lower undirected bin than the other neighbour.
    """

    cos: torch.Tensor
    sin: torch.Tensor
    k: torch.Tensor
    directed: torch.Tensor
    wins_tie: torch.Tensor
    loser_wins_tie: torch.Tensor


@functools.lru_cache(maxsize=16)
def _direction_tables(n: int, dtype: torch.dtype, device: torch.device) -> _DirectionTables:
    j = range(-1, 2 * n + 3)
    k = [i % n for i in j]
    neighbours = [(k[max(i - 1, 0)], k[min(i + 1, len(k) - 1)]) for i in range(len(k))]  # (before, after) of entry i
    return _DirectionTables(
        torch.tensor([math.cos(i * math.pi / n) for i in k], dtype=dtype, device=device),
        torch.tensor([math.sin(i * math.pi / n) for i in k], dtype=dtype, device=device),
        torch.tensor(k, dtype=torch.int32, device=device),
        torch.tensor([(i + n) % (2 * n) for i in j], device=device),
        torch.tensor([i != n - 1 for i in k], device=device),
        torch.tensor([wins for before, after in neighbours for wins in (before < after, after < before)], device=device),
    )


class _Magnitude(torch.autograd.Function):
    """``sqrt(g2)`` for ``g2 = gx² + gy²`` (given), differentiable in ``gx`` and ``gy``; gradient 0 where ``g2 = 0``."""

    @staticmethod
    def forward(ctx, gx: torch.Tensor, gy: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        magnitude = correctly_rounded_sqrt(g2)
        ctx.save_for_backward(gx, gy, magnitude)
        return magnitude

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        gx, gy, magnitude = ctx.saved_tensors
        scale = grad / (magnitude + (magnitude == 0))  # gx = gy = 0 there, so their gradient is 0
        return scale * gx, scale * gy, None


def _orientation_votes(
    gx: torch.Tensor, gy: torch.Tensor, orientations: int, bilinear: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Directed bin indices ``(B, K, h, w)`` (``K`` = 1, or 2 if bilinear with ``n > 1``; the best bin first), their
    votes, and the gradient magnitude ``(B, 1, h, w)`` (the hard vote).

    Follows VLFeat 0.9.21 as compiled in Debian's ``libvl.so.1`` (its machine code, which differs from
    hog.c on GitHub master in rounding and in one edge case): the raw gradient is scored against the
    ``n`` undirected bin directions ``(cos kπ/n, sin kπ/n)`` (float32, as VLFeat rounds them); the best
    ``|s_k|`` picks bin ``k`` (``k + n`` if ``s_k < 0``), the first on ties. Only the two directions
    bracketing the gradient's angle can win, so only their scores are computed, exactly as VLFeat's
    (the angle itself only picks the pair); for ``n >= 2`` the winner's score is at least
    ``cos(π/2n)·|g| > 0`` along its directed direction, so its directed bin is that direction's. For
    ``n == 1`` (one bin) the sign of ``gx`` picks the directed bin. Bilinear: the runner-up (the better
    of the best's two neighbours by VLFeat's scores, the first on ties) takes weight
    ``acos(min(|s_best| / |g|, 1)) / (π/n)`` and the best bin one minus that (with ``n == 1`` there is no
    runner-up). The indices carry no gradient; the magnitude does, and so does the bilinear weight, whose
    gradient is that of the exact angle to the best bin's axis (``acos`` of a ratio near 1 is badly
    conditioned, so VLFeat's own value is kept). Selections are products with 0/1 masks, which are exact and
    several times faster than ``torch.where`` on CPU.
    """
    n = orientations
    g2 = gx * gx + gy * gy  # as VLFeat rounds it (no fused multiply-add)
    magnitude = _Magnitude.apply(gx, gy, g2)
    tables = _direction_tables(n, gx.dtype, gx.device)

    def score(j: torch.Tensor) -> torch.Tensor:  # s_k of direction j's undirected bin, rounded as VLFeat's
        return gx * lookup(tables.cos, j) + gy * lookup(tables.sin, j)

    with torch.no_grad():
        lower = (torch.atan2(gy, gx) * (n / math.pi)).floor_().add_(n + 1).int()  # table entries 1 .. 2n + 1
        upper = lower + 1
        score_a, score_b = score(lower), score(upper)
        abs_a, abs_b = score_a.abs(), score_b.abs()
        a_wins = ((abs_a > abs_b) | ((abs_a == abs_b) & lookup(tables.wins_tie, lower))).int()
        best = upper - a_wins
        bin1 = (gx < 0).long() if n == 1 else lookup(tables.directed, best)
    if not bilinear:
        return bin1, magnitude, magnitude
    with torch.no_grad():
        # VLFeat: ratio = |s_best| / sqrtf(g2) (the magnitude: a correctly rounded float division), acos in float.
        ratio = (torch.maximum(abs_a, abs_b) / magnitude.clamp_min(1e-10)).clamp_(max=1.0)
        vlfeat_w1 = torch.acos(ratio).mul_(n / math.pi)
        if n > 1:
            # The runner-up is a neighbour of the best: the other of the pair, or the one beyond the best
            # (near the best bin's centre the two tie up to rounding, which VLFeat's scores decide).
            loser = lower + a_wins
            beyond = 2 * best - loser
            abs_loser, abs_beyond = torch.minimum(abs_a, abs_b), score(beyond).abs()
            tie = (abs_loser == abs_beyond) & lookup(tables.loser_wins_tie, 2 * best + a_wins)
            loser_second = ((abs_loser > abs_beyond) | tie).int()
            second = beyond + loser_second * (loser - beyond)
            if n > 2:  # within 1.5π/n of the gradient, so positive along its own direction
                bin2 = lookup(tables.directed, second)
            else:  # n = 2: both neighbours are the other undirected bin; its score's sign picks the direction
                bin2 = (lookup(tables.k, second) + n * (score(second) < 0)).long()
    w1 = _BilinearWeight.apply(gx, gy, lookup(tables.cos, best), lookup(tables.sin, best), vlfeat_w1, n)
    if n == 1:
        return bin1, magnitude * (1 - w1), magnitude
    return torch.cat([bin1, bin2], dim=1), magnitude * torch.cat([1 - w1, w1], dim=1), magnitude


class _BilinearWeight(torch.autograd.Function):
    """VLFeat's runner-up weight ``value`` (in bins), with the gradient of the exact angle between the gradient
    and the best bin's axis, ``atan2(|c|, |d|)·n/π`` (``c = gy·cos − gx·sin``, ``d = gx·cos + gy·sin``): 0 where
    the gradient is 0."""

    @staticmethod
    def forward(ctx, gx: torch.Tensor, gy: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, value: torch.Tensor,
                n: int) -> torch.Tensor:
        ctx.save_for_backward(gx, gy, cos, sin)
        ctx.n = n
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None, None, None]:
        gx, gy, cos, sin = ctx.saved_tensors
        c, d = gy * cos - gx * sin, gx * cos + gy * sin
        g2 = c * c + d * d
        scale = grad * (ctx.n / math.pi) / (g2 + (g2 == 0))
        # ∇atan2(|c|, |d|) = (|d|·sign(c)·∇c − |c|·sign(d)·∇d) / |g|², with ∇c = (−sin, cos) and ∇d = (cos, sin)
        u, v = d.abs() * c.sign() * scale, c.abs() * d.sign() * scale
        return -u * sin - v * cos, u * cos - v * sin, None, None, None, None


def _tent_weights(cell_size: int) -> torch.Tensor:
    """``(cell_size, 2)`` float64 tent weights: column 0 for the pixels of the block a cell starts in, 1 for the next.

    Cell ``i``'s centre is at pixel ``(i + 0.5) * cell - 0.5``; the ``2 * cell`` pixels from
    ``i * cell - cell // 2`` reach it, with weight ``1 - |pixel - centre| / cell``.
    """
    t = torch.arange(2 * cell_size, dtype=torch.float64)
    w = (1 - (t - cell_size // 2 + 0.5 - 0.5 * cell_size).abs() / cell_size).clamp_min(0)
    return w.view(2, cell_size).t()


def _axis_taps(length: int, cell_size: int) -> AxisTaps:
    """The two cells each pixel inside the outer ring (``1 .. length - 2``) votes into along one axis.

    Pixel ``p`` lies in block ``j = (p + cell // 2) // cell`` at offset ``t``: it reaches cell ``j - 1``
    (padded index ``j``) with weight ``tent[t, 1]`` and cell ``j`` with ``tent[t, 0]``.
    """
    q = torch.arange(1, length - 1) + cell_size // 2
    tent = _tent_weights(cell_size)
    offset = q % cell_size
    return AxisTaps(q // cell_size, tent[offset, 1], tent[offset, 0])


@functools.lru_cache(maxsize=16)
def _cell_layout(height: int, width: int, cell_size: int, dtype: torch.dtype, device: torch.device) -> BinLayout:
    rows, cols = hog_grid(height, width, cell_size)
    return bin_layout(_axis_taps(height, cell_size), _axis_taps(width, cell_size), rows, cols, dtype, device)


def _normalize(cells: torch.Tensor, orientations: int, texture: bool, straight_through_clamp: bool) -> torch.Tensor:
    """UoCTTI block normalization of directed cell histograms ``(B, 2n, rows, cols)`` into the features
    (the clamp's gradient as :func:`~.base.saturate` says)."""
    n = orientations
    undirected = cells[:, :n] + cells[:, n:]
    energy = (undirected * undirected).sum(dim=1, keepdim=True)  # (B, 1, rows, cols)
    # Sum over the 2x2 blocks, the edge cells replicated: block (i, j) covers cells i-1..i, j-1..j.
    e = F.pad(energy, (1, 1, 1, 1), mode="replicate")
    blocks = e[..., :-1, :-1] + e[..., :-1, 1:] + e[..., 1:, :-1] + e[..., 1:, 1:]  # (B, 1, rows+1, cols+1)
    factors = torch.rsqrt(blocks + _BLOCK_EPS)
    # The four blocks holding each cell: upper-left, upper-right, lower-left, lower-right.
    factors = torch.stack(
        [factors[..., :-1, :-1], factors[..., :-1, 1:], factors[..., 1:, :-1], factors[..., 1:, 1:]], dim=1
    )  # (B, 4, 1, rows, cols)
    normalized = saturate(factors * torch.cat([cells, undirected], dim=1).unsqueeze(1), _CLAMP,
                          straight_through=straight_through_clamp)
    features = 0.5 * normalized.sum(dim=1)  # (B, 3n, rows, cols)
    if not texture:
        return features
    return torch.cat([features, _TEXTURE_SCALE * normalized[:, :, 2 * n :].sum(dim=2)], dim=1)


def hog(
    image: torch.Tensor,
    *,
    cell_size: int = 8,
    orientations: int = 9,
    bilinear_orientations: bool = False,
    texture: bool = True,
    straight_through_orientations: bool = False,
    straight_through_clamp: bool = False,
) -> torch.Tensor:
    r"""UoCTTI HOG features, equal to VLFeat's ``vl_hog`` (variant UoCTTI, not transposed).

    Central-difference gradients (none on the outer pixel ring; for colour, per pixel the channel
    with the largest gradient), hard (or bilinear) assignment to ``2n`` directed orientations,
    bilinear (tent) pooling into cells, normalization by the four 2x2 blocks holding each cell
    (squared norm of the undirected histograms + 1e-4, edge cells replicated), clamp at 0.2, and
    the four normalized copies summed with weight 0.5; texture terms are the four sums of the
    clamped undirected histograms times ``1/sqrt(18)``.

    Args:
        image: float tensor in the 0–255 range (the 1e-4 in the block norm makes the range matter).
        cell_size: cell side in pixels.
        orientations: number ``n`` of undirected orientations.
        bilinear_orientations: split each gradient between its two nearest orientations (HOGb).
        texture: append the 4 texture dims.
        straight_through_orientations: hard assignment's values with bilinear assignment's gradient (a surrogate
            for descent: the gradient then sees the gradient's angle; ignored with ``bilinear_orientations`` or
            a single orientation).
        straight_through_clamp: pass the gradient through the clamp at 0.2 as if it were not there (a
            surrogate for descent; the values are unchanged).

    Returns:
        the features, differentiable in ``image`` (not in the hard orientation choice).

    Shape:
        - Input: :math:`(B, C, H, W)`, ``C`` = 1 or 3.
        - Output: :math:`(B, 3n + 4, rows, cols)` (``3n`` without texture),
          ``rows = (H + cell_size // 2) // cell_size``, ``cols`` likewise from ``W``.

    Convention:
        Input 0–255. Cell ``(r, c)`` is row ``r`` along y (down), column ``c`` along x (right).
        Channels: ``2n`` directed orientations, bin ``k`` the gradient angle ``kπ/n`` measured
        clockwise from the x axis (the y axis points down), then ``n`` undirected ones, then the
        4 texture terms for the upper-left, upper-right, lower-left, lower-right blocks.

    Raises:
        ValueError: if ``image`` is not a float ``(B, 1|3, H, W)`` tensor or is smaller than one cell needs.

    Example:
        >>> hog(255 * torch.rand(2, 3, 64, 50)).shape
        torch.Size([2, 31, 8, 6])
    """
    _check_image(image, cell_size, orientations)
    gx, gy = _gradient(image)
    # with one orientation there is no second bin, so no angle for a gradient to see
    straight_through = straight_through_orientations and not bilinear_orientations and orientations > 1
    bins, votes, magnitude = _orientation_votes(gx, gy, orientations, bilinear_orientations or straight_through)
    layout = _cell_layout(*image.shape[-2:], cell_size, image.dtype, image.device)
    if straight_through:  # hard binning's sums, bilinear binning's gradient
        cells = scatter_bins(votes, bins, layout, 2 * orientations, forward_values=magnitude.detach(),
                             forward_bins=bins[:, :1])
    else:
        cells = scatter_bins(votes, bins, layout, 2 * orientations)
    return _normalize(cells, orientations, texture, straight_through_clamp)


class HOG(Representation):
    """UoCTTI HOG (VLFeat ``vl_hog``) as a frozen representation: ``hog(255 * x)``.

    Args:
        cell_size: cell side in pixels.
        orientations: number ``n`` of undirected orientations.
        texture: append the 4 texture dims (``texture=False`` gives M&V's 27-dim CNN-HOG cells).
        bilinear_orientations: bilinear orientation assignment (HOGb).
        straight_through_orientations, straight_through_clamp: hard binning with bilinear binning's gradient, and
            the clamp at 0.2 passing its gradient through (see :func:`hog`; for :meth:`surrogate`).

    Shape:
        - Input: :math:`(B, 3, H, W)` RGB or :math:`(B, 1, H, W)` grey, in ``[0, 1]``.
        - Output: :math:`(B, 3n + 4, rows, cols)`, see :func:`hog`.

    Convention:
        Input in [0, 1], multiplied by 255 here; colour is used as VLFeat uses it (per pixel the
        channel with the largest gradient). Output as :func:`hog`: rows along y, channels
        ``2n`` directed, ``n`` undirected, 4 texture. :meth:`scoring_view` keeps the ``3n`` non-texture dims.
        ``min_size`` is VLFeat's own limit: sides over 3 pixels giving at least one cell
        (4×4 for cells of 8 pixels, 8×8 for 16).

    Example:
        >>> HOG()(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 31, 8, 8])
    """

    grey = False  # colour is accepted (and a (B, 1, H, W) grey batch as well)

    def __init__(
        self, cell_size: int = 8, orientations: int = 9, texture: bool = True, bilinear_orientations: bool = False,
        straight_through_orientations: bool = False, straight_through_clamp: bool = False,
    ) -> None:
        _check_params(cell_size, orientations)
        # params are the builder's overrides (the spec, hog or hogb, fixes the orientation assignment)
        super().__init__(cell_size=cell_size, orientations=orientations, texture=texture)
        self.cell_size, self.orientations = cell_size, orientations
        self.texture, self.bilinear_orientations = texture, bilinear_orientations
        self.straight_through_orientations = straight_through_orientations
        self.straight_through_clamp = straight_through_clamp
        side = hog_min_size(cell_size)
        self.min_size = (side, side)
        self.spec = "hogb" if bilinear_orientations else "hog"

    @property
    def grid_step(self) -> int:
        """HOG cells tile the image from its top-left corner: the cell size."""
        return self.cell_size

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return (3 * self.orientations + 4 * self.texture, *hog_grid(height, width, self.cell_size))

    def surrogate(self) -> "HOG":
        """The same features with surrogate gradients: HOG's hard orientation binning takes bilinear binning's
        gradient (it has none in the gradient's angle), and the clamp at 0.2 passes its gradient through (a
        saturated cell has none). Used by the ``fast`` preset (README, "Reproducing M&V Table 1")."""
        return HOG(self.cell_size, self.orientations, self.texture, self.bilinear_orientations,
                   straight_through_orientations=not self.bilinear_orientations, straight_through_clamp=True)

    def scoring_view(self, features: torch.Tensor) -> torch.Tensor:
        """The ``3n`` non-texture dims, which M&V's feature_error scores."""
        return features[:, : 3 * self.orientations]

    @float32_and_finite
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return hog(
            255 * x,
            cell_size=self.cell_size,
            orientations=self.orientations,
            bilinear_orientations=self.bilinear_orientations,
            texture=self.texture,
            straight_through_orientations=self.straight_through_orientations,
            straight_through_clamp=self.straight_through_clamp,
        )


@register_representation("hog")
def build_hog(*, cell_size: int = 8, orientations: int = 9, texture: bool = True) -> HOG:
    """VLFeat UoCTTI HOG with hard orientation assignment."""
    return HOG(cell_size=cell_size, orientations=orientations, texture=texture)


@register_representation("hogb")
def build_hogb(*, cell_size: int = 8, orientations: int = 9, texture: bool = True) -> HOG:
    """HOGb: VLFeat UoCTTI HOG with bilinear orientation assignment."""
    return HOG(cell_size=cell_size, orientations=orientations, texture=texture, bilinear_orientations=True)
