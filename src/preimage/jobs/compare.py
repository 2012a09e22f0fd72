"""The `preimage compare` job: GD, learned and hybrid inverters side by side on one image set.

For every representation × method the images are reconstructed (through Lightning's predict loop, so that
``devices=N strategy=ddp`` shards them over processes, GPUs or nodes), gathered on rank 0, scored with
preimage.metrics over the whole set and written to one run directory::

    results.json   a record per image × representation × method, the summary, the resolved config,
                   the per-representation method settings, device, versions and notes
    results.csv    the records as a table
    report.md      mean ± std per representation × method, the paper's figures beside (marked as such)
    grid.png       rows = images; per representation: original | gd | learned | hybrid
    tensorboard/   the same table as text and the grid as an image
    reconstructions/<spec>/<method>/<stem>.npy   float reconstructions (``save_reconstructions``)

Methods: ``gd`` (M&V, a preset), ``learned`` (D&B, a bundle) and ``hybrid``: the learned reconstruction
as GD's starting point, then ``hybrid.iterations`` GD steps with ``hybrid.schedule`` (the preset's other
settings; pixels kept in [0, 1] at every step when ``hybrid.clamp``).

Why the hybrid defaults (K = 120 steps, lr 0.002 for 80 then 0.0002 for 40, clamped): measured with the
shipped HOG bundle on the 6 test photos (192 px), a larger first rate lowered both errors against a
constant 0.0002 (feature_error 17.6 → 13.2 %, image_error 0.369 → 0.362); lr 0.004 gave the same figures,
and 150 steps gained little (13.0 %) at a time over 1/5 of GD's. Clamping keeps a near-flat start (an
untrained or poor decoder) from blowing up (seen on DSIFT with a stand-in start).
"""
from __future__ import annotations

import contextlib
import math
import shlex
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import DictConfig

from ..config import METRICS, check_finite, check_int
from ..devices import device_name, resolve_device
from ..images import check_side, save_npy
from ..imagesets import BUILTIN, load_image_set
from ..inversion.bundles import BundleError, bundle_file
from ..inversion.learned import LearnedInverter
from ..inversion.methods import GDMethod, HybridMethod, LearnedMethod, Method, hybrid_steps
from ..inversion.presets import gd_config
from ..metrics import score, scoring_features
from ..outputs import outputs_removed_on_failure, prepare_output_dir, unique_stems, versions
from ..representations import build_representation
from ..runlock import launching_process, run_dir_lock
from ..schemas import CompareConfig, merged, plain
from . import report as rpt

METHODS = ("gd", "learned", "hybrid")
SSIM_MIN_SIZE = 11  # torchmetrics' 11×11 Gaussian window

# -------------------------------------------------------------------------------------------- config


