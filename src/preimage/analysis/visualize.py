"""Activation maximization and caricatures (M&V IJCV 2016 §3.2–3.3): the GD engine with other data terms.

Both write ``<out>/<kind>.png`` and ``<out>/<kind>.json`` like :mod:`preimage.analysis.studies`; their GD
settings come from ``configs/presets/maximize.yaml`` and ``configs/presets/caricature.yaml``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..devices import resolve_device

from ..imagesets import resolve_image_path
from ..outputs import prepare_output_dir
from ..images import to_grey
from ..inversion.gd import GDConfig, gd_setup, optimize_gd
from ..inversion.objectives import Caricature, NeuronActivation, max_response, neuron_weights
from ..representations import Representation
from ..inversion.presets import gd_config
from .common import (array_name, build, check_layers, check_size, enlarge, fit, load_square_images, plan,
                     random_weight_note, steps_record, write_report)
from .receptive_field import ReceptiveField, receptive_field

__all__ = ["auto_size", "caricature", "maximize"]

_CANONICAL = 227  # the input side of fully connected layers (pool5 6×6)
_TARGETS = ("neuron", "channel")


def auto_size(representation: Representation, field: ReceptiveField) -> int:
    """M&V's image side for maximizing a neuron: the largest whose map is at most ``reps`` neurons wide.

    ``reps = round(1.1 · size / stride)``, made odd (``exp_maximization.m``), so that the centre neuron's
    field roughly fills the image. Vector outputs (fc layers) use the network's canonical side (227 for
    AlexNet and CaffeNet, 224 for most ImageNet networks).
    """
    reps = round(1.1 * field.size / field.stride)
    reps += 1 - reps % 2
    low = representation.min_size[0]
    shape = representation.output_shape(low, low)
    if len(shape) != 3:
        return getattr(representation, "canonical_size", _CANONICAL)
    if shape[1] > reps:
        raise ValueError(f"{representation.spec}: no image size gives a map of at most {reps} neurons")
    largest = getattr(representation, "max_size", None)
    high = largest[0] + 1 if largest else 1025  # the map grows with the side: bisect for the last side that fits
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if representation.output_shape(mid, mid)[1] <= reps else (low, mid)
    return low


@dataclass
class _Problem:
    """One layer's maximization, prepared before any GD runs."""

    spec: str
    rep: Representation
    field: ReceptiveField
    side: int
    shape: tuple[int, ...]
    config: GDConfig
    position: tuple[int, int] | None
    weights: torch.Tensor  # (N, *shape)
    normalizers: torch.Tensor  # (N,)


