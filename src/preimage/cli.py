"""The `preimage` console script. Thin: it parses arguments and configs, then calls the library.

    preimage invert --representation hog --method gd IMAGE... --out DIR [key=value ...]
    preimage list
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Sequence

from omegaconf.errors import OmegaConfBaseException

from .config import apply_overrides, config_dir, load_yaml

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def _split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` overrides from positional items (image paths)."""
    overrides = [i for i in items if _OVERRIDE.match(i)]
    return [i for i in items if not _OVERRIDE.match(i)], overrides


def _invert(args: argparse.Namespace) -> int:
    from .evaluation.invert import run_invert

    images, overrides = _split_overrides(args.items)
    cfg = load_yaml(args.config) if args.config else load_yaml(config_dir() / "invert" / "default.yaml")
    cli = [f"representation={args.representation}"] if args.representation else []
    cli += [f"method={args.method}"] if args.method else []
    cfg = apply_overrides(cfg, cli + overrides)
    report = run_invert(cfg, images, args.out)
    for rec in report["images"]:
        fe = "n/a" if rec["feature_error"] is None else f"{rec['feature_error']:.2f}%"
        print(f"{rec['output']}: feature_error {fe}  normalized_loss {rec['normalized_loss']:.4f}  "
              f"psnr {rec['psnr']:.2f} dB  ssim {rec['ssim']:.3f}  {rec['seconds']:.2f} s")
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.out}/metrics.json and overview.png ({report['device']})")
    return 0


def _list(args: argparse.Namespace) -> int:
    from .inversion.presets import list_presets
    from .representations import list_representations

    print("representations:", " ".join(list_representations()))
    print("presets:", " ".join(list_presets()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="preimage", description="Reconstruct images from their representations.")
    sub = parser.add_subparsers(dest="command", required=True)
    inv = sub.add_parser("invert", help="invert images from a representation; writes PNG/NPY, overview.png, metrics.json",
                         description="Items are image paths (or builtin:NAME, e.g. builtin:camera) and key=value "
                                     "overrides of configs/invert/default.yaml, e.g. preset=mv2015 gd.restarts=3 device=cpu.")
    inv.add_argument("items", nargs="+", metavar="IMAGE|key=value")
    inv.add_argument("--representation", "-r", help="representation spec, e.g. hog, hogb, dsift, caffenet:conv3")
    inv.add_argument("--method", "-m", choices=["gd"], help="inversion method (default gd)")
    inv.add_argument("--out", "-o", required=True, help="output folder (created)")
    inv.add_argument("--config", help="config YAML (default configs/invert/default.yaml)")
    inv.set_defaults(run=_invert)
    lst = sub.add_parser("list", help="list the representation specs and GD presets")
    lst.set_defaults(run=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Expected failures (bad input, bad config) print one line on stderr and return 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, OmegaConfBaseException) as err:
        print(f"preimage {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("preimage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
