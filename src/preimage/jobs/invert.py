"""The `preimage invert` job: load images, invert them (GD or a learned inverter), score them, write everything to one folder."""
from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig

from ..devices import device_name, resolve_device

from ..imagesets import resolve_image_path

from ..outputs import outputs_removed_on_failure, prepare_output_dir, unique_stems, versions
from ..runlock import run_dir_lock
from ..config import check_finite, check_int, check_metrics
from ..schemas import HybridConfig, InvertConfig, gd_overrides, merged, plain
from ..images import load_images, save_npy, save_png, side_by_side, to_grey
from ..inversion.gd import DivergedError
from ..inversion.learned import LearnedInverter
from ..inversion.presets import gd_config
from ..representations import Representation, build_representation
from ..inversion.methods import GDMethod, HybridMethod, LearnedMethod, Method, hybrid_steps, reconstruct
from ..metrics import mean_pairwise_sq_dist, representation_features, score, scored_part
from .report import write_json

#: the stems of invert's own outputs, which no input may take (overview.png, metrics.json, tensorboard/)
OWN_FILES = ("overview", "metrics", "tensorboard")


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


def _checked_features(representation: Representation, paths: Sequence[Path],
                      features: list[torch.Tensor]) -> list[torch.Tensor]:
    """The originals' scored features (from their ``features``, Φ of each), checked before any work: ``ValueError``
    naming the file of an image whose features are all zero (nothing to invert), or saying that the images are
    alike (no normalizer)."""
    reference = scored_part(representation, features)
    for path, scored in zip(paths, reference):
        if not bool(scored.any()):
            raise ValueError(f"{path}: the {representation.spec} features of this image are all zero: nothing to invert")
    if len(paths) >= 2 and float(mean_pairwise_sq_dist([f.flatten().double() for f in reference])) == 0:
        raise ValueError(f"the {len(paths)} images have the same {representation.spec} features, so feature_error "
                         "has no normalizer: give different images (or one)")
    return reference


def _gd(cfg: DictConfig, paths: Sequence[Path], out: Path,
        resources: contextlib.ExitStack) -> tuple[GDMethod, list[torch.Tensor], dict[str, Any]]:
    """Gradient descent (M&V) with the preset and overrides: the method, the images as inverted, its settings
    (the TensorBoard writer, if any, is closed with ``resources``)."""
    representation = build_representation(cfg.representation, **(cfg.representation_options or {}))
    config = gd_config(cfg.preset, representation, gd_overrides(cfg.gd))
    originals = load_images(paths)
    if config.grey:
        originals = [to_grey(x) if x.shape[0] == 3 else x for x in originals]
    callback_for = None
    if cfg.tensorboard:
        writer = _tensorboard_writer(out)
        resources.callback(writer.close)
        callback_for = lambda indices: _tensorboard_callback(  # noqa: E731
            writer, [paths[i].stem for i in indices], config.restarts, int(cfg.snapshot_every))
    method = GDMethod(representation, config, mask=cfg.mask, progress=bool(cfg.progress), callback_for=callback_for,
                      stop_on_divergence=True)
    return method, originals, config.record()


def _learned(cfg: DictConfig, paths: Sequence[Path], out: Path,
             resources: contextlib.ExitStack) -> tuple[LearnedMethod, list[torch.Tensor], dict[str, Any]]:
    """A trained decoder (D&B) from the bundle ``cfg.checkpoint`` (a shipped name or a path; unset: the shipped
    bundle named after ``cfg.representation``): the method, the images as inverted, its settings.

    The bundle's representation is used; if ``cfg.representation`` is set, the bundle must invert that
    spec with ``cfg.representation_options`` (else :class:`~preimage.inversion.bundles.BundleError`).
    """
    if not cfg.checkpoint and not cfg.representation:
        raise ValueError("method learned needs a bundle: --checkpoint NAME|PATH (a shipped inverter, `preimage list`, "
                         "or a bundle.pt of `preimage train`), or --representation SPEC for its shipped inverter")
    given = None
    if cfg.representation is not None:
        given = build_representation(cfg.representation, **(cfg.representation_options or {}))
    inverter = LearnedInverter.from_bundle(cfg.checkpoint or cfg.representation, representation=given)
    grey = inverter.decoder.config.out_channels == 1
    originals = load_images(paths, grey=grey)
    if not grey:  # a colour decoder reconstructs grey photos in colour: score them as RGB
        originals = [x.expand(3, -1, -1).contiguous() for x in originals]
    manifest = inverter.manifest
    return LearnedMethod(inverter), originals, {
        "checkpoint": str(cfg.checkpoint or cfg.representation), "grey": grey,
        **{k: manifest[k] for k in ("steps", "metrics", "data", "image_size", "decoder", "package_version")}}


def _hybrid(cfg: DictConfig, paths: Sequence[Path], out: Path,
            resources: contextlib.ExitStack) -> tuple[HybridMethod, list[torch.Tensor], dict[str, Any]]:
    """The learned reconstruction (the bundle, as :func:`_learned` finds it), refined by GD: the preset's settings,
    then ``preimage compare``'s hybrid steps (:class:`~preimage.schemas.HybridConfig`: K steps, clamped), then the
    ``gd`` overrides, in the decoder's grey or colour."""
    learned, originals, start = _learned(cfg, paths, out, resources)
    steps = hybrid_steps(**asdict(HybridConfig()))
    config = gd_config(cfg.preset, learned.representation, {**steps, **gd_overrides(cfg.gd)}, grey=start["grey"])
    return HybridMethod(learned.inverter, config), originals, {"start": start, **config.record()}


