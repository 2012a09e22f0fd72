"""The outputs of `preimage compare`: summary table, report.md, results.json / .csv, grid.png, TensorBoard.

Everything here works on the *records* of a comparison (one plain dict per image × representation ×
method, scores already computed by :func:`preimage.jobs.invert.score`), so that the report can be
recomputed from results.json alone.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..files import atomic_path
from ..images import grid, save_png
from ..metrics import mean_std

METHOD_ORDER = ("gd", "learned", "hybrid")

#: M&V 2015 Table 1 (100 ILSVRC-2012 val images, GD with their released code): feature_error %, mean ± std.
MV2015_TABLE1: dict[str, tuple[float, float]] = {"hog": (28.10, 7.9), "hogb": (10.67, 5.2), "dsift": (10.89, 7.5)}
PAPER_FEATURE_ERROR: dict[str, str] = {spec: f"{m:.2f} ± {s}" for spec, (m, s) in MV2015_TABLE1.items()}
#: D&B 2016 image-space error on AlexNet/CaffeNet layers (as re-quoted, approximate):
#: the learned inverter, and M&V's optimization as D&B measured it.
PAPER_IMAGE_ERROR: dict[str, dict[str, str]] = {
    "learned": {"conv5": "≈0.35", "fc6": "≈0.51", "fc7": "≈0.56", "fc8": "≈0.58"},
    "gd": {"conv5": "≈0.71", "fc6": "≈0.80", "fc7": "≈0.82", "fc8": "≈0.84"},
}
NONE = "—"  # no published figure
PAPER_FE_HEADER = "paper feature_error % (M&V 2015, ILSVRC images)"
PAPER_IE_HEADER = "paper image_error (D&B 2016, ILSVRC images)"
PAPER = {"feature_error": {"source": PAPER_FE_HEADER, "gd": PAPER_FEATURE_ERROR},
         "image_error": {"source": PAPER_IE_HEADER, **PAPER_IMAGE_ERROR}}

#: (record key, table header, format of mean and std)
METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("feature_error", "feature_error %", "{:.2f}"),
    ("normalized_loss", "normalized_loss", "{:.4f}"),
    ("image_error", "image_error", "{:.3f}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("seconds", "s / image", "{:.3f}"),
)
#: columns shown as a mean alone: a batch's time is shared equally among its images, so a spread over the images
#: would be a spread over batches (0 for one batch), not over images
MEAN_ONLY = frozenset({"seconds"})
CSV_FIELDS = ("index", "image", "representation", "method", "feature_error", "normalized_loss", "image_error",
              "psnr", "ssim", "seconds", "images_per_second", "final_data_loss", "output")


def paper_feature_error(spec: str, method: str) -> str:
    """M&V's Table-1 figure for GD on ``spec``, or :data:`NONE`."""
    return PAPER_FEATURE_ERROR.get(spec, NONE) if method == "gd" else NONE


def paper_image_error(spec: str, method: str) -> str:
    """D&B's image error for an AlexNet/CaffeNet layer, or :data:`NONE`."""
    family, _, layer = spec.partition(":")
    if family not in ("alexnet", "caffenet"):
        return NONE
    return PAPER_IMAGE_ERROR.get(method, {}).get(layer, NONE)


