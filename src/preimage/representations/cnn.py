"""AlexNet-family CNN layers as representations: ``alexnet:<layer>`` and ``caffenet:<layer>``.

Two networks, each registered layer by layer in network order (M&V Table 2 names):

- ``alexnet``: torchvision's AlexNet (64-192-384-256-256 channels, no normalization layers, an adaptive
  average pool to 6×6 before the classifier), layers ``conv1 relu1 pool1 conv2 relu2 pool2 conv3 relu3
  conv4 relu4 conv5 relu5 pool5 fc6 relu6 fc7 relu7 fc8``.
- ``caffenet``: the Caffe reference network (``bvlc_reference_caffenet``, M&V's CNN-A), layers ``conv1 relu1
  pool1 norm1 conv2 relu2 pool2 norm2 conv3 relu3 conv4 relu4 conv5 relu5 pool5 fc6 relu6 fc7 relu7 fc8``.

Each representation keeps only the layers up to the named one. Weights (builder keyword ``weights``):
``"imagenet"`` (torchvision's ``AlexNet_Weights.IMAGENET1K_V1`` from the torch hub cache, never downloaded),
a path to a state_dict file, or ``"random"`` (seeded, for tests).

Example:
    >>> from preimage import build_representation
    >>> phi = build_representation("caffenet:conv3", weights="random")
    >>> phi(torch.rand(1, 3, 227, 227)).shape
    torch.Size([1, 384, 13, 13])
    >>> phi.output_shape(227, 227)
    (384, 13, 13)
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..catalogue import ALEXNET_LAYERS, CAFFENET_LAYERS
from .base import Representation
from .network import NetworkLayer, WeightsArg, check_state_dict, hub_cache_file, read_state_dict
from .registry import register_representation

__all__ = ["ALEXNET_LAYERS", "CAFFENET_LAYERS", "CNNRepresentation", "cnn_network"]

_LAYERS = {"alexnet": ALEXNET_LAYERS, "caffenet": CAFFENET_LAYERS}

# torchvision's AlexNet parameter prefixes -> our layer names (dropouts and activations have no parameters).
_TORCHVISION_KEYS = {
    "features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
    "features.10": "conv5", "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8",
}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RGB, [0, 1] pixels
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # ImageNet mean pixel, B, G, R, [0, 255] pixels


class _Flatten(nn.Module):
    """Flatten ``(B, C, h, w)`` to ``(B, C·h·w)``, refusing any spatial size but ``size`` (what fc6 expects)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"fc6 needs a {self.size[0]}x{self.size[1]} pool5 map, got {tuple(x.shape[-2:])}")
        return x.flatten(1)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def _alexnet_layers() -> list[tuple[str, nn.Module]]:
    """torchvision's AlexNet, dropout left out (the identity in eval mode), ``avgpool`` kept."""
    return [
        ("conv1", nn.Conv2d(3, 64, 11, stride=4, padding=2)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(3, 2)),
        ("conv2", nn.Conv2d(64, 192, 5, padding=2)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(3, 2)),
        ("conv3", nn.Conv2d(192, 384, 3, padding=1)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(384, 256, 3, padding=1)), ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(256, 256, 3, padding=1)), ("relu5", nn.ReLU()), ("pool5", nn.MaxPool2d(3, 2)),
        ("avgpool", nn.AdaptiveAvgPool2d(6)), ("flatten", _Flatten((6, 6))),
        ("fc6", nn.Linear(256 * 6 * 6, 4096)), ("relu6", nn.ReLU()),
        ("fc7", nn.Linear(4096, 4096)), ("relu7", nn.ReLU()),
        ("fc8", nn.Linear(4096, 1000)),
    ]