METHODS: dict[str, Callable[[DictConfig, Sequence[Path], Path, contextlib.ExitStack],
                             tuple[Method, list[torch.Tensor], dict[str, Any]]]] = {
    "gd": _gd, "learned": _learned, "hybrid": _hybrid,
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
    for key in ("batch_size", "snapshot_every", "overview_images"):
        check_int(key, container[key])
    check_metrics(container["metrics"])
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; valid: {', '.join(METHODS)}")
    if cfg.method == "gd" and cfg.checkpoint:
        raise ValueError("checkpoint is for methods learned and hybrid, not gd: add --method learned")
    if not images:
        raise ValueError("no images given")
    with run_dir_lock(Path(out)), outputs_removed_on_failure():  # one run per folder: two never mix or delete outputs
        out = prepare_output_dir(out, clear=bool(cfg.overwrite), inputs=[resolve_image_path(i) for i in images])
        return _invert(cfg, container, images, out)


def _invert(cfg: DictConfig, container: dict[str, Any], images: Sequence[str], out: Path) -> dict[str, Any]:
    """:func:`run_invert` once ``out`` is ready."""
    paths = [resolve_image_path(i) for i in images]
    device = resolve_device(cfg.device)
    with contextlib.ExitStack() as resources:
        method, originals, settings = METHODS[cfg.method](cfg, paths, out, resources)
        _checked(method.representation, paths, originals)
        start = time.perf_counter()
        features = representation_features(method.representation, originals, device)
        feature_seconds = time.perf_counter() - start
        reference = _checked_features(method.representation, paths, features)
        if not method.takes_features:  # GD's time starts after the check; the decoder's includes Φ and the check
            features, feature_seconds, start = None, 0.0, time.perf_counter()
        try:
            results = reconstruct(method, originals, device, int(cfg.batch_size), features=features)
        except DivergedError as err:  # stopped at once, before anything is written
            raise ValueError(f"{paths[err.problem]}: {err}") from None
    total_seconds = time.perf_counter() - start
    restarts = results[0][0].shape[0]
    inversion = Inversion(
        method.representation, originals,
        reconstructions=[[recon[r] for recon, _, _ in results] for r in range(restarts)],
        seconds=[seconds + feature_seconds / len(results) for _, seconds, _ in results],  # learned: with its Φ
        extras=[[{} if loss is None else {"final_data_loss": float(loss[r])} for _, _, loss in results]
                for r in range(restarts)],
        settings=settings, total_seconds=total_seconds)
    return _write_outputs(inversion, paths, out, device, {**container, "representation": method.representation.spec},
                          cfg.method, reference)


def _write_outputs(inv: Inversion, paths: Sequence[Path], out: Path, device: torch.device, container: dict[str, Any],
                   method: str, reference: list[torch.Tensor]) -> dict[str, Any]:
    """Score ``inv`` and write the reconstructions (PNG, NPY), overview.png and metrics.json; returns the report."""
    representation, originals = inv.representation, inv.originals
    stems = unique_stems(paths, reserved=OWN_FILES)
    restarts = len(inv.reconstructions)
    names = [[stem if restarts == 1 else f"{stem}_r{r}" for stem in stems] for r in range(restarts)]
    records = []
    for r, recon in enumerate(inv.reconstructions):
        metrics = score(representation, originals, recon, device, reference, container["metrics"])
        for i in range(len(stems)):
            record = {"image": str(paths[i]), "output": f"{names[r][i]}.png", "restart": r,
                      **{key: values[i] for key, values in metrics.items()}, **inv.extras[r][i],
                      "seconds": inv.seconds[i]}
            if record.get("feature_error") is not None:
                record["feature_error"] *= 100
            records.append(record)
    shown = range(min(len(paths), int(container["overview_images"])))
    panels = [t for i in shown for t in (originals[i], inv.reconstructions[0][i])]
    labels = [f"{stems[i]} {kind}" for i in shown for kind in ("original", "reconstruction")]
    # Encoded and written by two threads (Pillow, zlib and file writes release the GIL), once torch's own
    # threads are done: beside them they would slow torch more than they gain. A failed write raises here.
    with ThreadPoolExecutor(max_workers=2) as writer:
        writes = [writer.submit(save_png, side_by_side(panels, labels), out / "overview.png")]
        writes += [writer.submit(save, recon[i], out / f"{names[r][i]}.{ext}")
                   for r, recon in enumerate(inv.reconstructions) for i in range(len(stems))
                   for save, ext in ((save_png, "png"), (save_npy, "npy"))]
        for write in writes:
            write.result()

    notes = []
    if getattr(representation, "random_weights", False):
        notes.append("made with RANDOM CNN weights: not the pretrained network")
    if len(paths) < 2 and {"feature_error", "image_error"} & set(container["metrics"]):
        notes.append("feature_error and image_error need at least 2 images (their normalizer is over the set)")
    report = {
        "images": records,
        "units": {"feature_error": "% (M&V Table 1)", "normalized_loss": "fraction", "image_error": "fraction",
                  "psnr": "dB", "ssim": "1", "seconds": "s per image"},
        "config": container,
        method: inv.settings,
        "representation": {"spec": representation.spec, "params": representation.params},
        "device": device_name(device),
        "total_seconds": inv.total_seconds,
        "versions": versions(),
        "notes": notes,
    }
    write_json(out / "metrics.json", report)
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