def format_mean_std(values: Sequence[float | None], fmt: str, spread: bool = True) -> str:
    """``mean ± std`` of ``values`` with ``fmt`` for both (``spread=False``: the mean alone); ``n/a`` when any value
    is missing or not finite."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return "n/a"
    mean, std = mean_std(list(values))
    return f"{fmt.format(mean)} ± {fmt.format(std)}" if spread else fmt.format(mean)


def summary_rows(records: Sequence[dict[str, Any]], representations: Sequence[str]) -> list[dict[str, Any]]:
    """One row per representation × method (in the given / canonical order): n, mean ± std of every metric (of the
    seconds, :data:`MEAN_ONLY`, the mean alone).

    ``images_per_second`` is the throughput ``n / Σ seconds``; ``mean``/``std`` hold the raw numbers.
    """
    rows = []
    for spec in representations:
        for method in METHOD_ORDER:
            recs = [r for r in records if r["representation"] == spec and r["method"] == method]
            if not recs:
                continue
            row: dict[str, Any] = {"representation": spec, "method": method, "n": len(recs), "mean": {}, "std": {}}
            for key, _, fmt in METRIC_COLUMNS:
                values = [r[key] for r in recs]
                row[key] = format_mean_std(values, fmt, spread=key not in MEAN_ONLY)
                finite = row[key] != "n/a"
                mean, std = mean_std(values) if finite else (None, None)
                row["mean"][key], row["std"][key] = mean, None if key in MEAN_ONLY else std
            total = sum(r["seconds"] for r in recs)
            row["images_per_second"] = len(recs) / total if total > 0 else math.inf
            row["paper_feature_error"] = paper_feature_error(spec, method)
            row["paper_image_error"] = paper_image_error(spec, method)
            rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary rows as a Markdown table (mean ± std over the image set; the paper's figures beside)."""
    header = ["representation", "method", "n", "feature_error %", PAPER_FE_HEADER, "normalized_loss", "image_error",
              PAPER_IE_HEADER, "PSNR dB", "SSIM", "s / image", "images / s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["representation"], r["method"], str(r["n"]), r["feature_error"], r["paper_feature_error"],
                 r["normalized_loss"], r["image_error"], r["paper_image_error"], r["psnr"], r["ssim"], r["seconds"],
                 f"{r['images_per_second']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def hybrid_targets(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Lines saying, per representation, whether hybrid met its targets: feature_error ≤ gd's,
    image_error ≤ learned's, time ≤ 1/5 of gd's (only where all three methods have finite means)."""
    by = {(r["representation"], r["method"]): r for r in rows}
    lines = []
    for spec in dict.fromkeys(r["representation"] for r in rows):
        gd, learned, hybrid = (by.get((spec, m)) for m in METHOD_ORDER)
        if not (gd and learned and hybrid):
            continue
        fe = (hybrid["mean"]["feature_error"], gd["mean"]["feature_error"])
        ie = (hybrid["mean"]["image_error"], learned["mean"]["image_error"])
        time = (hybrid["mean"]["seconds"], gd["mean"]["seconds"])
        if any(v is None for pair in (fe, ie, time) for v in pair) or not time[1] > 0:
            continue

        def mark(ok: bool) -> str:
            return "met" if ok else "NOT met"

        lines.append(f"- {spec}: feature_error {fe[0]:.2f} vs gd {fe[1]:.2f} ({mark(fe[0] <= fe[1])}); "
                     f"image_error {ie[0]:.3f} vs learned {ie[1]:.3f} ({mark(ie[0] <= ie[1])}); "
                     f"time {time[0] / time[1]:.3f} of gd's ({mark(time[0] <= time[1] / 5)})")
    return lines


def describe_methods(settings: dict[str, Any]) -> list[str]:
    """One Markdown line per representation × method saying how it ran (from results.json's ``methods``)."""
    lines = []
    for spec, mine in settings.items():
        if "gd" in mine:
            g = mine["gd"]
            lines.append(f"- {spec} gd: preset {g['preset']}, {g['iterations']} iterations, schedule {g['schedule']}, "
                         f"λTV {g['lambda_tv']}, from a random start (seed {g['seed']}); the images of a batch are "
                         "inverted together and share its time equally")
        if "learned" in mine:
            lines.append(f"- {spec} learned: bundle {mine['learned']['bundle']} ({mine['learned']['steps']} steps), "
                         "one forward pass per batch (its time shared equally)")
        if "hybrid" in mine:
            h = mine["hybrid"]
            lines.append(f"- {spec} hybrid: the learned reconstruction, then {h['iterations']} GD steps, schedule "
                         f"{h['schedule']}{', pixels clamped to [0, 1]' if h['clamp'] else ''} (its time includes "
                         "the learned pass)")
    return lines


def _json_safe(value: Any) -> Any:
    """Non-finite floats → None (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, content: dict[str, Any]) -> None:
    text = json.dumps(_json_safe(content), indent=2, allow_nan=False)
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})


def write_markdown(path: Path, title_lines: Sequence[str], table: str, targets: Sequence[str],
                   notes: Sequence[str], settings: Sequence[str]) -> str:
    """report.md: what was compared, the table, the hybrid targets, the notes; returns the text."""
    parts = ["# preimage compare", "", *title_lines, "",
             "## Results (mean ± std over the image set; seconds: the mean, each batch's time shared among its images)",
             "", table, "",
             "Columns headed \"paper\" hold the published figures, not ours: M&V 2015 Table 1 (GD with their "
             "released code, 100 ILSVRC-2012 val images) and D&B 2016 (AlexNet/CaffeNet layers only, as re-quoted, "
             "approximate). Our feature_error is normalized over this image set (the mean pairwise distance of its originals' features): comparable between "
             "the methods of one representation, not directly with the paper's image set."]
    if targets:
        parts += ["", "## Hybrid targets (feature_error ≤ gd's, image_error ≤ learned's, time ≤ 1/5 of gd's)", "",
                  *targets]
    if settings:
        parts += ["", "## Methods", "", *settings]
    if notes:
        parts += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    text = "\n".join(parts) + "\n"
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return text


def comparison_grid(originals: Mapping[str, Sequence[torch.Tensor]], stems: Sequence[str], specs: Sequence[str],
                    reconstructions: dict[tuple[str, str], dict[int, torch.Tensor]], limit: int) -> torch.Tensor:
    """Rows = images (the first ``limit``); per representation the columns original (as that representation
    sees it: grey or RGB; ``originals[spec]``) | gd | learned | hybrid (those that ran), labelled ``spec: column``."""
    columns = [(spec, m) for spec in specs for m in ("original", *METHOD_ORDER)
               if m == "original" or (spec, m) in reconstructions]
    rows = []
    for i in range(min(limit, len(stems))):
        rows.append([originals[spec][i] if m == "original" else reconstructions[(spec, m)][i] for spec, m in columns])
    return grid(rows, col_labels=[f"{spec}: {m}" for spec, m in columns], row_labels=list(stems[:len(rows)]))


def write_tensorboard(log_dir: Path, table: str, picture: torch.Tensor, rows: Sequence[dict[str, Any]]) -> None:
    """One TensorBoard run: the table as text, the grid as an image, every mean as a scalar (step 0).

    Earlier event files in ``log_dir`` (a previous comparison into the same run directory) are removed.
    """
    from torch.utils.tensorboard import SummaryWriter

    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(log_dir=str(log_dir))
    writer.add_text("compare/table", table, 0)
    writer.add_image("compare/grid", picture.clamp(0, 1), 0, dataformats="CHW")
    for r in rows:
        for key, value in r["mean"].items():
            if value is not None and math.isfinite(value):
                writer.add_scalar(f"{key}/{r['representation']}/{r['method']}", value, 0)
    writer.close()


def save_grid(picture: torch.Tensor, path: Path) -> None:
    save_png(picture, path)
