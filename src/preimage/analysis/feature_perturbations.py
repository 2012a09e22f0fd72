r"""Feature-space maths of the learned-inverter studies (Dosovitskiy & Brox, CVPR 2016, §5).

A "dimension" is one entry of one image's features, all entries after the batch dim:
``(channel, y, x)`` for spatial maps, the component for vectors.
"""
from __future__ import annotations

import torch

__all__ = ["binarize", "drop_dimensions", "interpolate_features", "sample_features"]


def binarize(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Keep each entry's sign and set every magnitude to one constant per image that keeps ``‖Φ‖`` (D&B).

    ``Φ'_i = sign(Φ_i) · c_i`` with ``c_i = ‖Φ_i‖ / sqrt(#{d : Φ_id ≠ 0})``; zero entries stay zero, so
    non-negative features take the values ``{0, c_i}`` and signed ones ``{−c_i, 0, c_i}``.

    Args:
        features: tensor of shape :math:`(B, *)`, any float dtype.

    Returns:
        ``(binarized, c)``: binarized of the shape and dtype of ``features``, and ``c`` of shape :math:`(B,)`
        (0 for an all-zero image).

    Example:
        >>> b, c = binarize(torch.tensor([[0.0, 3.0, 4.0]]))
        >>> b, c
        (tensor([[0.0000, 3.5355, 3.5355]]), tensor([3.5355]))
    """
    flat = features.flatten(1)
    count = (flat != 0).sum(1)
    c = flat.norm(dim=1) / count.clamp_min(1).to(flat.dtype).sqrt()
    return (flat.sign() * c[:, None]).view_as(features), c


def drop_dimensions(features: torch.Tensor, fraction: float = 0.5, *,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Zero a random ``fraction`` of each image's dimensions, then rescale the rest to keep ``‖Φ‖`` (D&B).

    Exactly ``round(fraction · D)`` of each image's ``D`` entries, drawn uniformly without replacement per
    image, are zeroed; the rest are scaled by ``‖Φ_i‖ / ‖kept part of Φ_i‖`` (not inverted dropout's
    ``1 / (1 − fraction)``), or left at 0 if all zero.

    Args:
        features: tensor of shape :math:`(B, *)`.
        fraction: share of dimensions dropped, in ``[0, 1]``.
        generator: CPU generator for the draw; the global RNG if ``None``.

    Returns:
        ``(dropped, kept)``: tensors of the shape of ``features``; ``kept`` is a bool mask, ``True`` where kept.

    Raises:
        ValueError: ``fraction`` is not a number in ``[0, 1]``.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ValueError(f"dropout must be a fraction in [0, 1], got {fraction!r}")
    flat = features.flatten(1)
    b, d = flat.shape
    k = round(fraction * d)
    order = torch.rand(b, d, generator=generator).argsort(1)[:, :k].to(flat.device)
    kept = torch.ones(b, d, dtype=torch.bool, device=flat.device).scatter_(1, order, False)
    masked = flat * kept
    after = masked.norm(dim=1)
    scale = torch.where(after > 0, flat.norm(dim=1) / after.clamp_min(torch.finfo(after.dtype).tiny),
                        torch.ones_like(after))
    return (masked * scale[:, None]).view_as(features), kept.view_as(features)


def interpolate_features(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    r"""Linear interpolation ``(1 − t)·a + t·b``: a copy of ``a`` at ``t = 0``, of ``b`` at ``t = 1``.

    Args:
        a: tensor of any shape :math:`(*)`.
        b: tensor of the shape of ``a``.
        t: weight; outside ``[0, 1]`` extrapolates.

    Returns:
        tensor of the shape of ``a``.

    Raises:
        ValueError: ``a`` and ``b`` differ in shape.
    """
    if a.shape != b.shape:
        raise ValueError(f"interpolate: the two images' features differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    return (1 - t) * a + t * b


def sample_features(bank: torch.Tensor, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Draw ``n`` feature vectors dimension-wise independently from the empirical distribution of ``bank``.

    Entry ``d`` of sample ``s`` is ``bank[j, d]`` with ``j`` uniform over the ``M`` images, drawn anew per
    ``(s, d)``: each dimension keeps its marginal, the dependences between dimensions are lost.

    Args:
        bank: tensor of shape :math:`(M, *)`, the features of ``M`` images (spatial maps
            :math:`(M, C, h, w)`, so the images must share one size).
        n: number of samples.
        generator: CPU generator for the draw; the global RNG if ``None``.

    Returns:
        tensor of shape :math:`(n, *)`, on ``bank``'s device and dtype.
    """
    flat = bank.flatten(1)
    m, d = flat.shape
    index = torch.randint(m, (n, d), generator=generator).to(flat.device)
    return flat.gather(0, index).view(n, *bank.shape[1:])
