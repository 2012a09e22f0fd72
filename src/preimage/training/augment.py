"""Training-time augmentations that wrap a source, item by item, as deterministically as the sources are.

Representations that normalize away intensity (DSIFT's gradients ignore an offset and its unit descriptors
a gain; HOG's block normalization likewise) cannot tell a dark crop from a bright one or a foggy one from a
stark one, so an image-MSE decoder can only guess the brightness and contrast. Trained on a handful of
photos it guesses them from the pattern (the built-in ``coins`` came out with a mean of 0.2 instead of
0.38), and dead leaves coloured from a photo palette are all stark. :class:`IntensityJitter` spreads both
over the training crops, so that the decoder learns the guess that is right on average. The mean of a
high-contrast crop can barely move without leaving [0, 1], so brightness jitter alone leaves such crops'
brightness to the pattern; lowering their contrast too frees it (checkpoints/README.md has the numbers).
``grey_fraction`` turns a share of the colour crops grey (each channel the luminance): photographs in black and
white are common, few of the training photos are, and a decoder of a deep layer that has seen few tints a grey
photo with the training photos' average colour.
``colour`` also moves each channel's mean on its own, so that no crop's colour can be memorized: a decoder of
a pooled CNN vector must then read the colour from the features. It helped the pool decoder while it had ~20
photos and hurt once it had a few hundred (checkpoints/README.md), so no shipped config uses it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..images import to_grey

__all__ = ["IntensityJitter", "check_jitter"]

_INTENSITY, _COLOUR, _GREY = 5, 6, 7  # random-stream codes, apart from the sources' codes


def check_jitter(contrast: Sequence[float], brightness: float, colour: float = 0.0,
                 grey_fraction: float = 0.0) -> tuple[tuple[float, float], float, float, float]:
    """``(low, high)``, ``brightness``, ``colour`` and ``grey_fraction`` as floats, or ``ValueError`` unless
    ``0 < low <= high <= 1`` and ``0 <= brightness, colour, grey_fraction <= 1``."""
    values = tuple(float(c) for c in contrast)
    if len(values) != 2 or not 0.0 < values[0] <= values[1] <= 1.0:
        raise ValueError(f"contrast must be (low, high) with 0 < low <= high <= 1, got {tuple(contrast)}")
    for name, value in (("brightness", brightness), ("colour", colour), ("grey_fraction", grey_fraction)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    return values, float(brightness), float(colour), float(grey_fraction)


class IntensityJitter(Dataset):
    """Item ``k`` of ``source``, made grey or not, with a new contrast and mean, ``x' = m' + c · (x − m)``, then each
    channel moved.

    Args:
        source: any map-style dataset of ``(C, S, S)`` images in ``[0, 1]`` (e.g. an ``ImageSource``).
        contrast: ``(low, high)``, ``0 < low <= high <= 1``: ``c`` is log-uniform in it.
        brightness: ``m'`` is uniform in ``[m − brightness, m + brightness]`` cut to the means that keep
            ``x'`` inside ``[0, 1]`` (``m`` is the item's mean over all pixels and channels, so hue is kept);
            0 keeps the mean.
        colour: then each channel of ``x'`` is moved by its own offset, uniform in ``[−colour, colour]`` cut to
            the offsets that keep that channel inside ``[0, 1]``; 0 (the default) moves none.
        grey_fraction: first, a colour item is made grey (every channel ``0.299 R + 0.587 G + 0.114 B``) with this
            probability; 0 (the default) makes none grey.
        seed: whether item ``k`` is made grey, ``c``, ``m'`` and its channel offsets are drawn from ``(seed, k)``
            alone.

    Shape:
        ``(C, S, S)`` → ``(C, S, S)``; ``len`` is ``len(source)``.
    """

    def __init__(self, source: Dataset, contrast: Sequence[float] = (1.0, 1.0), brightness: float = 0.0,
                 seed: int = 0, *, colour: float = 0.0, grey_fraction: float = 0.0) -> None:
        self.source, self.seed = source, int(seed)
        self.contrast, self.brightness, self.colour, self.grey_fraction = check_jitter(
            contrast, brightness, colour, grey_fraction)

    def __len__(self) -> int:
        return len(self.source)

    def draw(self, k: int, x: torch.Tensor) -> tuple[float, float]:
        """The contrast factor ``c`` and the offset ``m' − c · m`` of item ``k``, whose image is ``x``."""
        low, high = self.contrast
        u, v = np.random.default_rng([self.seed, _INTENSITY, int(k)]).random(2)
        c = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        m, lo, hi = x.mean().item(), x.min().item(), x.max().item()
        first = max(m - self.brightness, -c * (lo - m))  # m' + c·(lo − m) >= 0
        last = min(m + self.brightness, 1.0 - c * (hi - m))  # m' + c·(hi − m) <= 1
        return c, first + v * max(0.0, last - first) - c * m

    def channel_offsets(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """``(C, 1, 1)``: the offset of each channel of item ``k``, whose image after the contrast and mean is ``x``."""
        u = torch.from_numpy(np.random.default_rng([self.seed, _COLOUR, int(k)]).random(x.shape[0])).to(x.dtype)
        first = torch.clamp(-x.amin(dim=(1, 2)), min=-self.colour)  # the channel's minimum + offset >= 0
        last = torch.clamp(1.0 - x.amax(dim=(1, 2)), max=self.colour)  # its maximum + offset <= 1
        return (first + u * (last - first).clamp(min=0.0)).view(-1, 1, 1)

    def made_grey(self, k: int) -> bool:
        """Whether item ``k`` is made grey (drawn with probability ``grey_fraction``)."""
        return bool(np.random.default_rng([self.seed, _GREY, int(k)]).random() < self.grey_fraction)

    def __getitem__(self, k: int) -> torch.Tensor:
        x = self.source[k]
        if x.shape[0] == 3 and self.grey_fraction and self.made_grey(k):
            x = to_grey(x).expand_as(x)
        c, offset = self.draw(k, x)
        x = c * x + offset
        if self.colour:
            x = x + self.channel_offsets(k, x)
        return x.clamp(0.0, 1.0)  # the clamp only absorbs rounding
