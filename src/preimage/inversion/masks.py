"""Masks over Φ's output that select which neurons the data term counts."""
from __future__ import annotations

from typing import Any, Sequence

import torch


def window_mask(feature_shape: Sequence[int], size: int) -> torch.Tensor:
    """A 0/1 mask keeping the central ``size`` × ``size`` spatial window of every channel.

    Args:
        feature_shape: Φ's output shape without the batch, ``(C, h, w)``.
        size: window side in neurons (clipped to the map); centred as in M&V's code.

    Returns:
        ``(C, h, w)`` float mask.
    """
    if len(feature_shape) != 3:
        raise ValueError(f"a spatial window needs a (C, h, w) feature map, got shape {tuple(feature_shape)}")
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    c, h, w = feature_shape
    mask = torch.zeros(c, h, w)
    ny, nx = min(size, h), min(size, w)
    y0, x0 = (h - ny + 1) // 2, (w - nx + 1) // 2  # MATLAB's ceil((n - k + 1) / 2), 0-based
    mask[:, y0:y0 + ny, x0:x0 + nx] = 1
    return mask


def channel_mask(feature_shape: Sequence[int], channels: Sequence[int]) -> torch.Tensor:
    """A 0/1 mask keeping only the listed channels (dimension 0 of ``feature_shape``)."""
    n = feature_shape[0]
    bad = [c for c in channels if not 0 <= c < n]
    if bad or not channels:
        raise ValueError(f"channels must be a non-empty list of indices in [0, {n}), got {list(channels)}")
    mask = torch.zeros(*feature_shape)
    mask[list(channels)] = 1
    return mask


def build_mask(spec: Any, representation: Any, height: int, width: int) -> torch.Tensor | None:
    """The mask config (``null``, ``{window: k}`` or ``{channels: [...]}``) as a tensor over Φ's output."""
    if spec is None:
        return None
    shape = representation.output_shape(height, width)
    spec = dict(spec)
    if set(spec) == {"window"}:
        return window_mask(shape, int(spec["window"]))
    if set(spec) == {"channels"}:
        return channel_mask(shape, [int(c) for c in spec["channels"]])
    raise ValueError(f"mask must be null, {{window: k}} or {{channels: [...]}}, got {spec}")
