"""Gradient-descent inversion (Mahendran & Vedaldi 2015/2016), batched and device-agnostic.

Minimizes, independently for every image of a batch,

    E(x) = ‖m ⊙ (Φ(x) − Φ0)‖² / ‖m ⊙ Φ0‖²  +  (λα/2 Σ|x|^α + λTV/2 TV^β(x)) / σ0²

by momentum gradient descent on the pixels x with a piecewise-constant learning rate; the step is
``lr · σ0² · ∇E`` (M&V's released code) and the momentum is reset whenever the learning rate changes.
Alternatives, all in :class:`GDConfig`: a Fourier or pyramid parametrization (:mod:`.parametrization`), Adam in place of
momentum, and random scalings and rotations of the image before Φ at every step (:mod:`.transforms`).

:func:`optimize_gd` is the engine with any objective (:mod:`.objectives`, composable: ``a + 0.1 * b``) in
place of Φ-reconstruction (the analyses' activation maximization and caricatures); :func:`invert_gd` is it
with :class:`~.objectives.FeatureReconstruction`. The engine owns the parametrization (:mod:`.parametrization`),
the prior, the restarts and the jitter; objectives see images in ``[0, 1]``, one row per problem; the loop itself
(momentum or Adam, backtracking) is :func:`~.descent.descend`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..devices import resolve_device, synchronize
from ..images import max_pixels, to_grey
from ..representations import Representation
from .descent import DivergedError, descend
from .learned import shipped_reconstruction
from .objectives import FeatureReconstruction, Objective
from .parametrization import FourierSpace, PixelSpace, PyramidSpace
from .regularizers import ImagePrior
from .settings import SIGMA0_227, GDConfig, config_from_dict
from .transforms import random_affine

__all__ = ["SIGMA0_227", "DivergedError", "GDConfig", "GDResult", "GDSetup", "config_from_dict", "descend",
           "gd_setup", "invert_gd", "jitter_images", "optimize_gd"]


@dataclass
class GDResult:
    """What :func:`invert_gd` returns.

    Attributes:
        images: reconstructions ``(B, R, C, H, W)`` in ``[0, 1]`` (clamped), R = restarts.
        energy: total energy per iteration ``(T, B, R)`` (with ``backtrack``, NaN or infinite at the steps where a
            row blew up and went back).
        data_loss: the data term per iteration ``(T, B, R)``.
        seconds: wall time of the optimization (device synchronized), and of the learned start where there is one.
        device: where it ran.
    """

    images: torch.Tensor
    energy: torch.Tensor
    data_loss: torch.Tensor
    seconds: float
    device: str


def jitter_images(images: torch.Tensor, jitter: int, generators: list[torch.Generator]) -> torch.Tensor:
    """Each image rolled by its own random shift in ``[-jitter, jitter]`` (row k drawn from ``generators[k]``)."""
    return torch.stack([
        torch.roll(xi, shifts=tuple(int(s) for s in torch.randint(-jitter, jitter + 1, (2,), generator=g)), dims=(-2, -1))
        for xi, g in zip(images, generators)
    ])


@dataclass
class GDSetup:
    """What every GD problem of a config shares (see :func:`gd_setup`).

    Attributes:
        space: the parametrization (:class:`PixelSpace`: mean-subtracted 0–255 pixels, :class:`FourierSpace` or
            :class:`PyramidSpace`).
        sigma0: σ0 for this image size, scaling the priors.
        step_scale: what the momentum step multiplies the gradient by: σ0² in pixel space (M&V's units), 1 in
            Fourier space.
        generators: one per row ``i·R + r``, seeded ``seed + r``: the random start (if drawn), then the jitter
            and the random transforms.
        starts: random starts ``(N·R, ...)`` in the space's variables (CPU): pixels of L2 norm σ0 per image (in
            a pyramid's finest level), or a random spectrum (:meth:`FourierSpace.random`), each times
            ``config.start_scale``; ``None`` if not drawn.
        prior: the image prior ``(N·R,)``, on pixels.
    """

    space: PixelSpace | FourierSpace | PyramidSpace
    sigma0: float
    step_scale: float
    generators: list[torch.Generator]
    starts: torch.Tensor | None
    prior: ImagePrior


def gd_setup(config: GDConfig, problems: int, channels: int, height: int, width: int, *,
             random_starts: bool = True) -> GDSetup:
    """The parametrization, σ0, seeded generators, random starts and prior of ``problems`` × ``config.restarts`` rows.

    With ``random_starts=False`` no start is drawn and the generators are left fresh (for a given start).
    """
    pixels = PixelSpace(mean=config.pixel_mean if len(config.pixel_mean) in (1, channels) else config.pixel_mean[:1])
    sigma0 = config.sigma0(channels, height, width)
    generators = [torch.Generator().manual_seed(config.seed + k)
                  for _ in range(problems) for k in range(config.restarts)]
    space: PixelSpace | FourierSpace | PyramidSpace = pixels
    if config.parametrization == "fourier":
        space = FourierSpace(channels, height, width, decay=config.decay, pixel=pixels)
    elif config.parametrization == "pyramid":
        space = PyramidSpace(channels, height, width, levels=config.levels, step=config.level_step, pixel=pixels)
    starts = None
    if random_starts and isinstance(space, FourierSpace):
        starts = torch.stack([space.random(g) for g in generators]) * config.start_scale
    elif random_starts:
        starts = torch.stack([torch.randn(channels, height, width, generator=g) for g in generators])
        starts = starts / starts.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * (sigma0 * config.start_scale)
        if isinstance(space, PyramidSpace):
            starts = space.from_image(pixels.to_image(starts))
    prior = ImagePrior(lambda_alpha=config.lambda_alpha, alpha=config.alpha, lambda_tv=config.lambda_tv,
                       tv_beta=config.tv_beta, sigma0=sigma0)
    step_scale = sigma0**2 if isinstance(space, PixelSpace) else 1.0
    return GDSetup(space, sigma0, step_scale, generators, starts, prior)


def optimize_gd(objective: Objective, shape: Sequence[int], config: GDConfig, *, init: torch.Tensor | None = None,
                random_starts: bool | None = None, device: str | torch.device | None = None, progress: bool = True,
                callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
                stop_on_divergence: bool = False) -> GDResult:
    """Minimize ``objective + prior`` for ``N`` independent problems × ``config.restarts`` by gradient descent.

        E(x) = objective(image(x)) + (λα/2 Σ|x|^α + λTV/2 TV^β(x)) / σ0²

    with :func:`invert_gd`'s conventions (parametrization, σ0, seeded starts, jitter and transforms, clamping);
    all ``N·R`` rows are one batch, so Φ runs once per step.

    Args:
        objective: one row per problem (:mod:`.objectives`); moved to the device and expanded to the ``N·R``
            rows here (row ``i·R + r`` is problem i's restart r).
        shape: ``(N, C, H, W)`` of the images optimized (C is 1 when ``config.grey``).
        config: the hyper-parameters; ``restarts`` rows per problem.
        init: optional starting images ``(N, C, H, W)`` in ``[0, 1]`` (converted to grey if ``config.grey``):
            every restart of problem i starts exactly at ``init[i]``, no noise; default: the seeded random
            starts of :func:`gd_setup`.
        random_starts: draw the seeded random starts (see :func:`gd_setup`); default: only without ``init``
            (:func:`invert_gd`'s convention). ``True`` with ``init`` discards them but leaves the generators
            where a random-start run has them, so the jitter shifts are those of that run.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        progress: show a progress bar.
        callback: ``callback(t, variables (N·R, ...), energy (N·R,))`` after each step (pixels in pixel space; a
            clamped pyramid's variables before that step's clamp, which the next energy makes).
        stop_on_divergence: raise :class:`DivergedError` (``problem`` set) at the first non-finite energy (with
            ``config.backtrack``, the first of a row that has had no finite energy to go back to).

    Returns:
        :class:`GDResult` with ``images`` ``(N, R, C, H, W)`` in ``[0, 1]``.
    """
    if config.surrogate and not isinstance(objective, FeatureReconstruction):
        raise ValueError("gd.surrogate is for inversion (invert_gd descends Φ's stand-in), not for this objective")
    if config.learned_start and not isinstance(objective, FeatureReconstruction):
        raise ValueError("gd.learned_start is for inversion (invert_gd starts from the shipped inverter's "
                         "reconstruction), not for this objective")
    n, c, h, w = (int(s) for s in shape)
    if config.grey:
        c = 1
    dev = resolve_device(device)
    r = config.restarts
    budget = 3 * max_pixels()
    if n * r * c * h * w > budget:
        raise ValueError(f"{n} image(s) x {r} restart(s) of {c}x{h}x{w} optimized at once are {n * r * c * h * w:,} "
                         f"values, over the budget of {budget:,} (3 x PREIMAGE_MAX_PIXELS): fewer restarts, smaller "
                         "batches or images, or raise PREIMAGE_MAX_PIXELS")
    setup = gd_setup(config, n, c, h, w, random_starts=init is None if random_starts is None else random_starts)
    if init is None:
        if setup.starts is None:
            raise ValueError("random_starts=False needs init, the starting images")
        x0 = setup.starts
    else:
        start_images = init.to(dev, torch.float32)
        if config.grey and start_images.dim() == 4 and start_images.shape[1] == 3:
            start_images = to_grey(start_images)
        if tuple(start_images.shape) != (n, c, h, w):
            raise ValueError(f"init must be the starting images (N, C, H, W) = {(n, c, h, w)}, got {tuple(init.shape)}")
        if not bool(torch.isfinite(start_images).all()):
            raise ValueError("init has NaN or infinite values")
        x0 = setup.space.from_image(start_images).repeat_interleave(r, dim=0)
    rows = objective.to(dev).expand(r)
    space = setup.space
    warp = config.scale != (1.0, 1.0) or config.rotate > 0
    seen: dict[str, torch.Tensor] = {}  # the image of the last energy evaluated, for relative_contrast
    # a pyramid's clamp collapses it as the energy does: the clamp after step t is made by step t + 1's energy,
    # one collapse per step instead of two (the same iterates)
    fused_clamp = config.clamp and isinstance(space, PyramidSpace)

    def energy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if fused_clamp and "image" in seen:
            images = plain = seen["image"] = space.clamped_image(x)
        else:
            images = plain = seen["image"] = space.to_image(x)
        if config.jitter:
            images = jitter_images(images, config.jitter, setup.generators)
        if warp:
            images = random_affine(images, setup.generators, scale=config.scale, rotate=config.rotate)
        data = rows(images)
        return data + setup.prior(space.prior_pixels(x, plain)), data

    grey_levels = (space if isinstance(space, PixelSpace) else space.pixel).scale
    start_contrast = setup.sigma0 / math.sqrt(c * h * w)  # M&V's random start's (start_scale 1), in grey levels

    def relative_contrast(x: torch.Tensor) -> torch.Tensor:
        """Each row's contrast (its image's std, in grey levels, at least 1) over M&V's random start's.

        descend calls it right after the energy at ``x``, so the image just seen is ``x``'s (no second collapse)."""
        image = seen["image"].detach().flatten(1)
        # the std written out: torch's CPU std took 2.1 ms for six 224-px images, these two passes 0.1-0.3 ms
        variance = (image - image.mean(dim=1, keepdim=True)).square_().sum(dim=1).div_(image.shape[1] - 1)
        return variance.sqrt_().mul_(grey_levels).clamp_min_(1.0).div_(start_contrast)

    x0 = x0.to(dev)
    synchronize(dev)
    tic = time.perf_counter()
    try:
        x, totals, data = descend(x0, energy, config.schedule, momentum=config.momentum,
                                  step_scale=setup.step_scale, optimizer=config.optimizer,
                                  adam_betas=config.adam_betas, glide=config.glide,
                                  contrast=relative_contrast if config.relative_step else None,
                                  project=space.clamp if config.clamp and not fused_clamp else None,
                                  callback=callback, progress=progress,
                                  stop_on_divergence=stop_on_divergence, backtrack=config.backtrack)
    except DivergedError as err:
        err.problem = err.row // r
        raise
    images = space.to_image(x).clamp(0, 1)
    synchronize(dev)
    seconds = time.perf_counter() - tic
    t = totals.shape[0]
    return GDResult(images=images.view(n, r, c, h, w).cpu(), energy=totals.view(t, n, r).cpu(),
                    data_loss=data.view(t, n, r).cpu(), seconds=seconds, device=str(dev))


def invert_gd(representation: Representation, images: torch.Tensor, config: GDConfig, *,
              mask: torch.Tensor | None = None, device: str | torch.device | None = None,
              progress: bool = True, callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
              init: torch.Tensor | None = None, stop_on_divergence: bool = False) -> GDResult:
    """Reconstruct each image of a batch from its representation by gradient descent.

    Args:
        representation: Φ (frozen).
        images: originals ``(B, C, H, W)`` in ``[0, 1]`` (C = 1 or 3); converted to grey if ``config.grey``.
        config: the hyper-parameters (see :class:`GDConfig`).
        mask: optional weights over Φ's output, broadcastable to ``(B, *Φ shape)``: only those neurons count.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        progress: show a progress bar.
        callback: ``callback(t, variables (B·R, ...), energy (B·R,))`` after each step (pixels in pixel space).
        init: optional starting images ``(B, C, H, W)`` in ``[0, 1]`` (converted to grey if ``config.grey``)
            instead of the random start: every restart of image i starts exactly at ``init[i]``, no noise
            (e.g. a learned inverter's reconstruction, to refine it with a few GD steps). Without it,
            ``config.learned_start`` starts from the shipped inverter's reconstruction where one is shipped and
            no ``mask`` is given (:func:`~.learned.shipped_reconstruction`; its seconds count in the result's).

    Returns:
        :class:`GDResult` with ``images`` ``(B, R, C', H, W)``.

    An image's reconstruction depends only on the image, the config and the seed, not on the rest of
    the batch: every term is per image and the random start of restart r is drawn from ``seed + r``.
    This is :func:`optimize_gd` with the data term :class:`~.objectives.FeatureReconstruction` of Φ(images)
    (with ``config.surrogate``, descended through Φ's stand-in ``representation.surrogate()``, whose features are
    Φ's; the target is Φ(images) either way, so nothing but Φ's features of the originals reaches the descent).
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1|3, H, W), got {tuple(images.shape)}")
    dev = resolve_device(device)
    representation = representation.to(dev)
    descended = (representation.surrogate() if config.surrogate else representation).to(dev)
    originals = images.to(dev, torch.float32)
    if config.grey and originals.shape[1] == 3:
        originals = to_grey(originals)
    with torch.no_grad():
        target = representation(originals)
    if mask is not None:
        mask = mask.to(dev, torch.float32)
        if mask.dim() == target.dim() and mask.shape[0] != target.shape[0]:
            mask = mask[0]  # one (1, ...) mask for every image
    start_seconds = 0.0
    if config.learned_start and init is None and mask is None:  # the decoder reads every feature, not the mask's
        tic = time.perf_counter()
        init = shipped_reconstruction(representation, target, tuple(originals.shape[-2:]), originals.shape[1])
        synchronize(dev)
        start_seconds = time.perf_counter() - tic
    result = optimize_gd(FeatureReconstruction(descended, target, mask), originals.shape, config, init=init,
                         device=dev, progress=progress, callback=callback, stop_on_divergence=stop_on_divergence)
    result.seconds += start_seconds
    return result
