"""Dense SIFT as VLFeat's ``vl_dsift`` with the flat window (MATLAB's ``'Fast'``), differentiable in PyTorch.

The maths lives in :func:`dsift` (grey 0–255 input); :class:`DenseSIFT` is the registered representation
(``build_representation("dsift")``) that converts RGB in ``[0, 1]`` to that grey range first.

Every step follows ``vl/dsift.c`` (VLFeat 0.9.21) as driven by ``vl_dsift_new_basic`` plus
``vl_dsift_set_flat_window``: central-difference gradients (one-sided on the image border), VLFeat's fast
approximate ``atan2`` and ``sqrt`` (``vl/mathop.h``), bilinear binning into 8 orientations, triangular
spatial binning with edge replication (``vl_imconvcoltri``) reweighted by the mean of the Gaussian
window over each bin, and L2-normalize → clamp at 0.2 → L2-normalize. The differences that remain are
float rounding: VLFeat convolves with running (integral) sums, which loses a few bits on long columns.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..config import check_int
from .base import Representation, float32_and_finite, saturate
from .binning import AxisTaps, BinLayout, bin_layout, lookup, scatter_bins
from .registry import register_representation
from .vlfeat_math import EPS_F, fast_atan2, fast_sqrt

NUM_BINS_XY = 4
NUM_BINS_T = 8
DESCRIPTOR_SIZE = NUM_BINS_T * NUM_BINS_XY * NUM_BINS_XY
CLAMP = 0.2


def dsift_grid(height: int, width: int, bin_size: int = 5, step: int = 15) -> tuple[int, int]:
    """Number of descriptor ``(rows, cols)`` for an image, as ``_vl_dsift_update_buffers`` counts them."""
    span = (NUM_BINS_XY - 1) * bin_size  # frame size minus one
    rows = (height - 1 - span) // step + 1 if height - 1 >= span else 0
    cols = (width - 1 - span) // step + 1 if width - 1 >= span else 0
    return rows, cols


def _window_means(bin_size: int, window_size: float) -> list[float]:
    """Per spatial bin, ``bin_size`` × the mean of the Gaussian window over the bin's support.

    VLFeat's flat window skips the per-pixel Gaussian weighting and instead scales each spatial bin by
    this (``_vl_dsift_get_bin_window_mean``); the factor ``bin_size`` turns its unit-integral triangular
    kernel into SIFT's unit-height one.
    """
    sigma = bin_size * window_size
    means = []
    for b in range(NUM_BINS_XY):
        delta = bin_size * (b - 0.5 * (NUM_BINS_XY - 1))
        taps = range(-bin_size + 1, bin_size)
        means.append(bin_size * sum(math.exp(-0.5 * ((x - delta) / sigma) ** 2) for x in taps) / len(taps))
    return means


def _orientation_votes(gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 1, H, W)`` → orientation bins ``(B, 2, H, W)`` and votes: the magnitude split bilinearly between them."""
    # Central differences inside, one-sided on the border (dsift.c's loop over pixels).
    gx = torch.cat([gray[..., 1:2] - gray[..., 0:1], 0.5 * (gray[..., 2:] - gray[..., :-2]),
                    gray[..., -1:] - gray[..., -2:-1]], dim=-1)
    gy = torch.cat([gray[..., 1:2, :] - gray[..., 0:1, :], 0.5 * (gray[..., 2:, :] - gray[..., :-2, :]),
                    gray[..., -1:, :] - gray[..., -2:-1, :]], dim=-2)
    angle = fast_atan2(gy, gx)
    magnitude = fast_sqrt(gx * gx + gy * gy)
    angle = angle + (angle < 0).to(angle.dtype) * (2 * math.pi)  # vl_mod_2pi_f
    position = angle * (NUM_BINS_T / (2 * math.pi))  # in [0, 8]
    lower = position.detach().floor()
    frac = position - lower  # gradients flow through the weights, not the bin index
    wrap = _wrapped_bins(gray.device)
    index = lower.int()
    bins = torch.cat([lookup(wrap, index), lookup(wrap, index + 1)], dim=1)
    return bins, torch.cat([(1 - frac) * magnitude, frac * magnitude], dim=1)