def _prepare(spec: str, channels: Sequence[int], target: str, size: int | str, references: torch.Tensor,
             weights: str, preset: str, gd: Mapping[str, Any] | None, dev: torch.device) -> _Problem:
    rep = build(spec, weights)
    field = receptive_field(rep)
    side = auto_size(rep, field) if size == "auto" else int(size)
    shape = fit(rep, side)
    fit(rep, references.shape[-1])
    config = gd_config(preset, rep, gd)
    with torch.no_grad():
        features = rep.to(dev)(to_grey(references).to(dev) if config.grey else references.to(dev)).cpu()
    normalizers = torch.tensor([max_response(features, c, target) for c in channels])
    if not bool((normalizers > 0).all()):
        dead = [c for c, v in zip(channels, normalizers.tolist()) if not v > 0]
        raise ValueError(f"{spec}: channel(s) {dead} respond to none of normalizer_images; pick others")
    position = (shape[1] // 2, shape[2] // 2) if len(shape) == 3 and target == "neuron" else None
    w = torch.stack([neuron_weights(shape, c, position) for c in channels])
    return _Problem(spec, rep, field, side, shape, config, position, w, normalizers)


def _activation(problem: _Problem, images: torch.Tensor, dev: torch.device) -> list[list[float]]:
    """``⟨w, Φ⟩`` of images ``(N, R, C, H, W)`` as ``[channel][restart]``."""
    with torch.no_grad():
        features = problem.rep(images.flatten(0, 1).to(dev)).cpu().view(*images.shape[:2], *problem.shape)
    return (features * problem.weights[:, None]).flatten(2).sum(2).tolist()


def maximize(*, layers: Sequence[str], out: str | Path, channels: Sequence[int] = (0, 1, 2, 3),
             target: str = "neuron", size: int | str = "auto", normalizer_images: Sequence[str] = ("builtin:rocket",),
             normalizer_size: int = _CANONICAL, preset: str = "maximize", gd: Mapping[str, Any] | None = None,
             weights: str = "imagenet", device: str = "auto", progress: bool = True,
             overwrite: bool = False) -> dict[str, Any]:
    """Images that maximize one neuron (or one channel's mean) of each layer, from random starts.

    The data term is :class:`~preimage.inversion.objectives.NeuronActivation`, ``−⟨w, Φ(x)⟩ / normalizer``, with
    ``normalizer`` the largest magnitude of the channel's response to ``normalizer_images`` (at
    ``normalizer_size`` pixels; M&V use its maximum over ImageNet images, the same for ReLU outputs), so
    that ``activation_ratio`` 1 is a photograph's best.

    Args:
        layers: representation specs (CNN layers, ``hog``, ``dsift``).
        out: output folder (created).
        channels: the channels (components of fc layers) maximized, one image each.
        target: ``neuron`` (the centre neuron of the channel) or ``channel`` (its mean over positions).
        size: image side in pixels, or ``auto`` (:func:`auto_size`, as M&V).
        normalizer_images, normalizer_size: the photos (paths or ``builtin:NAME``) that set the normalizer.
        preset, gd: GD preset (per layer) and overrides; weights, device, progress: as :func:`~.studies.invariance`.

    Figures per layer: ``image_size``, ``receptive_field``, ``neuron`` (``[y, x]`` or ``None``), and per channel
    ``normalizer`` and the activation ``⟨w, Φ⟩`` of the start and final images (``activation_start``,
    ``activation_final``, per restart) and ``activation_ratio`` (final / normalizer). A dead ReLU neuron
    (0 at the start) has no gradient and stays at 0.
    """
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {', '.join(_TARGETS)}, got {target!r}")
    if isinstance(channels, (str, int)) or not channels or not all(isinstance(c, int) for c in channels):
        raise ValueError(f"channels must be a non-empty list of channel indices, got {channels!r}")
    if size != "auto":
        check_size(size, "size (or auto)")
    _, references = load_square_images(normalizer_images, normalizer_size)
    dev = resolve_device(device)
    problems = [_prepare(spec, channels, target, size, references, weights, preset, gd, dev)
                for spec in check_layers(layers)]
    out = prepare_output_dir(out, clear=overwrite, inputs=[resolve_image_path(i) for i in normalizer_images])
    config = dict(layers=list(layers), out=str(out), channels=list(channels), target=target, size=size,
                  normalizer_images=list(normalizer_images), normalizer_size=normalizer_size, preset=preset,
                  gd=dict(gd or {}), weights=weights, device=device, progress=progress)
    figures, gd_used, rows, row_labels, arrays = {}, {}, [], [], {}
    tic = time.perf_counter()
    for p in problems:
        n, c, r = len(channels), 1 if p.config.grey else 3, p.config.restarts
        res = optimize_gd(NeuronActivation(p.rep, p.weights, p.normalizers), (n, c, p.side, p.side), p.config,
                          device=dev, progress=progress)
        setup = gd_setup(p.config, n, c, p.side, p.side)
        starts = setup.space.to_image(setup.starts).clamp(0, 1).view(n, r, c, p.side, p.side)
        final = _activation(p, res.images, dev)
        arrays.update({array_name(p.spec, f"c{ch}", *([f"r{k}"] if r > 1 else [])): res.images[i, k]
                       for i, ch in enumerate(channels) for k in range(r)})
        figures[p.spec] = {
            "image_size": p.side, "receptive_field": p.field._asdict(),
            "neuron": list(p.position) if p.position else None, "channels": list(channels),
            "normalizer": p.normalizers.tolist(),
            "activation_start": _activation(p, starts, dev), "activation_final": final,
            "activation_ratio": [[v / m for v in a] for a, m in zip(final, p.normalizers.tolist())]}
        gd_used[p.spec] = p.config.record()
        rows.append([enlarge(x) for i in range(n) for x in res.images[i]])
        row_labels.append(f"{p.spec}\n{p.side}x{p.side} px\nfield {p.field.size} px")
    restarts = {p.config.restarts for p in problems}
    cols = [f"ch {ch}" + (f" r{k}" if k else "") for ch in channels for k in range(max(restarts))]
    return write_report(out, "maximize", rows, cols if len(restarts) == 1 else None, row_labels, {
        "figures": figures,
        "definitions": {"activation": f"<w, phi(x)>: the {target} (w one-hot, or 1/(h*w) over a channel), phi units",
                        "normalizer": "the largest |response| of the channel to normalizer_images "
                                      "(M&V: its maximum over ImageNet)",
                        "activation_ratio": "activation_final / normalizer"},
        "config": config, "gd": gd_used, "representations": {p.spec: p.rep.params for p in problems},
        "device": str(dev), "seconds": time.perf_counter() - tic,
        "notes": random_weight_note([p.rep for p in problems])}, arrays)


def caricature(images: Sequence[str], *, layers: Sequence[str], out: str | Path, size: int = _CANONICAL,
               preset: str = "caricature", gd: Mapping[str, Any] | None = None, weights: str = "imagenet",
               device: str = "auto", progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Exaggerate what each layer sees in each image: start from the image, minimize −⟨Φ(x), Φ0⁺⟩/‖Φ0⁺‖².

    Args: as :func:`~.studies.invariance` (no restarts): images, layers, out, size, preset, gd, weights,
    device, progress.

    Figures per layer: ``exaggeration[i]`` = ``⟨Φ(x*), Φ0⁺⟩ / ‖Φ0⁺‖²`` of the caricature of image i (1 at the
    original: how many times more strongly the image's own positive responses fire), and ``rms_change[i]``,
    the root-mean-square pixel change from the original in ``[0, 1]`` units.
    """
    steps = plan(layers, size, weights, preset, gd)
    stems, originals = load_square_images(images, size)
    dev = resolve_device(device)
    out = prepare_output_dir(out, clear=overwrite, inputs=[resolve_image_path(i) for i in images])
    starts, targets = [], []
    for spec, rep, _, cfg in steps:  # the originals' features, so that a layer with no positive one fails at once
        starts.append(to_grey(originals) if cfg.grey else originals)
        with torch.no_grad():
            targets.append(rep.to(dev)(starts[-1].to(dev)).cpu())
        if not bool((targets[-1] > 0).flatten(1).any(1).all()):
            raise ValueError(f"{spec}: the features of some image have no positive value: nothing to exaggerate")
    config = dict(images=list(images), layers=list(layers), out=str(out), size=size, preset=preset,
                  gd=dict(gd or {}), weights=weights, device=device, progress=progress)
    figures, gd_used, columns, col_labels, arrays = {}, {}, [], [], {}
    tic = time.perf_counter()
    for (spec, rep, _, cfg), x0, target in zip(steps, starts, targets):
        res = optimize_gd(Caricature(rep, target), tuple(x0.shape), cfg, init=x0, random_starts=True, device=dev,
                          progress=progress)
        result = res.images[:, 0]
        arrays.update({array_name(spec, stem): result[i] for i, stem in enumerate(stems)})
        positive = target.clamp(min=0)
        with torch.no_grad():
            features = rep(result.to(dev)).cpu()
        figures[spec] = {
            "exaggeration": ((features * positive).flatten(1).sum(1) / positive.flatten(1).square().sum(1)).tolist(),
            "rms_change": (result - x0).flatten(1).square().mean(1).sqrt().tolist(),
        }
        gd_used[spec] = cfg.record()
        columns.append(result)
        col_labels.append(f"{spec} x{sum(figures[spec]['exaggeration']) / len(stems):.2f}")
    rows = [[originals[i], *(col[i] for col in columns)] for i in range(len(stems))]
    return write_report(out, "caricature", rows, ["original", *col_labels], stems, {
        "figures": figures,
        "definitions": {"exaggeration": "<phi(x*), max(phi0, 0)> / ||max(phi0, 0)||^2 (1 at the original)",
                        "rms_change": "root-mean-square pixel change from the original, [0, 1] units"},
        "config": config, "gd": gd_used, **steps_record(steps, dev, tic)}, arrays)
