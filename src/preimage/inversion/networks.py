"""Decoder networks of the learned inverter (Dosovitskiy & Brox, CVPR 2016), shaped by the features alone.

:func:`build_decoder` derives the whole architecture from the shape of Φ(x) and the image size, with no
per-layer table:

- spatial features ``(C, h, w)`` (HOG, DSIFT, CNN layers up to pool5): ``pre_convs`` 3×3 convolutions, then
  ``n`` stride-2 up-convolutions, ``n = ceil(log2(stride / SHORTFALL))`` with ``stride = image side /
  feature side`` (or ``cell``); fully convolutional, so a decoder trained on 64×64 crops runs on features of
  any size.
- vector features ``(D,)`` (fc6 … fc8): D&B's three Linear layers (``D → 4096 → 4096 → 256·4·4``), a
  reshape to ``256 × 4 × 4``, then up-convolutions (to 64×64 when no image size is given).

Every up-convolution (4×4, stride 2: exactly ×2) is followed by LeakyReLU and ``stage_convs`` 3×3
convolutions; the channels halve at each one. A last 3×3 convolution gives the image, which is resized
(bilinear) to the size asked for at call time; with ``cell`` (Φ's grid step: HOG's cell, DSIFT's 15 px, a CNN
map's stride) it is resized to ``cell`` pixels per feature cell instead and placed where Φ's grid lies at that
image size (``Representation.grid_offset``: EfficientNet's "SAME" padding moves it at sizes that are not
multiples of the stride), so that every cell's pixels land where Φ saw them at any image size. The rows and columns past the last cell (DSIFT at 192 px: 12 of them) repeat its edge, or,
with ``paint_margin``, are painted by the decoder itself from features padded with zero cells, so that the
image loss trains it to guess that margin from the cells beside it.

The weights start from He et al.'s initialization for LeakyReLU (:func:`init_decoder_`), which keeps the
activations' scale through the 10–13 layers. PyTorch's default initialization shrinks it by about √3 per
layer, so the output starts nearly independent of Φ(x); HOG decoders escape that within a few hundred
steps, but DSIFT decoders (one layer more, 128 channels) stayed at the mean image for over 1000 steps.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_int

__all__ = ["SHORTFALL", "Decoder", "DecoderConfig", "DecoderEnsemble", "build_decoder", "count_upsamplings", "init_decoder_",
           "resize_bilinear"]

#: The decoder's own output may be up to this factor smaller than the image, the rest bridged by the final
#: resize: a CNN map covers less than the image (227 px / 13 cells = 17.5 for a stride-16 layer: 4 up-convs).
SHORTFALL = 1.2
#: Gain of the last layer's initial weights: the first reconstructions vary around mid-grey by a few
#: percent of the pixel range (a gain of 1 would start them at about ±1, far outside the image range).
LAST_GAIN = 0.1
#: ``input_log``'s floor: a probability of 0 (or below float32's smallest) reads as log(1e-30) ≈ −69.
LOG_FLOOR = 1e-30
#: Image size a vector decoder reaches when none is given (D&B: 4×4 → 64×64).
VECTOR_IMAGE_SIZE = (64, 64)


def _check_int(name: str, value: Any, low: int) -> None:
    check_int(f"DecoderConfig.{name}", value, minimum=low)


#: DecoderConfig fields that act in training only: fine-tuning a bundle may change them (the architecture stays)
TRAINING_ONLY = frozenset({"input_dropout"})


@dataclass
class DecoderConfig:
    """Every knob of a decoder (recorded as ``asdict`` in a bundle's manifest).

    Attributes:
        width: channels of the 3×3 convolutions on spatial features; for vector features the channels
            of the ``seed_side × seed_side`` map the Linear layers reshape to (D&B: 256).
        pre_convs: 3×3 convolutions (``width`` channels) on spatial features before upsampling.
        min_width: the channels halve at each up-convolution, down to this.
        stage_convs: 3×3 convolutions after each up-convolution.
        leaky_slope: negative slope of every LeakyReLU (D&B: 0.2).
        fc_widths: hidden widths of the Linear layers for vector features; a last Linear maps to
            ``width · seed_side²`` (D&B: ``(4096, 4096)``, then ``256 · 4 · 4 = 4096``).
        seed_side: side of the map the Linear layers reshape to.
        out_channels: 3 (RGB) or 1 (grey).
        upsamplings: number of ×2 up-convolutions; ``None`` derives it from the feature and image sizes.
        input_scale: the features are multiplied by this first (e.g. 1 / std of the training features).
        input_log: before that, replace each item's features by ``log(max(f, LOG_FLOOR))`` less their mean: for
            class probabilities, the logits up to the shift that the softmax loses. Raw, the small
            probabilities are all near 0, yet they hold what the top classes do not (a fixed first layer,
            without weights; off by default).
        cell: pixels per feature cell when Φ's grid is exact (``Representation.grid_step``: HOG's cell size,
            DSIFT's step); ``None`` resizes the output to the whole image (CNN layers, vectors).
        paint_margin: with ``cell``, pad the features with zero cells on the bottom and right so that the
            decoder paints the pixels past the last cell too (trained by the image loss), instead of
            repeating the last cell's edge pixels there. Off by default: bundles saved before it existed
            were trained without it.
        input_dropout: while training, each feature channel of an item (each entry, for vectors and tokens) is
            zeroed with this probability and the rest scaled by ``1 / (1 − p)`` (``nn.Dropout2d`` / ``nn.Dropout``),
            so that the decoder cannot lean on a few channels that single out a training photo; nothing changes
            in evaluation. 0 (off) by default.
    """

    width: int = 256
    pre_convs: int = 3
    min_width: int = 32
    stage_convs: int = 1
    leaky_slope: float = 0.2
    fc_widths: tuple[int, ...] = (4096, 4096)
    seed_side: int = 4
    out_channels: int = 3
    upsamplings: int | None = None
    input_scale: float = 1.0
    input_log: bool = False
    cell: int | None = None
    paint_margin: bool = False
    input_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.fc_widths, (list, tuple)):
            raise ValueError(f"DecoderConfig.fc_widths must be a sequence of integers, got {self.fc_widths!r}")
        self.fc_widths = tuple(self.fc_widths)
        for name, low in (("width", 1), ("pre_convs", 0), ("min_width", 1), ("stage_convs", 0), ("seed_side", 1)):
            _check_int(name, getattr(self, name), low)
        for value in self.fc_widths:
            _check_int("fc_widths", value, 1)
        if self.upsamplings is not None:
            _check_int("upsamplings", self.upsamplings, 0)
        if self.cell is not None:
            _check_int("cell", self.cell, 1)
        for name in ("paint_margin", "input_log"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DecoderConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.out_channels, bool) or self.out_channels not in (1, 3):
            raise ValueError(f"DecoderConfig.out_channels must be 1 or 3, got {self.out_channels!r}")
        for name in ("leaky_slope", "input_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"DecoderConfig.{name} must be a finite number, got {value!r}")
        if isinstance(self.input_dropout, bool) or not isinstance(self.input_dropout, numbers.Real) \
                or not 0 <= self.input_dropout < 1:
            raise ValueError(f"DecoderConfig.input_dropout must be a probability in [0, 1), got {self.input_dropout!r}")
        if self.leaky_slope < 0 or self.input_scale <= 0:
            raise ValueError(f"DecoderConfig needs leaky_slope >= 0 and input_scale > 0, got "
                             f"{self.leaky_slope} and {self.input_scale}")

    def prepare(self, features: torch.Tensor) -> torch.Tensor:
        """What the decoder's first layer reads: the features ``(B, ...)`` (logged and centred per item if
        ``input_log``) times ``input_scale``."""
        if self.input_log:
            logged = torch.log(features.clamp_min(LOG_FLOOR))
            features = logged - logged.flatten(1).mean(dim=1).view(-1, *[1] * (logged.dim() - 1))
        return features * self.input_scale


def init_decoder_(layers: nn.Module, leaky_slope: float) -> None:
    """He (Kaiming) normal initialization for LeakyReLU networks, in place; biases start at 0.

    Every ``Conv2d`` / ``Linear`` weight gets ``std = gain / sqrt(fan_in)``, ``gain = sqrt(2 / (1 + slope²))``.
    A 4×4 stride-2 ``ConvTranspose2d`` feeds each output pixel from ``in_channels · 2 · 2`` inputs, so that is
    its fan-in (``torch.nn.init`` would read ``out_channels · 16`` from the weight's shape). The caller sets
    the last layer apart (:class:`Decoder`: gain :data:`LAST_GAIN`, bias 0.5).
    """
    gain = math.sqrt(2.0 / (1.0 + leaky_slope**2))
    for module in layers.modules():
        if isinstance(module, nn.ConvTranspose2d):
            taps = [k // s for k, s in zip(module.kernel_size, module.stride)]
            fan_in = module.in_channels * math.prod(taps)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
        else:
            continue
        nn.init.normal_(module.weight, 0.0, gain / math.sqrt(fan_in))
        nn.init.zeros_(module.bias)


def count_upsamplings(
    feature_shape: tuple[int, ...], image_size: tuple[int, int] | None, config: DecoderConfig
) -> int:
    """Number of ×2 up-convolutions: ``config.upsamplings``, or ``ceil(log2(stride / SHORTFALL))``.

    ``stride`` is ``config.cell`` for spatial features when set, else the larger of ``H / h`` and ``W / w``,
    with ``(h, w)`` the feature map's sides (the ``seed_side`` map for vector features, whose ``image_size``
    defaults to 64×64).

    Raises:
        ValueError: spatial features with neither ``image_size`` nor ``config.upsamplings``.
    """
    if config.upsamplings is not None:
        return config.upsamplings
    if config.cell is not None and len(feature_shape) == 3:
        return max(0, math.ceil(math.log2(config.cell / SHORTFALL)))
    if len(feature_shape) in (1, 2):  # vectors, and tokens (read as one vector)
        sides, image_size = (config.seed_side, config.seed_side), image_size or VECTOR_IMAGE_SIZE
    elif image_size is None:
        raise ValueError("a decoder for spatial features needs image_size (or DecoderConfig.upsamplings)")
    else:
        sides = (feature_shape[1], feature_shape[2])
    stride = max(image_size[0] / sides[0], image_size[1] / sides[1])
    return max(0, math.ceil(math.log2(stride / SHORTFALL)))


class Decoder(nn.Module):
    r"""Up-convolutional decoder from features Φ(x) to the image x (D&B's "expected pre-image").

    Args:
        feature_shape: shape of Φ(x) for one training image: maps ``(C, h, w)``, vectors ``(D,)``, or tokens
            ``(N, D)`` (a transformer's; decoded as the one vector of their ``N·D`` values, so N is fixed).
        image_size: ``(H, W)`` of the training images (sets the number of up-convolutions); may be ``None``
            for vector features (64×64) or when ``config.upsamplings`` is set.
        config: the knobs (defaults: D&B's widths).

    Shape:
        - Input: :math:`(B, C, h', w')` for spatial features (any ``h', w' >= 1``), :math:`(B, D)` for vectors,
          :math:`(B, N, D)` for tokens.
        - Output: :math:`(B, \text{out\_channels}, H', W')` with ``(H', W') = output_size``.

    Convention:
        The output is the image in ``[0, 1]`` units, predicted directly as D&B do: a linear last layer
        (bias initialized to 0.5, mid-grey), **not clamped**, so that an image MSE has a gradient
        everywhere. Clamp to ``[0, 1]`` before showing or scoring it (:class:`LearnedInverter` does).
        Before the resize the decoder's own output is ``(h'·2ⁿ, w'·2ⁿ)`` (``2ⁿ · seed_side`` square
        for vectors; ``h', w'`` counting the zero cells that ``paint_margin`` adds); the resize is
        bilinear, antialiased when it shrinks.

    Attributes:
        feature_shape, image_size, config: as given (tuples).
        upsamplings: the number ``n`` of ×2 up-convolutions.

    Example:
        >>> decoder = Decoder((31, 8, 8), (64, 64), DecoderConfig(width=32))
        >>> decoder(torch.rand(2, 31, 12, 10), output_size=(96, 80)).shape
        torch.Size([2, 3, 96, 80])
    """

    def __init__(
        self,
        feature_shape: tuple[int, ...],
        image_size: tuple[int, int] | None = None,
        config: DecoderConfig | None = None,
    ) -> None:
        super().__init__()
        config = config or DecoderConfig()
        if len(feature_shape) not in (1, 2, 3) or any(isinstance(s, bool) or int(s) != s or s < 1
                                                      for s in feature_shape):
            raise ValueError(f"feature_shape must be (C, h, w), (N, D) or (D,), positive, got {tuple(feature_shape)}")
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(f"image_size must be (H, W) of positive integers, got {tuple(image_size)}")
        self.feature_shape = tuple(int(s) for s in feature_shape)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.config = config
        self.upsamplings = count_upsamplings(self.feature_shape, self.image_size, config)

        def act() -> nn.Module:
            return nn.LeakyReLU(config.leaky_slope)

        spatial = len(self.feature_shape) == 3
        self.dropout = (nn.Dropout2d if spatial else nn.Dropout)(config.input_dropout)
        self.fc: nn.Sequential | None = None
        layers: list[nn.Module] = []
        if len(self.feature_shape) in (1, 2):
            dims = (math.prod(self.feature_shape), *config.fc_widths, config.width * config.seed_side**2)
            self.fc = nn.Sequential(*[m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), act())])
            channels = config.width
        else:
            channels = self.feature_shape[0]
            for _ in range(config.pre_convs):
                layers += [nn.Conv2d(channels, config.width, 3, padding=1), act()]
                channels = config.width
        for i in range(self.upsamplings):
            out = max(config.width >> (i + 1), config.min_width)
            layers += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1), act()]
            for _ in range(config.stage_convs):
                layers += [nn.Conv2d(out, out, 3, padding=1), act()]
            channels = out
        last = nn.Conv2d(channels, config.out_channels, 3, padding=1)
        self.layers = nn.Sequential(*layers, last)
        if last.weight.is_meta:  # an architecture only (a bundle's, checked before loading): no values to draw,
            return               # and nn.init on meta tensors imports torch._dynamo
        init_decoder_(nn.ModuleList([m for m in (self.fc, *layers) if m is not None]), config.leaky_slope)
        nn.init.normal_(last.weight, 0.0, LAST_GAIN / math.sqrt(last.weight[0].numel()))
        nn.init.constant_(last.bias, 0.5)

    def check_features(self, features: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``features`` is a batch this decoder takes (any spatial size)."""
        spatial = len(self.feature_shape) == 3
        ok = isinstance(features, torch.Tensor) and features.dim() == len(self.feature_shape) + 1
        if ok and len(self.feature_shape) == 2:  # tokens: their number is part of the vector decoded
            ok = tuple(features.shape[1:]) == self.feature_shape
        elif ok:
            ok = features.shape[1] == self.feature_shape[0] and min(features.shape[1:]) >= 1
        if not ok:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            expected = (f"(B, {self.feature_shape[0]}, h, w)" if spatial else
                        f"(B, {', '.join(map(str, self.feature_shape))})")
            raise ValueError(f"decoder: expected features of shape {expected}, got {shape}")

    def forward(
        self, features: torch.Tensor, output_size: tuple[int, int], offset: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        """Reconstruct ``output_size`` images; with ``cell``, the painted cells start ``offset`` pixels
        (rows, columns) above and left of the image (``Representation.grid_offset``; ignored without ``cell``)."""
        self.check_features(features)
        x = self.dropout(self.config.prepare(features))
        size = (int(output_size[0]), int(output_size[1]))
        shift = (int(offset[0]), int(offset[1]))
        if min(shift) < 0:
            raise ValueError(f"decoder: offset must be non-negative pixels, got {tuple(offset)}")
        cell = self.config.cell if self.fc is None else None
        if cell is not None and self.config.paint_margin:  # zero cells over the margin, rounded up
            extra = [max(0, -(-(side + o - n * cell) // cell))
                     for side, o, n in zip(size, shift, features.shape[-2:])]
            x = F.pad(x, (0, extra[1], 0, extra[0]))
        if self.fc is not None:
            side = self.config.seed_side
            x = self.fc(x.flatten(1)).view(-1, self.config.width, side, side)
        rows, cols = x.shape[-2:]  # feature cells, with the margin's zero cells
        x = self.layers(x)
        if cell is not None:
            x = resize_bilinear(x, (rows * cell, cols * cell))
            x = x[..., shift[0]: shift[0] + size[0], shift[1]: shift[1] + size[1]]
            missing = (size[0] - x.shape[-2], size[1] - x.shape[-1])
            return F.pad(x, (0, missing[1], 0, missing[0]), mode="replicate") if max(missing) > 0 else x
        return resize_bilinear(x, size)

    def extra_repr(self) -> str:
        return f"feature_shape={self.feature_shape}, image_size={self.image_size}, upsamplings={self.upsamplings}"


class DecoderEnsemble(nn.Module):
    """Several decoders of one representation, one image size and one number of output channels, read as the mean
    of their reconstructions (each clamped to ``[0, 1]`` first): decoders that err differently err less together.
    For inference only (the clamp stops gradients outside the range; ``preimage train init=`` refuses it).

    Args:
        members: the decoders (at least two); the first's ``config`` stands for all where one is asked.

    Shape:
        as :class:`Decoder`: features → :math:`(B, C, H, W)` in ``[0, 1]``.
    """

    def __init__(self, members: Sequence[Decoder]) -> None:
        super().__init__()
        if len(members) < 2 or not all(isinstance(m, Decoder) for m in members):
            raise ValueError(f"an ensemble takes two or more decoders, got {len(members)}")
        first = members[0]
        for i, other in enumerate(members[1:], 1):
            for what in ("feature_shape", "image_size"):
                if getattr(other, what) != getattr(first, what):
                    raise ValueError(f"ensemble member {i} has {what} {getattr(other, what)}, member 0 "
                                     f"{getattr(first, what)}")
            if other.config.out_channels != first.config.out_channels:
                raise ValueError(f"ensemble member {i} makes {other.config.out_channels}-channel images, member 0 "
                                 f"{first.config.out_channels}-channel ones")
        self.members = nn.ModuleList(members)
        self.feature_shape, self.image_size, self.config = first.feature_shape, first.image_size, first.config

    def forward(
        self, features: torch.Tensor, output_size: tuple[int, int], offset: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        """The mean of the members' reconstructions, each clamped to ``[0, 1]``."""
        return torch.stack([m(features, output_size, offset).clamp(0, 1) for m in self.members]).mean(0)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, h, w)`` to ``size``, antialiased when it shrinks; ``x`` itself if equal."""
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def build_decoder(
    feature_shape: tuple[int, ...],
    image_size: tuple[int, int] | None = None,
    *,
    config: DecoderConfig | None = None,
    **overrides: Any,
) -> Decoder:
    """Build the decoder for features of ``feature_shape`` computed on ``image_size`` images.

    Args:
        feature_shape: ``representation.output_shape(H, W)``: ``(C, h, w)`` or ``(D,)``.
        image_size: the training image size ``(H, W)`` (optional for vectors: 64×64).
        config: base configuration (default :class:`DecoderConfig`).
        overrides: :class:`DecoderConfig` fields to change, e.g. ``width=64``, ``out_channels=1``.

    Raises:
        ValueError: an unknown or invalid knob, or a shape the decoder cannot take.

    Example:
        >>> build_decoder((128, 4, 4), (64, 64), width=64).upsamplings
        4
    """
    valid = [f.name for f in fields(DecoderConfig)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown decoder option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return Decoder(feature_shape, image_size, replace(config or DecoderConfig(), **overrides))