@functools.lru_cache(maxsize=8)
def _wrapped_bins(device: torch.device) -> torch.Tensor:
    """Orientation bin ``t mod 8`` for ``t`` in ``[0, 9]``."""
    return torch.tensor([t % NUM_BINS_T for t in range(NUM_BINS_T + 2)], device=device)


def _lattice_taps(length: int, bin_size: int, step: int) -> AxisTaps:
    """Weights of pixel ``p`` on the bin-centre lattice ``l·g`` (``g = gcd(step, bin_size)``), along one axis.

    The lattice value is the triangular filter of the edge-replicated signal (``vl_imconvcoltri``): the
    filter applied to each unit impulse. When ``g == bin_size`` every pixel reaches lattice points
    ``p // g`` and ``p // g + 1`` only (the next one at weight 0 when ``p`` is on the lattice).
    """
    g = math.gcd(step, bin_size)
    taps = torch.arange(1 - bin_size, bin_size, dtype=torch.float64)
    impulses = F.pad(torch.eye(length, dtype=torch.float64)[:, None], (bin_size - 1, bin_size - 1), mode="replicate")
    response = F.conv1d(impulses, (1 - taps.abs() / bin_size).view(1, 1, -1), stride=g)[:, 0]  # (pixel, lattice)
    first = torch.arange(length) // g
    padded = F.pad(response, (0, 1))
    pixels = torch.arange(length)
    return AxisTaps(first + 1, padded[pixels, first], padded[pixels, first + 1])


