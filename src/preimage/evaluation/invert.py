"""The `preimage invert` job: load images, invert them (GD or a learned inverter), score them, write everything to one folder."""
from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig

from ..common import prepare_output_dir, resolve_device, resolve_image_path, unique_stems, versions
from ..config import check_finite
from ..schemas import InvertConfig, gd_overrides, merged, plain
from ..images import load_image, save_npy, save_png, side_by_side, to_grey
from ..inversion.gd import config_from_dict, invert_gd
from ..inversion.learned import LearnedInverter
from ..inversion.masks import build_mask
from ..inversion.presets import resolve_preset
from ..representations import Representation, build_representation
from .metrics import score, scoring_features

@dataclass
class Inversion:
    """What one method made of a set of images, ready to be scored and written.

    Attributes:
        representation: Φ the images were inverted from.
        originals: the images as inverted (grey where the method works in grey), ``(C, H, W)`` each.
        reconstructions: ``reconstructions[r][i]``: restart ``r`` of image ``i``, ``(C, H, W)`` in ``[0, 1]``.
        seconds: wall time per image (s), over all its restarts.
        extras: ``extras[r][i]``: method-specific fields of that record (e.g. GD's final data loss).
        settings: the method's resolved settings, written to metrics.json under the method's name.
        total_seconds: wall time of the whole inversion (s).
    """

    representation: Representation
    originals: list[torch.Tensor]
    reconstructions: list[list[torch.Tensor]]
    seconds: list[float]
    extras: list[list[dict[str, Any]]]
    settings: dict[str, Any]
    total_seconds: float


def _checked(representation: Representation, paths: Sequence[Path], originals: list[torch.Tensor]) -> None:
    """``ValueError`` naming the file of the first image ``representation`` cannot take."""
    for p, x in zip(paths, originals):
        try:
            representation.check_input(x[None])
        except ValueError as err:
            raise ValueError(f"{p}: {err}") from None


def _invert_gd(cfg: DictConfig, paths: Sequence[Path], device: torch.device, out: Path) -> Inversion:
    """Gradient descent (M&V) on every image: images of one size together, ``batch_size`` at a time."""
    representation = build_representation(cfg.representation, **(cfg.representation_options or {}))
    gd_settings = {**resolve_preset(cfg.preset, cfg.representation), **gd_overrides(cfg.gd)}
    gd_config = config_from_dict(gd_settings)
    originals = [load_image(p) for p in paths]
    if gd_config.grey:
        originals = [to_grey(x) if x.shape[0] == 3 else x for x in originals]
    _checked(representation, paths, originals)

    by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, x in enumerate(originals):
        by_size[tuple(x.shape)].append(i)
    results: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}  # images (R,C,H,W), data loss (T,R), s
    writer = _tensorboard_writer(out) if cfg.tensorboard else None
    start = time.perf_counter()
    for shape, indices in by_size.items():
        mask = build_mask(cfg.mask, representation, shape[1], shape[2])
        for k in range(0, len(indices), int(cfg.batch_size)):
            chunk = indices[k:k + int(cfg.batch_size)]
            callback = None
            if writer is not None:
                callback = _tensorboard_callback(writer, [paths[i].stem for i in chunk], gd_config.restarts,
                                                 int(cfg.snapshot_every))
            res = invert_gd(representation, torch.stack([originals[i] for i in chunk]), gd_config, mask=mask,
                            device=device, progress=bool(cfg.progress), callback=callback)
            for j, i in enumerate(chunk):
                results[i] = (res.images[j], res.data_loss[:, j], res.seconds / len(chunk))
    total_seconds = time.perf_counter() - start
    if writer is not None:
        writer.close()
    n, restarts = len(paths), gd_config.restarts
    return Inversion(
        representation, originals,
        reconstructions=[[results[i][0][r] for i in range(n)] for r in range(restarts)],
        seconds=[results[i][2] for i in range(n)],
        extras=[[{"final_data_loss": float(results[i][1][-1, r])} for i in range(n)] for r in range(restarts)],
        settings={**vars(gd_config), "schedule": [list(s) for s in gd_config.schedule],
                  "iterations": gd_config.iterations},
        total_seconds=total_seconds,
    )


def _invert_learned(cfg: DictConfig, paths: Sequence[Path], device: torch.device, out: Path) -> Inversion:
    """One forward pass of a trained decoder (D&B) per image, from the bundle ``cfg.checkpoint``.

    The bundle's representation is used; if ``cfg.representation`` is set, the bundle must invert that
    spec with ``cfg.representation_options`` (else :class:`~preimage.inversion.learned.BundleError`).
    """
    if not cfg.checkpoint:
        raise ValueError("method learned needs a bundle: --checkpoint PATH (a bundle.pt written by `preimage train`)")
    given = None
    if cfg.representation is not None:
        given = build_representation(cfg.representation, **(cfg.representation_options or {}))
    inverter = LearnedInverter.from_bundle(cfg.checkpoint, device=device, representation=given)
    grey = inverter.decoder.config.out_channels == 1
    originals = [load_image(p, grey=grey) for p in paths]
    if not grey:  # a colour decoder reconstructs grey photos in colour: score them as RGB
        originals = [x.expand(3, -1, -1).contiguous() for x in originals]
    _checked(inverter.representation, paths, originals)
    reconstructions, seconds = [], []
    start = time.perf_counter()
    with torch.no_grad():
        for x in originals:
            tick = time.perf_counter()
            recon = inverter(x[None].to(device))[0].cpu()
            seconds.append(time.perf_counter() - tick)  # .cpu() waits for the device
            reconstructions.append(recon)
    manifest = inverter.manifest
    return Inversion(
        inverter.representation, originals, [reconstructions], seconds, extras=[[{} for _ in paths]],
        settings={"checkpoint": str(cfg.checkpoint), "grey": grey,
                  **{k: manifest[k] for k in ("steps", "metrics", "data", "image_size", "decoder", "package_version")}},
        total_seconds=time.perf_counter() - start,
    )


