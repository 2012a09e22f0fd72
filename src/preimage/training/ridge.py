"""``fit: ridge`` of `preimage train`: a linear decoder for vector features, fitted in closed form.

Trained by gradient descent on a few hundred photographs, D&B's fully connected decoder of a vector layer (pool,
logits, the class probabilities) learns its training photos within a few dozen steps, and its validation error
rises from there. A linear read-out generalizes better from so few: one matrix maps the features, as the decoder
reads them (``decoder.input_log``, ``input_scale``), to a ``seed_side × seed_side`` image that the decoder resizes
(bilinear) to the image. Its weights are the ridge regression, over ``ridge.batches`` batches of the training
stream (the crops and augmentation gradient training sees), of each crop's least-squares seed image (the one
whose resize is nearest the crop) on the standardized features:

    B(λ) = (Cᶻᶻ + λ I)⁻¹ Cᶻᵗ,   W = diag(1/σ) B,   b = t̄ − μᵀ W

with ``Cᶻᶻ`` the features' correlation matrix, ``Cᶻᵗ`` their covariance with the seed images over σ, ``μ, σ`` the
features' means and standard deviations and ``t̄`` the mean seed image; λ is a penalty per crop (the same λ means
the same for any number of batches), the one of ``ridge.lambdas`` lowest in the config's ``monitor`` on the
validation crops is kept. Nothing is descended, so there are no checkpoints: a fit takes minutes, and an
interrupted one starts again.

The decoder must be the linear one: ``decoder.fc_widths: []`` (one Linear), ``upsamplings: 0``,
``leaky_slope: 1.0`` (the activation after the Linear is then the identity) and ``width`` the image's channels;
its last 3×3 convolution is set to the identity.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from tqdm.auto import tqdm

from ..images import to_grey
from ..inversion.networks import Decoder, resize_bilinear
from ..representations import Representation
from .module import validation_metrics

__all__ = ["Moments", "RidgeConfig", "check_fit", "fit_ridge", "ridge_weights", "seed_images", "set_linear"]


@dataclass(frozen=True)
class RidgeConfig:
    """``lambdas``: the penalties tried, per crop on standardized features (the one lowest in the monitor is kept);
    ``batches``: training batches whose statistics are accumulated."""

    lambdas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
    batches: int = 120

    def __post_init__(self) -> None:
        lambdas = tuple(self.lambdas) if isinstance(self.lambdas, (list, tuple)) else ()
        if not lambdas or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                                  for v in lambdas):
            raise ValueError(f"ridge.lambdas must be a non-empty list of positive numbers, got {self.lambdas!r}")
        if isinstance(self.batches, bool) or not isinstance(self.batches, int) or self.batches < 1:
            raise ValueError(f"ridge.batches must be a positive integer, got {self.batches!r}")
        object.__setattr__(self, "lambdas", tuple(float(v) for v in lambdas))


def check_fit(decoder: Decoder, spec: str, config: RidgeConfig, crop: int, batches: int) -> None:
    """One-line ``ValueError`` unless ``decoder`` is the linear decoder of vector features that ridge fits, its seed
    image no larger than the ``crop``-px crops, and ``config.batches`` within the stream's ``batches``."""
    if decoder.fc is None or len(decoder.feature_shape) != 1:
        raise ValueError(f"fit=ridge is for vector features (pool, logits, prob); {spec} gives "
                         f"{'maps' if decoder.fc is None else 'tokens'}: use fit=gradient")
    c = decoder.config
    if c.fc_widths or decoder.upsamplings or c.leaky_slope != 1.0 or c.width != c.out_channels:
        raise ValueError(f"fit=ridge fits a linear decoder: set decoder.fc_widths=[], decoder.upsamplings=0, "
                         f"decoder.leaky_slope=1.0 and decoder.width={c.out_channels} (got {list(c.fc_widths)}, "
                         f"{decoder.upsamplings}, {c.leaky_slope}, {c.width})")
    if c.seed_side > crop:
        raise ValueError(f"decoder.seed_side={c.seed_side} is larger than the {crop}-px crops: a seed image cannot "
                         "hold more cells than the crop has pixels")
    if config.batches > batches:
        raise ValueError(f"ridge.batches={config.batches} is more than the training stream's {batches} batches "
                         "(data.train_length / data.batch_size): raise data.train_length or lower ridge.batches")


@lru_cache(maxsize=8)
def _seed_projection(side: int, height: int, width: int) -> torch.Tensor:
    """``(side², H·W)`` float64: the least-squares inverse of :func:`resize_bilinear` from ``side × side`` to
    ``H × W``, ``(R Rᵀ)⁻¹ R`` with row j of ``R`` the resize of the seed image with 1 at cell j."""
    basis = torch.eye(side * side, dtype=torch.float64).view(-1, 1, side, side)
    resize = resize_bilinear(basis, (height, width)).flatten(1)
    return torch.linalg.solve(resize @ resize.T, resize)


def seed_images(images: torch.Tensor, side: int) -> torch.Tensor:
    """``(B, C·side²)`` float64: per image and channel the ``side × side`` image whose :func:`resize_bilinear` to
    the images' size is nearest them in least squares (channel-major, as the decoder's Linear lays out its output).

    Shape:
        images ``(B, C, H, W)``.
    """
    projection = _seed_projection(side, *images.shape[-2:])
    return (images.double().flatten(2) @ projection.T).flatten(1)


