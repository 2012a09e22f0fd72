"""One layer of a neural network as a representation: the machinery every CNN family shares.

A family (``alexnet``, ``caffenet``, ``efficientnet_lite0``, ``torchvision``, ``timm``) only says how to build
its network up to the named layer and how its input is normalized; :class:`NetworkLayer` adds the rest:
preprocessing from RGB in ``[0, 1]``, output shapes and valid input sizes (found without computing anything,
on fake tensors), the weights label (``"random"`` outputs must say so), and the offline weight loaders.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Union

import torch
from torch import nn

from ..files import not_a_file
from .base import Representation

__all__ = ["NetworkLayer", "WeightsArg", "check_state_dict", "hub_cache_file", "read_state_dict", "seeded"]

WeightsArg = Union[str, os.PathLike]
_PROBE_LIMIT = 1024  # input sides searched for min_size / max_size


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state_dict file with ``weights_only=True`` (no code runs), raising a clear error if it is not one."""
    path = Path(path)
    if not_a_file(path):
        raise FileNotFoundError(f"weights file {str(path)!r}: {not_a_file(path)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types on a corrupt or non-weights file, in many lines
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ValueError(f"could not read a state_dict from {str(path)!r} ({type(err).__name__}: {first[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state_dict (a dict of name -> tensor)")
    return state


def check_state_dict(name: str, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """Raise ``ValueError`` naming the missing, unexpected and mis-shaped entries of ``state``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: {tuple(state[k].shape)} (expected {tuple(v.shape)})"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        problems = [f"{label} ({len(items)}): {', '.join(items[:8])}{f' and {len(items) - 8} more' if len(items) > 8 else ''}"
                    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
                    if items]
        raise ValueError(f"{name}: the state_dict in {source} does not match the network ({'; '.join(problems)})")


def hub_cache_file(url: str, what: str) -> Path:
    """The torch hub cache file that ``url`` would be downloaded to; ``FileNotFoundError`` (one line) if absent.

    Nothing is ever downloaded: the message says which file to place where.
    """
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: weights='imagenet' needs {os.path.basename(url)} at {str(path)!r}, which is missing and is "
            f"never downloaded here; download {url} on a machine with network and place it at that path "
            "(or pass weights=<path to a state_dict file>)"
        )
    return path


def seeded(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """Run ``build()`` with the global RNG seeded ``seed``, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _fake_output_shape(network: nn.Module, height: int, width: int, like: torch.Tensor) -> tuple[int, ...]:
    """Output shape of ``network`` for one ``(1, 3, height, width)`` input of ``like``'s dtype and device,
    computed on fake tensors (no FLOPs, no memory).

    Raises:
        ValueError: the network gives no output for that size (or its output is not a tensor).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    log = logging.getLogger("torch._subclasses.fake_tensor")  # it logs every refused size as an error
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            out = network(torch.empty(1, 3, height, width, dtype=like.dtype, device=like.device))
    except Exception as err:  # shape errors surface as RuntimeError, AssertionError, ValueError, ...
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"the {height}x{width} input gives no output ({message})") from None
    finally:
        log.setLevel(level)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the output is a {type(out).__name__}, not a tensor")
    if out.numel() == 0:
        raise ValueError(f"the {height}x{width} input is too small")
    return tuple(int(s) for s in out.shape[1:])


def _grid_origin(network: nn.Module, height: int, width: int, like: torch.Tensor) -> tuple[int, int]:
    """Input pixel (row, column) where the window of the output's cell ``(0, 0)`` starts, as far as it moves
    with the input size: minus the padding that modules with a ``padding_before(h, w)`` method (TensorFlow's
    "SAME" padding, which depends on the input's parity) add above and left, in input pixels. Computed on
    fake tensors along one forward pass; those modules are assumed to lie on one chain (no parallel branches)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    origin, step = [0, 0], [1, 1]

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        before = module.padding_before(*args[0].shape[-2:])
        for axis in (0, 1):
            origin[axis] -= step[axis] * int(before[axis])
            step[axis] *= int(module.stride[axis])

    hooks = [m.register_forward_pre_hook(record) for m in network.modules() if hasattr(m, "padding_before")]
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            network(torch.empty(1, 3, height, width, dtype=like.dtype, device=like.device))
    finally:
        for hook in hooks:
            hook.remove()
    return origin[0], origin[1]


class NetworkLayer(Representation):
    r"""Φ(x) = ``network((scale · x − mean) / std)``: one layer of a network, preprocessing included.

    Args:
        spec: the registry name, e.g. ``"efficientnet_lite0:stage4"``.
        network: the network up to and including the layer (eval mode), mapping ``(B, 3, H, W)`` to the features.
        weights: the weights it was built with: ``"imagenet"``, ``"random"`` or a file path (recorded in params).
        scale, mean, std: the input normalization, per RGB channel (``mean``/``std`` in ``scale`` units).
        canonical_size: a side the network is known to accept (224 for ImageNet models), the anchor from which
            :attr:`min_size` and :attr:`max_size` are searched.
        rgb_to_bgr: reorder the channels to B, G, R before normalizing (Caffe networks).
        depth: the layer's relative depth in its network, ``(index + 1) / count`` over the family's named
            layers (the GD presets choose λTV by it).
        channels_last: on the CPU, run the network on a channels-last copy of its input (oneDNN's convolutions
            are faster so: 1.1–1.9× for EfficientNet-Lite0's forward and backward, ``scripts/benchmark_network.py``)
            and return the features in the usual layout. Only for networks known to be layout-agnostic (no
            ``view`` of a convolution's output); other devices are left as they are.

    Shape:
        - Input: :math:`(B, 3, H, W)` RGB in ``[0, 1]``, or :math:`(B, 1, H, W)` grey (replicated to 3 channels).
        - Output: whatever the layer gives: :math:`(B, C, h, w)` maps, :math:`(B, N, D)` tokens, :math:`(B, D)`
          vectors; see :meth:`output_shape`.

    Attributes:
        network: the truncated network.
        min_size, max_size: the smallest and largest ``(H, W)`` accepted (``max_size`` ``None``: unbounded up to
            1024), searched by bisection from ``canonical_size`` on the assumption that the valid sides form one
            range (models that need sides divisible by some number refuse sizes inside it: their own error
            says so).
        random_weights: whether the weights are the seeded random ones (say so next to any output).
        depth: relative depth of the layer in ``(0, 1]``.
        channels_last: whether the CPU runs the network channels-last (see Args; may be switched off, e.g. to
            compare).
    """

    def __init__(self, spec: str, network: nn.Module, *, weights: WeightsArg, scale: float,
                 mean: tuple[float, float, float], std: tuple[float, float, float], canonical_size: int = 224,
                 rgb_to_bgr: bool = False, depth: float = 1.0, channels_last: bool = False) -> None:
        super().__init__(weights=os.fspath(weights))
        self.spec = spec
        self.network = network.eval()
        self.scale, self.rgb_to_bgr, self.canonical_size = float(scale), rgb_to_bgr, canonical_size
        self.depth = float(depth)
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._shapes: dict[tuple[int, int], tuple[int, ...] | str] = {}
        self._origins: dict[int, int] = {}
        self._size_range: tuple[int, int | None] | None = None

    @property
    def random_weights(self) -> bool:
        """Whether this representation was built with ``weights="random"``."""
        return self.params["weights"] == "random"

    def _shape_or_error(self, height: int, width: int) -> tuple[int, ...] | str:
        key = (int(height), int(width))
        if key not in self._shapes:
            try:
                self._shapes[key] = _fake_output_shape(self.network, *key, self.mean)
            except ValueError as err:
                self._shapes[key] = str(err)
        return self._shapes[key]

    def _valid(self, side: int) -> bool:
        return not isinstance(self._shape_or_error(side, side), str)

    def _sizes(self) -> tuple[int, int | None]:
        """``(smallest, largest or None)`` valid square side, by bisection from the canonical size."""
        if self._size_range is None:
            anchor = self.canonical_size
            if not self._valid(anchor):
                raise ValueError(f"{self.spec}: the network refuses its own canonical {anchor}x{anchor} input: "
                                 f"{self._shape_or_error(anchor, anchor)}")
            low, high = 0, anchor  # invalid (or 0) .. valid
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (low, mid) if self._valid(mid) else (mid, high)
            smallest = high
            largest: int | None = None
            if not self._valid(_PROBE_LIMIT):
                low, high = anchor, _PROBE_LIMIT  # valid .. invalid
                while high - low > 1:
                    mid = (low + high) // 2
                    low, high = (mid, high) if self._valid(mid) else (low, mid)
                largest = low
            self._size_range = (smallest, largest)
        return self._size_range

    @property
    def min_size(self) -> tuple[int, int]:  # type: ignore[override]
        side = self._sizes()[0]
        return side, side

    @property
    def max_size(self) -> tuple[int, int] | None:
        side = self._sizes()[1]
        return None if side is None else (side, side)

    def output_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of Φ(x) for one ``height`` × ``width`` image, without the batch dimension.

        Raises:
            ValueError: if the layer gives no output for that size (the message gives the valid sides).
        """
        shape = self._shape_or_error(height, width)
        if isinstance(shape, str):
            low, high = self._sizes()
            sides = f"at least {low}" if high is None else (f"{low}" if low == high else f"{low} to {high}")
            raise ValueError(f"{self.spec}: {shape}; valid input sides: {sides} pixels")
        return shape

    @property
    def grid_step(self) -> int | None:  # type: ignore[override]
        """The map's stride in pixels (canonical side / map side, when it divides exactly and both axes agree);
        ``None`` for vectors and tokens."""
        side = self.canonical_size
        shape = self.output_shape(side, side)
        if len(shape) != 3 or shape[1] != shape[2] or side % shape[1]:
            return None
        return side // shape[1]

    def grid_offset(self, height: int, width: int) -> tuple[int, int]:
        """Pixels ``(rows, columns)`` by which the map's cell windows start earlier at ``height`` × ``width`` than
        at the nearest larger multiples of :attr:`grid_step` (where every "SAME" padding is as in training):
        ``(0, 0)`` unless the network pads by the input's parity (EfficientNet-Lite0: 29 rows at 227 px for
        stride 32, with 224 px giving 0)."""
        step = self.grid_step
        if step is None:
            return 0, 0
        return tuple(self._origin(-(-side // step) * step) - self._origin(side) for side in (height, width))

    def _origin(self, side: int) -> int:
        """The grid's origin along an axis of ``side`` pixels (padding along one axis depends on that side only)."""
        if side not in self._origins:
            self._origins[side] = _grid_origin(self.network, side, side, self.mean)[0]
        return self._origins[side]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a ``(B, 1|3, H, W)`` batch of a size this layer accepts."""
        super().check_input(x)
        self.output_shape(*x.shape[-2:])

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Map RGB (or grey) in ``[0, 1]`` to the network's input: ``(scale · x − mean) / std``."""
        x = x.expand(-1, 3, -1, -1)
        if self.rgb_to_bgr:
            x = x.flip(1)
        return (x * self.scale - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.preprocess(x)
        if self.channels_last and x.device.type == "cpu":
            return self.network(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.network(x)

