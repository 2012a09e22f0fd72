"""``preimage analyze KIND [IMAGE ...] [key=value ...] [--out DIR]``.

KIND: invariance, window, groups, maximize, caricature (M&V, GD) or perturb, interpolate, sample, dark_knowledge
(D&B, a learned inverter's bundle).

Thin: the kind's schema (its function's signature), ``configs/analyze/<kind>.yaml`` (or ``--config``) over it,
then the overrides; calls the analysis. Image arguments replace the config's ``images``; ``key=value`` items
override any key.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from ..outputs import outputs_removed_on_failure
from ..runlock import run_dir_lock
from ..config import check_finite, config_dir
from ..schemas import analysis_schema, load_config, merged, plain, split_overrides

__all__ = ["add_analyze_parser", "run_analysis", "schema"]

_HELP = {
    "invariance": "several reconstructions per image from different random starts, per layer (M&V Fig. 1, 7)",
    "window": "reconstruct from a central k x k window of neurons, its receptive field boxed (M&V Fig. 9)",
    "groups": "reconstruct from one channel group, e.g. CaffeNet's two streams (M&V Fig. 10)",
    "maximize": "images that maximize one neuron or channel per layer (M&V IJCV 2016)",
    "caricature": "exaggerate what a layer detects in an image (M&V IJCV 2016)",
    "perturb": "learned inverter: reconstructions from binarized features and with half the dimensions dropped (D&B)",
    "interpolate": "learned inverter: reconstructions along the line between two images' features (D&B)",
    "sample": "learned inverter: reconstructions of random features drawn per dimension from an image set (D&B)",
    "dark_knowledge": "learned inverter of class probabilities: reconstructions from all, the top 5 only, and all "
                      "but the top 5 (D&B)",
}


def _analyses() -> dict[str, Callable[..., dict[str, Any]]]:
    from .dark_knowledge import dark_knowledge
    from .learned_studies import interpolate, perturb, sample
    from .studies import groups, invariance, window
    from .visualize import caricature, maximize

    return {"invariance": invariance, "window": window, "groups": groups, "maximize": maximize,
            "caricature": caricature, "perturb": perturb, "interpolate": interpolate, "sample": sample,
            "dark_knowledge": dark_knowledge}


def schema(kind: str) -> type:
    """The config schema of analysis ``kind`` (:func:`~preimage.schemas.analysis_schema` of its function)."""
    analyses = _analyses()
    if kind not in analyses:
        raise ValueError(f"unknown analysis {kind!r}; valid: {', '.join(analyses)}")
    return analysis_schema(kind, analyses[kind])


def run_analysis(kind: str, settings: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """Call analysis ``kind`` with ``settings`` (a loaded config, or a mapping merged over the schema's defaults);
    unknown keys and wrong types are a ``ValueError``."""
    values = plain(merged(schema(kind), settings, where=f"analyze {kind}"))
    check_finite(values)
    with run_dir_lock(Path(str(values["out"]))), outputs_removed_on_failure():  # one run per folder
        return _analyses()[kind](**values)


def _summary(figures: dict[str, Any]) -> dict[str, float]:
    """The real-valued figures of one layer, lists (of lists) replaced by their mean, for printing."""
    summary = {}
    for key, value in figures.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            summary.update({f"{key}[{i}].{k}": v for i, d in enumerate(value) for k, v in _summary(d).items()})
            continue
        if f"{key}_mean" in figures or f"{key.removesuffix('_percent')}_mean_percent" in figures:
            continue
        flat = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
        values = [v for row in flat for v in (row if isinstance(row, list) else [row])]
        if values and all(isinstance(v, float) for v in values):
            summary[key] = sum(values) / len(values)
    return summary


def _run(args: argparse.Namespace) -> int:
    images, overrides = split_overrides(args.items)
    kind_schema = schema(args.kind)
    if images and "images" not in {f.name for f in dataclasses.fields(kind_schema)}:
        raise ValueError(f"analyze {args.kind} takes no images, got {' '.join(images)}")
    cli = [f"images=[{','.join(json.dumps(i) for i in images)}]"] if images else []
    cli += [f"out={json.dumps(args.out)}"] if args.out else []
    cfg = load_config(kind_schema, args.config or config_dir() / "analyze" / f"{args.kind}.yaml", overrides + cli,
                      where=f"analyze {args.kind}")
    report = run_analysis(args.kind, cfg)
    for spec, figures in report["figures"].items():
        print(f"{spec}: " + "  ".join(f"{k} {v:.4g}" for k, v in _summary(figures).items()))
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    out = report["config"]["out"]
    print(f"wrote {out}/{args.kind}.png and {out}/{args.kind}.json ({report['device']}, {report['seconds']:.1f} s)")
    return 0


def add_analyze_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Add ``analyze <kind> ...`` to a ``preimage`` sub-command set; each kind runs via ``args.run(args)``."""
    parser = subparsers.add_parser("analyze", help="analyses from the papers: invariance, window, groups, maximize, "
                                                   "caricature, perturb, interpolate, sample, dark_knowledge; each writes "
                                                   "<out>/<kind>.png and <kind>.json")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="{" + ",".join(_HELP) + "}")
    for kind, text in _HELP.items():
        sub = kinds.add_parser(kind, help=text.replace("%", "%%"),  # argparse %-formats help, not descriptions
                               description=f"{text}. Items are image paths (or builtin:NAME) and "
                                           f"key=value overrides of configs/analyze/{kind}.yaml.")
        sub.add_argument("items", nargs="*", metavar="IMAGE|key=value")
        sub.add_argument("--out", "-o", help="output folder (default: the config's out)")
        sub.add_argument("--config", help=f"config YAML (default configs/analyze/{kind}.yaml)")
        sub.set_defaults(run=_run)
    return parser
