"""AlexNet-family CNN layers as representations: ``alexnet:<layer>`` and ``caffenet:<layer>``.

Two networks, each registered layer by layer in network order (M&V Table 2 names):

- ``alexnet``: torchvision's AlexNet (64-192-384-256-256 channels, no normalisation layers, an adaptive
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
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Union

import torch
from torch import nn
from torchvision.models import AlexNet_Weights

from .base import Representation
from .registry import register_representation

__all__ = ["ALEXNET_LAYERS", "CAFFENET_LAYERS", "CNNRepresentation", "cnn_network"]

WeightsArg = Union[str, os.PathLike]

ALEXNET_LAYERS: tuple[str, ...] = tuple(
    "conv1 relu1 pool1 conv2 relu2 pool2 conv3 relu3 conv4 relu4 conv5 relu5 pool5 fc6 relu6 fc7 relu7 fc8".split()
)
CAFFENET_LAYERS: tuple[str, ...] = tuple(
    "conv1 relu1 pool1 norm1 conv2 relu2 pool2 norm2 conv3 relu3 conv4 relu4 conv5 relu5 pool5 "
    "fc6 relu6 fc7 relu7 fc8".split()
)
_LAYERS = {"alexnet": ALEXNET_LAYERS, "caffenet": CAFFENET_LAYERS}

# torchvision's AlexNet parameter prefixes -> our layer names (dropouts and activations have no parameters).
_TORCHVISION_KEYS = {
    "features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
    "features.10": "conv5", "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8",
}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RGB, [0, 1] pixels
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # ImageNet mean pixel, B, G, R, [0, 255] pixels
_SCAN_LIMIT = 1024  # input sides scanned for min_size / max_size


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


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state_dict file with ``weights_only=True``, raising a clear error if it is not one."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types on a corrupt or non-weights file
        raise ValueError(f"could not read a state_dict from {str(path)!r}: {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state_dict (a dict of name -> tensor)")
    return state


def _imagenet_file(family: str) -> Path:
    """The torch hub cache file holding torchvision's AlexNet IMAGENET1K_V1 weights (error if absent)."""
    if family == "caffenet":
        raise ValueError(
            "caffenet: torchvision has no CaffeNet release, so weights='imagenet' is not available; convert "
            "Caffe's bvlc_reference_caffenet.caffemodel to a PyTorch state_dict with keys conv1.weight, "
            "conv1.bias, ..., fc8.bias (the layer names of caffenet:fc8) and pass weights=<path to that file>"
        )
    url = AlexNet_Weights.IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        raise FileNotFoundError(
            f"alexnet: weights='imagenet' needs torchvision's AlexNet IMAGENET1K_V1 weights at {str(path)!r}, "
            f"which is missing and is never downloaded here; download {url} on a machine with network and place "
            "it at that path (or pass weights=<path to a state_dict file>)"
        )
    return path


def _torchvision_to_layer_key(key: str) -> str:
    """``features.3.weight`` -> ``conv2.weight``; keys that are not torchvision AlexNet's stay as they are."""
    prefix, dot, leaf = key.rpartition(".")
    return _TORCHVISION_KEYS.get(prefix, prefix) + dot + leaf


