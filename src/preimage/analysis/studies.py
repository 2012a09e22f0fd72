"""Analyses from M&V (CVPR 2015, IJCV 2016), each writing ``<out>/<kind>.png`` and ``<out>/<kind>.json``.

- :func:`invariance`: several reconstructions per image from different random starts, per layer (M&V Fig. 1, 7).
- :func:`window`: reconstruction from a central k×k window of a layer's neurons, its receptive field boxed (Fig. 9).
- :func:`groups`: reconstruction from one group of channels, e.g. one of CaffeNet's two streams (Fig. 10).
- :func:`maximize`, :func:`caricature`: the same engine with other data terms (IJCV §3.2, §3.3), in
  :mod:`preimage.analysis.visualize`.

Each function's keyword arguments are the keys of ``configs/analyze/<kind>.yaml``. It returns the report it
writes as JSON: ``figures`` (per layer), ``definitions`` (what each figure means), ``config`` (the arguments),
``gd`` (the resolved GD settings per layer), ``representations``, ``device``, ``seconds``, ``notes`` (one
says so when CNN weights are random) and ``versions``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..config import check_int
from ..devices import resolve_device
from ..imagesets import resolve_image_path
from ..outputs import prepare_output_dir
from ..metrics import score, scoring_features
from ..inversion.masks import build_mask
from ..metrics import mean_pairwise_sq_dist
from ..images import to_grey
from ..inversion.methods import GDMethod
from .common import array_name, draw_box, load_square_images, plan, random_weight_note, steps_record, write_report
from .receptive_field import receptive_field

__all__ = ["groups", "invariance", "window"]


def _inputs(images: Sequence[str], out: str | Path, size: int, device: str,
            overwrite: bool) -> tuple[Path, list[str], torch.Tensor, torch.device]:
    """Checked inputs shared by the image analyses: ``(out folder, stems, originals, device)``."""
    stems, originals = load_square_images(images, size)
    dev = resolve_device(device)
    inputs = [resolve_image_path(i) for i in images]
    return prepare_output_dir(out, clear=overwrite, inputs=inputs), stems, originals, dev


def _pairwise_spread(recon: torch.Tensor) -> torch.Tensor:
    """Mean over ordered pairs ``r ≠ r'`` of ``‖x_r − x_r'‖²`` per image: ``(B, R, ...)`` → float64 ``(B,)``."""
    flat = recon.flatten(2).double()
    r = flat.shape[1]
    return torch.cdist(flat, flat).square().sum((1, 2)) / (r * (r - 1))


def invariance(images: Sequence[str], *, layers: Sequence[str], out: str | Path, size: int = 227, restarts: int = 4,
               preset: str = "mv2015", gd: Mapping[str, Any] | None = None, weights: str = "imagenet",
               device: str = "auto", progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Reconstruct every image ``restarts`` times from different random starts, for each layer.

    Args:
        images: paths or ``builtin:NAME``; centre-cropped to a square and resized to ``size`` pixels.
        layers: representation specs, e.g. ``[hog, caffenet:conv3, caffenet:fc8]``.
        out: output folder (created).
        restarts: reconstructions per image (>= 2), restart r from the random start seeded ``gd.seed + r``.
        preset, gd: the GD preset and overrides of it (``gd.restarts`` is ``restarts``).
        weights: CNN weights (``imagenet``, ``random`` or a state_dict path); ignored by HOG/DSIFT.
        device, progress: where to run; show progress bars.

    Figures per layer: ``error_percent[i][r]``, the feature_error of reconstruction r of image i (M&V Table 1,
    normalizer over the image set; with a single image, the normalized_loss instead: ``error_metric`` says
    which) and ``spread[i]``, the mean over pairs of restarts of ``‖x_r − x_r'‖²`` divided by the mean pairwise
    squared distance of the originals (image_error's normalizer; with one image, ``2‖x0 − mean(x0)‖²``, the
    distance to a shuffle of its own pixels): 0 when all restarts agree, about 1 when they differ as much as
    two different images do. Invariance grows with depth as the spread does. A strong prior also lowers the
    spread by flattening every restart, so ``spread_relative[i]`` divides the same pair distance by the
    reconstructions' own contrast, ``2·mean_r ‖x_r − mean(x_r)‖²`` (about 1 for restarts as unrelated as
    shuffles of each other's pixels).
    """
    check_int("restarts (the spread compares restarts)", restarts, minimum=2)
    steps = plan(layers, size, weights, preset, gd, restarts=restarts)
    out, stems, originals, dev = _inputs(images, out, size, device, overwrite)
    config = dict(images=list(images), layers=list(layers), out=str(out), size=size, restarts=restarts,
                  preset=preset, gd=dict(gd or {}), weights=weights, device=device, progress=progress)
    n = len(stems)
    metric = "feature_error" if n >= 2 else "normalized_loss"
    figures, gd_used, rows, row_labels, arrays = {}, {}, [], [], {}
    tic = time.perf_counter()
    for spec, rep, _, cfg in steps:
        x0 = to_grey(originals) if cfg.grey else originals
        res = GDMethod(rep, cfg, progress=progress)(x0, dev)
        arrays.update({array_name(spec, stem, f"r{r}"): res.images[i, r] for i, stem in enumerate(stems)
                       for r in range(restarts)})
        reference = scoring_features(rep, list(x0), dev)
        per_restart = [score(rep, list(x0), list(res.images[:, r]), dev, reference, [metric])[metric]
                       for r in range(restarts)]
        errors = [[100 * float(per_restart[r][i]) for r in range(restarts)] for i in range(n)]
        flat0 = [x.flatten().double() for x in x0]
        norm = mean_pairwise_sq_dist(flat0) if n >= 2 else 2 * (flat0[0] - flat0[0].mean()).square().sum()
        pairs = _pairwise_spread(res.images)
        spread = (pairs / norm).tolist()
        flat = res.images.flatten(2).double()
        contrast = (2 * (flat - flat.mean(2, keepdim=True)).square().sum(2).mean(1)).clamp_min(1e-12)
        relative = (pairs / contrast).tolist()
        figures[spec] = {"error_metric": metric, "error_percent": errors,
                         "error_mean_percent": sum(map(sum, errors)) / (n * restarts),
                         "spread": spread, "spread_mean": sum(spread) / n,
                         "spread_relative": relative, "spread_relative_mean": sum(relative) / n}
        gd_used[spec] = cfg.record()
        rows.append([t for i in range(n) for t in (x0[i], *res.images[i])])
        row_labels.append(f"{spec}\n{metric} {figures[spec]['error_mean_percent']:.1f}%\n"
                          f"spread {figures[spec]['spread_mean']:.3f}")
    notes = random_weight_note([rep for _, rep, _, _ in steps])
    if n < 2:
        notes.append("one image: error_percent is the normalized_loss (feature_error needs >= 2 images) and the "
                     "spread is relative to 2·‖x0 − mean(x0)‖²")
    cols = [label for s in stems for label in (s, *(f"r{r}" for r in range(restarts)))]
    return write_report(out, "invariance", rows, cols, row_labels, {
        "figures": figures,
        "definitions": {
            "error_percent": f"{metric} of each reconstruction, in % ([image][restart])",
            "spread": "mean over restart pairs r != r' of ||x_r - x_r'||^2 / "
                      + ("mean pairwise ||x0_j - x0_k||^2 of the originals" if n >= 2 else "2 ||x0 - mean(x0)||^2"),
            "spread_relative": "the same pair distance / 2 mean_r ||x_r - mean(x_r)||^2 (the restarts' own contrast)",
        },
        "config": config, "gd": gd_used, **steps_record(steps, dev, tic), "notes": notes}, arrays)