@functools.lru_cache(maxsize=16)
def _lattice_layout(
    height: int, width: int, bin_size: int, step: int, dtype: torch.dtype, device: torch.device
) -> BinLayout:
    g = math.gcd(step, bin_size)
    return bin_layout(_lattice_taps(height, bin_size, step), _lattice_taps(width, bin_size, step),
                      (height - 1) // g + 1, (width - 1) // g + 1, dtype, device)


def _lattice_bins(bins: torch.Tensor, votes: torch.Tensor, bin_size: int, step: int) -> torch.Tensor:
    """Triangular spatial binning (unit height, support ``2·bin_size − 1``, edges replicated) of the votes,
    evaluated only on the lattice of bin centres ``(B, 8, L_y, L_x)``: every centre ``step·i + bin_size·j``
    is a multiple of ``g = gcd(step, bin_size)``. When ``g == bin_size`` (e.g. the default step 15, bin 5)
    each vote is scattered into its four lattice points; otherwise the dense orientation planes are
    filtered (``2·bin_size / g`` lattice points per pixel and axis would make scattering the slower).
    """
    height, width = votes.shape[-2:]
    g = math.gcd(step, bin_size)
    if g == bin_size:
        return scatter_bins(votes, bins, _lattice_layout(height, width, bin_size, step, votes.dtype, votes.device),
                            NUM_BINS_T)
    planes = votes.new_zeros(votes.shape[0], NUM_BINS_T, height, width).scatter_add(1, bins, votes)
    taps = torch.arange(1 - bin_size, bin_size, device=votes.device, dtype=votes.dtype)
    tri = 1 - taps.abs() / bin_size
    flat = planes.reshape(-1, 1, height, width)
    flat = F.pad(flat, (bin_size - 1,) * 4, mode="replicate")
    flat = F.conv2d(flat, tri.view(1, 1, -1, 1), stride=(g, 1))
    flat = F.conv2d(flat, tri.view(1, 1, 1, -1), stride=(1, g))
    return flat.view(votes.shape[0], NUM_BINS_T, flat.shape[-2], flat.shape[-1])


def _normalize(descriptors: torch.Tensor) -> torch.Tensor:
    """Divide by the L2 norm over the channel dimension plus ``VL_EPSILON_F`` (fast sqrt, as VLFeat)."""
    norm = fast_sqrt((descriptors * descriptors).sum(dim=1, keepdim=True)) + EPS_F
    return descriptors / norm


def dsift(
    gray: torch.Tensor,
    *,
    bin_size: int = 5,
    step: int = 15,
    normalize_after_clamp: bool = True,
    window_size: float = 2.0,
    straight_through_clamp: bool = False,
) -> torch.Tensor:
    r"""Dense SIFT descriptors of a grey image, as VLFeat's ``vl_dsift`` with the flat window.

    Frames are placed as ``vl_dsift_new_basic(W, H, step, bin_size)`` does: bounds the whole image,
    4 × 4 spatial bins of ``bin_size`` pixels, 8 orientations; the upper-left bin centre of frame
    ``(row, col)`` is at pixel ``(step·col, step·row)`` and the frame spans ``3·bin_size + 1`` pixels.
    Each descriptor is L2-normalized, clamped at 0.2 and L2-normalized again (the float output of
    VLFeat's C API, not the MATLAB wrapper's ``min(512·d, 255)`` bytes).

    Args:
        gray: grey images in 0–255.
        bin_size: spatial bin size in pixels (M&V's CNN-DSIFT: 5).
        step: sampling step between frames in pixels (M&V's CNN-DSIFT: 15, three bins).
        normalize_after_clamp: renormalize after the clamp (VLFeat). ``False`` gives M&V's CNN-DSIFT,
            which stops after the clamp.
        window_size: the Gaussian window's standard deviation in bins (``vl_dsift_set_window_size``;
            VLFeat's default 2), used for the flat window's per-bin weights.
        straight_through_clamp: pass the gradient through the clamp at 0.2 as if it were not there (a
            surrogate for descent; the values are unchanged).

    Returns:
        The descriptors, in ``gray``'s dtype (float16/bfloat16 are computed in float32).

    Shape:
        - Input: :math:`(B, 1, H, W)` with :math:`H, W \ge 3\cdot\text{bin\_size} + 1`.
        - Output: :math:`(B, 128, R, C)` with :math:`R = \lfloor (H - 1 - 3\cdot\text{bin\_size}) /
          \text{step} \rfloor + 1` and likewise :math:`C` from :math:`W`.

    Convention:
        - Input range 0–255 (the 1e-8 magnitude floor of the fast sqrt and ``VL_EPSILON_F`` in the
          norms make the result depend slightly on scale).
        - Pixel ``(y, x)`` is row ``y`` (downwards) and column ``x``; angles run from +x towards +y.
        - Output channel ``c = t + 8·(bin_x + 4·bin_y)`` is VLFeat's descriptor element ``c``
          (orientation ``t``, spatial bin ``(bin_x, bin_y)``); output ``(row, col)`` is the frame grid,
          rows along y, i.e. VLFeat's frame ``row·C + col``.

    Example:
        >>> dsift(255 * torch.rand(2, 1, 64, 80)).shape
        torch.Size([2, 128, 4, 5])
    """
    _check_args(bin_size, step, window_size)
    if not isinstance(gray, torch.Tensor) or gray.dim() != 4 or gray.shape[1] != 1:
        shape = tuple(gray.shape) if isinstance(gray, torch.Tensor) else type(gray).__name__
        raise ValueError(f"dsift: expected a (B, 1, H, W) grey tensor, got {shape}")
    if not gray.is_floating_point():
        raise ValueError(f"dsift: expected a floating-point tensor, got {gray.dtype}")
    height, width = gray.shape[-2:]
    rows, cols = dsift_grid(height, width, bin_size, step)
    if rows == 0 or cols == 0:
        need = (NUM_BINS_XY - 1) * bin_size + 1
        raise ValueError(f"dsift: image of {height}x{width} pixels is smaller than one {need}x{need} frame")

    x = gray if gray.dtype == torch.float64 else gray.float()
    g = math.gcd(step, bin_size)
    binned = _lattice_bins(*_orientation_votes(x), bin_size, step)

    offsets = torch.arange(NUM_BINS_XY, device=x.device) * bin_size
    iy = (torch.arange(rows, device=x.device)[:, None] * step + offsets) // g  # (rows, bin_y)
    ix = (torch.arange(cols, device=x.device)[:, None] * step + offsets) // g  # (cols, bin_x)
    cells = binned[:, :, iy][..., ix]  # (B, t, rows, bin_y, cols, bin_x)
    cells = cells.permute(0, 3, 5, 1, 2, 4)  # (B, bin_y, bin_x, t, rows, cols)
    means = torch.tensor(_window_means(bin_size, window_size), device=x.device, dtype=x.dtype)
    cells = cells * (means.view(-1, 1) * means).view(1, NUM_BINS_XY, NUM_BINS_XY, 1, 1, 1)
    descriptors = cells.reshape(x.shape[0], DESCRIPTOR_SIZE, rows, cols)

    descriptors = saturate(_normalize(descriptors), CLAMP, straight_through=straight_through_clamp)
    if normalize_after_clamp:
        descriptors = _normalize(descriptors)
    return descriptors.to(gray.dtype)


def _check_args(bin_size: int, step: int, window_size: float) -> None:
    for name, value in (("bin_size", bin_size), ("step", step)):
        check_int(f"dsift: {name}", value)
    if not window_size > 0:
        raise ValueError(f"dsift: window_size must be positive, got {window_size!r}")


class DenseSIFT(Representation):
    r"""Dense SIFT (VLFeat ``vl_dsift``, flat window) of the grey image ``255·(0.299R + 0.587G + 0.114B)``.

    Args:
        bin_size: spatial bin size in pixels.
        step: sampling step between frames in pixels.
        normalize_after_clamp: renormalize after clamping at 0.2 (VLFeat); ``False`` is M&V's variant.
        window_size: Gaussian window in bins for the flat window's per-bin weights (VLFeat default 2).
        straight_through_clamp: the clamp at 0.2 passes its gradient through (see :func:`dsift`; for
            :meth:`surrogate`).

    Shape:
        - Input: :math:`(B, 3, H, W)` RGB in ``[0, 1]``, or :math:`(B, 1, H, W)` grey in ``[0, 1]``.
        - Output: :math:`(B, 128, R, C)`, see :func:`dsift`.

    Convention:
        - Input in ``[0, 1]``; the descriptors are computed on 255 × the grey image.
        - Channel ``c = t + 8·(bin_x + 4·bin_y)``; ``(row, col)`` is the frame grid, rows along y.

    Example:
        >>> DenseSIFT()(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 128, 4, 4])
    """

    grey = True

    def __init__(
        self, *, bin_size: int = 5, step: int = 15, normalize_after_clamp: bool = True, window_size: float = 2.0,
        straight_through_clamp: bool = False,
    ) -> None:
        _check_args(bin_size, step, window_size)
        super().__init__(
            bin_size=bin_size, step=step, normalize_after_clamp=normalize_after_clamp, window_size=window_size
        )
        self.straight_through_clamp = straight_through_clamp
        side = (NUM_BINS_XY - 1) * bin_size + 1
        self.min_size = (side, side)
        # frame (r, c) is centred on pixel step·r + 1.5·bin_size, the centre of [step·r, step·(r+1)) when
        # step = 3·bin_size (M&V's geometry); otherwise the grid is not a tiling of cells
        self.grid_step = step if step == (NUM_BINS_XY - 1) * bin_size else None
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)

    def to_grey(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` or ``(B, 1, H, W)`` in ``[0, 1]`` → ``(B, 1, H, W)`` grey in 0–255."""
        if x.shape[1] == 3:
            x = (x * self.luma.to(x)).sum(dim=1, keepdim=True)
        return 255 * x

    def features(self, gray: torch.Tensor) -> torch.Tensor:
        """The descriptors of a ``(B, 1, H, W)`` grey batch already in 0–255."""
        return dsift(gray, **self.params, straight_through_clamp=self.straight_through_clamp)

    def surrogate(self) -> "DenseSIFT":
        """The same descriptors with the clamp's gradient passed through: a saturated bin still gets the data
        term's signal. Used by the ``fast`` preset (README, "Reproducing M&V Table 1")."""
        return DenseSIFT(**self.params, straight_through_clamp=True)

    @float32_and_finite
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if not x.is_floating_point():
            raise ValueError(f"{self.spec or 'dsift'}: expected a floating-point tensor in [0, 1], got {x.dtype}")
        return self.features(self.to_grey(x))

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        rows, cols = dsift_grid(height, width, self.params["bin_size"], self.params["step"])
        return (DESCRIPTOR_SIZE, rows, cols)


@register_representation("dsift")
def build_dsift(
    *, bin_size: int = 5, step: int = 15, normalize_after_clamp: bool = True, window_size: float = 2.0
) -> DenseSIFT:
    """The ``dsift`` representation: M&V's CNN-DSIFT geometry (5-px bins, step 15) by default."""
    return DenseSIFT(
        bin_size=bin_size, step=step, normalize_after_clamp=normalize_after_clamp, window_size=window_size
    )
