"""Reconstruction metrics: the single source of every score (feature_error, normalized_loss, image_error, PSNR, SSIM),
and :func:`score`, the one scorer every job uses.

Every per-image metric returns a float64 tensor of shape ``(n,)``, one value per image, on the
device of its input; :func:`mean_std` turns that into the ``mean ± std`` reported over an image set.

Convention:
    - ``feature_error`` and ``image_error`` are *fractions*: multiply by 100 for the % of M&V Table 1.
    - Sums and norms are computed in float64 whatever the input dtype.
    - Inputs are either one batched tensor ``(n, ...)`` or a sequence of ``n`` per-image tensors whose
      sizes may differ between images (images of different sizes). See :func:`feature_error` for how
      different sizes are matched (zero-padding, as M&V's released code does).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import torch

from .config import METRICS, check_metrics

if TYPE_CHECKING:
    from .representations import Representation

Batch = Union[torch.Tensor, Sequence[torch.Tensor]]

__all__ = [
    "feature_error", "flat_colour", "normalized_loss", "image_error", "psnr", "ssim", "mean_std", "mean_pairwise_sq_dist",
    "representation_features", "same_size_batches", "score", "scored_part",
    "scoring_features",
]


def _f64(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float64 (moved to the CPU on devices without float64, e.g. MPS)."""
    if t.device.type == "mps":
        t = t.cpu()
    return t.to(torch.float64)


def _matlab_flat(t: torch.Tensor) -> torch.Tensor:
    """Flatten one image's ``(C, h, w)`` / ``(h, w)`` / ``(D,)`` tensor in MATLAB's column-major order.

    Our ``(C, h, w)`` is MATLAB's ``h × w × C`` array; its ``(:)`` runs y fastest, then x, then channel,
    which is the row-major flattening of ``(C, w, h)``.
    """
    if t.dim() >= 2:
        t = t.transpose(-1, -2)
    return t.reshape(-1)


