"""The image priors of Mahendran & Vedaldi: the α-norm and total variation TV^β, and the prior the GD engine adds.

All are per-image sums, so that a batch is a set of independent problems.

Convention: images are in the optimizer's pixel units (mean-subtracted 0–255 in the M&V presets);
finite differences use replicated borders, i.e. the last row/column has zero forward difference,
as in M&V's released code.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

TV_EPS = 1e-8  # added inside TV^β's power when β < 2


class _AnalyticGradient(torch.autograd.Function):
    """``value`` of ``fn(x) -> (value (B,), gradient (B, ...))``, its gradient the one ``fn`` computed with it.

    The priors' gradients are short closed forms that share the forward's intermediates: computing them in
    the forward costs fewer passes over the image than recording the expression for autograd.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        value, gradient = fn(x.detach())
        ctx.save_for_backward(gradient)
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (gradient,) = ctx.saved_tensors
        return gradient * grad.view(-1, *([1] * (gradient.dim() - 1))), None


def _per_image_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Σ a·b`` per image ``(B,)``, in one pass (no product tensor)."""
    return torch.linalg.vecdot(a.flatten(1), b.flatten(1))


def _alpha_norm_and_gradient(x: torch.Tensor, alpha: float, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ|x|^α per image, α·sign(x)·|x|^(α−1))``, both times ``scale``."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if alpha == 6:  # M&V's exponent: multiplications instead of pow's exp/log
        fifth = x * x.square().square()
        return _per_image_dot(x, fifth) * scale, fifth.mul_(6.0 * scale)
    magnitude = x.abs()
    power = magnitude.pow(alpha - 1)
    return _per_image_dot(power, magnitude) * scale, power.mul_(x.sign()).mul_(alpha * scale)


def _total_variation_and_gradient(x: torch.Tensor, beta: float, eps: float, scale: float = 1.0,
                                  gradient: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(TV^β per image, its gradient)``, both times ``scale`` (the gradient added to ``gradient`` if given).

    With ``s`` the squared gradient at each pixel and ``w = (β/2)·s^(β/2−1)`` (``s + eps`` for β < 2), the
    gradient at a pixel is ``2·(w·d)`` of the difference that ends there minus ``2·(w·d)`` of the one that
    starts there, along x and along y.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    if beta == 2:  # w = 1, and the terms separate: no need to build the padded grid (the common case)
        value = _per_image_dot(dx, dx) + _per_image_dot(dy, dy)
        wdx, wdy = dx, dy
    else:
        squared = F.pad(dx.square(), (0, 1)) + F.pad(dy.square(), (0, 0, 0, 1))
        if beta < 2:
            squared = squared + eps
        value = squared.pow(beta / 2).flatten(1).sum(1)
        weight = squared.pow(beta / 2 - 1) * (beta / 2)
        wdx, wdy = weight[..., :, :-1] * dx, weight[..., :-1, :] * dy
    gradient = torch.zeros_like(x) if gradient is None else gradient
    step = 2.0 * scale
    gradient[..., :, 1:].add_(wdx, alpha=step)
    gradient[..., :, :-1].add_(wdx, alpha=-step)
    gradient[..., 1:, :].add_(wdy, alpha=step)
    gradient[..., :-1, :].add_(wdy, alpha=-step)
    return value * scale, gradient


def alpha_norm(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rα(x) = Σ |x|^α per image.

    Args:
        x: images ``(B, C, H, W)``.
        alpha: the exponent α > 0 (M&V use 6).

    Returns:
        ``(B,)`` the sum over each image.
    """
    return _AnalyticGradient.apply(x, partial(_alpha_norm_and_gradient, alpha=alpha))


def total_variation(x: torch.Tensor, beta: float, eps: float = TV_EPS) -> torch.Tensor:
    """TV^β(x) = Σ_{u,v} ((x[u,v+1] − x[u,v])² + (x[u+1,v] − x[u,v])²)^(β/2) per image.

    Args:
        x: images ``(B, C, H, W)``.
        beta: the exponent β > 0 (M&V use 2 in Table 1; β < 2 favours sharp edges).
        eps: added inside the power when β < 2, so that the gradient stays finite where the image is flat.

    Returns:
        ``(B,)`` the sum over each image (over channels too).
    """
    return _AnalyticGradient.apply(x, partial(_total_variation_and_gradient, beta=beta, eps=eps))


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
        return _AnalyticGradient.apply(x, self._value_and_gradient)

    def _value_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        value, gradient = x.new_zeros(x.shape[0]), None
        if self.lambda_alpha:
            value, gradient = _alpha_norm_and_gradient(x, self.alpha, self.lambda_alpha / 2 / self.sigma0**2)
        if self.lambda_tv:
            tv, gradient = _total_variation_and_gradient(x, self.tv_beta, TV_EPS, self.lambda_tv / 2 / self.sigma0**2,
                                                         gradient)
            value = value + tv
        return value, torch.zeros_like(x) if gradient is None else gradient
