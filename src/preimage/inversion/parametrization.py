"""The GD engine's parametrization: the pixels it optimizes and how they map to images in ``[0, 1]``."""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PixelSpace"]


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

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper pixel values ``(1, C, 1, 1)`` that map to 0 and 1."""
        m = self._mean(x)
        return -m, self.scale - m