def _check_keys(family: str, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """Raise ``ValueError`` naming missing, unexpected and mis-shaped entries of ``state``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        problems = [f"{label}: {', '.join(items)}" for label, items in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if items]
        raise ValueError(
            f"{family}: the state_dict in {source} does not match the full {family} network ({'; '.join(problems)}); "
            f"expected keys {', '.join(expected)}"
        )


def cnn_network(family: str, layer: str | None = None, *, weights: WeightsArg = "imagenet") -> nn.Sequential:
    """Build ``family``'s network up to and including ``layer`` (the whole network if ``None``).

    The full network is laid out on the ``meta`` device first (no memory, no global RNG draws); a weights
    file is checked strictly against it, then only the kept layers are materialised.

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
    state = _read_state_dict(path)
    if family == "alexnet" and any(k.startswith(("features.", "classifier.")) for k in state):
        state = {_torchvision_to_layer_key(k): v for k, v in state.items()}
    _check_keys(family, state, full.state_dict(), repr(str(path)))
    kept_keys = kept.state_dict().keys()
    kept.load_state_dict({k: v for k, v in state.items() if k in kept_keys}, strict=True)
    return kept


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _trace_shape(layers: nn.Sequential, height: int, width: int) -> tuple[int, ...]:
    """Output shape of ``layers`` for one ``height`` × ``width`` image, from the layers' hyper-parameters."""
    shape: tuple[int, ...] = (3, height, width)
    for name, module in layers.named_children():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p, d = (_pair(module.kernel_size), _pair(module.stride), _pair(module.padding),
                          _pair(module.dilation))
            ceil = isinstance(module, nn.MaxPool2d) and module.ceil_mode
            sides = []
            for i, n in enumerate(shape[1:]):
                span = n + 2 * p[i] - d[i] * (k[i] - 1) - 1
                out = (-(-span // s[i]) if ceil else span // s[i]) + 1
                if ceil and (out - 1) * s[i] >= n + p[i]:  # the last window must start inside the image
                    out -= 1
                sides.append(out)
            channels = module.out_channels if isinstance(module, nn.Conv2d) else shape[0]
            if min(sides) < 1:
                raise ValueError(f"the {height}x{width} input is too small for {name}")
            shape = (channels, *sides)
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            shape = (shape[0], *_pair(module.output_size))
        elif isinstance(module, _Flatten):
            if shape[1:] != module.size:
                raise ValueError(
                    f"fc6 needs a {module.size[0]}x{module.size[1]} pool5 map and a {height}x{width} input "
                    f"gives {shape[1]}x{shape[2]}"
                )
            shape = (math.prod(shape),)
        elif isinstance(module, nn.Linear):
            shape = (module.out_features,)
    return shape


class CNNRepresentation(Representation):
    r"""One layer of an AlexNet-family CNN, preprocessing included.

    Args:
        family: ``"alexnet"`` (torchvision's AlexNet) or ``"caffenet"`` (Caffe's reference network, CNN-A).
        layer: the layer whose output is Φ(x); the module keeps no layer past it.
        weights: ``"imagenet"``, ``"random"`` or a state_dict path, as for :func:`cnn_network`.

    Shape:
        - Input: :math:`(B, 3, H, W)` RGB in ``[0, 1]``, or :math:`(B, 1, H, W)` grey (replicated to 3 channels).
        - Output: :math:`(B, C, h, w)` up to ``pool5``, :math:`(B, D)` from ``fc6`` on; see :meth:`output_shape`.

    Convention:
        - ``alexnet``: RGB in ``[0, 1]``, normalised per channel with ImageNet mean (0.485, 0.456, 0.406) and
          std (0.229, 0.224, 0.225), as torchvision's ``AlexNet_Weights`` transforms do (no resize, no crop).
        - ``caffenet``: Caffe's convention: channels reordered to **BGR**, scaled to ``[0, 255]``, the
          ImageNet mean pixel (B, G, R) = (103.939, 116.779, 123.68) subtracted, no std scaling.
        - Sizes: canonical input 227×227 (pool5 256×6×6 for both). ``alexnet`` fc layers take any input
          of at least 63×63 (torchvision's adaptive average pool makes pool5 6×6); ``caffenet`` fc layers need
          pool5 to be exactly 6×6, i.e. both sides between 199 and 230 pixels (:attr:`max_size`).

    Attributes:
        layers: the truncated network (children named after the layers).
        max_size: the largest ``(H, W)`` accepted, or ``None`` when unbounded.
        random_weights: whether the weights are the seeded random ones (say so next to any output).
    """

    def __init__(self, family: str, layer: str, *, weights: WeightsArg = "imagenet") -> None:
        super().__init__(weights=os.fspath(weights))
        self.spec = f"{family}:{layer}"
        self.family, self.layer = family, layer
        self.layers = cnn_network(family, layer, weights=weights)
        # network input = (scale · x - mean) / std, each exact for its convention (see Convention)
        if family == "caffenet":
            scale, mean, std = 255.0, torch.tensor(_CAFFE_MEAN_BGR), torch.ones(3)
        else:
            scale, mean, std = 1.0, torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        self.scale = scale
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        valid = []
        for side in range(1, _SCAN_LIMIT + 1):
            try:
                _trace_shape(self.layers, side, side)
            except ValueError:
                continue
            valid.append(side)
        self.min_size = (valid[0], valid[0])
        self.max_size: tuple[int, int] | None = None if valid[-1] == _SCAN_LIMIT else (valid[-1], valid[-1])

    @property
    def random_weights(self) -> bool:
        """Whether this representation was built with ``weights="random"``."""
        return self.params["weights"] == "random"

    def output_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of Φ(x) for one ``height`` × ``width`` image, without the batch dimension.

        Raises:
            ValueError: if the layer gives no output for that size (the message gives the valid sides).
        """
        try:
            return _trace_shape(self.layers, height, width)
        except ValueError as err:
            sides = (f"at least {self.min_size[0]}" if self.max_size is None
                     else f"{self.min_size[0]} to {self.max_size[0]}")
            raise ValueError(f"{self.spec}: {err}; valid input sides: {sides} pixels") from None

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a ``(B, 1|3, H, W)`` batch of a size this layer accepts."""
        super().check_input(x)
        self.output_shape(*x.shape[-2:])

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Map RGB (or grey) in ``[0, 1]`` to the network's input convention (see Convention)."""
        x = x.expand(-1, 3, -1, -1)
        if self.family == "caffenet":
            x = x.flip(1)  # RGB -> BGR
        return (x * self.scale - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.layers(self.preprocess(x))


def _register(family: str, layer: str) -> None:
    def builder(*, weights: WeightsArg = "imagenet") -> Representation:
        return CNNRepresentation(family, layer, weights=weights)

    builder.__name__ = builder.__qualname__ = f"{family}_{layer}"
    builder.__doc__ = f"``{family}:{layer}``: see :class:`CNNRepresentation`."
    register_representation(f"{family}:{layer}")(builder)


for _family, _names in _LAYERS.items():
    for _layer in _names:
        _register(_family, _layer)
