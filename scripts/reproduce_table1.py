"""Reproduce M&V (CVPR 2015) Table 1: GD inversion of HOG, HOGb and DSIFT, feature_error mean ± std (%).

Photos: the built-in test photos (preimage.photos.TEST_PHOTOS), grey, resized so the shorter side is
``--size`` (bicubic) and centre-cropped to size × size. M&V used 100 ILSVRC-2012 val images (not available here).
HOG/HOGb are inverted and scored on their 27 non-texture dims (M&V's CNN-HOG), as M&V's code does.

    .venv/bin/python scripts/reproduce_table1.py [--presets mv2015 fast] [--size 256] [--device auto]
        [--images FOLDER | FILE ...]   (other photos instead of the built-in test photos, prepared alike)
        [--rounds 2]
        [--set KEY=VALUE ...]   (GD settings over the last preset listed, e.g. surrogate=false or
                                 optimizer=momentum: one more row, "PRESET+set")

The last column is each row's wall time over mv2015's for the same representation in the same run: the rows of one
representation run one after the other, ``--rounds`` times each (the fastest counts), so a change in the machine's
speed during the run moves both.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from preimage import build_representation, keep_freed_memory
from preimage.imagesets import load_image_set
from preimage.jobs.report import MV2015_TABLE1
from preimage.metrics import feature_error, image_error, mean_std
from preimage.inversion.gd import invert_gd
from preimage.inversion.presets import gd_config

OPTIONS = {"hog": {"texture": False}, "hogb": {"texture": False}, "dsift": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["mv2015"])
    parser.add_argument("--representations", nargs="+", default=list(MV2015_TABLE1))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", nargs="+", default=None,
                        help="a folder or image files instead of the built-in test photos (e.g. to check on photos "
                             "no setting was chosen on)")
    parser.add_argument("--out", default="reports/table1.json", help="JSON of every figure (not committed)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each row (the fastest is reported; the figures are the same every run)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="GD settings (gd.KEY of invert) over the last preset: one more row, PRESET+set")
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does: GD's freed tensors are not faulted back in at every step
    overrides = OmegaConf.to_container(OmegaConf.from_dotlist(args.set)) if args.set else {}
    runs = [(p, p, {}) for p in args.presets] + ([(f"{args.presets[-1]}+set", args.presets[-1], overrides)]
                                                 if overrides else [])

    chosen = "builtin" if args.images is None else args.images[0] if len(args.images) == 1 else args.images
    _, paths, prepared = load_image_set(chosen, size=args.size)  # grey
    names, images = [p.stem for p in paths], torch.stack(prepared)
    print(f"{len(names)} photos ({', '.join(names)}), grey, {args.size}×{args.size}")
    reps = {spec: build_representation(spec, **OPTIONS[spec]) for spec in args.representations}
    with torch.no_grad():  # the originals' scored features, once per representation
        targets = {spec: rep.scoring_view(rep(images)) for spec, rep in reps.items()}
    rows = []
    for spec, rep in reps.items():  # the presets of one representation side by side, alternating over the rounds
        configs = {label: gd_config(preset, spec, extra) for label, preset, extra in runs}
        seconds: dict[str, list[float]] = {label: [] for label in configs}
        results = {}
        for _ in range(args.rounds):
            for label, cfg in configs.items():
                results[label] = invert_gd(rep, images, cfg, device=args.device)
                seconds[label].append(results[label].seconds)
        for label, preset, extra in runs:
            cfg, res = configs[label], results[label]
            recon = res.images[:, 0]
            with torch.no_grad():
                f1 = rep.scoring_view(rep(recon.to(res.device))).cpu()
            errors = feature_error(f1, targets[spec]) * 100
            mean, std = mean_std(errors)
            img_mean, img_std = mean_std(image_error(recon, images))
            rows.append({"row": label, "preset": preset, "representation": spec, "feature_error_mean": mean, "feature_error_std": std,
                         "overrides": extra, "per_image": dict(zip(names, errors.tolist())),
                         "image_error_mean": img_mean, "image_error_std": img_std, "iterations": cfg.iterations,
                         "seconds_per_image": min(seconds[label]) / len(names), "device": res.device,
                         "paper_mean": MV2015_TABLE1[spec][0], "paper_std": MV2015_TABLE1[spec][1]})
            print(f"{label:>10} {spec:>6}: {mean:6.2f} ± {std:5.2f} %  (paper {MV2015_TABLE1[spec][0]:.2f} ± {MV2015_TABLE1[spec][1]})"
                  f"  image_error {img_mean:.3f} ± {img_std:.3f}  {cfg.iterations} it, {min(seconds[label]) / len(names):.2f} s/image"
                  f" on {res.device}", flush=True)
    baseline = {r["representation"]: r["seconds_per_image"] for r in rows if r["row"] == "mv2015"}
    for r in rows:  # wall time against mv2015's for the same representation in this run (None without that row)
        base = baseline.get(r["representation"])
        r["time_vs_mv2015"] = r["seconds_per_image"] / base if base else None
    print("\n| preset | representation | feature_error % (ours) | paper (M&V Table 1) | image_error | iterations "
          "| s / image | × mv2015's time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = "–" if r["time_vs_mv2015"] is None else f"{r['time_vs_mv2015']:.2f}"
        print(f"| {r['row']} | {r['representation']} | {r['feature_error_mean']:.2f} ± {r['feature_error_std']:.2f} "
              f"| {r['paper_mean']:.2f} ± {r['paper_std']} | {r['image_error_mean']:.3f} ± {r['image_error_std']:.3f} "
              f"| {r['iterations']} | {r['seconds_per_image']:.2f} | {ratio} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
