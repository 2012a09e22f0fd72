"""Theoretical receptive fields of representation neurons, in input pixels.

Convention:
    A field is ``(size, stride, offset)``: neuron ``i`` along an axis (row ``i`` along y, column ``i`` along x)
    depends on input pixels ``offset + stride·i`` to ``offset + stride·i + size − 1`` inclusive, and on no
    other pixel (the same numbers hold for both axes: every kernel here is square). ``offset`` may be
    negative (padding); clip to the image with :meth:`ReceptiveField.span`. The field is the *support* of
    the dependency (where ∂Φ/∂x can be non-zero), not the nominal footprint, so that the gradient of a
    neuron is exactly zero outside it (and, for the last row or column of a map, may also be zero on the
    last few pixels of the image, which floor rounding leaves to no neuron):

    - CNN layers: computed from the kernels, strides, paddings and dilations of ``representation.network``
      (ReLU and local response normalization act within one position). Fully connected layers see the
      whole pool5 map that fc6 flattens (6×6, from the canonical 227×227 input, where AlexNet's adaptive
      pool is the identity).
    - Other networks (EfficientNet-Lite0, torchvision and timm models: residual branches, "same" padding):
      measured as the support of the gradient of central neurons (:func:`measured_field`).
    - HOG (cell ``c``): a cell's tent (bilinear) pooling reaches ``2c`` pixels, from ``c·i − c//2``; block
      normalization brings in the neighbouring cell on each side (``4c``), and the central-difference
      gradient one more pixel on each side: ``size = 4c + 2``, ``stride = c``, ``offset = −c − c//2 − 1``.
    - DSIFT (bin ``b``, step ``s``): the 4×4 bins span ``4b`` nominally; their triangular binning reaches
      ``b − 1`` pixels past the outer bin centres, and the gradient stencil one more:
      ``size = 5b + 1``, ``stride = s``, ``offset = −b``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..representations import Representation
from ..representations.cnn import CNNRepresentation, _Flatten
from ..representations.network import NetworkLayer
from ..representations.dsift import NUM_BINS_XY, DenseSIFT
from ..representations.hog import HOG

__all__ = ["ReceptiveField", "measured_field", "receptive_field"]

_PROBE_SIDE = 320  # input side at which the fields of other networks' layers are measured

class ReceptiveField(NamedTuple):
    """The input pixels a neuron depends on (see the module's Convention). Units: pixels."""

    size: int
    stride: int
    offset: int

    def span(self, first: int, last: int, limit: int | None = None) -> tuple[int, int]:
        """Pixels ``(start, end)`` (inclusive) seen by neurons ``first..last`` along one axis, clipped to ``[0, limit)``."""
        start, end = self.offset + self.stride * first, self.offset + self.stride * last + self.size - 1
        if limit is not None:
            start, end = max(start, 0), min(end, limit - 1)
        return start, end


def _square(value: int | tuple[int, ...], what: str, name: str) -> int:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if pair[0] != pair[1]:
        raise ValueError(f"receptive field: layer {name} has a non-square {what} {pair}")
    return int(pair[0])


def _cnn_field(layers: nn.Sequential, layer: str) -> ReceptiveField:
    names = [n for n, _ in layers.named_children()]
    if layer not in names:
        raise ValueError(f"receptive field: no layer {layer!r} in this representation; valid: {', '.join(names)}")
    size, stride, offset = 1, 1, 0
    for name, module in layers.named_children():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k = _square(module.kernel_size, "kernel", name)
            s = _square(module.stride, "stride", name)
            p = _square(module.padding, "padding", name)
            d = _square(getattr(module, "dilation", 1), "dilation", name)
            offset -= p * stride
            size += (k - 1) * d * stride
            stride *= s
        elif isinstance(module, _Flatten):  # the next Linear sees every position of the (6×6) map it flattens
            size += (_square(module.size, "map", name) - 1) * stride
        elif not isinstance(module, (nn.ReLU, nn.LocalResponseNorm, nn.Linear, nn.AdaptiveAvgPool2d)):
            raise ValueError(f"receptive field: layer {name} ({type(module).__name__}) is not supported")
        if name == layer:
            break
    return ReceptiveField(size, stride, offset)


def _support(representation: Representation, x: torch.Tensor, row: int, col: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` pixels where ∂(Σ_channels Φ[:, row, col])/∂x is non-zero (inclusive)."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(representation(x)[0, :, row, col].sum(), x)
    ys, xs = grad[0].abs().sum(0).nonzero(as_tuple=True)
    if ys.numel() == 0:
        raise ValueError(f"receptive field: {representation.spec}: neuron ({row}, {col}) has a zero gradient "
                         "everywhere on a random input (every unit saturated or dead), so its field cannot be measured")
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


def measured_field(representation: Representation, side: int | None = None) -> ReceptiveField:
    """The receptive field of a network layer's map, measured as the support of its neurons' gradients.

    Neurons ``(c, c)`` and ``(c + 1, c + 1)`` at the centre ``c`` of the map of a ``side`` × ``side`` input:
    the support of the gradient of each neuron's sum over channels (the union over two random inputs, so that
    no single ReLU pattern hides a pixel) gives the size and, from the shift between the two, the stride; the
    offset follows from ``start = offset + stride · c``. For layers whose field reaches the image border the
    size is clipped to the image and the stride is ``round(side / map side)``. Vector and token outputs see every
    pixel of the canonical input: ``(canonical, canonical, 0)``. ``side`` defaults to 320 pixels, or the
    largest side the layer takes if that is smaller.
    """
    if side is None:
        largest = getattr(representation, "max_size", None)
        side = min(_PROBE_SIDE, largest[0]) if largest else _PROBE_SIDE
    shape = representation.output_shape(side, side)
    if len(shape) in (1, 2):  # vectors and tokens (after attention, every token sees every patch)
        canonical = getattr(representation, "canonical_size", side)
        return ReceptiveField(canonical, canonical, 0)
    if len(shape) != 3:
        raise ValueError(f"receptive field: {representation.spec} gives {len(shape)}-d features, not maps")
    centre = shape[1] // 2
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(1, 3, side, side, generator=generator) for _ in range(2)]
    device = next(iter(representation.buffers()), torch.empty(0)).device
    spans = []
    for neuron in (centre, min(centre + 1, shape[1] - 1)):
        boxes = [_support(representation, x.to(device), neuron, neuron) for x in inputs]
        spans.append((min(b[0] for b in boxes), max(b[1] for b in boxes)))
    (start, end), (next_start, next_end) = spans
    clipped = start == 0 or next_end == side - 1
    stride = next_start - start if shape[1] > 1 and not clipped else max(round(side / shape[1]), 1)
    return ReceptiveField(end - start + 1, stride, start - stride * centre)


def receptive_field(representation: Representation, layer: str | None = None) -> ReceptiveField:
    """The receptive field of a neuron of ``representation`` (or of one of its CNN layers).

    Args:
        representation: a CNN layer (``alexnet:*``, ``caffenet:*``), ``hog``, ``hogb`` or ``dsift``.
        layer: for CNNs, any layer the representation keeps (default: its own output layer); must be
            ``None`` for HOG and DSIFT.

    Returns:
        ``(size, stride, offset)`` in pixels, see the module's Convention.

    Raises:
        ValueError: an unsupported representation or layer.

    Example:
        >>> from preimage import build_representation
        >>> receptive_field(build_representation("caffenet:conv2", weights="random"))
        ReceptiveField(size=51, stride=8, offset=-16)
    """
    if isinstance(representation, CNNRepresentation):
        return _cnn_field(representation.network, layer or representation.layer)
    if isinstance(representation, NetworkLayer):
        if layer not in (None, representation.layer):
            raise ValueError(f"receptive field: {representation.spec} measures its own layer only; pass layer=None")
        return measured_field(representation)
    if layer is not None:
        raise ValueError(f"receptive field: {representation.spec} has no layers; pass layer=None")
    if isinstance(representation, HOG):
        c = representation.cell_size
        return ReceptiveField(4 * c + 2, c, -c - c // 2 - 1)
    if isinstance(representation, DenseSIFT):
        b, s = representation.params["bin_size"], representation.params["step"]
        return ReceptiveField((NUM_BINS_XY + 1) * b + 1, s, -b)
    raise ValueError(f"receptive field: not defined for {representation.spec or type(representation).__name__}")
