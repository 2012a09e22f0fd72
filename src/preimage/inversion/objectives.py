"""The objectives the GD engine minimizes, as small pieces that compose: ``a + 0.1 * b``.

An :class:`Objective` maps a batch of images ``(B, C, H, W)`` in ``[0, 1]`` to a ``(B,)`` tensor, one
independent value per image (each image of a batch is its own problem). It is built with one row per
problem (``N`` targets, weights, ...); the engine moves it to its device and expands it to the ``N · R``
rows of ``R`` restarts (row ``i·R + r`` is problem i's restart r) with :meth:`Objective.expand`, so that no
objective handles restarts itself. The image prior acts on the engine's pixels and lives with the engine
(:class:`~.regularizers.ImagePrior`).

- :class:`FeatureReconstruction`: inversion (M&V 2015), ‖m ⊙ (Φ(x) − Φ0)‖² / ‖m ⊙ Φ0‖².
- :class:`NeuronActivation`: activation maximization (M&V IJCV 2016 §3.2), −⟨w, Φ(x)⟩ / normalizer.
- :class:`Caricature`: caricaturization (§3.3), −⟨Φ(x), Φ0⁺⟩ / ‖Φ0⁺‖².
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch

__all__ = ["Caricature", "FeatureReconstruction", "NeuronActivation", "Objective", "check_gradient", "max_response",
           "neuron_weights"]

Features = Callable[[torch.Tensor], torch.Tensor]  # Φ: images (B, C, H, W) in [0, 1] -> features (B, ...)


def check_gradient(representation: Features) -> None:
    """One-line ``ValueError`` for a Φ without a gradient (its ``differentiable`` false: LBP, SIFT), saying
    whether its surrogate can stand in."""
    if not getattr(representation, "differentiable", True):
        spec = getattr(representation, "spec", "") or type(representation).__name__
        surrogate = getattr(representation, "surrogate", None)
        if surrogate is not None and getattr(surrogate(), "differentiable", False):
            remedy = "only inversion can descend its surrogate (gd.surrogate=true)"
        else:
            remedy = "it has no surrogate either: invert it with a learned inverter (--method learned)"
        raise ValueError(f"{spec}: its features have no gradient GD can follow (piecewise constant in the pixels, "
                         f"or jumping where keypoints appear and vanish); {remedy}")


class Objective:
    """A per-image objective, images ``(B, C, H, W)`` in ``[0, 1]`` → ``(B,)``; ``+`` and ``*`` compose them.

    Subclasses name in ``per_problem`` their tensor attributes with one row per problem (repeated for the
    restarts by :meth:`expand`) and in ``tensors`` the others that move with :meth:`to`.
    """

    per_problem: tuple[str, ...] = ()
    tensors: tuple[str, ...] = ()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __add__(self, other: "Objective") -> "Objective":
        return Sum(self, other)

    def __radd__(self, other: object) -> "Objective":  # sum([...]) starts from 0
        if other == 0:
            return self
        return NotImplemented

    def __mul__(self, weight: float) -> "Objective":
        return Scaled(self, float(weight))

    __rmul__ = __mul__

    def _with(self, change: Callable[[str, torch.Tensor], torch.Tensor], names: Sequence[str]) -> "Objective":
        out = copy.copy(self)
        for name in names:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                setattr(out, name, change(name, value))
        return out

    def to(self, device: torch.device | str) -> "Objective":
        """A copy whose tensors (and Φ, if it has one) are on ``device``."""
        representation = getattr(self, "representation", None)
        if isinstance(representation, torch.nn.Module):
            representation.to(device)
        return self._with(lambda _, t: t.to(device), (*self.per_problem, *self.tensors))

    def expand(self, restarts: int) -> "Objective":
        """A copy for ``restarts`` rows per problem: each per-problem row repeated ``restarts`` times in place."""
        return self._with(lambda _, t: t.repeat_interleave(restarts, dim=0) if t.dim() else t, self.per_problem)


class Sum(Objective):
    """``a + b``."""

    def __init__(self, a: Objective, b: Objective) -> None:
        self.a, self.b = a, b

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.a(images) + self.b(images)

    def to(self, device: torch.device | str) -> Objective:
        return Sum(self.a.to(device), self.b.to(device))

    def expand(self, restarts: int) -> Objective:
        return Sum(self.a.expand(restarts), self.b.expand(restarts))


class Scaled(Objective):
    """``weight * term``."""

    def __init__(self, term: Objective, weight: float) -> None:
        self.term, self.weight = term, weight

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.weight * self.term(images)

    def to(self, device: torch.device | str) -> Objective:
        return Scaled(self.term.to(device), self.weight)

    def expand(self, restarts: int) -> Objective:
        return Scaled(self.term.expand(restarts), self.weight)


class FeatureReconstruction(Objective):
    """M&V's data term ‖m ⊙ (Φ(x) − Φ0)‖² / ‖m ⊙ Φ0‖², one normalizer per image.

    Args:
        representation: Φ, taking ``(B, C, H, W)`` images in ``[0, 1]``.
        target: Φ0 ``(N, ...)``, one row per problem.
        mask: optional 0/1 (or weight) tensor: one per problem ``(N, ...)`` (same number of dimensions as
            ``target``) or one for all, broadcastable to a row of ``target``: only selected neurons count.
    """

    def __init__(self, representation: Features, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        check_gradient(representation)
        self.representation = representation
        self.mask = None if mask is None else mask.to(target.device, target.dtype)
        self.target = target if self.mask is None else target * self.mask
        norm = self.target.flatten(1).square().sum(1)
        if bool((norm == 0).any()):
            raise ValueError("the target features (inside the mask) are all zero for some image: nothing to invert")
        self.norm = norm
        per_row_mask = self.mask is not None and self.mask.dim() == target.dim()
        self.per_problem = ("target", "norm", *(("mask",) if per_row_mask else ()))
        self.tensors = () if per_row_mask or self.mask is None else ("mask",)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if getattr(self.representation, "steered_by_target", False):  # Representation.steered_by_target
            features = self.representation(images, target=self.target)
        else:
            features = self.representation(images)
        if self.mask is not None:
            features = features * self.mask
        return (features - self.target).flatten(1).square().sum(1) / self.norm


def neuron_weights(feature_shape: Sequence[int], channel: int, position: tuple[int, int] | None = None) -> torch.Tensor:
    """The weights ``w`` over Φ's output that pick one neuron or the mean of one channel.

    Args:
        feature_shape: Φ's output shape without the batch: maps ``(C, h, w)``, tokens ``(N, D)`` or vectors ``(D,)``.
        channel: the channel (for tokens, the feature dimension ``d < D``; for vectors, the component).
        position: ``(y, x)`` of the neuron in a spatial map, ``(t,)`` of the token; ``None`` averages the whole
            channel (weight ``1 / (h·w)`` at every position, ``1 / N`` at every token). ``None`` for vectors.

    Returns:
        ``feature_shape`` float tensor.
    """
    shape = tuple(int(s) for s in feature_shape)
    channels = shape[-1] if len(shape) == 2 else shape[0]
    if not 0 <= channel < channels:
        raise ValueError(f"channel {channel} out of range: Φ has {channels} channels")
    w = torch.zeros(shape)
    if len(shape) == 2:
        if position is None:
            w[:, channel] = 1 / shape[0]
        elif len(position) == 1 and 0 <= position[0] < shape[0]:
            w[position[0], channel] = 1
        else:
            raise ValueError(f"Φ gives {shape[0]} tokens here: a neuron is a token (t,), got {position}")
    elif len(shape) == 1:
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
        raise ValueError(f"expected a (C, h, w), (N, D) or (D,) feature shape, got {shape}")
    return w


def max_response(features: torch.Tensor, channel: int, target: str = "neuron") -> float:
    """The largest magnitude of ``channel``'s response over a batch of maps ``(M, C, h, w)``, tokens ``(M, N, D)``
    or vectors ``(M, D)``: over its neurons (``target="neuron"``) or of its mean (``"channel"``); the normalizer
    of :class:`NeuronActivation` that makes 1 a photograph's best."""
    f = features[..., channel] if features.dim() == 3 else features[:, channel]
    if f.dim() > 1 and target == "channel":
        f = f.flatten(1).mean(1)
    return float(f.abs().max())


