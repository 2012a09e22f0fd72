"""A deep layer's decoder stacked on a shallower layer's trained one: a small network learns the way back from
the deep features to the shallow ones, and the shallow decoder reads what it gives.

A decoder trained from the deep features alone, on a few hundred photographs, learns their colours by heart
(EfficientNet-Lite0's stage7 and head); the shallow layer's decoder (stage6) reads colour from its features on
photos it never saw. The way back from one layer to the one below is local (a block of 3×3 and 1×1
convolutions) and every feature cell of every crop is one example of it, so it is learned from the same crops
without learning the photos. Both must lie on the same grid (the same ``grid_step`` and offsets).

:func:`build_adapter` makes the network: ``convs`` 3×3 (or 1×1) convolutions of ``width`` channels with LeakyReLU, then
a 1×1 convolution to the shallow features' channels, without bias. :func:`fit_adapter` fits it to the shallow
decoder's input (its ``prepare``-d features) by mean squared error. :func:`stack_decoder` folds the two into one
:class:`~preimage.inversion.networks.Decoder` of the deep features with ``convs`` more ``pre_convs``: the 1×1
convolution and the shallow decoder's first 3×3 convolution compose into one 3×3 convolution, exactly, since
both are linear and the 1×1 one has no bias (a bias would be added at the zero-padded border too). The result
is an ordinary bundle, fine-tuned end to end with ``preimage train init=BUNDLE`` (``scripts/stack_decoder.py``).
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..inversion.networks import Decoder, init_decoder_

__all__ = ["build_adapter", "fit_adapter", "stack_decoder"]


def build_adapter(in_channels: int, out_channels: int, width: int, convs: int = 2, kernel: int = 3,
                  leaky_slope: float = 0.2) -> nn.Sequential:
    """``convs`` × (``kernel``×``kernel`` convolution to ``width`` channels, LeakyReLU; ``kernel`` 3, or 1 where the
    deep layer is a per-cell map of the shallow one and fewer weights learn it from the same crops), then a
    bias-free 1×1 convolution to ``out_channels``; He-initialized as a decoder's layers.

    Shape:
        :math:`(B, C_{in}, h, w)` → :math:`(B, C_{out}, h, w)`.
    """
    if convs < 1 or kernel not in (1, 3):
        raise ValueError(f"an adapter needs at least one convolution of kernel 1 or 3, got convs={convs}, kernel={kernel}")
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(convs):
        layers += [nn.Conv2d(channels, width, kernel, padding=kernel // 2), nn.LeakyReLU(leaky_slope)]
        channels = width
    adapter = nn.Sequential(*layers, nn.Conv2d(channels, out_channels, 1, bias=False))
    init_decoder_(nn.ModuleList(layers), leaky_slope)
    nn.init.normal_(adapter[-1].weight, 0.0, 1.0 / math.sqrt(channels))
    return adapter


def fit_adapter(adapter: nn.Module, deep: torch.Tensor, shallow: torch.Tensor, *, steps: int, batch_size: int = 64,
                lr: float = 1e-3, weight_decay: float = 1e-4, generator: torch.Generator | None = None) -> float:
    """Fit ``adapter`` in place so that ``adapter(deep) ≈ shallow`` (mean squared error; AdamW, one-cycle rate).

    Args:
        deep: the deep layer's features, scaled as the stacked decoder reads them, :math:`(N, C_d, h, w)`.
        shallow: what the shallow decoder's first convolution reads for the same crops, :math:`(N, C_s, h, w)`.
        steps: AdamW steps, each on ``batch_size`` items drawn at random (``generator``).

    Returns:
        the mean squared error over all ``N`` items after the last step.
    """
    if deep.shape[0] != shallow.shape[0] or deep.shape[-2:] != shallow.shape[-2:]:
        raise ValueError(f"fit_adapter: deep {tuple(deep.shape)} and shallow {tuple(shallow.shape)} features must "
                         "be of the same crops on the same grid")
    optimizer = torch.optim.AdamW(adapter.parameters(), lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.05)
    adapter.train()
    with torch.enable_grad():
        for _ in range(steps):
            pick = torch.randint(len(deep), (batch_size,), generator=generator)
            loss = (adapter(deep[pick]) - shallow[pick]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    adapter.eval()
    with torch.no_grad():
        return float(sum((adapter(d) - s).pow(2).sum() for d, s in zip(deep.split(256), shallow.split(256)))
                     / shallow.numel())


def stack_decoder(adapter: nn.Sequential, shallow: Decoder, deep_feature_shape: tuple[int, int, int],
                  input_scale: float) -> Decoder:
    """One decoder of the deep features: ``adapter`` (:func:`build_adapter`, fitted) folded into ``shallow``.

    Args:
        adapter: ``convs`` convolutions of ``shallow.config.width`` channels, then a bias-free 1×1
            convolution to ``shallow``'s input channels.
        shallow: a trained decoder of spatial features (with at least one ``pre_convs``).
        deep_feature_shape: ``(C, h, w)`` of the deep features at ``shallow.image_size``.
        input_scale: what the deep features are multiplied by before the adapter.

    Returns:
        a :class:`Decoder` with ``pre_convs`` larger by ``convs`` and ``input_scale`` replaced (no input
        dropout), whose output at every size is ``shallow``'s for the features that its ``prepare`` turns into
        ``adapter(input_scale · features)``.
    """
    convs = (len(adapter) - 1) // 2
    config = shallow.config
    first, last = adapter[0], adapter[-1]
    if shallow.fc is not None or config.pre_convs < 1 or config.paint_margin or config.input_log:
        raise ValueError("stack_decoder: the shallow decoder must read spatial features with pre_convs >= 1, "
                         "without paint_margin (its zero cells would pass through the adapter) or input_log")
    if len(deep_feature_shape) != 3 or first.in_channels != deep_feature_shape[0] or \
            last.out_channels != shallow.feature_shape[0] or last.bias is not None or \
            any(m.out_channels != config.width for m in adapter[:-1] if isinstance(m, nn.Conv2d)) or \
            any(m.negative_slope != config.leaky_slope for m in adapter if isinstance(m, nn.LeakyReLU)):
        raise ValueError(f"stack_decoder: the adapter must map {deep_feature_shape[0]} channels through "
                         f"{config.width} to {shallow.feature_shape[0]} with the decoder's LeakyReLU slope "
                         f"{config.leaky_slope}, its last 1×1 convolution without bias")
    stacked = Decoder(tuple(deep_feature_shape), shallow.image_size,
                      replace(config, pre_convs=config.pre_convs + convs, input_scale=float(input_scale),
                              input_dropout=0.0))
    state = {f"layers.{k}": F.pad(v, [(3 - v.shape[-1]) // 2] * 4) if v.dim() == 4 else v  # 1×1: a 3×3's centre
             for k, v in adapter[:-1].state_dict().items()}
    shift = 2 * convs
    for key, value in shallow.layers.state_dict().items():
        index, name = key.split(".", 1)
        state[f"layers.{int(index) + shift}.{name}"] = value
    into = shallow.layers[0].weight  # (width, C_s, 3, 3) after (C_s, width, 1, 1): one (width, width, 3, 3)
    state[f"layers.{shift}.weight"] = torch.einsum("ocyx,ci->oiyx", into, last.weight[:, :, 0, 0])
    stacked.load_state_dict(state)
    return stacked