METHODS: dict[str, Callable[[DictConfig, Sequence[Path], torch.device, Path], Inversion]] = {
    "gd": _invert_gd, "learned": _invert_learned,
}


def run_invert(cfg: DictConfig | dict[str, Any], images: Sequence[str], out: str | Path) -> dict[str, Any]:
    """Invert ``images`` as ``cfg`` says and write ``<stem>.png``, ``<stem>.npy``, ``overview.png`` and ``metrics.json``.

    Args:
        cfg: an invert config (:class:`~preimage.schemas.InvertConfig`; a mapping of some of its keys is merged
            over its defaults). ``method``: ``gd`` (optimization, ``preset`` + ``gd``) or ``learned`` (the bundle
            ``checkpoint``; ``representation`` may be null to take the bundle's).
        images: image paths or ``builtin:NAME``.
        out: output folder (created).

    Returns:
        The content of metrics.json.
    """
    cfg = merged(InvertConfig, cfg, where="invert")
    container = plain(cfg)
    check_finite(container)
    for key in ("batch_size", "snapshot_every"):
        if container[key] < 1:
            raise ValueError(f"invert: {key} must be >= 1, got {container[key]}")
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; valid: {', '.join(METHODS)}")
    if cfg.method != "learned" and cfg.checkpoint:
        raise ValueError(f"checkpoint is for method learned, not {cfg.method}: add --method learned")
    if not images:
        raise ValueError("no images given")
    out = prepare_output_dir(out)
    paths = [resolve_image_path(i) for i in images]
    device = resolve_device(cfg.device)
    inversion = METHODS[cfg.method](cfg, paths, device, out)
    return _write_outputs(inversion, paths, out, device, {**container, "representation": inversion.representation.spec},
                          cfg.method)


def _write_outputs(inv: Inversion, paths: Sequence[Path], out: Path, device: torch.device, container: dict[str, Any],
                   method: str) -> dict[str, Any]:
    """Score ``inv`` and write the reconstructions (PNG, NPY), overview.png and metrics.json; returns the report."""
    representation, originals = inv.representation, inv.originals
    stems = unique_stems(paths)
    restarts = len(inv.reconstructions)
    records = []
    reference = scoring_features(representation, originals, device)
    for r, recon in enumerate(inv.reconstructions):
        metrics = score(representation, originals, recon, device, reference)
        for i, stem in enumerate(stems):
            name = stem if restarts == 1 else f"{stem}_r{r}"
            save_png(recon[i], out / f"{name}.png")
            save_npy(recon[i], out / f"{name}.npy")
            record = {"image": str(paths[i]), "output": f"{name}.png", "restart": r,
                      **{key: values[i] for key, values in metrics.items()}, **inv.extras[r][i],
                      "seconds": inv.seconds[i]}
            if record["feature_error"] is not None:
                record["feature_error"] *= 100
            records.append(record)
    panels = [t for i in range(len(paths)) for t in (originals[i], inv.reconstructions[0][i])]
    labels = [f"{s} {kind}" for s in stems for kind in ("original", "reconstruction")]
    save_png(side_by_side(panels, labels), out / "overview.png")

    notes = []
    if getattr(representation, "random_weights", False):
        notes.append("made with RANDOM CNN weights: not the pretrained network")
    if len(paths) < 2:
        notes.append("feature_error and image_error need at least 2 images (their normalizer is over the set)")
    report = {
        "images": records,
        "units": {"feature_error": "% (M&V Table 1)", "normalized_loss": "fraction", "image_error": "fraction",
                  "psnr": "dB", "ssim": "1", "seconds": "s per image"},
        "config": container,
        method: inv.settings,
        "representation": {"spec": representation.spec, "params": representation.params},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "total_seconds": inv.total_seconds,
        "versions": versions(),
        "notes": notes,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


def _tensorboard_writer(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _tensorboard_callback(writer, stems: list[str], restarts: int, snapshot_every: int):
    """A GD callback logging each image's energy every step and snapshots every ``snapshot_every`` steps."""

    def log(t: int, pixels: torch.Tensor, energy: torch.Tensor) -> None:
        values = energy.detach().cpu().view(len(stems), restarts)
        for stem, value in zip(stems, values):
            writer.add_scalar(f"gd/energy/{stem}", float(value[0]), t)
        if snapshot_every and (t + 1) % snapshot_every == 0:
            lo, hi = pixels.amin(dim=(1, 2, 3), keepdim=True), pixels.amax(dim=(1, 2, 3), keepdim=True)
            writer.add_images("gd/snapshot", ((pixels - lo) / (hi - lo + 1e-8)).cpu(), t + 1)

    return log