class NeuronActivation(Objective):
    """Activation maximization (M&V IJCV §3.2): ``−⟨w, Φ(x)⟩ / normalizer`` per image.

    Minimizing it maximizes the weighted activation; with ``normalizer`` the typical maximum of that
    activation on natural images (M&V use the maximum over ImageNet images), the term is about −1 where
    the neuron responds as strongly as it does to a photograph.

    Args:
        representation: Φ, taking ``(B, C, H, W)`` images in ``[0, 1]``.
        weights: ``w`` ``(N, ...)``, one row per problem (see :func:`neuron_weights`).
        normalizer: a positive number or ``(N,)`` tensor, one per problem.
    """

    def __init__(self, representation: Features, weights: torch.Tensor, normalizer: float | torch.Tensor = 1.0) -> None:
        check_gradient(representation)
        self.representation = representation
        self.weights = weights
        self.normalizer = torch.as_tensor(normalizer, dtype=weights.dtype, device=weights.device)
        if not bool((self.normalizer > 0).all()):
            raise ValueError(f"the activation normalizer must be positive, got {self.normalizer.tolist()}")
        self.per_problem = ("weights", *(("normalizer",) if self.normalizer.dim() else ()))
        self.tensors = () if self.normalizer.dim() else ("normalizer",)

    def activation(self, images: torch.Tensor) -> torch.Tensor:
        """``⟨w, Φ(x)⟩`` per image ``(B,)``, un-normalized (in Φ's units)."""
        return (self.representation(images) * self.weights).flatten(1).sum(1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return -self.activation(images) / self.normalizer


class Caricature(Objective):
    """Caricaturization (M&V IJCV §3.3): ``−⟨Φ(x), Φ0⁺⟩ / ‖Φ0⁺‖²`` per image, ``Φ0⁺ = max(Φ0, 0)``.

    Minimizing it exaggerates the patterns Φ detects in the original (only the neurons that respond
    positively count, as in M&V's code); it is −1 at the original itself.

    Args:
        representation: Φ, taking ``(B, C, H, W)`` images in ``[0, 1]``.
        target: Φ0 ``(N, ...)``, the original images' features.
    """

    per_problem = ("target", "norm")

    def __init__(self, representation: Features, target: torch.Tensor) -> None:
        check_gradient(representation)
        self.representation = representation
        self.target = target.clamp(min=0)
        self.norm = self.target.flatten(1).square().sum(1)
        if bool((self.norm == 0).any()):
            raise ValueError("the original's features have no positive value for some image: nothing to exaggerate")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return -(self.representation(images) * self.target).flatten(1).sum(1) / self.norm
