"""Analyses of a learned inverter (Dosovitskiy & Brox, CVPR 2016, §5), each writing ``<out>/<kind>.png`` and ``.json``.

- :func:`perturb`: reconstructions from binarized features and from features with half their dimensions
  dropped (D&B "perturbing the features"): how much of the picture lives in the exact values.
- :func:`interpolate`: reconstructions along the straight line between two images' features.
- :func:`sample`: reconstructions of random feature vectors drawn dimension-wise from the empirical
  distribution of Φ over a set of images.

The feature maths (``binarize``, ``drop_dimensions``, ``interpolate_features``, ``sample_features``) is in
:mod:`.feature_perturbations`; :func:`interpolation` decodes interpolated features. Each analysis's keyword
arguments are the keys of ``configs/analyze/<kind>.yaml``. It returns the report it writes as JSON:
``figures`` (keyed by the bundle's representation spec), ``definitions``, ``config``, ``bundle`` (path and
manifest facts), ``representations``, ``device``, ``seconds``, ``notes`` and ``versions``.

Convention:
    - Images are read with the ``compare`` image-set helpers: the shorter side resized to ``size``
      (bicubic, antialiased) and centre-cropped to ``size × size``; grey when the bundle's decoder is grey
      (``out_channels = 1``, as the shipped HOG/HOGb/DSIFT bundles), else RGB (grey photos replicated).
    - A "dimension" of Φ is one entry of one image's features: ``(channel, y, x)`` for spatial features
      (HOG, DSIFT, conv layers), the component for vectors (fc layers). Every image of one analysis has the
      same size, so every image has the same dimensions.
    - Reconstructions are the decoder's output clamped to ``[0, 1]`` (:class:`LearnedInverter`), scored
      in float.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import check_int
from ..images import to_grey
from ..inversion.learned import LearnedInverter
from ..metrics import image_error, mean_pairwise_sq_dist, normalized_loss
from .common import array_name, write_report
from .feature_perturbations import binarize, drop_dimensions, interpolate_features, sample_features
from .learned_common import (bundle_record, check_seed, decode, features_of, floats, inverter_notes, learned_inputs,
                             mean, variant_grid, view)

__all__ = ["interpolate", "interpolation", "perturb", "sample"]

# ------------------------------------------------------------------------------------------ interpolation


@torch.no_grad()
def interpolation(inverter: LearnedInverter, a: torch.Tensor, b: torch.Tensor,
                  t: Sequence[float]) -> torch.Tensor:
    """Reconstructions of ``(1 − t)·Φ(a) + t·Φ(b)`` for every ``t``: ``(C, H, W)`` images → ``(T, C', H, W)``.

    Each feature vector is decoded on its own (batch of one), as ``inverter(a[None])`` decodes ``Φ(a)``, so
    that the reconstruction at ``t = 0`` (``t = 1``) is bit for bit the plain reconstruction of ``a`` (``b``).
    """
    if a.shape != b.shape:
        raise ValueError(f"interpolate needs two images of one size, got {tuple(a.shape)} and {tuple(b.shape)}")
    if inverter.decoder.config.out_channels == 1:  # as LearnedInverter.forward: a grey decoder inverts grey images
        a, b = to_grey(a), to_grey(b)
    size = tuple(a.shape[-2:])
    phi_a, phi_b = inverter.representation(a[None]), inverter.representation(b[None])
    return torch.cat([inverter.invert_features(interpolate_features(phi_a, phi_b, float(w)), size) for w in t])


# -------------------------------------------------------------------------------------------- perturb

_PERTURBATIONS = ("plain", "binarized", "dropout")


def perturb(images: Sequence[str] | str, *, checkpoint: str, out: str | Path, size: int = 128,
            dropout: float = 0.5, seed: int = 0, device: str = "auto", overwrite: bool = False) -> dict[str, Any]:
    """Reconstruct each image from its features as they are, binarized, and with ``dropout`` of them dropped.

    The picture has one row per image: original | reconstruction | from binarized Φ (:func:`binarize`) |
    from Φ with ``dropout`` of its dimensions zeroed (:func:`drop_dimensions`, seeded ``seed``).

    Args:
        images: at least 2 (files, ``builtin:NAME``, folders or ``builtin``).
        checkpoint: the inverter bundle (relative paths are also looked up from the repository root).
        out: output folder (created).
        size: the images' side in pixels (shorter side resized, centre crop).
        dropout: share of each image's feature dimensions dropped (D&B: 0.5).
        seed: seed of the dropout choice.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``.

    Figures (keyed by the bundle's spec), per image and with their ``_mean`` over images, for each of
    ``plain``, ``binarized`` and ``dropout``: ``image_error_<p>`` (the reconstruction against the original,
    normalized by the mean pairwise squared distance of the originals) and ``normalized_loss_<p>``
    (``‖Φ(x̂) − Φ(x0)‖² / ‖Φ(x0)‖²``: how well the reconstruction reproduces the original's *unperturbed*
    features); ``feature_change_<p>`` for the two perturbations (``‖Φ' − Φ‖² / ‖Φ‖²``: how much the
    perturbation moved the features the decoder was given); ``binary_value`` (``c`` per image) and
    ``nonzero_fraction`` (entries set to ±c); ``dropped_fraction`` (dimensions zeroed). The cost of a
    perturbation is its error minus the plain one.
    """
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"dropout must be a fraction in [0, 1], got {dropout!r}")
    check_seed(seed)
    inverter, path, out, names, stems, x0, dev = learned_inputs(images, checkpoint, out, size, device, count="several",
                                                         overwrite=overwrite)
    config = dict(images=images if isinstance(images, str) else list(images), checkpoint=str(checkpoint),
                  out=str(out), size=size, dropout=dropout, seed=seed, device=device)
    tic = time.perf_counter()
    spec = inverter.representation.spec
    phi = features_of(inverter, x0, dev)
    binarized, c = binarize(phi)
    dropped, kept = drop_dimensions(phi, float(dropout), generator=torch.Generator().manual_seed(seed))
    given = {"plain": phi, "binarized": binarized, "dropout": dropped}
    recon = {p: decode(inverter, f, size) for p, f in given.items()}
    figures: dict[str, Any] = {"images": names}
    for p in _PERTURBATIONS:
        errors = floats(image_error(recon[p], x0))
        losses = floats(normalized_loss(features_of(inverter, recon[p], dev), phi))
        figures.update({f"image_error_{p}": errors, f"image_error_{p}_mean": mean(errors),
                        f"normalized_loss_{p}": losses, f"normalized_loss_{p}_mean": mean(losses)})
        if p != "plain":
            change = floats(normalized_loss(given[p], phi))
            figures.update({f"feature_change_{p}": change, f"feature_change_{p}_mean": mean(change)})
    figures["binary_value"] = floats(c)
    figures["nonzero_fraction"] = floats((phi.flatten(1) != 0).double().mean(1))
    figures["dropped_fraction"] = floats((~kept).flatten(1).double().mean(1))
    rows, row_labels, cols = variant_grid(x0, {p: recon[p] for p in _PERTURBATIONS}, stems,
                                          {p: figures[f"image_error_{p}"] for p in _PERTURBATIONS},
                                          {"plain": "reconstruction", "binarized": "binarized",
                                           "dropout": f"dropout {100 * dropout:.0f}%"})
    arrays = {array_name(spec, stem, p): recon[p][i] for i, stem in enumerate(stems) for p in _PERTURBATIONS}
    return write_report(out, "perturb", rows, cols, row_labels, {
        "figures": {spec: figures},
        "definitions": {
            "image_error_<p>": "||x_p - x0||^2 / mean pairwise ||x0_j - x0_k||^2 (metrics.image_error); p = plain "
                               "(unperturbed features), binarized, dropout",
            "normalized_loss_<p>": "||phi(x_p) - phi(x0)||^2 / ||phi(x0)||^2, against the unperturbed features",
            "feature_change_<p>": "||phi' - phi||^2 / ||phi||^2: how far the perturbation moved the decoder's input",
            "binarized": "phi' = sign(phi) * c, c = ||phi|| / sqrt(#nonzero entries) per image (norm kept; D&B)",
            "dropout": f"round({dropout} * D) of the D entries of each image zeroed at random (seed {seed}), the "
                       "rest rescaled to keep ||phi|| (D&B)",
            "dimension": "one entry of an image's features: (channel, y, x) for spatial maps",
        },
        "config": config, "bundle": bundle_record(inverter, path),
        "representations": {spec: inverter.representation.params}, "device": str(dev),
        "seconds": time.perf_counter() - tic, "notes": inverter_notes(inverter, size)}, arrays)


# ------------------------------------------------------------------------------------------ interpolate


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).square().mean().sqrt())


def interpolate(images: Sequence[str], *, checkpoint: str, out: str | Path, size: int = 128,
                t: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), device: str = "auto",
                overwrite: bool = False) -> dict[str, Any]:
    """Reconstruct ``(1 − t)·Φ(a) + t·Φ(b)`` for every ``t``: a walk in feature space between two images.

    The picture is one row: image a | a reconstruction per ``t`` | image b. At ``t = 0`` and ``t = 1`` the
    reconstructions are exactly the plain reconstructions of a and b (:func:`interpolation`).

    Args:
        images: exactly 2 (a, b): files or ``builtin:NAME``; both are brought to ``size × size``.
        checkpoint, out, size, device: as :func:`perturb`.
        t: the interpolation weights (any finite numbers: outside ``[0, 1]`` extrapolates).

    Figures: ``a``, ``b`` (the images), ``endpoint_rms`` (RMS pixel difference between the plain
    reconstructions x̂_a and x̂_b), ``endpoints_equal_plain`` (the check above) and per ``t`` in ``steps``:
    ``rms_to_a`` / ``rms_to_b`` (RMS pixel difference to x̂_a / x̂_b, in [0, 1] units), ``relative_to_a`` /
    ``relative_to_b`` (``‖x̂_t − x̂_a‖² / ‖x̂_b − x̂_a‖²``; ``None`` if x̂_a = x̂_b) and ``rms_to_blend``, the
    RMS difference to the pixel cross-fade ``(1 − t)·x̂_a + t·x̂_b`` (0 when the decoder merely cross-fades;
    larger when it morphs). For a cross-fade ``relative_to_a`` would be ``t²``.
    """
    if isinstance(t, (str, bytes)) or not isinstance(t, Sequence) or not t:
        raise ValueError(f"t must be a non-empty list of interpolation weights, e.g. [0, 0.5, 1], got {t!r}")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in t):
        raise ValueError(f"t must hold finite numbers, got {list(t)!r}")
    if isinstance(images, (str, Path)):
        images = [images]
    inverter, path, out, names, stems, x0, dev = learned_inputs(images, checkpoint, out, size, device, count="two",
                                                         overwrite=overwrite)
    config = dict(images=list(images), checkpoint=str(checkpoint), out=str(out), size=size,
                  t=[float(w) for w in t], device=device)
    tic = time.perf_counter()
    spec = inverter.representation.spec
    a, b = x0[0].to(dev), x0[1].to(dev)
    with torch.no_grad():
        plain_a, plain_b = inverter(a[None])[0].cpu(), inverter(b[None])[0].cpu()
    recon = interpolation(inverter, a, b, config["t"]).cpu()
    span = float((plain_b.double() - plain_a.double()).square().sum())
    steps = []
    for w, x in zip(config["t"], recon):
        to_a = float((x.double() - plain_a.double()).square().sum())
        to_b = float((x.double() - plain_b.double()).square().sum())
        steps.append({"t": w, "rms_to_a": _rms(x, plain_a), "rms_to_b": _rms(x, plain_b),
                      "relative_to_a": to_a / span if span > 0 else None,
                      "relative_to_b": to_b / span if span > 0 else None,
                      "rms_to_blend": _rms(x, (1 - w) * plain_a.double() + w * plain_b.double())})
    ends = [torch.equal(x, plain_a if w == 0 else plain_b) for w, x in zip(config["t"], recon) if w in (0, 1)]
    figures = {"a": names[0], "b": names[1], "endpoint_rms": _rms(plain_a, plain_b),
               "endpoints_equal_plain": all(ends) if ends else None, "steps": steps}
    rows = [[view(x0[0]), *(view(x) for x in recon), view(x0[1])]]
    cols = [f"a: {stems[0]}", *(f"t={w:g}" for w in config["t"]), f"b: {stems[1]}"]
    arrays = {array_name(spec, f"t{j}"): x for j, x in enumerate(recon)}
    return write_report(out, "interpolate", rows, cols, [spec], {
        "figures": {spec: figures},
        "definitions": {
            "steps[].t": "the reconstruction decodes (1 - t) phi(a) + t phi(b)",
            "rms_to_a": "sqrt(mean over pixels of (x_t - x_a)^2), x_a the plain reconstruction of a",
            "relative_to_a": "||x_t - x_a||^2 / ||x_b - x_a||^2 (a pixel cross-fade gives t^2)",
            "rms_to_blend": "RMS difference to the pixel cross-fade (1 - t) x_a + t x_b",
            "endpoint_rms": "RMS difference between the plain reconstructions of a and b",
            "endpoints_equal_plain": "whether the reconstructions at t = 0 and t = 1 are bit for bit the plain "
                                     "reconstructions of a and b (null if t holds neither)",
        },
        "config": config, "bundle": bundle_record(inverter, path),
        "representations": {spec: inverter.representation.params}, "device": str(dev),
        "seconds": time.perf_counter() - tic, "notes": inverter_notes(inverter, size)}, arrays)


# ---------------------------------------------------------------------------------------------- sample


def sample(images: Sequence[str] | str = "builtin", *, checkpoint: str, out: str | Path, size: int = 128,
           samples: int = 8, seed: int = 0, limit: int | None = None, device: str = "auto",
           overwrite: bool = False) -> dict[str, Any]:
    """Reconstruct random feature vectors drawn dimension-wise from Φ's empirical distribution over ``images``.

    Φ is computed for every image of the set (all ``size × size``, so that every image has the same
    dimensions: ``(channel, y, x)`` entries for spatial features); each of ``samples`` vectors takes, in every
    dimension independently, the value of a uniformly drawn image of the set (:func:`sample_features`,
    seeded ``seed``). The picture's columns are the samples; its rows: the sample's reconstruction, the
    plain reconstruction of the set image nearest to it, and that image.

    Args:
        images: the set (>= 2): ``builtin`` (the built-in test photos), a folder (recursive), or a list of
            files / ``builtin:NAME`` / folders.
        checkpoint, out, size, device: as :func:`perturb`.
        samples: number of random feature vectors.
        seed: seed of the draw.
        limit: use only the first ``limit`` images of the set (``null``: all).

    Figures: ``images_in_set``, ``dimensions``; per sample ``pixel_std`` (standard deviation of the
    reconstruction's pixels: its contrast; 0 for a flat image) and ``nearest_image`` /
    ``nearest_distance`` (the set image minimizing ``‖x̂_s − x0_j‖²``, and that distance divided by the
    mean pairwise squared distance of the set: image_error's normalizer, about 1 for as far as two set
    images are apart; pixel distance favours the flattest, most mid-grey image of the set), with their
    ``mean``; for reference ``set_pixel_std_mean`` (the originals),
    ``plain_pixel_std_mean`` and ``plain_image_error_mean`` (the set's own reconstructions and their
    image_error: the distance a reconstruction keeps from its image even when it has all the features).
    """
    check_int("samples", samples)
    check_int("limit", limit, minimum=2, allow_none=True)
    check_seed(seed)
    inverter, path, out, names, stems, x0, dev = learned_inputs(images, checkpoint, out, size, device, count="several",
                                                         limit=limit, overwrite=overwrite)
    config = dict(images=images if isinstance(images, str) else list(images), checkpoint=str(checkpoint),
                  out=str(out), size=size, samples=samples, seed=seed, limit=limit, device=device)
    tic = time.perf_counter()
    spec = inverter.representation.spec
    bank = features_of(inverter, x0, dev)
    drawn = sample_features(bank, samples, generator=torch.Generator().manual_seed(seed))
    recon = decode(inverter, drawn, size)
    plain = decode(inverter, bank, size)
    flat0 = x0.flatten(1).double()
    spread = float(mean_pairwise_sq_dist(list(flat0)))
    if not spread > 0:
        raise ValueError("sample needs at least 2 different images: all images of the set are identical")
    exact = "donot_use_mm_for_euclid_dist"
    distances = torch.cdist(recon.flatten(1).double(), flat0, compute_mode=exact).square() / spread  # (samples, M)
    nearest_distance, nearest = distances.min(1)
    pixel_std = floats(recon.flatten(1).double().std(1))
    plain_error = floats(image_error(plain, x0))
    figures = {
        "images_in_set": len(names), "dimensions": int(bank[0].numel()),
        "pixel_std": pixel_std, "pixel_std_mean": mean(pixel_std),
        "nearest_image": [names[j] for j in nearest.tolist()],
        "nearest_distance": floats(nearest_distance), "nearest_distance_mean": float(nearest_distance.mean()),
        "set_pixel_std_mean": float(flat0.std(1).mean()),
        "plain_pixel_std_mean": float(plain.flatten(1).double().std(1).mean()),
        "plain_image_error_mean": mean(plain_error),
    }
    rows = [[view(x) for x in recon], [view(plain[j]) for j in nearest.tolist()],
            [view(x0[j]) for j in nearest.tolist()]]
    cols = [f"sample {s}\nstd {pixel_std[s]:.3f}" for s in range(samples)]
    row_labels = [f"{spec} samples\nfrom {len(names)} images", "nearest image's\nreconstruction", "nearest image"]
    arrays = {array_name(spec, f"s{j}"): x for j, x in enumerate(recon)}
    return write_report(out, "sample", rows, cols, row_labels, {
        "figures": {spec: figures},
        "definitions": {
            "sample": "entry d of sample s = phi_d(x0_j), j uniform over the set, drawn independently per (s, d); "
                      "a dimension is one (channel, y, x) entry of a spatial map (all images share one size)",
            "pixel_std": "standard deviation over all pixels and channels of the reconstruction",
            "nearest_distance": "min_j ||x_s - x0_j||^2 / mean pairwise ||x0_j - x0_k||^2 of the set",
            "plain_image_error_mean": "mean image_error of the set's own reconstructions (the floor of a distance)",
        },
        "config": config, "bundle": bundle_record(inverter, path),
        "representations": {spec: inverter.representation.params}, "device": str(dev),
        "seconds": time.perf_counter() - tic, "notes": inverter_notes(inverter, size)}, arrays)
