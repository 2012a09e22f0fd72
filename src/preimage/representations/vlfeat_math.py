"""VLFeat's fast approximations (``vl/mathop.h``, ``vl/sift.c``), in PyTorch, so features match VLFeat's to the bit.

``fast_atan2`` and ``fast_sqrt`` carry gradients (those of the approximations themselves); ``fast_expn`` and
``mod_2pi`` are forward-only helpers of the SIFT detector.
"""
from __future__ import annotations

import functools
import math

import torch

__all__ = ["EPS_F", "fast_atan2", "fast_expn", "fast_sqrt", "mod_2pi"]

EPS_F = 1.19209290e-07  # VL_EPSILON_F, added to every histogram norm and to |y| in the fast atan2
_ATAN_C1, _ATAN_C3 = 0.9675, 0.1821  # vl_fast_atan2_f's polynomial
_SQRT_ZERO_BELOW = 1e-8  # vl_fast_sqrt_f returns 0 below this
# The bit-level first guess of 1/sqrt(x) that vl_fast_resqrt_{f,d} refine with two Newton steps.
_RESQRT_MAGIC = {torch.float32: (torch.int32, 0x5F3759DF), torch.float64: (torch.int64, 0x5FE6EC85E7DE30DA)}


class _FastAtan2(torch.autograd.Function):
    """``vl_fast_atan2_f`` forward; backward the derivative of that cubic (see :func:`fast_atan2`)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        abs_y = y.abs() + EPS_F
        ax = x.abs()
        r = (ax - abs_y) / (ax + abs_y)
        poly = (_ATAN_C3 * r * r - _ATAN_C1) * r
        right = (x >= 0).to(x.dtype)  # 1 where VLFeat starts from π/4, 0 where from 3π/4
        start = right * (math.pi / 4) + (1 - right) * (3 * math.pi / 4)
        up = 1 - 2 * (y < 0).to(x.dtype)
        ctx.save_for_backward(y, x, r)
        return (start + (2 * right - 1) * poly) * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, x, r = ctx.saved_tensors
        abs_y, ax = y.abs() + EPS_F, x.abs()
        # angle = ±(start ± poly(r)): d/d|x| = poly'(r)·2|y|/D², d/d|y| = −poly'(r)·2|x|/D², D = |x| + |y|;
        # the two signs times sign(x) (resp. sign(y)) leave the other sign, and 0 where x (resp. y) is 0.
        slope = grad * (3 * _ATAN_C3 * r * r - _ATAN_C1) * 2 / (ax + abs_y).square()
        up = 1 - 2 * (y < 0).to(x.dtype)
        right = 2 * (x >= 0).to(x.dtype) - 1
        return -(slope * ax * right * (y != 0)), slope * abs_y * up * (x != 0)


def fast_atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """VLFeat's ``vl_fast_atan2_f``: a cubic in ``r = (|x| - |y|) / (|x| + |y|)``, range about ``(-π, π]``.

    No division by zero on either branch, so its gradient (that of the cubic, 0 across ``x = 0`` and
    ``y = 0`` as ``|·|``'s) is finite everywhere. The branches are chosen by products with 0/1 masks
    (exact, and faster than ``torch.where`` on CPU): VLFeat's ``r`` for ``x < 0`` is exactly ``-r``, so
    its cubic is exactly minus this one.
    """
    return _FastAtan2.apply(y, x)


class _FastSqrt(torch.autograd.Function):
    """``vl_fast_sqrt_f`` forward; backward the derivative of that approximation itself (see :func:`fast_sqrt`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        kept = x >= _SQRT_ZERO_BELOW
        xs = x.clamp_min(_SQRT_ZERO_BELOW)  # the value where x is below it is dropped
        itype, magic = _RESQRT_MAGIC[x.dtype]
        guess = (magic - (xs.view(itype) >> 1)).view(x.dtype)
        half = 0.5 * xs
        y1 = guess * (1.5 - half * guess * guess)
        y2 = y1 * (1.5 - half * y1 * y1)
        ctx.save_for_backward(xs, guess, y1, y2, kept)
        return xs * y2 * kept

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        xs, guess, y1, y2, kept = ctx.saved_tensors
        itype, _ = _RESQRT_MAGIC[xs.dtype]
        mantissa_bits, exponent_mask, bias = (23, 0xFF, 127) if itype == torch.int32 else (52, 0x7FF, 1023)
        exponent = lambda t: (t.view(itype) >> mantissa_bits) & exponent_mask  # noqa: E731
        # The guess is linear within a piece, with slope -1/2 · 2^(exponent of guess − exponent of x).
        slope = -0.5 * ((exponent(guess) - exponent(xs) + bias) << mantissa_bits).view(xs.dtype)
        d1 = slope * (1.5 - 1.5 * xs * guess * guess) - 0.5 * guess * guess * guess
        d2 = d1 * (1.5 - 1.5 * xs * y1 * y1) - 0.5 * y1 * y1 * y1
        return grad * (y2 + xs * d2) * kept


def fast_sqrt(x: torch.Tensor) -> torch.Tensor:
    """VLFeat's ``vl_fast_sqrt_f`` (``_d`` for float64): ``x · resqrt(x)``, 0 where ``x < 1e-8``.

    ``resqrt`` is the bit-level first guess refined by two Newton steps. The guess is piecewise linear
    in ``x``; the gradient is that of the approximation itself (the guess's slope within its piece,
    carried through both Newton steps), 0 where ``x < 1e-8``.
    """
    return _FastSqrt.apply(x)


_EXPN_SIZE, _EXPN_MAX = 256, 25.0  # sift.c's table of exp(-x): 257 samples on [0, 25]


@functools.lru_cache(maxsize=None)
def _expn_table(device: torch.device) -> torch.Tensor:
    return torch.exp(-torch.arange(_EXPN_SIZE + 1, dtype=torch.float64) * (_EXPN_MAX / _EXPN_SIZE)).to(device)


def fast_expn(x: torch.Tensor) -> torch.Tensor:
    """``sift.c``'s ``fast_expn``: ``exp(-x)`` for ``0 ≤ x``, read linearly between 257 samples on ``[0, 25]``,
    0 beyond 25 (float64, as VLFeat computes it)."""
    x = x.to(torch.float64)
    scaled = x.clamp(0, _EXPN_MAX) * (_EXPN_SIZE / _EXPN_MAX)
    index = scaled.floor().long().clamp(max=_EXPN_SIZE - 1)
    table = _expn_table(x.device)
    low, high = table[index], table[index + 1]
    return torch.where(x > _EXPN_MAX, 0.0, low + (scaled - index) * (high - low))


def mod_2pi(x: torch.Tensor) -> torch.Tensor:
    """``vl_mod_2pi_f`` on float32: subtract (or add) ``2π`` rounded to float32 until ``0 ≤ x ≤ 2π``, in
    float32 steps, as VLFeat's loop does (inputs within one turn of that range, as SIFT's are)."""
    two_pi = torch.tensor(2 * math.pi, dtype=torch.float32)
    x = x.to(torch.float32)
    x = torch.where(x > two_pi, x - two_pi, x)
    return torch.where(x < 0, x + two_pi, x)