def resolve_config(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The config over :class:`~preimage.schemas.CompareConfig`'s defaults as plain values, checked (one clear
    ``ValueError`` otherwise): the schema refuses unknown keys and wrong types, this what a type cannot say."""
    c = plain(merged(CompareConfig, cfg, where="compare"))
    check_finite(c)
    if isinstance(c["images"], Path) or isinstance(c["images"], list):  # paths given from Python
        c["images"] = str(c["images"]) if isinstance(c["images"], Path) else [str(i) for i in c["images"]]
    for key in ("representations", "methods"):
        if not c[key] or not all(isinstance(v, str) for v in c[key]):
            raise ValueError(f"{key} must be a non-empty list of names, got {c[key]!r}")
    bad = [m for m in c["methods"] if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)}; valid: {', '.join(METHODS)}")
    c["methods"] = [m for m in METHODS if m in c["methods"]]
    c["representations"] = list(dict.fromkeys(c["representations"]))
    if c["grey"] not in (True, False, "auto"):
        raise ValueError(f"grey must be true, false or auto, got {c['grey']!r}")
    for key in ("limit", "image_size"):
        check_int(key, c[key], allow_none=True)
    if c["image_size"] is not None:
        check_side("image_size", c["image_size"])
    for key in ("batch_size", "num_nodes", "grid_images"):
        check_int(key, c[key])
    check_int("hybrid.iterations", c["hybrid"]["iterations"])
    if not isinstance(c["images"], (str, list)):
        raise ValueError(f"images must be `builtin`, a folder, a file or a list of them, got {c['images']!r}")
    if not c["run_dir"]:
        raise ValueError("run_dir must be set")
    return c


def grey_for(c: dict[str, Any], spec: str) -> bool:
    """Whether ``spec`` is compared in grey: ``grey`` itself, or with ``auto`` grey for the shallow
    representations (HOG, HOGb, DSIFT: M&V invert them in grey) and RGB for network layers (``family:layer``)."""
    return c["grey"] if isinstance(c["grey"], bool) else ":" not in spec


def _setup(c: dict[str, Any]) -> tuple[list, list, dict[str, Any], list[str]]:
    """Representations and their methods per spec, their settings and notes (skipped methods)."""
    representations, methods, settings, notes = [], [], {}, []
    for spec in c["representations"]:
        options = c["representation_options"].get(spec) or {}
        representation = build_representation(spec, **options)
        grey = grey_for(c, spec)
        channels = 1 if grey else 3
        gd_settings = gd_config(c["preset"], representation, c["gd"], grey=grey)
        if gd_settings.restarts != 1:
            raise ValueError("compare scores one reconstruction per image: set gd.restarts=1")
        steps = hybrid_steps(c["hybrid"]["schedule"] or gd_settings.schedule, c["hybrid"]["iterations"],
                             c["hybrid"]["clamp"])
        hybrid_config = gd_config(c["preset"], representation, c["gd"], grey=grey, **steps)
        mine: dict[str, Any] = {"representation": {"spec": spec, "params": representation.params}}
        if "gd" in c["methods"]:
            mine["gd"] = {"preset": c["preset"], **gd_settings.record()}
        inverter, wanted = None, [m for m in ("learned", "hybrid") if m in c["methods"]]
        if wanted:
            named = c["bundles"].get(spec)  # unset: the shipped bundle named after the spec, if there is one
            why, path = None, None
            if spec in c["bundles"] and named is None:
                why = f"no bundle (bundles.{spec}=null)"
            else:
                try:
                    path = bundle_file(named or spec)
                    inverter = LearnedInverter.from_bundle(path, representation=representation)
                except BundleError as err:
                    why = str(err) if named or path is not None else f"no shipped bundle for {spec} (bundles.{spec}=PATH)"
            if inverter is not None and inverter.decoder.config.out_channels != channels:
                why = (f"bundle {path} reconstructs {inverter.decoder.config.out_channels}-channel images but the "
                       f"images are compared with {channels} (grey={c['grey']})")
                inverter = None
            if inverter is None and named:
                raise ValueError(f"bundles.{spec}: {why}")  # named by the user: an error, not a note
            if inverter is None:
                notes.append(f"{spec}: {' and '.join(wanted)} skipped: {why}")
            else:
                manifest = inverter.manifest
                learned_settings = {"bundle": str(path), **{k: manifest.get(k) for k in (
                    "steps", "data", "image_size", "metrics", "package_version")}}
                if "learned" in wanted:
                    mine["learned"] = learned_settings
                if "hybrid" in wanted:
                    mine["hybrid"] = {"start": learned_settings, **hybrid_config.record()}
        if getattr(representation, "random_weights", False):
            notes.append(f"{spec}: made with RANDOM CNN weights, not the pretrained network")
        representations.append(representation)
        mine_methods: list[Method] = [GDMethod(representation, gd_settings)] if "gd" in c["methods"] else []
        if inverter is not None:
            mine_methods += [LearnedMethod(inverter)] if "learned" in c["methods"] else []
            mine_methods += [HybridMethod(inverter, hybrid_config)] if "hybrid" in c["methods"] else []
        methods.append(mine_methods)
        settings[spec] = mine
    return representations, methods, settings, notes


def _trainer(c: dict[str, Any]):
    """A predict-only Lightning Trainer from ``accelerator``/``devices``/``strategy``/``num_nodes`` (or ``device``)."""
    import pytorch_lightning as pl

    strategy, accelerator, devices = c["strategy"], c["accelerator"], c["devices"]
    if any(word in str(strategy) for word in ("spawn", "fork", "notebook")):
        raise ValueError(f"strategy={strategy} is not supported by compare: use strategy=ddp")
    if accelerator is None:  # from `device`
        device = resolve_device(c["device"])
        accelerator = {"cpu": "cpu", "cuda": "gpu"}.get(device.type, device.type)
        if device.index is not None and devices == 1:
            devices = [device.index]
    try:
        return pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=c["num_nodes"],
                          logger=False, enable_checkpointing=False, enable_model_summary=False,
                          enable_progress_bar=c["progress"], inference_mode=False, default_root_dir=c["run_dir"])
    except Exception as err:  # Lightning's MisconfigurationException is no ValueError
        raise ValueError(f"trainer options (accelerator={accelerator}, devices={devices}, strategy={strategy}): "
                         f"{err}") from None


# ----------------------------------------------------------------------------------------------- run


def run_compare(cfg: DictConfig | dict[str, Any], command: str | None = None) -> dict[str, Any] | None:
    """Run the comparison ``cfg`` describes (:class:`~preimage.schemas.CompareConfig` + overrides); see the module docstring.

    Returns:
        the content of results.json on global rank 0; ``None`` on the other ranks of a distributed run.

    Raises:
        ValueError: bad config or images (one clear line).
    """
    from torch.utils.data import DataLoader

    from .compare_module import CompareModule, ImageSetDataset, collate_items, gather_records

    c = resolve_config(cfg)
    modes = [grey_for(c, spec) for spec in c["representations"]]
    sets = {grey: load_image_set(c["images"], limit=c["limit"], size=c["image_size"], grey=grey, exclude=Path(c["run_dir"]))
            for grey in dict.fromkeys(modes)}
    names, paths, _ = next(iter(sets.values()))
    images = {spec: sets[grey][2] for spec, grey in zip(c["representations"], modes)}  # as each spec sees them
    representations, methods, settings, notes = _setup(c)
    for i, name in enumerate(names):
        for spec, representation in zip(c["representations"], representations):
            x = images[spec][i]
            if min(x.shape[-2:]) < SSIM_MIN_SIZE:
                raise ValueError(f"{name}: image of {x.shape[-2]}x{x.shape[-1]} pixels is smaller than the "
                                 f"{SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} that SSIM needs")
            try:
                representation.check_input(x[None])
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
    run_dir = Path(c["run_dir"])
    trainer = _trainer(c)
    launching = launching_process()
    with run_dir_lock(run_dir) if launching else contextlib.nullcontext(), outputs_removed_on_failure():
        if launching:
            prepare_output_dir(run_dir, clear=c["overwrite"], inputs=paths)
        module = CompareModule(methods, modes)
        loader = DataLoader(ImageSetDataset({grey: s[2] for grey, s in sets.items()}), batch_size=c["batch_size"],
                            shuffle=False, num_workers=0, collate_fn=collate_items)
        start = time.perf_counter()
        local = [r for batch in trainer.predict(module, dataloaders=loader) for r in batch]
        records = gather_records(local)
        if records is None:  # not global rank 0
            return None
        total_seconds = time.perf_counter() - start
        device = trainer.strategy.root_device
        return _write(c, command, names, paths, images, representations, records, settings, notes, device,
                      trainer.world_size, total_seconds, run_dir)


def _score(c: dict[str, Any], names: list[str], stems: list[str], images: dict[str, list[torch.Tensor]],
           representations: list, raw: list[dict[str, Any]], device: torch.device, run_dir: Path, notes: list[str]):
    """Records (scores over the whole set, per representation × method) and the reconstructions by method."""
    by_key = {(r["index"], r["representation"], r["method"]): r for r in raw}
    n = len(names)
    records: list[dict[str, Any]] = []
    recons: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for spec, representation in zip(c["representations"], representations):
        reference = scoring_features(representation, images[spec], device)
        for method in (m for m in rpt.METHOD_ORDER if (0, spec, m) in by_key):
            missing = [i for i in range(n) if (i, spec, method) not in by_key]
            if missing:
                raise RuntimeError(f"{spec} {method}: no reconstruction gathered for image(s) {missing}")
            got = [by_key[(i, spec, method)] for i in range(n)]
            recons[(spec, method)] = {i: g["reconstruction"] for i, g in enumerate(got)}
            finite = [bool(torch.isfinite(g["reconstruction"]).all()) for g in got]
            if not all(finite):
                notes.append(f"{spec} {method}: the descent diverged on image(s) "
                             f"{[names[i] for i in range(n) if not finite[i]]}: their scores are null")
            scored = [torch.nan_to_num(g["reconstruction"], nan=0.5) for g in got]  # NaN ones are nulled below
            metrics = score(representation, images[spec], scored, device, reference)
            for i, g in enumerate(got):
                rec = {"index": i, "image": names[i], "representation": spec, "method": method,
                       **{k: v[i] for k, v in metrics.items()}, "seconds": g["seconds"],
                       "images_per_second": 1.0 / g["seconds"] if g["seconds"] > 0 else math.inf,
                       "final_data_loss": g["final_data_loss"], "output": None}
                if rec["feature_error"] is not None:
                    rec["feature_error"] *= 100
                if not finite[i]:
                    rec.update(dict.fromkeys(METRICS, math.nan))
                elif c["save_reconstructions"]:
                    rec["output"] = f"reconstructions/{spec.replace(':', '_')}/{method}/{stems[i]}.npy"
                    save_npy(g["reconstruction"], run_dir / rec["output"])
                records.append(rec)
    return records, recons


def _write(c: dict[str, Any], command: str | None, names: list[str], paths: list[Path],
           images: dict[str, list[torch.Tensor]], representations: list, raw: list[dict[str, Any]],
           settings: dict[str, Any], notes: list[str], device: torch.device, world_size: int, total_seconds: float,
           run_dir: Path) -> dict[str, Any]:
    """Score the gathered reconstructions over the whole set and write every output (global rank 0)."""
    stems, n = unique_stems(paths), len(names)
    if n < 2:
        notes.append("feature_error and image_error need at least 2 images (their normalizer is over the set)")
    records, recons = _score(c, names, stems, images, representations, raw, device, run_dir, notes)
    rows = rpt.summary_rows(records, c["representations"])
    table = rpt.markdown_table(rows)
    size = (f"{c['image_size']}×{c['image_size']} (shorter side resized, centre crop)" if c["image_size"]
            else "as they are")
    source = ("the built-in test photos (preimage.photos.TEST_PHOTOS, never used in training)"
              if c["images"] in (BUILTIN, f"{BUILTIN}:test") else f"{c['images']}")
    name = device_name(device)
    modes = {spec: "grey" if grey_for(c, spec) else "RGB" for spec in c["representations"]}
    colour = (next(iter(modes.values())) if len(set(modes.values())) == 1
              else "; ".join(f"{mode} for {', '.join(s for s, m in modes.items() if m == mode)}"
                             for mode in dict.fromkeys(modes.values())))
    title = [f"{n} images: {source}; {colour}, {size}.",
             f"Representations: {', '.join(c['representations'])}. Methods: {', '.join(c['methods'])}. "
             f"Device: {name} × {world_size} process(es); {total_seconds:.1f} s in all."]
    if command:
        title.append(f"Command: `{command}`")
    rpt.write_markdown(run_dir / "report.md", title, table, rpt.hybrid_targets(rows), notes,
                       rpt.describe_methods(settings))
    picture = rpt.comparison_grid(images, stems, c["representations"], recons, c["grid_images"])
    rpt.save_grid(picture, run_dir / "grid.png")
    if c["tensorboard"]:
        rpt.write_tensorboard(run_dir / "tensorboard", table, picture, rows)
    result = {
        "records": records, "summary": rows,
        "images": [{"index": i, "image": names[i], "stem": stems[i],
                    "shape": list(max((images[s][i] for s in images), key=lambda x: x.shape[0]).shape)}  # RGB if any
                   for i in range(n)],
        "units": {"feature_error": "% (M&V Table 1, normalized over this image set)", "normalized_loss": "fraction",
                  "image_error": "fraction", "psnr": "dB", "ssim": "1", "seconds": "s per image",
                  "images_per_second": "1 / s"},
        "config": c, "methods": settings, "command": command, "device": name, "world_size": world_size,
        "total_seconds": total_seconds, "versions": versions(), "notes": notes, "paper": rpt.PAPER,
    }
    rpt.write_json(run_dir / "results.json", result)
    rpt.write_csv(run_dir / "results.csv", records)
    return {**result, "table": table}


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["preimage", "compare", *argv])