def _caffenet_layers() -> list[tuple[str, nn.Module]]:
    """Caffe's ``bvlc_reference_caffenet`` (deploy.prototxt), pooling with Caffe's ceil rounding.

    ``nn.LocalResponseNorm`` computes ``x / (k + alpha/size · Σ x²)^beta`` over ``size`` neighbouring channels,
    dividing ``alpha`` by ``size`` as Caffe's ACROSS_CHANNELS LRN does, so Caffe's parameters carry over as is.
    """
    return [
        ("conv1", nn.Conv2d(3, 96, 11, stride=4)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)), ("norm1", nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)),
        ("conv2", nn.Conv2d(96, 256, 5, padding=2, groups=2)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)), ("norm2", nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)),
        ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(384, 384, 3, padding=1, groups=2)), ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(384, 256, 3, padding=1, groups=2)), ("relu5", nn.ReLU()),
        ("pool5", nn.MaxPool2d(3, 2, ceil_mode=True)), ("flatten", _Flatten((6, 6))),
        ("fc6", nn.Linear(256 * 6 * 6, 4096)), ("relu6", nn.ReLU()),
        ("fc7", nn.Linear(4096, 4096)), ("relu7", nn.ReLU()),
        ("fc8", nn.Linear(4096, 1000)),
    ]


_ARCHITECTURES: dict[str, Callable[[], list[tuple[str, nn.Module]]]] = {
    "alexnet": _alexnet_layers, "caffenet": _caffenet_layers,
}


def _imagenet_file(family: str) -> Path:
    """The torch hub cache file holding torchvision's AlexNet IMAGENET1K_V1 weights (error if absent)."""
    if family == "caffenet":
        raise ValueError(
            "caffenet: torchvision has no CaffeNet release, so weights='imagenet' is not available; convert "
            "Caffe's bvlc_reference_caffenet.caffemodel to a PyTorch state_dict with keys conv1.weight, "
            "conv1.bias, ..., fc8.bias (the layer names of caffenet:fc8) and pass weights=<path to that file>"
        )
    from torchvision.models import AlexNet_Weights  # here: torchvision takes a second to import

    return hub_cache_file(AlexNet_Weights.IMAGENET1K_V1.url, "alexnet")


def _torchvision_to_layer_key(key: str) -> str:
    """``features.3.weight`` -> ``conv2.weight``; keys that are not torchvision AlexNet's stay as they are."""
    prefix, dot, leaf = key.rpartition(".")
    return _TORCHVISION_KEYS.get(prefix, prefix) + dot + leaf


def cnn_network(family: str, layer: str | None = None, *, weights: WeightsArg = "imagenet") -> nn.Sequential:
    """Build ``family``'s network up to and including ``layer`` (the whole network if ``None``).

    The full network is laid out on the ``meta`` device first (no memory, no global RNG draws); a weights
    file is checked strictly against it, then only the kept layers are materialized.

    Args:
        family: ``"alexnet"`` or ``"caffenet"``.
        layer: the last layer kept, one of :data:`ALEXNET_LAYERS` / :data:`CAFFENET_LAYERS`.
        weights: ``"imagenet"``, ``"random"`` (He-normal weights, N(0, 0.01²) biases, drawn in layer order
            from a ``torch.Generator`` seeded 0, so identical on every build and for every truncation), or a
            path to a state_dict of the full network with keys ``conv1.weight``, ..., ``fc8.bias``; for
            ``alexnet`` torchvision's own ``features.N.*`` / ``classifier.N.*`` keys are accepted too.

    Returns:
        An ``nn.Sequential`` whose children are named after the layers (plus parameter-free ``avgpool`` /
        ``flatten`` helpers before ``fc6``); its ``state_dict()`` for ``layer="fc8"`` is a valid weights file.

    Raises:
        ValueError: unknown family or layer, a CaffeNet ``"imagenet"`` request, or a state_dict that does not
            fit the network.
        FileNotFoundError: the weights file (or torchvision's cached ImageNet file) is missing.
    """
    if family not in _ARCHITECTURES:
        raise ValueError(f"unknown CNN {family!r}; valid: {', '.join(_ARCHITECTURES)}")
    layer = layer or _LAYERS[family][-1]
    if layer not in _LAYERS[family]:
        raise ValueError(f"{family} has no layer {layer!r}; valid: {', '.join(_LAYERS[family])}")
    with torch.device("meta"):
        children = _ARCHITECTURES[family]()
    full = nn.Sequential(OrderedDict(children))
    kept = nn.Sequential(OrderedDict(children[: [n for n, _ in children].index(layer) + 1])).to_empty(device="cpu")
    if weights == "random":
        generator = torch.Generator().manual_seed(0)
        for module in kept.children():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.data.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
                module.bias.data.normal_(0.0, 0.01, generator=generator)
        return kept
    path = _imagenet_file(family) if weights == "imagenet" else Path(weights)
    state = read_state_dict(path)
    if family == "alexnet" and any(k.startswith(("features.", "classifier.")) for k in state):
        state = {_torchvision_to_layer_key(k): v for k, v in state.items()}
    check_state_dict(family, state, full.state_dict(), repr(str(path)))
    kept_keys = kept.state_dict().keys()
    kept.load_state_dict({k: v for k, v in state.items() if k in kept_keys}, strict=True)
    return kept


