"""The GD engine's parametrizations: the variables it optimizes and how they map to images in ``[0, 1]``.

- :class:`PixelSpace` (M&V): mean-subtracted 0–255 pixels, optimized directly.
- :class:`FourierSpace` (Olah et al., Distill 2017, "Feature Visualization"; lucid / lucent): a spectrum
  scaled by ``1 / frequency^decay``, colours decorrelated by ImageNet's colour covariance, squashed by a
  sigmoid; gradient steps on it favour low frequencies and natural colours.
- :class:`PyramidSpace`: the pixels as a sum of levels of halving resolution, each upsampled to the image; Adam's
  step of a few grey levels per variable moves a coarse level's whole block at once, so the layout and the
  colours settle in a few steps while the finest level adds the detail.

Both give :meth:`to_image` (variables → images in ``[0, 1]``), :meth:`from_image`, :meth:`prior_pixels` (what the
α-norm and TV priors act on: mean-subtracted 0–255 pixels) and :meth:`clamp` (the variables whose image is the
nearest inside ``[0, 1]``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["COLOR_CORRELATION_SQRT", "FourierSpace", "PixelSpace", "PyramidSpace"]

#: Square root of ImageNet's RGB covariance (its SVD factors), as lucid publishes it.
COLOR_CORRELATION_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
#: lucid's divisor of the spatial image before the sigmoid: keeps a 0.01-RMS random spectrum near mid-grey.
_SPATIAL_DIVISOR = 4.0


@dataclass(frozen=True)
class PixelSpace:
    """M&V's parametrization: mean-subtracted pixels, ``image01 = (x + mean) / scale``.

    M&V optimize mean-subtracted 0–255 pixels; the representations (and the objectives) take ``[0, 1]``
    images; the image priors act on the pixels themselves.

    Args:
        mean: per-channel mean in 0–255 units, broadcast over ``(C, 1, 1)``.
        scale: 255 for 0–255 pixel units.
    """

    mean: tuple[float, ...] = (128.0,)
    scale: float = 255.0

    def _mean(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device)
        if m.numel() not in (1, x.shape[1]):
            raise ValueError(f"pixel mean has {m.numel()} values for {x.shape[1]} channels")
        return m.view(1, -1, 1, 1)

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels ``(B, C, H, W)`` → images in ``[0, 1]`` units (not clamped)."""
        return (x + self._mean(x)) / self.scale

    def from_image(self, image: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` ``(B, C, H, W)`` → pixels."""
        return image * self.scale - self._mean(image)

    def prior_pixels(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The pixels the priors act on: the variables themselves (``image = to_image(x)`` unused)."""
        return x

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """The pixels clamped, in place, to the values that map to ``[0, 1]``."""
        if len(self.mean) == 1:  # one range for all: a single vectorised pass
            return x.clamp_(-self.mean[0], self.scale - self.mean[0])
        m = self._mean(x)
        return x.clamp_(-m, self.scale - m)


@dataclass(frozen=True)
class FourierSpace:
    r"""A decorrelated, frequency-scaled Fourier parametrization of ``(C, H, W)`` images (C = 1 or 3).

    ``image = sigmoid(M · irfft2(S ⊙ z) / 4)`` with ``z`` the complex spectrum (stored as real pairs),
    ``S = 1 / max(f, 1/max(H, W))^decay`` (``f`` in cycles per pixel), ``irfft2`` orthonormal, and ``M`` the
    colour matrix :data:`COLOR_CORRELATION_SQRT` over its largest column norm (identity for grey).

    Shape:
        Variables ``(B, C, H, W // 2 + 1, 2)``; images ``(B, C, H, W)``.

    Args:
        channels, height, width: the image shape.
        decay: the spectrum's power-law exponent (lucid: 1).
        pixel: the pixel units of :meth:`pixels` (mean and scale), for the priors.
    """

    channels: int
    height: int
    width: int
    decay: float = 1.0
    pixel: PixelSpace = PixelSpace()

    def _scale(self, device: torch.device) -> torch.Tensor:
        fy = torch.fft.fftfreq(self.height, device=device, dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(self.width, device=device, dtype=torch.float64)[None, :]
        f = (fy.square() + fx.square()).sqrt().clamp(min=1.0 / max(self.height, self.width))
        return f.pow(-self.decay).to(torch.float32)

    def _colour(self, device: torch.device) -> torch.Tensor | None:
        if self.channels == 1:
            return None
        m = torch.tensor(COLOR_CORRELATION_SQRT, device=device)
        return m / m.norm(dim=0).max()

    def variable_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.channels, self.height, self.width // 2 + 1, 2)

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        """Variables ``(B, C, H, W//2+1, 2)`` → images ``(B, C, H, W)`` in ``(0, 1)``."""
        spectrum = torch.view_as_complex(z.contiguous()) * self._scale(z.device)
        spatial = torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho") / _SPATIAL_DIVISOR
        colour = self._colour(z.device)
        if colour is not None:
            spatial = torch.einsum("ij,bjhw->bihw", colour, spatial)
        return torch.sigmoid(spatial)

    def from_image(self, image: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in ``[0, 1]`` → the variables that give them (values clipped to 1e-4 … 1 − 1e-4)."""
        spatial = torch.logit(image.to(torch.float32), eps=1e-4)
        colour = self._colour(image.device)
        if colour is not None:
            spatial = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(colour), spatial)
        spectrum = torch.fft.rfft2(spatial * _SPATIAL_DIVISOR, norm="ortho") / self._scale(image.device)
        return torch.view_as_real(spectrum).contiguous()

    def random(self, generator: torch.Generator, std: float = 0.01) -> torch.Tensor:
        """One random start ``(C, H, W//2+1, 2)``: Gaussian variables of RMS ``std`` (lucid's 0.01), on the CPU."""
        return torch.randn(self.variable_shape(1)[1:], generator=generator) * std

    def prior_pixels(self, z: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``image = to_image(z)`` in the pixel units of ``pixel`` (mean-subtracted 0–255), for the priors."""
        return self.pixel.from_image(image)

    def clamp(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` itself: the sigmoid keeps every image inside ``(0, 1)``."""
        return z


@dataclass(frozen=True)
class PyramidSpace:
    r"""The pixels of ``(C, H, W)`` images as a sum of levels of halving resolution (a Laplacian pyramid).

    ``pixels = Σ_k step^k · up^k(u_k)``, ``u_k`` of side ``⌈H / 2^k⌉ × ⌈W / 2^k⌉`` (k = 0 … levels − 1, fewer when
    the image runs out of halvings), ``up`` bilinear from one level's side to the next finer one's (half-pixel
    centres, as ``F.interpolate(..., align_corners=False)``), so the image is collapsed coarsest first, as a
    Laplacian pyramid is: about 4/3 of an image's worth of upsampling, where upsampling every level straight to
    ``H × W`` costs one image's worth per level. ``pixels`` are :class:`PixelSpace`'s (mean-subtracted 0–255). For
    Adam, whose step is at most the learning rate per variable whatever the gradient's scale: a step of ``lr`` grey
    levels moves level k's ``2^k × 2^k`` block by about ``lr · step^k``.

    Shape:
        Variables ``(B, C, Σ_k h_k · w_k)`` (the levels flattened, finest first); images ``(B, C, H, W)``.

    Args:
        channels, height, width: the image shape.
        levels: the most levels (1: the pixels themselves).
        step: each coarser level's weight over the finer one's.
        pixel: the pixel units (mean and scale).
    """

    channels: int
    height: int
    width: int
    levels: int = 8
    step: float = 0.85
    pixel: PixelSpace = PixelSpace()

    @property
    def sides(self) -> list[tuple[int, int]]:
        """``(h_k, w_k)`` of every level, finest first; the coarsest is the first of side 1×1 or level ``levels − 1``."""
        sides = [(self.height, self.width)]
        while len(sides) < self.levels and sides[-1] != (1, 1):
            sides.append(tuple(math.ceil(n / 2) for n in sides[-1]))  # type: ignore[misc]
        return sides

    def variable_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.channels, sum(h * w for h, w in self.sides))

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        """Variables ``(B, C, N)`` → pixels ``(B, C, H, W)`` (mean-subtracted 0–255)."""
        return _Collapse.apply(z, tuple(self.sides), self.step, 1.0, None)

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        """Variables ``(B, C, N)`` → images ``(B, C, H, W)`` in ``[0, 1]`` units (not clamped)."""
        scale = self.pixel.scale
        return _Collapse.apply(z, tuple(self.sides), self.step, scale, self.pixel._mean(z) / scale)

    def from_image(self, image: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in ``[0, 1]`` → variables: the pixels in the finest level, the others 0."""
        fine = self.pixel.from_image(image).flatten(2)
        return torch.cat([fine, fine.new_zeros(*fine.shape[:2], self.variable_shape(1)[-1] - fine.shape[-1])], dim=2)

    def prior_pixels(self, z: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``image = to_image(z)`` in the pixel units (mean-subtracted 0–255), for the priors."""
        return self.pixel.from_image(image)

    def clamp(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` with its finest level changed, in place, so that its image is the old one clamped to ``[0, 1]``."""
        with torch.no_grad():
            self._move_finest_level(z, self.to_image(z))
        return z

    def clamped_image(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`clamp` then :meth:`to_image` in one collapse: ``z``'s finest level is changed in place (outside
        autograd) and the clamped image is returned, differentiable in ``z`` (the collapse is linear, so its
        gradient does not depend on where ``z`` lies)."""
        image = self.to_image(z)
        return image - self._move_finest_level(z, image)

    def _move_finest_level(self, z: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Move ``z``'s finest level by what ``image`` (its collapse) has outside ``[0, 1]``; returns that."""
        with torch.no_grad():
            excess = image - image.clamp(0, 1)
            z.data[:, :, :self.height * self.width].sub_(excess.flatten(2), alpha=self.pixel.scale)
        return excess


class _Collapse(torch.autograd.Function):
    """:meth:`PyramidSpace.pixels` divided by ``scale``, plus ``offset`` (``(1, C, 1, 1)`` or ``None``), with its
    adjoint written out: each level's gradient is written straight into one ``(B, C, N)`` buffer (autograd would
    scale every level's and concatenate them: two more passes over the variables), and a doubling's adjoint is
    :func:`_double_adjoint` (3× faster than torch's upsampling backward on a CPU). The offset is added to the
    coarsest level: upsampling keeps a constant (its weights sum to 1), so it reaches every pixel at no cost."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, sides: tuple[tuple[int, int], ...], step: float, scale: float,
                offset: torch.Tensor | None) -> torch.Tensor:
        ctx.sides, ctx.step, ctx.scale = sides, step, scale
        levels = z.split([h * w for h, w in sides], dim=2)
        out = levels[-1].unflatten(2, sides[-1]) * (step ** (len(sides) - 1) / scale)
        if offset is not None:
            out += offset
        for k in reversed(range(len(sides) - 1)):
            out = _upsample(out, sides[k]).add_(levels[k].unflatten(2, sides[k]), alpha=step**k / scale)
        return out

    @staticmethod
    @once_differentiable  # the adjoint writes into its buffer (out=): no second derivatives
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        sides, step, scale = ctx.sides, ctx.step, ctx.scale
        grad_z = grad.new_empty(*grad.shape[:2], sum(h * w for h, w in sides))
        offset = 0
        for k, side in enumerate(sides):
            if k:
                grad = _upsample_adjoint(grad, side)
            torch.mul(grad, step**k / scale, out=grad_z[:, :, offset:offset + side[0] * side[1]].unflatten(2, side))
            offset += side[0] * side[1]
        return grad_z, None, None, None, None


def _upsample(x: torch.Tensor, side: tuple[int, int]) -> torch.Tensor:
    """``(B, C, h, w)`` → ``(B, C, *side)``, bilinear with half-pixel centres (``F.interpolate``'s
    ``align_corners=False``); an exact doubling by :func:`_double` (2× faster on a CPU)."""
    if side == (2 * x.shape[-2], 2 * x.shape[-1]):
        return _double(_double(x, -2), -1)
    return F.interpolate(x, size=side, mode="bilinear", align_corners=False)


def _upsample_adjoint(grad: torch.Tensor, side: tuple[int, int]) -> torch.Tensor:
    """The adjoint of :func:`_upsample` to ``grad``'s side from ``side``: ``(B, C, H, W)`` → ``(B, C, *side)``."""
    if grad.shape[-2:] == (2 * side[0], 2 * side[1]):
        return _double_adjoint(_double_adjoint(grad, -1), -2)
    return torch.ops.aten.upsample_bilinear2d_backward(grad, list(grad.shape[-2:]), [*grad.shape[:2], *side], False)


def _double(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` upsampled to twice its size along ``dim`` (negative), bilinear with half-pixel centres: output
    ``2i`` is ``¾ x[i] + ¼ x[i − 1]`` and ``2i + 1`` is ``¾ x[i] + ¼ x[i + 1]``, the edge values repeated."""
    n = x.shape[dim]
    shape = list(x.shape)
    shape[dim] = 2 * n
    out = x.new_empty(shape)
    even, odd = out.unflatten(dim, (n, 2)).unbind(dim)
    torch.lerp(x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1), 0.25, out=even.narrow(dim, 1, n - 1))
    torch.lerp(x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1), 0.25, out=odd.narrow(dim, 0, n - 1))
    even.narrow(dim, 0, 1).copy_(x.narrow(dim, 0, 1))
    odd.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 1, 1))
    return out


def _double_adjoint(grad: torch.Tensor, dim: int) -> torch.Tensor:
    """The adjoint of :func:`_double` along ``dim`` (negative): ``grad`` of size ``2n`` there → size ``n``."""
    even, odd = grad.unflatten(dim, (-1, 2)).unbind(dim)
    n = even.shape[dim]
    out = torch.add(even, odd).mul_(0.75)
    out.narrow(dim, 1, n - 1).add_(odd.narrow(dim, 0, n - 1), alpha=0.25)
    out.narrow(dim, 0, n - 1).add_(even.narrow(dim, 1, n - 1), alpha=0.25)
    out.narrow(dim, 0, 1).add_(even.narrow(dim, 0, 1), alpha=0.25)
    out.narrow(dim, n - 1, 1).add_(odd.narrow(dim, n - 1, 1), alpha=0.25)
    return out
