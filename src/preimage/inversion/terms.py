"""Data terms of M&V's IJCV 2016 visualizations other than inversion, as pieces the GD engine composes.

Same call convention as :class:`~preimage.inversion.objectives.FeatureReconstruction`: a term maps pixels
``(B, C, H, W)`` in the optimizer's units to a ``(B,)`` tensor, one independent value per image, to be
*minimized* together with :class:`~preimage.inversion.objectives.ImagePrior`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..representations import Representation
from .objectives import PixelSpace

__all__ = ["Caricature", "NeuronActivation", "neuron_weights"]


def neuron_weights(feature_shape: Sequence[int], channel: int, position: tuple[int, int] | None = None) -> torch.Tensor:
    """The weights ``w`` over Φ's output that pick one neuron or the mean of one channel.

    Args:
        feature_shape: Φ's output shape without the batch, ``(C, h, w)`` or ``(D,)``.
        channel: the channel (or, for ``(D,)`` vectors, the component).
        position: ``(y, x)`` of the neuron in a spatial map; ``None`` averages the whole channel
            (weight ``1 / (h·w)`` at every position). Must be ``None`` for vectors.

    Returns:
        ``feature_shape`` float tensor.
    """
    shape = tuple(int(s) for s in feature_shape)
    if not 0 <= channel < shape[0]:
        raise ValueError(f"channel {channel} out of range: Φ has {shape[0]} channels")
    w = torch.zeros(shape)
    if len(shape) == 1:
        if position is not None:
            raise ValueError("Φ is a vector here: a neuron is a component, not a (y, x) position")
        w[channel] = 1
    elif len(shape) == 3:
        if position is None:
            w[channel] = 1 / (shape[1] * shape[2])
        else:
            y, x = position
            if not (0 <= y < shape[1] and 0 <= x < shape[2]):
                raise ValueError(f"neuron position {(y, x)} is outside the {shape[1]}x{shape[2]} feature map")
            w[channel, y, x] = 1
    else:
        raise ValueError(f"expected a (C, h, w) or (D,) feature shape, got {shape}")
    return w


class NeuronActivation:
    """Activation maximization (M&V IJCV §3.2): ``−⟨w, Φ(x)⟩ / normalizer`` per image.

    Minimizing it maximizes the weighted activation; with ``normalizer`` the typical maximum of that
    activation on natural images (M&V use the maximum over ImageNet images), the term is about −1 where
    the neuron responds as strongly as it does to a photograph.

    Args:
        representation: Φ, taking ``(B, C, H, W)`` images in ``[0, 1]``.
        weights: ``w``, broadcastable to Φ's output ``(B, ...)`` (see :func:`neuron_weights`).
        pixels: the parametrization from pixels to images.
        normalizer: a positive number or ``(B,)`` tensor, one per image.
    """

    def __init__(self, representation: Representation, weights: torch.Tensor, pixels: PixelSpace,
                 normalizer: float | torch.Tensor = 1.0) -> None:
        self.representation, self.pixels = representation, pixels
        self.weights = weights
        self.normalizer = torch.as_tensor(normalizer, dtype=weights.dtype, device=weights.device)
        if not bool((self.normalizer > 0).all()):
            raise ValueError(f"the activation normalizer must be positive, got {self.normalizer.tolist()}")

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """``⟨w, Φ(x)⟩`` per image ``(B,)``, un-normalized (in Φ's units)."""
        features = self.representation(self.pixels.to_image(x))
        return (features * self.weights).flatten(1).sum(1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return -self.activation(x) / self.normalizer


class Caricature:
    """Caricaturization (M&V IJCV §3.3): ``−⟨Φ(x), Φ0⁺⟩ / ‖Φ0⁺‖²`` per image, ``Φ0⁺ = max(Φ0, 0)``.

    Minimizing it exaggerates the patterns Φ detects in the original (only the neurons that respond
    positively count, as in M&V's code); it is −1 at the original itself.

    Args:
        representation: Φ, taking ``(B, C, H, W)`` images in ``[0, 1]``.
        target: Φ0 ``(B, ...)``, the original images' features.
        pixels: the parametrization from pixels to images.
    """

    def __init__(self, representation: Representation, target: torch.Tensor, pixels: PixelSpace) -> None:
        self.representation, self.pixels = representation, pixels
        self.target = target.clamp(min=0)
        self.norm = self.target.flatten(1).square().sum(1)
        if bool((self.norm == 0).any()):
            raise ValueError("the original's features have no positive value for some image: nothing to exaggerate")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        features = self.representation(self.pixels.to_image(x))
        return -(features * self.target).flatten(1).sum(1) / self.norm
