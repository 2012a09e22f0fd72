"""D&B's "dark knowledge" experiment: what the small class probabilities keep.

A learned inverter of a probability layer (``efficientnet_lite0:prob``) reconstructs each image three times: from
all its probabilities, from its top k only (the rest set to 0), and from all but its top k (those set to 0). D&B
found the top 5 alone give little, while the many small probabilities keep the colours and the rough layout.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import check_int
from ..metrics import image_error
from .common import array_name, write_report
from .learned_common import (bundle_record, decode, features_of, floats, inverter_notes, learned_inputs, mean,
                             variant_grid)

__all__ = ["dark_knowledge", "split_top"]

_VARIANTS = ("all", "top", "rest")


def split_top(probabilities: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(top, rest)`` of ``(N, D)`` vectors: ``top`` keeps each row's k largest entries and zeroes the others,
    ``rest`` zeroes those k and keeps the others (``top + rest`` is the input)."""
    if probabilities.dim() != 2:
        raise ValueError(f"dark knowledge needs vectors (N, D), e.g. class probabilities; got {tuple(probabilities.shape)}")
    if not 1 <= k < probabilities.shape[1]:
        raise ValueError(f"top must be between 1 and {probabilities.shape[1] - 1}, got {k}")
    keep = torch.zeros_like(probabilities, dtype=torch.bool).scatter_(1, probabilities.topk(k, dim=1).indices, True)
    return probabilities * keep, probabilities * ~keep


def dark_knowledge(images: Sequence[str] | str = "builtin", *, checkpoint: str = "efficientnet_lite0:prob",
                   out: str | Path, size: int = 224, top: int = 5, device: str = "auto",
                   overwrite: bool = False) -> dict[str, Any]:
    """Reconstruct each image from all its class probabilities, from its ``top`` only, and from all but its ``top``.

    The picture has one row per image: original | from all | from the top ``top`` | from all but the top ``top``.

    Args:
        images: at least 2 (files, ``builtin:NAME``, folders or ``builtin``: image_error normalizes over them).
        checkpoint: an inverter of a vector layer (a shipped name such as ``efficientnet_lite0:prob``, or a path).
        out: output folder (created).
        size: the images' side in pixels (shorter side resized, centre crop).
        top: how many of the largest probabilities the ``top`` variant keeps and the ``rest`` variant zeroes.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``.

    Figures (keyed by the bundle's spec), per image and with their ``_mean``: ``image_error_<v>`` for v = ``all``,
    ``top``, ``rest``; ``top_mass`` (the probability the top ``top`` hold) and ``top_classes``.
    """
    check_int("top", top)
    inverter, path, out, names, stems, x0, dev = learned_inputs(images, checkpoint, out, size, device,
                                                                count="several", overwrite=overwrite)
    config = dict(images=images if isinstance(images, str) else list(images), checkpoint=str(checkpoint),
                  out=str(out), size=size, top=top, device=device)
    tic = time.perf_counter()
    spec = inverter.representation.spec
    phi = features_of(inverter, x0, dev)
    kept, rest = split_top(phi, top)
    recon = {v: decode(inverter, f, size) for v, f in zip(_VARIANTS, (phi, kept, rest))}
    figures: dict[str, Any] = {"images": names}
    for v in _VARIANTS:
        errors = floats(image_error(recon[v], x0))
        figures.update({f"image_error_{v}": errors, f"image_error_{v}_mean": mean(errors)})
    figures["top_mass"] = floats(kept.sum(1))
    figures["top_classes"] = phi.topk(top, dim=1).indices.tolist()
    rows, row_labels, cols = variant_grid(x0, recon, stems, {v: figures[f"image_error_{v}"] for v in _VARIANTS},
                                          {"all": "all", "top": f"top {top} only", "rest": f"all but top {top}"})
    arrays = {array_name(spec, stem, v): recon[v][i] for i, stem in enumerate(stems) for v in _VARIANTS}
    return write_report(out, "dark_knowledge", rows, cols, row_labels, {
        "figures": {spec: figures},
        "definitions": {
            "image_error_<v>": "||x_v - x0||^2 / mean pairwise ||x0_j - x0_k||^2 (metrics.image_error); v = all "
                               f"(every probability), top (the {top} largest, the rest 0), rest (the {top} largest "
                               "set to 0)",
            "top_mass": f"the probability the {top} largest entries hold",
        },
        "config": config, "bundle": bundle_record(inverter, path),
        "representations": {spec: inverter.representation.params}, "device": str(dev),
        "seconds": time.perf_counter() - tic, "notes": inverter_notes(inverter, size)}, arrays)
