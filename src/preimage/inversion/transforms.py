"""Geometric transforms of image batches: a differentiable affine warp and the random draws that use it.

:func:`affine` is the one warp: each image shifted, scaled and rotated about its centre (bilinear, border
reflected). GD applies :func:`random_affine` at every step (``GDConfig.scale`` and ``rotate``, lucid's
"transformation robustness"); :func:`evaluation_transforms` draws the fixed set that scores a maximization
under transforms the optimization never drew (:func:`preimage.analysis.transform_score.transformed_softmax`).

Convention:
    Images ``(N, C, H, W)``; shifts in pixels ``(dy, dx)`` (positive: content moves down / right); scale > 1
    magnifies; angles in degrees, positive counter-clockwise as seen on screen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Affine", "affine", "evaluation_transforms", "random_affine"]


@dataclass(frozen=True)
class Affine:
    """One transform: ``shift`` ``(dy, dx)`` px, ``scale`` (×), ``angle`` (degrees)."""

    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    angle: float = 0.0

    def record(self) -> dict[str, float | list[float]]:
        return {"shift": list(self.shift), "scale": self.scale, "angle": self.angle}


def affine(images: torch.Tensor, transforms: Sequence[Affine]) -> torch.Tensor:
    """Image ``i`` warped by ``transforms[i]`` about its centre, bilinear, border reflected.

    Shape:
        ``(N, C, H, W)`` → ``(N, C, H, W)``; ``len(transforms) == N``.

    An identity transform returns the image values unchanged (the sampling grid hits the pixel centres).
    """
    n, _, h, w = images.shape
    if len(transforms) != n:
        raise ValueError(f"{len(transforms)} transforms for {n} images")
    if all(t == Affine() for t in transforms):
        return images
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    for i, t in enumerate(transforms):
        # output pixel p samples the input at centre + R(−angle)·(p − centre − shift)/scale, in normalized units
        a = math.radians(t.angle)
        cos, sin = math.cos(a) / t.scale, math.sin(a) / t.scale
        # normalized coordinates run over W and H separately: rescale the rotation between the axes
        theta[i, 0, 0], theta[i, 0, 1] = cos, -sin * h / w
        theta[i, 1, 0], theta[i, 1, 1] = sin * w / h, cos
        dx, dy = 2.0 * t.shift[1] / w, 2.0 * t.shift[0] / h
        theta[i, 0, 2] = -(theta[i, 0, 0] * dx + theta[i, 0, 1] * dy)
        theta[i, 1, 2] = -(theta[i, 1, 0] * dx + theta[i, 1, 1] * dy)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g, dtype=torch.float64))


def random_affine(images: torch.Tensor, generators: Sequence[torch.Generator], *, scale: tuple[float, float],
                  rotate: float, shift: float = 0.0) -> torch.Tensor:
    """Each image warped by its own draw from ``generators[i]``: scale log-uniform in ``scale``, angle uniform in
    ``[−rotate, rotate]`` degrees, shift uniform in ``[−shift, shift]`` px on each axis."""
    drawn = []
    for g in generators:
        s = math.exp(_uniform(g, math.log(scale[0]), math.log(scale[1])))
        a = _uniform(g, -rotate, rotate)
        d = (_uniform(g, -shift, shift), _uniform(g, -shift, shift))
        drawn.append(Affine(d, s, a))
    return affine(images, drawn)


def evaluation_transforms(count: int = 8, *, shift: float = 16.0, scale: tuple[float, float] = (0.8, 1.2),
                          rotate: float = 15.0, seed: int = 20161) -> list[Affine]:
    """``count`` transforms drawn once from ``seed`` (kept apart from GD's generators, seeded ``config.seed +
    restart``), each at least as large as the maximize presets' training transforms can be."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        d = (_uniform(g, -shift, shift), _uniform(g, -shift, shift))
        s = math.exp(_uniform(g, math.log(scale[0]), math.log(scale[1])))
        out.append(Affine(d, s, _uniform(g, -rotate, rotate)))
    return out
