"""The inversion methods behind one protocol, and the one loop that runs them over an image set.

A :class:`Method` maps a stack of same-size images ``(n, C, H, W)`` in ``[0, 1]`` to :class:`Reconstructions`
(``(n, R, C, H, W)`` plus seconds per image); ``invert``, ``compare`` and the GD analyses all run theirs
through :func:`reconstruct`, which groups an image set by size and batches it.

- :class:`GDMethod`: M&V's gradient descent (a :class:`~preimage.inversion.gd.GDConfig`; R = its restarts).
- :class:`LearnedMethod`: D&B's decoder, one forward pass per batch.
- :class:`HybridMethod`: the learned reconstruction as GD's start, then the GD steps of its config; its time
  includes the learned pass.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import torch

from ..devices import synchronize
from ..metrics import same_size_batches
from ..representations import Representation
from .gd import DivergedError, GDConfig, invert_gd
from .learned import LearnedInverter
from .masks import build_mask

__all__ = ["GDMethod", "HybridMethod", "LearnedMethod", "Method", "Reconstructions", "hybrid_steps", "reconstruct",
           "truncate_schedule"]

#: ``callback_for(indices)``: a GD callback for the images ``indices`` of the set (e.g. TensorBoard logging)
CallbackFactory = Callable[[Sequence[int]], Callable[[int, torch.Tensor, torch.Tensor], None] | None]


@dataclass
class Reconstructions:
    """What a method made of ``n`` images.

    Attributes:
        images: ``(n, R, C, H, W)`` in ``[0, 1]`` on the CPU, R reconstructions per image (GD's restarts).
        seconds: per image, wall time of all its reconstructions (a batch's time shared equally).
        final_data_loss: ``(n, R)`` the data term at the last GD step; ``None`` for methods without one.
    """

    images: torch.Tensor
    seconds: list[float]
    final_data_loss: torch.Tensor | None


class Method(Protocol):
    """An inversion method: ``name``, the ``representation`` it inverts, and ``(images, device, indices) ->``
    :class:`Reconstructions` (``indices``: the images' positions in their set); ``takes_features``: whether it
    also takes ``features=`` (Φ of the images, when the caller has them)."""

    name: str
    representation: Representation
    takes_features: bool

    def __call__(self, images: torch.Tensor, device: torch.device, indices: Sequence[int] = ()) -> Reconstructions:
        ...


class GDMethod:
    """M&V's gradient descent with ``config`` (``mask``: a mask config, built per image size;
    ``stop_on_divergence``: raise :class:`~preimage.inversion.gd.DivergedError` naming the image, else the
    diverged reconstructions come back as NaN for the caller to note)."""

    name = "gd"
    takes_features = False

    def __init__(self, representation: Representation, config: GDConfig, *, mask: Any = None,
                 progress: bool = False, callback_for: CallbackFactory | None = None,
                 stop_on_divergence: bool = False) -> None:
        self.representation, self.config, self.mask = representation, config, mask
        self.progress, self.callback_for, self.stop_on_divergence = progress, callback_for, stop_on_divergence

    def __call__(self, images: torch.Tensor, device: torch.device, indices: Sequence[int] = (),
                 init: torch.Tensor | None = None) -> Reconstructions:
        mask = build_mask(self.mask, self.representation, *images.shape[-2:]) if self.mask is not None else None
        callback = self.callback_for(indices) if self.callback_for is not None else None
        with torch.enable_grad():  # Lightning's predict loop runs under no_grad
            try:
                res = invert_gd(self.representation, images, self.config, mask=mask, device=device,
                                progress=self.progress, callback=callback, init=init,
                                stop_on_divergence=self.stop_on_divergence)
            except DivergedError as err:
                err.problem = indices[err.problem] if indices else err.problem  # the image's index in its set
                raise
        n = len(images)
        return Reconstructions(res.images, [res.seconds / n] * n, res.data_loss[-1])


class LearnedMethod:
    """D&B's learned inverter: one forward pass of Φ and the decoder for the whole batch (each image's seconds
    are the batch's shared equally). Given ``features`` (Φ of the images, which the caller has computed), only
    the decoder runs and the seconds are its own."""

    name = "learned"
    takes_features = True

    def __init__(self, inverter: LearnedInverter) -> None:
        self.inverter, self.representation = inverter, inverter.representation

    def __call__(self, images: torch.Tensor, device: torch.device, indices: Sequence[int] = (),
                 features: torch.Tensor | None = None) -> Reconstructions:
        self.inverter.to(device)
        with torch.no_grad():
            synchronize(device)
            start = time.perf_counter()
            if features is None:
                recons = self.inverter(images.to(device)).cpu()  # .cpu() waits for the device
            else:
                recons = self.inverter.invert_features(features.to(device), tuple(images.shape[-2:])).cpu()
            seconds = time.perf_counter() - start
        n = len(images)
        return Reconstructions(recons[:, None], [seconds / n] * n, None)


class HybridMethod:
    """The learned reconstruction, refined by GD with ``config`` (its time counts the learned pass)."""

    name = "hybrid"
    takes_features = False

    def __init__(self, inverter: LearnedInverter, config: GDConfig) -> None:
        self.learned, self.gd = LearnedMethod(inverter), GDMethod(inverter.representation, config)
        self.representation = inverter.representation

    def __call__(self, images: torch.Tensor, device: torch.device, indices: Sequence[int] = ()) -> Reconstructions:
        start = self.learned(images, device, indices)
        refined = self.gd(images, device, indices, init=start.images[:, 0])
        return Reconstructions(refined.images, [a + b for a, b in zip(start.seconds, refined.seconds)],
                               refined.final_data_loss)


def truncate_schedule(schedule: Sequence[Sequence[float]], iterations: int) -> list[list[float]]:
    """``schedule`` cut to ``iterations`` steps in all; the last learning rate continues if it is shorter."""
    out: list[list[float]] = []
    left = iterations
    try:
        for lr, n in schedule:
            if left <= 0:
                break
            out.append([float(lr), min(int(n), left)])
            left -= out[-1][1]
    except (TypeError, ValueError):
        out = []
    if not out:
        raise ValueError("hybrid.schedule must hold [learning_rate, iterations] pairs")
    out[-1][1] += max(left, 0)
    return out


def hybrid_steps(schedule: Sequence[Sequence[float]], iterations: int, clamp: bool) -> dict[str, Any]:
    """The GD settings of the hybrid's refinement over a preset: ``schedule`` cut to ``iterations`` steps in all
    (:func:`truncate_schedule`), pixels clamped to [0, 1] at every step if ``clamp``."""
    return {"schedule": truncate_schedule(schedule, iterations), "clamp": clamp}


def reconstruct(method: Method, images: Sequence[torch.Tensor], device: torch.device, batch_size: int,
                indices: Sequence[int] | None = None, features: Sequence[torch.Tensor] | None = None
                ) -> list[tuple[torch.Tensor, float, torch.Tensor | None]]:
    """``method`` on every image ``(C, H, W)`` of a set: images of one size together, ``batch_size`` at a time.

    ``features``: Φ of each image, handed to a method that takes them (:class:`LearnedMethod`) instead of
    recomputing them.

    Returns:
        per image, in order: its reconstructions ``(R, C, H, W)``, its seconds, its final data loss ``(R,)``
        (``None`` for methods without one).
    """
    if features is not None and not method.takes_features:
        raise ValueError(f"method {method.name} does not take precomputed features")
    positions = list(range(len(images))) if indices is None else list(indices)
    out: dict[int, tuple[torch.Tensor, float, torch.Tensor | None]] = {}
    for chunk in same_size_batches(images, batch_size):
        given = {} if features is None else {"features": torch.stack([features[k] for k in chunk])}
        result = method(torch.stack([images[k] for k in chunk]).to(device), device, [positions[k] for k in chunk],
                        **given)
        for j, k in enumerate(chunk):
            loss = None if result.final_data_loss is None else result.final_data_loss[j]
            out[k] = (result.images[j], result.seconds[j], loss)
    return [out[k] for k in range(len(images))]