def _pairs(name: str, a: Batch, b: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Check two batches and return them as lists of flat float64 per-image vectors."""
    for arg, x in (("first", a), ("second", b)):
        if isinstance(x, torch.Tensor):
            if x.dim() < 1:
                raise ValueError(f"{name}: the {arg} argument must be (n, ...) or a list of tensors, got a 0-d tensor")
        elif not isinstance(x, Sequence) or not all(isinstance(t, torch.Tensor) for t in x):
            raise ValueError(f"{name}: the {arg} argument must be a tensor (n, ...) or a list of tensors")
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if len(a) != len(b):
        raise ValueError(f"{name}: {len(a)} reconstructions but {len(b)} references")
    if len(a) == 0:
        raise ValueError(f"{name}: no images given")
    xs, ys = [], []
    for i, (x, y) in enumerate(zip(a, b)):
        if x.numel() != y.numel():
            raise ValueError(
                f"{name}: image {i}: reconstruction has {x.numel()} values but its reference has {y.numel()} "
                f"(shapes {tuple(x.shape)} vs {tuple(y.shape)})"
            )
        xs.append(_matlab_flat(_f64(x)))
        ys.append(_matlab_flat(_f64(y)))
    return xs, ys


def _squared_errors(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
    """``‖x_i − y_i‖²`` per image, float64 ``(n,)``."""
    return torch.stack([(x - y).square().sum() for x, y in zip(xs, ys)])


def mean_pairwise_sq_dist(vectors: list[torch.Tensor]) -> torch.Tensor:
    """Mean over all ordered pairs ``(j, k)``, ``j = k`` included, of ``‖v_j − v_k‖²`` (0-d float64).

    Vectors of different lengths are zero-padded at the end to the longest, as M&V's code does.
    Computed without forming the pairs: ``(1/n²) Σ_jk ‖v_j − v_k‖² = (2/n) Σ_j ‖v_j − v̄‖²``,
    one image in memory at a time.
    """
    n, d = len(vectors), max(v.numel() for v in vectors)
    mean = torch.zeros(d, dtype=torch.float64, device=vectors[0].device)
    for v in vectors:
        mean[: v.numel()] += v
    mean /= n
    total = torch.zeros((), dtype=torch.float64, device=mean.device)
    for v in vectors:
        m = v.numel()
        total = total + (v - mean[:m]).square().sum() + mean[m:].square().sum()
    return 2.0 * total / n


def _relative_to_spread(name: str, a: Batch, b: Batch) -> torch.Tensor:
    xs, ys = _pairs(name, a, b)
    spread = mean_pairwise_sq_dist(ys)
    if not spread > 0:
        raise ValueError(
            f"{name} needs at least 2 different images: the mean pairwise squared distance between the "
            f"{len(ys)} reference(s) is {float(spread)} (a single image, or identical images)"
        )
    return _squared_errors(xs, ys) / spread


def feature_error(features: Batch, reference: Batch) -> torch.Tensor:
    r"""M&V's Table-1 feature reconstruction error, as computed by their released code.

    .. math::
        err_i = \|Φ(x^*_i) − Φ(x_{0,i})\|^2 / N^2, \quad
        N^2 = \frac{1}{n^2} \sum_{j,k} \|Φ(x_{0,j}) − Φ(x_{0,k})\|^2

    (deep-goggle ``experiment_shallow_quantitative.m``: ``mean(pdist2(y0', y0').^2)`` over all
    ordered pairs, ``j = k`` included).

    Args:
        features: the reconstructions' features Φ(x*_i): a tensor ``(n, ...)`` or a list of ``n``
            per-image tensors ``(C, h, w)`` / ``(D,)``, whose sizes may differ between images.
        reference: the originals' features Φ(x0_i), same layout; ``reference[i]`` has as many
            values as ``features[i]``.

    Returns:
        ``(n,)`` float64, a fraction (× 100 for the % of M&V Table 1). Report ``mean_std(err)``.

    Raises:
        ValueError: mismatched inputs, or ``N² = 0`` (fewer than 2 different reference images).

    Convention:
        Images of different sizes give features of different lengths: each image's features are
        flattened in MATLAB's column-major order (our ``(C, h, w)`` is their ``h × w × C``: y fastest,
        then x, then channel) and zero-padded at the end to the longest, exactly as M&V's code pads
        ``res.y(:)``; this only affects ``N²``. For HOG, M&V score the 27 non-texture dims: pass
        ``representation.scoring_view(Φ)``.

    Example:
        >>> ref = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
        >>> feature_error(ref + torch.tensor([[1.0, 0.0], [0.0, 0.0]]), ref)
        tensor([0.5000, 0.0000], dtype=torch.float64)
    """
    return _relative_to_spread("feature_error", features, reference)


def image_error(images: Batch, reference: Batch) -> torch.Tensor:
    r"""Image-space analogue of :func:`feature_error`, as D&B report it.

    ``err_i = ‖x*_i − x0_i‖² / ((1/n²) Σ_jk ‖x0_j − x0_k‖²)``, same pair convention (``j = k`` included)
    and the same flattening / zero-padding for images of different sizes.

    Args:
        images: reconstructions, ``(n, C, H, W)`` or a list of ``(C, H, W)``, in ``[0, 1]``.
        reference: the originals, same layout.

    Returns:
        ``(n,)`` float64, a fraction (unitless; the pixel range cancels out).
    """
    return _relative_to_spread("image_error", images, reference)


def normalized_loss(features: Batch, reference: Batch) -> torch.Tensor:
    r"""``‖Φ(x*_i) − Φ(x0_i)‖² / ‖Φ(x0_i)‖²`` per image: the data term that GD minimizes.

    Args:
        features: Φ(x*), ``(n, ...)`` or a list of per-image tensors.
        reference: Φ(x0), same layout.

    Returns:
        ``(n,)`` float64, a fraction (× 100 for M&V Table 3's %).

    Raises:
        ValueError: mismatched inputs, or a reference whose features are all zero.
    """
    xs, ys = _pairs("normalized_loss", features, reference)
    norms = torch.stack([y.square().sum() for y in ys])
    zero = (norms == 0).nonzero().flatten().tolist()
    if zero:
        raise ValueError(f"normalized_loss: the reference features of image(s) {zero} are all zero")
    return _squared_errors(xs, ys) / norms


def _image_pairs(name: str, images: Batch, reference: Batch,
                 float32: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Checked float64 ``(b, C, H, W)`` batches: one for two 4-d tensors, else one per image.

    ``float32``: unless an input is float64, the batches are float32 instead.
    """
    tensors = [t for batch in (images, reference) for t in ([batch] if isinstance(batch, torch.Tensor) else batch)]
    wide = any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tensors)
    convert = (lambda t: t.float()) if float32 and not wide else _f64
    if isinstance(images, torch.Tensor) and isinstance(reference, torch.Tensor):
        if images.dim() == 3:
            images, reference = images[None], reference[None]
        if images.dim() != 4 or images.shape != reference.shape or images.shape[0] == 0:
            raise ValueError(f"{name}: expected two (n, C, H, W) tensors of one shape, got "
                             f"{tuple(images.shape)} and {tuple(reference.shape)}")
        return [(convert(images), convert(reference))]
    if len(images) != len(reference) or len(images) == 0:
        raise ValueError(f"{name}: need as many references as images (and at least one): "
                         f"{len(images)} vs {len(reference)}")
    out = []
    for i, (x, y) in enumerate(zip(images, reference)):
        if x.shape != y.shape or x.dim() != 3:
            raise ValueError(f"{name}: image {i}: expected two (C, H, W) tensors of one shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        out.append((convert(x)[None], convert(y)[None]))
    return out


def psnr(images: Batch, reference: Batch) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB, for images in ``[0, 1]`` (as torchmetrics', data_range=1).

    ``10·log10(1 / MSE)``, MSE over all pixels and channels of the image; ``inf`` for a perfect copy.

    Args:
        images: ``(n, C, H, W)`` (or a list of ``(C, H, W)``, sizes may differ), grey or colour.
        reference: the originals, same layout.

    Returns:
        ``(n,)`` float64, dB.
    """
    vals = [10 * torch.log10(1 / (x - y).square().mean(dim=(1, 2, 3))) for x, y in _image_pairs("psnr", images, reference)]
    return torch.cat(vals)


#: SSIM's window (Wang et al. 2004, torchmetrics' and scikit-image's defaults): 11 taps of a Gaussian of σ 1.5
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def _gaussian_blur(t: torch.Tensor) -> torch.Tensor:
    """``(b, k, H, W)`` → the same shape: each channel, mirrored by 5 pixels at its borders (reflect: the edge
    pixel not repeated), convolved with the normalized 11×11 Gaussian of σ 1.5, as two 1-d passes (the 2-d
    kernel is their outer product)."""
    taps = torch.arange(SSIM_WINDOW, dtype=t.dtype, device=t.device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-0.5 * (taps / SSIM_SIGMA) ** 2)
    g = g / g.sum()
    k, half = t.shape[1], SSIM_WINDOW // 2
    t = torch.nn.functional.pad(t, (half, half, half, half), mode="reflect")
    t = torch.nn.functional.conv2d(t, g.view(1, 1, -1, 1).expand(k, 1, -1, 1), groups=k)
    return torch.nn.functional.conv2d(t, g.view(1, 1, 1, -1).expand(k, 1, 1, -1), groups=k)


def ssim(images: Batch, reference: Batch) -> torch.Tensor:
    """Structural similarity per image for images in ``[0, 1]`` (Wang et al. 2004; torchmetrics' defaults).

    Local means, variances (clamped at 0) and covariance under an 11×11 Gaussian window (σ 1.5) at every
    pixel, the image mirrored at its borders, ``C1 = 0.01²``, ``C2 = 0.03²``; the SSIM map averaged over pixels
    and channels. Equals torchmetrics' ``structural_similarity_index_measure(data_range=1)``, computed with a
    separable window (5× fewer operations), in float64 when an input is float64 and otherwise, as torchmetrics
    does, in float32 (faster on CPU, where float64 convolutions have no fast path; within 1e-5 of float64).

    Args:
        images: ``(n, C, H, W)`` (or a list of ``(C, H, W)``), grey or colour; at least 11×11 pixels.
        reference: the originals, same layout.

    Returns:
        ``(n,)`` float64, unitless, 1 for identical images.
    """
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for x, y in _image_pairs("ssim", images, reference, float32=True):
        if min(x.shape[-2:]) < SSIM_WINDOW:
            raise ValueError(f"ssim: images must be at least 11x11 pixels, got {tuple(x.shape[-2:])}")
        mu_x, mu_y, xx, yy, xy = _gaussian_blur(torch.cat([x, y, x * x, y * y, x * y], dim=1)).chunk(5, dim=1)
        var_x, var_y, cov = (xx - mu_x ** 2).clamp(min=0), (yy - mu_y ** 2).clamp(min=0), xy - mu_x * mu_y
        index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
        vals.append(index.flatten(1).mean(dim=1).double())
    return torch.cat(vals)


def flat_colour(images: torch.Tensor, *, shared: bool = False) -> torch.Tensor:
    """The constant baselines: each image ``(N, C, H, W)`` replaced by a flat image of its own mean colour, or with
    ``shared`` by one flat image of the whole set's mean colour (the best constant image in L2)."""
    return images.mean(dim=(0, 2, 3) if shared else (2, 3), keepdim=True).expand_as(images)


def mean_std(values: torch.Tensor | Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1, as MATLAB's ``std``); std is 0 for one value.

    Args:
        values: ``(n,)`` tensor or sequence of numbers, ``n ≥ 1``.

    Returns:
        ``(mean, std)`` as Python floats, in the unit of ``values``.
    """
    if isinstance(values, torch.Tensor):
        v = values.detach().to("cpu", torch.float64).reshape(-1)
    else:
        v = torch.tensor([float(x) for x in values], dtype=torch.float64)
    if v.numel() == 0:
        raise ValueError("mean_std: no values")
    mean = float(v.mean())
    if v.numel() == 1:
        return mean, 0.0 if math.isfinite(mean) else math.nan
    return mean, float(v.std(correction=1))


def representation_features(representation: Representation, images: Sequence[torch.Tensor],
                            device: torch.device, batch_size: int = 16) -> list[torch.Tensor]:
    """Φ of each ``(C, H, W)`` image, on the CPU (images of one size are run ``batch_size`` at a time)."""
    rep = representation.to(device)
    features: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for chunk in same_size_batches(images, batch_size):
            features.update(zip(chunk, rep(torch.stack([images[k] for k in chunk]).to(device)).cpu()))
    return [features[k] for k in range(len(images))]


def scored_part(representation: Representation, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """:meth:`Representation.scoring_view` of each image's features (one image each, no batch dimension)."""
    return [representation.scoring_view(f[None])[0] for f in features]


def scoring_features(representation: Representation, images: Sequence[torch.Tensor],
                     device: torch.device, batch_size: int = 16) -> list[torch.Tensor]:
    """The scored part of Φ (:meth:`Representation.scoring_view`) of each ``(C, H, W)`` image, on the CPU."""
    return scored_part(representation, representation_features(representation, images, device, batch_size))


def same_size_batches(images: Sequence[torch.Tensor], batch_size: int) -> list[list[int]]:
    """Indices of ``images`` in batches of at most ``batch_size`` images of one shape (in order within a shape)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, x in enumerate(images):
        by_shape.setdefault(tuple(x.shape), []).append(k)
    return [members[b:b + batch_size] for members in by_shape.values() for b in range(0, len(members), batch_size)]


#: what :func:`score` can compute, in the order of a record
def score(representation: Representation, originals: list[torch.Tensor], reconstructions: list[torch.Tensor],
          device: torch.device, reference: list[torch.Tensor] | None = None,
          metrics: Sequence[str] = METRICS) -> dict[str, list[float | None]]:
    """The ``metrics`` (all of :data:`METRICS` by default) of one set of (original, reconstruction) pairs (each
    (C, H, W)); feature_error and image_error are None for a set of one image (their normalizer is over the set).

    ``reference``: the originals' :func:`scoring_features`, when the caller scores several reconstructions
    of one set (restarts, methods) and computes them once.
    """
    metrics, n = check_metrics(metrics), len(originals)
    result: dict[str, list[float | None]] = {}
    if {"feature_error", "normalized_loss"} & set(metrics):
        f0 = scoring_features(representation, originals, device) if reference is None else reference
        f1 = scoring_features(representation, reconstructions, device)
    for name in metrics:
        if name == "normalized_loss":
            values = [float(v) for v in normalized_loss(f1, f0)]
        elif name in ("psnr", "ssim"):
            values = [float(v) for v in (psnr if name == "psnr" else ssim)(reconstructions, originals)]
        elif n < 2:
            values = [None] * n
        elif name == "feature_error":
            values = [float(v) for v in feature_error(f1, f0)]
        else:
            values = [float(v) for v in image_error(reconstructions, originals)]
        result[name] = values
    return result
