"""Energy terms the gradient-descent engine minimizes, as small composable pieces.

Every term maps a batch of images in the optimizer's pixel units to a ``(B,)`` tensor of per-image
values, so that each image in a batch is an independent problem.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..representations import Representation
from .regularizers import alpha_norm, total_variation


@dataclass(frozen=True)
class PixelSpace:
    """The optimizer's parametrization: ``image01 = (x + mean) / scale``.

    M&V optimize mean-subtracted 0–255 pixels; the representations take ``[0, 1]`` images.

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


Energy = Callable[[torch.Tensor], torch.Tensor]


class FeatureReconstruction:
    """M&V's data term ‖m ⊙ (Φ(x) − Φ0)‖² / ‖m ⊙ Φ0‖², one normalizer per image.

    Args:
        representation: Φ, taking ``(B, C, H, W)`` images in ``[0, 1]``.
        target: Φ0 ``(B, ...)``.
        pixels: the parametrization from pixels to images.
        mask: optional 0/1 (or weight) tensor broadcastable to ``target``: only selected neurons count.
    """

    def __init__(self, representation: Representation, target: torch.Tensor, pixels: PixelSpace,
                 mask: torch.Tensor | None = None) -> None:
        self.representation = representation
        self.pixels = pixels
        self.mask = None if mask is None else mask.to(target.device, target.dtype)
        self.target = target if self.mask is None else target * self.mask
        norm = self.target.flatten(1).square().sum(1)
        if bool((norm == 0).any()):
            raise ValueError("the target features (inside the mask) are all zero for some image: nothing to invert")
        self.norm = norm

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        features = self.representation(self.pixels.to_image(x))
        if self.mask is not None:
            features = features * self.mask
        return (features - self.target).flatten(1).square().sum(1) / self.norm


class ImagePrior:
    """(λα/2 · Σ|x|^α + λTV/2 · TV^β(x)) / σ0², M&V's regularizer in their units.

    Args:
        lambda_alpha, alpha: weight and exponent of the α-norm (0 weight disables it).
        lambda_tv, tv_beta: weight and exponent of TV^β (0 weight disables it).
        sigma0: the typical image norm σ0 that scales the priors against the data term.
    """

    def __init__(self, *, lambda_alpha: float, alpha: float, lambda_tv: float, tv_beta: float, sigma0: float) -> None:
        self.lambda_alpha, self.alpha = lambda_alpha, alpha
        self.lambda_tv, self.tv_beta = lambda_tv, tv_beta
        self.sigma0 = sigma0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        value = x.new_zeros(x.shape[0])
        if self.lambda_alpha:
            value = value + self.lambda_alpha / 2 * alpha_norm(x, self.alpha)
        if self.lambda_tv:
            value = value + self.lambda_tv / 2 * total_variation(x, self.tv_beta)
        return value / self.sigma0**2
