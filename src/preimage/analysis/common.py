"""What the analyses share: images at one size, representations and GD settings per spec, boxes, reports."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..config import check_int
from ..imagesets import load_image_set
from ..outputs import unique_stems, versions
from ..jobs.report import write_json
from ..images import check_side, grid, save_npy, save_png
from ..inversion.gd import GDConfig
from ..inversion.presets import gd_config
from ..representations import Representation, build_representation

__all__ = ["array_name", "build", "check_layers", "check_size", "draw_box", "enlarge", "fit",
           "load_square_images", "plan", "random_weight_note", "steps_record", "write_report"]

RANDOM_NOTE = "made with RANDOM CNN weights ({specs}): not the pretrained network; the pictures show nothing it learned"


def load_square_images(items: Sequence[str], size: int) -> tuple[list[str], torch.Tensor]:
    """Images (paths or ``builtin:NAME``) as ``(stems, (N, 3, size, size))`` in ``[0, 1]``, grey replicated to RGB,
    squared by :func:`~preimage.common.square`."""
    if isinstance(items, str) or not items:
        raise ValueError("images must be a non-empty list of paths or builtin:NAME")
    check_size(size)
    _, paths, images = load_image_set(items, size=size, grey=False)
    return unique_stems(paths), torch.stack(images)


def check_size(size: Any, name: str = "size") -> int:
    """``size`` as a positive int (pixels) whose square is within the pixel budget, or ``ValueError``."""
    return check_side(name, check_int(f"{name} (pixels)", size))


def check_layers(layers: Sequence[str]) -> list[str]:
    """A non-empty list of representation specs (checked when built)."""
    if isinstance(layers, str) or not layers:
        raise ValueError("layers must be a non-empty list of representation specs, e.g. [hog, caffenet:conv3]")
    return [str(s) for s in layers]


def build(spec: str, weights: str) -> Representation:
    """``build_representation(spec)``, with ``weights`` for CNN specs (``family:layer``)."""
    return build_representation(spec, weights=weights) if ":" in spec else build_representation(spec)


def fit(representation: Representation, size: int) -> tuple[int, ...]:
    """Φ's output shape for ``size`` × ``size`` images; ``ValueError`` naming the spec if it takes none."""
    try:
        representation.check_input(torch.zeros(1, 3, size, size))
    except ValueError as err:
        raise ValueError(f"{representation.spec} at size={size}: {err}") from None
    return tuple(representation.output_shape(size, size))


def plan(layers: Sequence[str], size: int, weights: str, preset: str, gd: Mapping[str, Any] | None,
         **fixed: Any) -> list[tuple[str, Representation, tuple[int, ...], GDConfig]]:
    """Every layer's ``(spec, representation, output shape at size, GD config)``, built before any GD runs.

    So that a bad layer, size or setting fails at once, not after the layers before it have run.
    """
    check_size(size)
    steps = []
    for spec in check_layers(layers):
        rep = build(spec, weights)
        steps.append((spec, rep, fit(rep, size), gd_config(preset, rep, gd, **fixed)))
    return steps


def steps_record(steps: Sequence[tuple[str, Representation, tuple[int, ...], GDConfig]], device: torch.device,
                 started: float) -> dict[str, Any]:
    """What every GD analysis report says of its layers: their parameters, the device, the seconds since
    ``started`` (``time.perf_counter()``) and the random-weights note."""
    return {"representations": {spec: rep.params for spec, rep, _, _ in steps}, "device": str(device),
            "seconds": time.perf_counter() - started, "notes": random_weight_note([rep for _, rep, _, _ in steps])}


def draw_box(image: torch.Tensor, box: tuple[int, int, int, int], colour: Sequence[float] = (1.0, 0.0, 0.0),
             width: int = 1) -> torch.Tensor:
    """A copy of ``(C, H, W)`` as RGB with the outline of ``box = (top, left, bottom, right)`` (inclusive) drawn."""
    out = image.expand(3, -1, -1).clone()
    top, left, bottom, right = box
    c = torch.tensor(colour, dtype=out.dtype).view(3, 1, 1)
    out[:, top:top + width, left:right + 1] = c
    out[:, bottom - width + 1:bottom + 1, left:right + 1] = c
    out[:, top:bottom + 1, left:left + width] = c
    out[:, top:bottom + 1, right - width + 1:right + 1] = c
    return out


def enlarge(image: torch.Tensor, min_side: int = 96) -> torch.Tensor:
    """``(C, H, W)`` magnified by the smallest integer factor that makes it ``min_side`` tall (nearest), for viewing."""
    factor = max(1, -(-min_side // image.shape[-2]))
    return image.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def random_weight_note(representations: Sequence[Representation]) -> list[str]:
    """The note every output made with random CNN weights carries (empty otherwise)."""
    specs = [r.spec for r in representations if getattr(r, "random_weights", False)]
    return [RANDOM_NOTE.format(specs=", ".join(specs))] if specs else []


def array_name(spec: str, *parts: str) -> str:
    """The file stem of an analysis image: the layer spec with ``:`` replaced by ``_``, then ``parts``, joined by
    ``-`` (e.g. ``array_name("efficientnet_lite0:logits", "c281")`` → ``efficientnet_lite0_logits-c281``)."""
    return "-".join((spec.replace(":", "_"), *parts))


def write_report(out: Path, kind: str, rows: Sequence[Sequence[torch.Tensor]], col_labels: Sequence[str] | None,
                 row_labels: Sequence[str], report: dict[str, Any],
                 arrays: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Write ``<out>/<kind>.png`` (the labelled grid), every image the analysis made as ``<out>/<name>.npy``
    (``arrays``: name → ``(C, H, W)`` in ``[0, 1]``, written float32 ``H × W × C``, so that scripts can re-score
    them) and ``<out>/<kind>.json`` (``report`` + the ``arrays`` names + versions), last; return the report.
    An image with NaN or infinite values (a descent that diverged) gets no ``.npy`` and a note instead."""
    diverged = [name for name, image in arrays.items() if not bool(torch.isfinite(image).all())]
    written = [name for name in arrays if name not in diverged]
    for name in written:
        save_npy(arrays[name], out / f"{name}.npy")
    save_png(grid(rows, col_labels=col_labels, row_labels=row_labels), out / f"{kind}.png")
    notes = list(report.get("notes", []))
    if diverged:
        notes.append(f"the descent diverged (NaN or infinite values; no .npy written, black in the picture) for "
                     f"{', '.join(diverged)}: lower the step (gd.schedule) or use another preset")
    report = {"kind": kind, **report, "notes": notes, "arrays": [f"{name}.npy" for name in written],
              "versions": versions()}
    write_json(out / f"{kind}.json", report)
    return report