class CNNRepresentation(NetworkLayer):
    r"""One layer of an AlexNet-family CNN, preprocessing included.

    Args:
        family: ``"alexnet"`` (torchvision's AlexNet) or ``"caffenet"`` (Caffe's reference network, CNN-A).
        layer: the layer whose output is Φ(x); the module keeps no layer past it.
        weights: ``"imagenet"``, ``"random"`` or a state_dict path, as for :func:`cnn_network`.

    Shape:
        - Input: :math:`(B, 3, H, W)` RGB in ``[0, 1]``, or :math:`(B, 1, H, W)` grey (replicated to 3 channels).
        - Output: :math:`(B, C, h, w)` up to ``pool5``, :math:`(B, D)` from ``fc6`` on; see :meth:`output_shape`.

    Convention:
        - ``alexnet``: RGB in ``[0, 1]``, normalized per channel with ImageNet mean (0.485, 0.456, 0.406) and
          std (0.229, 0.224, 0.225), as torchvision's ``AlexNet_Weights`` transforms do (no resize, no crop).
        - ``caffenet``: Caffe's convention: channels reordered to **BGR**, scaled to ``[0, 255]``, the
          ImageNet mean pixel (B, G, R) = (103.939, 116.779, 123.68) subtracted, no std scaling.
        - Sizes: canonical input 227×227 (pool5 256×6×6 for both). ``alexnet`` fc layers take any input
          of at least 63×63 (torchvision's adaptive average pool makes pool5 6×6); ``caffenet`` fc layers need
          pool5 to be exactly 6×6, i.e. both sides between 199 and 230 pixels (:attr:`max_size`).

    Attributes:
        network: the truncated network (an ``nn.Sequential``, children named after the layers).
    """

    def __init__(self, family: str, layer: str, *, weights: WeightsArg = "imagenet") -> None:
        network = cnn_network(family, layer, weights=weights)
        if family == "caffenet":
            norm = dict(scale=255.0, mean=_CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0), rgb_to_bgr=True)
        else:
            norm = dict(scale=1.0, mean=_IMAGENET_MEAN, std=_IMAGENET_STD)
        names = _LAYERS[family]
        super().__init__(f"{family}:{layer}", network, weights=weights, canonical_size=227,
                         depth=(names.index(layer) + 1) / len(names), **norm)
        self.family, self.layer = family, layer


def _register(family: str, layer: str) -> None:
    def builder(*, weights: WeightsArg = "imagenet") -> Representation:
        return CNNRepresentation(family, layer, weights=weights)

    builder.__name__ = builder.__qualname__ = f"{family}_{layer}"
    builder.__doc__ = f"``{family}:{layer}``: see :class:`CNNRepresentation`."
    names = _LAYERS[family]
    register_representation(f"{family}:{layer}", depth=(names.index(layer) + 1) / len(names))(builder)


for _family, _names in _LAYERS.items():
    for _layer in _names:
        _register(_family, _layer)
