"""The image priors of Mahendran & Vedaldi: the α-norm and total variation TV^β, and the prior the GD engine adds.

All are per-image sums, so that a batch is a set of independent problems.

Convention: images are in the optimizer's pixel units (mean-subtracted 0–255 in the M&V presets);
finite differences use replicated borders, i.e. the last row/column has zero forward difference,
as in M&V's released code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def alpha_norm(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rα(x) = Σ |x|^α per image.

    Args:
        x: images ``(B, C, H, W)``.
        alpha: the exponent α > 0 (M&V use 6).

    Returns:
        ``(B,)`` the sum over each image.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if alpha == 6:  # M&V's exponent: two multiplications are cheaper than pow's exp/log, forward and backward
        squared = x.square()
        return (squared * squared * squared).flatten(1).sum(1)
    return x.abs().pow(alpha).flatten(1).sum(1)


def total_variation(x: torch.Tensor, beta: float, eps: float = 1e-8) -> torch.Tensor:
    """TV^β(x) = Σ_{u,v} ((x[u,v+1] − x[u,v])² + (x[u+1,v] − x[u,v])²)^(β/2) per image.

    Args:
        x: images ``(B, C, H, W)``.
        beta: the exponent β > 0 (M&V use 2 in Table 1; β < 2 favours sharp edges).
        eps: added inside the power when β < 2, so that the gradient stays finite where the image is flat.

    Returns:
        ``(B,)`` the sum over each image (over channels too).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    if beta == 2:  # the terms separate: no need to build the padded grid (the common case, and the fastest)
        return dx.square().flatten(1).sum(1) + dy.square().flatten(1).sum(1)
    squared = F.pad(dx.square(), (0, 1)) + F.pad(dy.square(), (0, 0, 0, 1))
    v = (squared + eps).pow(beta / 2) if beta < 2 else squared.pow(beta / 2)
    return v.flatten(1).sum(1)


class ImagePrior:
    """(λα/2 · Σ|x|^α + λTV/2 · TV^β(x)) / σ0², M&V's regularizer in their units, on the engine's pixels.

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
