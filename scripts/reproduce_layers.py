"""Dosovitskiy & Brox's whole-network figure and table on EfficientNet-Lite0, from the shipped inverters.

For every layer with a shipped inverter (`preimage list`), on the built-in test photos (RGB, square): the learned
reconstruction and GD's (preset `tuned`), their image_error and feature_error, seconds per image (the learned
inverter's the fastest of 3 passes over the photos after a first: the first pay a process's one-off set-up), and two
constant baselines that know only colour: one flat image of all the photos' mean colour, and a flat image of each
photo's own mean colour. D&B's AlexNet figures stand beside (approximate, as re-quoted; another network).
Writes <out>/layers.md (the table) and <out>/layers.png (a row pair per photo: learned above GD; a column per
layer).

    .venv/bin/python scripts/reproduce_layers.py [--size 224] [--layers stem stage1 ...] [--out runs/layers]
        [--run-dir runs/efficientnet_lite0_layers]   (the bundles of a `train layers=[...]` run instead of the shipped)
        [--other-sizes 227 230]                      (the learned image_error at other sides too, and its ratio
                                                      to that at --size)
        [--learned-only]                             (no GD: the learned column, and on how many photos it is
                                                      below each photo's own mean colour; no picture)

Photos the inverters never saw, for the learned half alone: ``--images data/check_photos --learned-only`` (the check
photos of ``scripts/extra_photos.py``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import preimage
from preimage.images import grid, save_png
from preimage.imagesets import load_image_set
from preimage.metrics import flat_colour, image_error

#: D&B 2016 on AlexNet (learned, M&V's GD), image_error, as re-quoted (approximate)
DB_ALEXNET = {"conv5": (0.35, 0.71), "fc6": (0.51, 0.80), "fc7": (0.56, 0.82), "fc8": (0.58, 0.84)}
#: the EfficientNet-Lite0 layers set beside AlexNet's (by place in the network, not by any equivalence)
BESIDE = {"head": "conv5", "pool": "fc6", "logits": "fc8"}


def mean_error(images: torch.Tensor, originals: torch.Tensor) -> float:
    return float(image_error(list(images), list(originals)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layers", nargs="+", help="default: every layer with a shipped inverter")
    parser.add_argument("--preset", default="tuned")
    parser.add_argument("--images", nargs="+", default=["builtin"], help="builtin (the test photos), a folder, files "
                        "or builtin:NAME")
    parser.add_argument("--out", default="runs/layers")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--run-dir", help="a `preimage train layers=[...]` run: score its bundles (layers.json)")
    parser.add_argument("--other-sizes", nargs="*", type=int, default=[])
    parser.add_argument("--learned-only", action="store_true", help="no GD, no picture; count the photos where the "
                        "learned reconstruction is below the flat image of the photo's own mean colour")
    args = parser.parse_args()
    preimage.keep_freed_memory()  # as the CLI does: GD's freed tensors are not faulted back in at every step
    if args.run_dir:
        bundles = {spec: v["bundle"] for spec, v in json.loads((Path(args.run_dir) / "layers.json").read_text()).items()}
    else:
        bundles = {i["spec"]: i["name"] for i in preimage.list_inverters()}
    available = [spec for spec in bundles if spec.startswith("efficientnet_lite0:")]
    order = [f"efficientnet_lite0:{layer}" for layer in ("stem", "stage1", "stage2", "stage3", "stage4", "stage5",
                                                          "stage6", "stage7", "head", "pool", "logits", "prob")]
    specs = [f"efficientnet_lite0:{layer}" for layer in args.layers] if args.layers else [s for s in order if s in available]
    images = args.images[0] if len(args.images) == 1 else args.images
    stems, _, photos = load_image_set(images, size=args.size, grey=False)
    x = torch.stack(photos)
    own_colour = image_error(list(flat_colour(x)), list(x))
    baselines = (mean_error(flat_colour(x, shared=True), x), float(own_colour.mean()))
    rows, columns, labels = [], [], []
    started = time.perf_counter()
    for spec in specs:
        # the learned seconds are the fastest of 3 passes after a first: a network's first calls in a process pay
        # one-off set-up (the first layer's second pass took 3x its later ones)
        preimage.invert(x, spec, method="learned", bundle=bundles[spec], device=args.device)
        learned = min((preimage.invert(x, spec, method="learned", bundle=bundles[spec], device=args.device)
                       for _ in range(3)), key=lambda result: sum(result.seconds))
        others = []
        for side in args.other_sizes:
            y = torch.stack(load_image_set(images, size=side, grey=False)[2])
            others.append(mean_error(preimage.invert(y, spec, method="learned", bundle=bundles[spec],
                                                     device=args.device).images, y))
        layer = spec.partition(":")[2]
        learned_error = image_error(list(learned.images), list(x))
        others_cells = "".join(f"{e:.3f} ({e / float(learned_error.mean()):.2f}×) | " for e in others)
        if args.learned_only:
            rows.append(f"| {layer} | {float(learned_error.mean()):.3f} | {sum(learned.feature_error) / len(x):.1f} | "
                        f"{sum(learned.seconds) / len(x):.3f} | {others_cells}"
                        f"{int((learned_error < own_colour).sum())} of {len(x)} |")
            print(rows[-1], flush=True)
            continue
        try:
            gd = preimage.invert(x, spec, preset=args.preset, device=args.device)
            gd_cells = (f"{mean_error(gd.images, x):.3f}", f"{sum(gd.feature_error) / len(x):.1f}",
                        f"{sum(gd.seconds) / len(x):.2f}")
            gd_images = gd.images
        except ValueError as err:  # a descent that diverges (GD's own one-line error): said in the table
            print(f"{layer}: GD failed: {err}", flush=True)
            gd_cells, gd_images = ("diverged",) * 3, torch.zeros_like(x)
        paper = DB_ALEXNET.get(BESIDE.get(layer, ""))
        rows.append(
            f"| {layer} | {float(learned_error.mean()):.3f} | {gd_cells[0]} | "
            f"{sum(learned.feature_error) / len(x):.1f} | {gd_cells[1]} | "
            f"{sum(learned.seconds) / len(x):.3f} | {gd_cells[2]} | " + others_cells
            + (f"{BESIDE[layer]}: {paper[0]:.2f} / {paper[1]:.2f} |" if paper else "— |"))
        columns.append((learned.images, gd_images))
        labels.append(layer)
        print(rows[-1], flush=True)
    sizes = "".join(f"learned at {side} px | " for side in args.other_sizes)
    if args.learned_only:
        header = (f"| layer | learned image_error | learned feature_error % | learned s / image | {sizes}"
                  "photos below their own mean colour |\n" + "|---" * (5 + len(args.other_sizes)) + "|")
    else:
        header = ("| layer | learned image_error | GD image_error | learned feature_error % | GD feature_error % | "
                  f"learned s / image | GD s / image | {sizes}"
                  "D&B AlexNet learned / GD (approx.) |\n" + "|---" * (8 + len(args.other_sizes)) + "|")
    method = "learned only" if args.learned_only else f"GD preset {args.preset}"
    text = (f"{len(x)} photos ({' '.join(args.images)}), {args.size}×{args.size} RGB; {method}; "
            f"{time.perf_counter() - started:.0f} s in all.\n\n{header}\n" + "\n".join(rows) + "\n\n"
            f"Constant baselines: one flat image of all the photos' mean colour {baselines[0]:.3f}; a flat image of "
            f"each photo's own mean colour {baselines[1]:.3f}.\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layers.md").write_text(text)
    print(text)
    if args.learned_only:
        print(f"wrote {out}/layers.md")
        return
    picture = [[x[i], *(col[k][i] for col in columns)] for i in range(len(x)) for k in (0, 1)]
    save_png(grid(picture, col_labels=["original", *labels],
                  row_labels=[f"{s}\n{'learned' if k == 0 else 'GD'}" for s in stems for k in (0, 1)]),
             out / "layers.png")
    print(f"wrote {out}/layers.md and {out}/layers.png")


if __name__ == "__main__":
    main()
