"""Scoring class maximizations under transforms the optimization never saw (robust patterns, not adversarial noise).

An image made to maximize class ``k`` of a classifier counts as showing the class when the network still gives
``k`` a high softmax probability after the image is shifted, scaled and rotated
(:func:`~preimage.inversion.transforms.evaluation_transforms`): adversarial noise rarely survives that.

Convention:
    ``representation`` maps ``(N, 3, H, W)`` images in ``[0, 1]`` to logits ``(N, K)`` (e.g.
    ``efficientnet_lite0:logits``); probabilities are ``softmax`` over the K classes.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..inversion.transforms import Affine, affine, evaluation_transforms
from ..representations import Representation

__all__ = ["class_probabilities", "transformed_scores"]


def class_probabilities(representation: Representation, images: torch.Tensor, classes: Sequence[int],
                        transforms: Sequence[Affine]) -> torch.Tensor:
    """``softmax(Φ(T_t(x_i)))[classes[i]]`` for every transform ``t`` and image ``i``.

    Shape:
        images ``(N, 3, H, W)``, ``len(classes) == N`` → ``(T, N)`` float64, ``T = len(transforms)``.
    """
    if images.dim() != 4 or len(classes) != images.shape[0]:
        raise ValueError(f"need images (N, C, H, W) and one class per image, got {tuple(images.shape)} and "
                         f"{len(classes)} classes")
    device = next(iter(representation.parameters()), images).device
    index = torch.arange(images.shape[0])
    out = []
    with torch.no_grad():
        for t in transforms:
            logits = representation(affine(images, [t] * images.shape[0]).to(device)).cpu().double()
            if logits.dim() != 2:
                raise ValueError(f"{representation.spec}: expected logits (N, K), got {tuple(logits.shape)}")
            out.append(logits.softmax(1)[index, torch.as_tensor(list(classes))])
    return torch.stack(out)


def transformed_scores(representation: Representation, images: torch.Tensor, classes: Sequence[int],
                       count: int = 8) -> dict[str, list[float] | list[dict[str, object]]]:
    """Each image's class probability as it is (``plain``) and its mean over ``count`` evaluation transforms
    (``transformed``), with the transforms used (``transforms``)."""
    transforms = evaluation_transforms(count)
    plain = class_probabilities(representation, images, classes, [Affine()])[0]
    moved = class_probabilities(representation, images, classes, transforms)
    return {"plain": plain.tolist(), "transformed": moved.mean(0).tolist(),
            "transforms": [t.record() for t in transforms]}