def window(images: Sequence[str], *, layers: Sequence[str], out: str | Path, size: int = 227, window: int = 5,
           preset: str = "mv2015", gd: Mapping[str, Any] | None = None, weights: str = "imagenet",
           device: str = "auto", progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Reconstruct from the central ``window`` × ``window`` neurons of each layer (all channels), M&V Fig. 9.

    The picture shows each original and reconstruction with the receptive field of the window (the union of
    its neurons' fields, :func:`~preimage.analysis.receptive_field.receptive_field`) drawn as a red box:
    outside it the data term has no gradient, and only the prior shapes the image.

    Figures per layer: ``window_neurons`` ``[top, left, bottom, right]`` (inclusive, in neurons) of the
    ``feature_map`` ``[h, w]``; ``receptive_field`` (size, stride, offset); ``box`` ``[top, left, bottom,
    right]`` in pixels and its ``box_fraction`` of the image; the final masked data term ``normalized_loss``
    per image; ``std_inside`` / ``std_outside``, the reconstruction's pixel standard deviation in and out of
    the box (``None`` when the box covers the image).
    """
    check_int("window (neurons)", window)
    steps = plan(layers, size, weights, preset, gd)
    masks = [build_mask({"window": window}, rep, size, size) for _, rep, _, _ in steps]
    out, stems, originals, dev = _inputs(images, out, size, device, overwrite)
    config = dict(images=list(images), layers=list(layers), out=str(out), size=size, window=window, preset=preset,
                  gd=dict(gd or {}), weights=weights, device=device, progress=progress)
    figures, gd_used, rows, row_labels, arrays = {}, {}, [], [], {}
    tic = time.perf_counter()
    for (spec, rep, shape, cfg), mask in zip(steps, masks):
        ys, xs = mask[0].nonzero(as_tuple=True)
        neurons = [int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())]
        rf = receptive_field(rep)
        (top, bottom), (left, right) = rf.span(neurons[0], neurons[2], size), rf.span(neurons[1], neurons[3], size)
        x0 = to_grey(originals) if cfg.grey else originals
        res = GDMethod(rep, cfg, mask={"window": window}, progress=progress)(x0, dev)
        recon = res.images[:, 0]
        arrays.update({array_name(spec, stem): recon[i] for i, stem in enumerate(stems)})
        inside = torch.zeros(size, size, dtype=torch.bool)
        inside[top:bottom + 1, left:right + 1] = True
        box = (top, left, bottom, right)
        figures[spec] = {
            "feature_map": list(shape[1:]), "window_neurons": neurons, "receptive_field": rf._asdict(),
            "box": list(box), "box_fraction": float(inside.float().mean()),
            "normalized_loss": res.final_data_loss[:, 0].tolist(),
            "std_inside": [float(x[:, inside].std()) for x in recon],
            "std_outside": [float(x[:, ~inside].std()) if bool((~inside).sum() > 1) else None for x in recon],
        }
        gd_used[spec] = cfg.record()
        rows.append([draw_box(t, box) for i in range(len(stems)) for t in (x0[i], recon[i])])
        row_labels.append(f"{spec}\n{window}x{window} of {shape[1]}x{shape[2]}\nfield {rf.size} px")
    cols = [label for s in stems for label in (s, "reconstruction")]
    return write_report(out, "window", rows, cols, row_labels, {
        "figures": figures,
        "definitions": {"box": "pixels [top, left, bottom, right] inclusive: the union of the window neurons' "
                               "receptive fields, clipped to the image",
                        "normalized_loss": "final ||m*(phi(x) - phi0)||^2 / ||m*phi0||^2 (m: the window mask)"},
        "config": config, "gd": gd_used, **steps_record(steps, dev, tic)}, arrays)


def _chroma(image: torch.Tensor) -> float:
    """Mean over pixels of (max − min) over the RGB channels of ``(C, H, W)``: 0 for grey images."""
    return float((image.amax(0) - image.amin(0)).mean())


def groups(images: Sequence[str], *, layers: Sequence[str], out: str | Path, size: int = 227, groups: int = 2,
           preset: str = "mv2015", gd: Mapping[str, Any] | None = None, weights: str = "imagenet",
           device: str = "auto", progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Reconstruct from one contiguous group of channels at a time (M&V Fig. 10).

    With ``groups=2`` the groups are the first and second half of the channels: CaffeNet's two streams from
    conv1 to norm2 (conv2 is grouped; conv3 mixes the streams again).

    Figures per layer and group: ``channels`` ``[first, last]``; the final masked data term
    ``normalized_loss`` per image; ``chroma`` per image, the mean over pixels of max − min over RGB of the
    reconstruction (the originals' is ``original_chroma``): one CaffeNet stream is known to carry colour.
    """
    check_int("groups", groups)
    steps = plan(layers, size, weights, preset, gd)
    for spec, _, shape, _ in steps:
        if len(shape) != 3 or shape[0] % groups:
            raise ValueError(f"{spec}: {groups} channel groups need a (C, h, w) map with C divisible by {groups}, "
                             f"got {shape}")
    out, stems, originals, dev = _inputs(images, out, size, device, overwrite)
    config = dict(images=list(images), layers=list(layers), out=str(out), size=size, groups=groups, preset=preset,
                  gd=dict(gd or {}), weights=weights, device=device, progress=progress)
    figures: dict[str, Any] = {}
    gd_used, rows, row_labels, arrays = {}, [], [], {}
    tic = time.perf_counter()
    for spec, rep, shape, cfg in steps:
        x0 = to_grey(originals) if cfg.grey else originals
        per = shape[0] // groups
        figures[spec] = {"original_chroma": [_chroma(x) for x in x0], "groups": []}
        recons = []
        for g in range(groups):
            channels = {"channels": list(range(g * per, (g + 1) * per))}
            res = GDMethod(rep, cfg, mask=channels, progress=progress)(x0, dev)
            recons.append(res.images[:, 0])
            arrays.update({array_name(spec, stem, f"g{g + 1}"): res.images[i, 0] for i, stem in enumerate(stems)})
            figures[spec]["groups"].append({"channels": [g * per, (g + 1) * per - 1],
                                            "normalized_loss": res.final_data_loss[:, 0].tolist(),
                                            "chroma": [_chroma(x) for x in res.images[:, 0]]})
        gd_used[spec] = cfg.record()
        rows.append([t for i in range(len(stems)) for t in (x0[i], *(r[i] for r in recons))])
        row_labels.append(spec + "".join(f"\ng{g + 1} chroma {sum(d['chroma']) / len(stems):.3f}"
                                         for g, d in enumerate(figures[spec]["groups"])))
    cols = [label for s in stems for label in (s, *(f"group {g + 1}" for g in range(groups)))]
    return write_report(out, "groups", rows, cols, row_labels, {
        "figures": figures,
        "definitions": {"chroma": "mean over pixels of max - min over the RGB channels (0: grey)",
                        "normalized_loss": "final ||m*(phi(x) - phi0)||^2 / ||m*phi0||^2 (m: the group's channels)"},
        "config": config, "gd": gd_used, **steps_record(steps, dev, tic)}, arrays)
