"""The GD engine with any data term: :func:`invert_gd`'s conventions, another term in place of Φ-reconstruction.

    E(x) = data(x) + (λα/2 Σ|x|^α + λTV/2 TV^β(x)) / σ0²

minimised by :func:`~preimage.inversion.gd.descend` with the same pixel space, σ0, seeded random starts
(row ``i·R + r`` starts from ``seed + r``), jitter and clamping as :func:`~preimage.inversion.gd.invert_gd`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..images import to_grey
from ..inversion.gd import GDConfig, GDResult, _jittered, descend, resolve_device
from ..inversion.objectives import Energy, ImagePrior, PixelSpace
from ..representations import Representation

__all__ = ["DataTermFactory", "GDSetup", "gd_setup", "optimise_gd"]

#: ``factory(pixels, device) -> term``: builds the data term for the ``N`` problems, its tensors on ``device``.
DataTermFactory = Callable[[PixelSpace, torch.device], Energy]


@dataclass
class GDSetup:
    """What every GD problem of a config shares (see :func:`gd_setup`).

    Attributes:
        pixels: the parametrisation (mean-subtracted 0–255 pixels).
        sigma0: σ0 for this image size, scaling the priors and the step.
        generators: one per row ``i·R + r``, seeded ``seed + r``: the random start, then the jitter.
        starts: random starts ``(N·R, C, H, W)`` in pixel units (CPU), each of L2 norm σ0.
        prior: the image prior ``(N·R,)``.
    """

    pixels: PixelSpace
    sigma0: float
    generators: list[torch.Generator]
    starts: torch.Tensor
    prior: ImagePrior


def gd_setup(config: GDConfig, problems: int, channels: int, height: int, width: int) -> GDSetup:
    """The pixel space, σ0, seeded generators, random starts and prior of ``problems`` × ``config.restarts`` rows."""
    pixels = PixelSpace(mean=config.pixel_mean if len(config.pixel_mean) in (1, channels) else config.pixel_mean[:1])
    sigma0 = config.sigma0(channels, height, width)
    generators = [torch.Generator().manual_seed(config.seed + k)
                  for _ in range(problems) for k in range(config.restarts)]
    starts = torch.stack([torch.randn(channels, height, width, generator=g) for g in generators])
    starts = starts / starts.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * sigma0
    prior = ImagePrior(lambda_alpha=config.lambda_alpha, alpha=config.alpha, lambda_tv=config.lambda_tv,
                       tv_beta=config.tv_beta, sigma0=sigma0)
    return GDSetup(pixels, sigma0, generators, starts, prior)


def _per_restart(term: Energy, restarts: int) -> Energy:
    """Evaluate a term built for ``N`` problems on ``N·R`` rows laid out ``i·R + r``, one restart at a time."""

    def each(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([term(x[r::restarts]) for r in range(restarts)], dim=1).reshape(-1)

    return each


def optimise_gd(representation: Representation, data_term: DataTermFactory, shape: tuple[int, int, int, int],
                config: GDConfig, *, start: torch.Tensor | None = None, device: str | torch.device | None = None,
                progress: bool = True,
                callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> GDResult:
    """Minimise ``data_term + prior`` for ``N`` independent problems by gradient descent.

    Args:
        representation: Φ (frozen); moved to the device before ``data_term`` is built.
        data_term: ``factory(pixels, device)`` returning a term ``(N, C, H, W) -> (N,)`` for the N problems.
        shape: ``(N, C, H, W)`` of the images optimised (C is 1 when ``config.grey``).
        config: the hyper-parameters; ``restarts`` rows per problem.
        start: optional starting images ``(N, C, H, W)`` in ``[0, 1]`` (e.g. the original, for caricatures);
            default: the seeded random starts of :func:`gd_setup`.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        progress: show a progress bar.
        callback: ``callback(t, pixels (N·R, C, H, W), energy (N·R,))`` after each step.

    Returns:
        :class:`~preimage.inversion.gd.GDResult` with ``images`` ``(N, R, C, H, W)`` in ``[0, 1]``.
    """
    n, c, h, w = shape
    if config.grey:
        c = 1
    dev = resolve_device(device)
    representation.to(dev)
    setup = gd_setup(config, n, c, h, w)
    r = config.restarts
    if start is None:
        x0 = setup.starts
    else:
        start = to_grey(start) if config.grey else start
        if tuple(start.shape) != (n, c, h, w):
            raise ValueError(f"start must be ({n}, {c}, {h}, {w}) images in [0, 1], got {tuple(start.shape)}")
        x0 = setup.pixels.from_image(start.float()).repeat_interleave(r, dim=0)
    term = data_term(setup.pixels, dev)
    if r > 1:
        term = _per_restart(term, r)
    if config.jitter:
        term = _jittered(term, config.jitter, setup.generators)

    def energy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        data = term(x)
        return data + setup.prior(x), data

    x0 = x0.to(dev)
    bounds = setup.pixels.bounds(x0) if config.clamp else None
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    tic = time.perf_counter()
    x, totals, data = descend(x0, energy, config.schedule, momentum=config.momentum, step_scale=setup.sigma0**2,
                              bounds=bounds, callback=callback, progress=progress)
    images = setup.pixels.to_image(x).clamp(0, 1)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - tic
    t = totals.shape[0]
    return GDResult(images=images.view(n, r, c, h, w).cpu(), energy=totals.view(t, n, r).cpu(),
                    data_loss=data.view(t, n, r).cpu(), seconds=seconds, device=str(dev))