class Moments:
    """Running sums of features ``z (B, D)`` and targets ``t (B, T)`` (float64), taken about the first batch's means
    (so that a feature constant over the crops has a variance of exactly 0): counts, sums and products."""

    def __init__(self, features: int, targets: int) -> None:
        self.n = 0
        self.z_shift, self.t_shift = torch.zeros(features, dtype=torch.float64), torch.zeros(targets, dtype=torch.float64)
        self.z, self.t = torch.zeros(features, dtype=torch.float64), torch.zeros(targets, dtype=torch.float64)
        self.zz = torch.zeros(features, features, dtype=torch.float64)
        self.zt = torch.zeros(features, targets, dtype=torch.float64)

    def add(self, z: torch.Tensor, t: torch.Tensor) -> None:
        z, t = z.double(), t.double()
        if self.n == 0:
            self.z_shift, self.t_shift = z.mean(0), t.mean(0)
        z, t = z - self.z_shift, t - self.t_shift
        self.n += z.shape[0]
        self.z += z.sum(0)
        self.t += t.sum(0)
        self.zz += z.T @ z
        self.zt += z.T @ t


def ridge_weights(m: Moments, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W (D, T), b (T,))`` of the ridge regression of the targets on the standardized features (module
    docstring); a feature constant over the crops gets weight 0."""
    z_mean, t_mean = m.z / m.n, m.t / m.n  # about the shifts
    czz = m.zz / m.n - torch.outer(z_mean, z_mean)
    czt = m.zt / m.n - torch.outer(z_mean, t_mean)
    sd = czz.diagonal().clamp_min(0).sqrt()
    live = sd > 1e-12 * max(float(sd.max()), 1e-300)
    inv = torch.where(live, 1 / sd.clamp_min(1e-300), torch.zeros_like(sd))
    corr = czz * torch.outer(inv, inv) + torch.diag((~live).double())  # dead features: a unit diagonal, no coupling
    coef = torch.linalg.solve(corr + lam * torch.eye(len(sd), dtype=torch.float64), czt * inv[:, None])
    w = coef * inv[:, None]
    return w, (t_mean + m.t_shift) - (z_mean + m.z_shift) @ w


def set_linear(decoder: Decoder, w: torch.Tensor, b: torch.Tensor, *, half: bool = False) -> None:
    """Write ``W (D, T)`` and ``b (T,)`` into the linear decoder's Linear (rounded through float16 with ``half``, as
    a float16 bundle stores them), and its last convolution as the identity."""
    linear, last = decoder.fc[0], decoder.layers[-1]
    if half:
        w, b = w.half(), b.half()
    with torch.no_grad():
        linear.weight.copy_(w.T)
        linear.bias.copy_(b)
        last.weight.zero_()
        last.bias.zero_()
        for c in range(last.out_channels):
            last.weight[c, c, 1, 1] = 1.0


def fit_ridge(representation: Representation, decoder: Decoder, datamodule: Any, config: RidgeConfig, *,
              monitor: str, grey: bool, half: bool = False,
              progress: bool = True) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit ``decoder`` (checked first by :func:`check_fit`) in place; writes nothing. Returns the kept λ's validation
    metrics and ``{"lambda", "scores": {λ: {metric: value}} in the order of ``config.lambdas``, "crops", "seconds"}``.
    With ``half`` every λ is scored with its weights rounded through float16, as a float16 bundle holds them."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    check_fit(decoder, representation.spec, config, int(datamodule.hparams.crop), len(loader))
    side, tic = decoder.config.seed_side, time.perf_counter()
    moments: Moments | None = None
    batches = iter(loader)
    with torch.no_grad():
        for _ in tqdm(range(config.batches), desc="ridge: training crops", unit="batch", disable=not progress):
            images = next(batches)
            images = to_grey(images) if grey else images
            z = decoder.config.prepare(representation(images)).flatten(1)
            t = seed_images(images, side)
            if moments is None:
                moments = Moments(z.shape[1], t.shape[1])
            moments.add(z, t)
        val = [to_grey(b) if grey else b for b in datamodule.val_dataloader()]
        features = [representation(b) for b in val]
        images = torch.cat(val)
        f0 = torch.cat([representation.scoring_view(f) for f in features])
        scores: dict[float, dict[str, float]] = {}
        weights = {lam: ridge_weights(moments, lam) for lam in config.lambdas}
        for lam in config.lambdas:
            set_linear(decoder, *weights[lam], half=half)
            recon = [decoder(f, tuple(b.shape[-2:]), representation.grid_offset(*b.shape[-2:])).clamp(0, 1)
                     for f, b in zip(features, val)]
            f1 = torch.cat([representation.scoring_view(representation(r)) for r in recon])
            scores[lam] = validation_metrics(images, torch.cat(recon), f0, f1)
        finite = [lam for lam in config.lambdas if math.isfinite(scores[lam][monitor])]
        if not finite:
            raise ValueError(f"fit=ridge: {monitor} is not finite at any of ridge.lambdas {list(config.lambdas)}")
        best = min(finite, key=lambda lam: scores[lam][monitor])
        set_linear(decoder, *weights[best], half=half)
    return scores[best], {"lambda": best, "scores": {str(k): v for k, v in scores.items()}, "crops": moments.n,
                          "seconds": time.perf_counter() - tic}
