"""The `preimage` console script. Thin: it parses arguments and configs, then calls the library.

    preimage invert --representation hog --method gd IMAGE... --out DIR [key=value ...]
    preimage invert --method learned --checkpoint BUNDLE IMAGE... --out DIR [key=value ...]
    preimage train --config configs/train/hog.yaml [key=value ...]
    preimage compare [--config FILE.yaml] [key=value ...]
    preimage analyze KIND [IMAGE ...] [key=value ...] [--out DIR]
    preimage config JOB [--config FILE.yaml] [key=value ...]
    preimage list [torchvision:MODEL]

Every job's keys and defaults are its schema (schemas.py); a --config file and key=value overrides merge over
them; `preimage config JOB` prints the result.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Sequence

from omegaconf.errors import OmegaConfBaseException

from .allocator import keep_freed_memory
from .analysis.cli import add_analyze_parser
from .config import config_dir
from .schemas import CompareConfig, InvertConfig, TrainConfig, load_config, split_overrides


def _overrides_only(items: Sequence[str]) -> list[str]:
    """The ``key=value`` items of a command that takes no other positional item (``ValueError`` otherwise)."""
    extra, overrides = split_overrides(items)
    if extra:
        raise ValueError(f"unexpected argument(s) {' '.join(extra)}: give key=value overrides")
    return overrides


def _invert(args: argparse.Namespace) -> int:
    from .jobs.invert import run_invert

    images, overrides = split_overrides(args.items)
    cli = [f"representation={args.representation}"] if args.representation else []
    cli += [f"method={args.method}"] if args.method else []
    cli += [f"checkpoint={args.checkpoint}"] if args.checkpoint else []
    cfg = load_config(InvertConfig, args.config, cli + overrides, where="invert")
    explicit = args.config or args.representation or any(o.startswith("representation=") for o in overrides)
    if cfg.method in ("learned", "hybrid") and not explicit:
        cfg.representation = None  # the default spec is for GD: a learned inverter takes its bundle's
    report = run_invert(cfg, images, args.out)
    formats = {"feature_error": "{:.2f}%", "normalized_loss": "{:.4f}", "image_error": "{:.3f}", "psnr": "{:.2f} dB",
               "ssim": "{:.3f}"}
    for rec in report["images"]:
        scores = "  ".join(f"{name} {'n/a' if rec[name] is None else form.format(rec[name])}"
                           for name, form in formats.items() if name in rec)
        print(f"{rec['output']}: {scores}  {rec['seconds']:.2f} s")
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.out}/metrics.json and overview.png ({report['device']})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .training.train import train

    overrides = _overrides_only(args.items)
    path = Path(args.config)
    if not path.suffix and not path.exists():  # a name: configs/train/<name>.yaml
        path = config_dir() / "train" / f"{args.config}.yaml"
    cfg = load_config(TrainConfig, path, overrides, where="train")
    metrics, objects = train(cfg, command=shlex.join(["preimage", "train", "--config", args.config, *args.items]))
    for spec, layer in objects.get("layers", {}).items():  # a sweep over layers
        error = layer["metrics"].get("val/image_error")
        print(f"{spec}: {layer['status']}, {layer['bundle']}" + ("" if error is None else f" (val image_error {error:.3f})"))
    if objects.get("compare"):
        print(objects["compare"]["table"])
        print(f"wrote {objects['compare']['config']['run_dir']}/results.json, report.md, grid.png")
    if objects["bundle"] is not None:  # DDP: rank 0 only
        print(f"wrote {objects['bundle']} (TensorBoard: {objects['run_dir'] / 'tensorboard'})")
        print("  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .jobs.compare import command_line, run_compare

    overrides = _overrides_only(args.items)
    cfg = load_config(CompareConfig, args.config, overrides, where="compare")
    argv = (["--config", args.config] if args.config else []) + list(args.items)
    result = run_compare(cfg, command=command_line(argv))
    if result is None:  # DDP: rank 0 reports
        return 0
    print(result["table"])
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {result['config']['run_dir']}/results.json, results.csv, report.md, grid.png "
          f"({result['device']}, {result['total_seconds']:.1f} s)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from .catalogue import OPEN_FAMILIES, builtin_specs, list_inverters
    from .config import list_presets

    if args.model:
        return _list_nodes(args.model)
    print("representations:", " ".join(builtin_specs()))
    print("families:", " ".join(f"{f}:<model>:<node>" for f in OPEN_FAMILIES),
          f"(models: `preimage list {OPEN_FAMILIES[0]}:`; nodes: `preimage list {OPEN_FAMILIES[0]}:<model>`)")
    print("presets:", " ".join(list_presets()))
    print("inverters (learned, shipped; --checkpoint NAME, bundle=NAME):")
    for inverter in list_inverters():
        h, w = inverter["image_size"]
        error = inverter["validation"].get("image_error")
        how = (f"trained on {h}x{w} crops, {inverter['steps']} steps" if inverter["fitted_crops"] is None else
               f"fitted in closed form on {inverter['fitted_crops']} crops of {h}x{w}")
        print(f"  {inverter['name']}  {'grey' if inverter['grey'] else 'colour'}, {how}"
              + ("" if error is None else f", validation image_error {error:.3f}"))
    return 0


def _list_nodes(name: str) -> int:
    from .catalogue import OPEN_FAMILIES
    from .representations.model_zoo import ZooModel, node_shapes

    family, _, model = name.partition(":")
    if family not in OPEN_FAMILIES or ":" in model:
        raise ValueError(f"list: {name!r} is not FAMILY:MODEL (FAMILY is {' or '.join(OPEN_FAMILIES)}), "
                         "e.g. torchvision:resnet50")
    if not model:
        print(" ".join(ZooModel(family).models()))
        return 0
    side, shapes = node_shapes(family, model)
    print(f"{family}:{model} nodes, output shape (without batch) at {side}x{side} px:")
    for node, shape in shapes:
        if isinstance(shape, tuple):
            print(f"  {family}:{model}:{node}  {'x'.join(map(str, shape))}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from .analysis.cli import schema

    overrides = _overrides_only(args.items)
    job, _, kind = args.job.partition(":")
    schemas = {"invert": InvertConfig, "compare": CompareConfig, "train": TrainConfig}
    if job == "analyze" and kind:
        cfg = load_config(schema(kind), args.config or config_dir() / "analyze" / f"{kind}.yaml", overrides,
                          where=f"analyze {kind}")
    elif job in schemas and not kind:
        cfg = load_config(schemas[job], args.config, overrides, where=job)
    else:
        raise ValueError(f"config: unknown job {args.job!r}; valid: invert, compare, train, analyze:KIND")
    print(OmegaConf.to_yaml(cfg, resolve=True), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="preimage", description="Reconstruct images from their representations.")
    sub = parser.add_subparsers(dest="command", required=True)
    inv = sub.add_parser("invert", help="invert images from a representation; writes PNG/NPY, overview.png, metrics.json",
                         description="Items are image paths (or builtin:NAME, e.g. builtin:camera) and key=value "
                                     "overrides of the invert config (`preimage config invert` prints it), e.g. preset=mv2015 "
                                     "gd.restarts=3 device=cpu.")
    inv.add_argument("items", nargs="*", metavar="IMAGE|key=value")
    inv.add_argument("--representation", "-r", help="representation spec, e.g. hog, hogb, dsift, caffenet:conv3")
    inv.add_argument("--method", "-m", choices=["gd", "learned", "hybrid"],
                     help="inversion method: gd (optimization, default), learned (a trained decoder) or hybrid (the "
                          "learned reconstruction refined by GD)")
    inv.add_argument("--checkpoint", help="methods learned and hybrid: a shipped inverter's name (`preimage list`) or a bundle.pt "
                                           "of `preimage train` (default: the representation's shipped inverter)")
    inv.add_argument("--out", "-o", required=True, help="output folder (created)")
    inv.add_argument("--config", help="a YAML file of invert keys, merged over the defaults")
    inv.set_defaults(run=_invert)
    trn = sub.add_parser("train", help="train a learned inverter; writes a run folder (TensorBoard, checkpoints, bundle.pt)",
                         description="Items are key=value overrides of the config, e.g. trainer.max_steps=100 "
                                     "run_dir=runs/try resume=true trainer.devices=2 trainer.strategy=ddp.")
    trn.add_argument("items", nargs="*", metavar="key=value")
    trn.add_argument("--config", "-c", required=True,
                     help="training config YAML, or the name of one in configs/train (hog, hogb, dsift, tiny)")
    trn.set_defaults(run=_train)
    cmp = sub.add_parser("compare", help="GD, learned and hybrid inverters side by side: results.json/.csv, report.md, "
                                          "grid.png, TensorBoard",
                         description="Items are key=value overrides of the compare config (`preimage config compare` prints it), e.g. "
                                     "images=DIR limit=10 methods=[gd,learned] representations=[hog] device=cpu "
                                     "devices=2 strategy=ddp.")
    cmp.add_argument("items", nargs="*", metavar="key=value")
    cmp.add_argument("--config", "-c", help="a YAML file of compare keys, merged over the defaults")
    cmp.set_defaults(run=_compare)
    add_analyze_parser(sub)
    cfg = sub.add_parser("config", help="print a job's full config: its defaults, --config and key=value merged",
                         description="JOB is invert, compare, train or analyze:KIND (e.g. analyze:maximize). Prints "
                                     "the config the job would run with, every key included, as YAML.")
    cfg.add_argument("job", metavar="JOB")
    cfg.add_argument("items", nargs="*", metavar="key=value")
    cfg.add_argument("--config", "-c", help="a YAML file merged over the job's defaults")
    cfg.set_defaults(run=_config)
    lst = sub.add_parser("list", help="list the representation specs, GD presets and shipped inverters, or a model's nodes",
                         description="With no argument: the specs, families, presets and shipped inverters. With FAMILY:MODEL (e.g. "
                                     "torchvision:resnet50): every node of that model with its output shape; with "
                                     "FAMILY: (e.g. torchvision:) the family's models.")
    lst.add_argument("model", nargs="?", metavar="FAMILY:MODEL")
    lst.set_defaults(run=_list)
    return parser


#: what Ctrl-C (exit 130) or SIGTERM (exit 143) leaves, per command
_INTERRUPTED = {
    "train": "preimage train: interrupted; the run directory keeps its checkpoints up to the last validation: "
             "continue with the same command and resume=true",
    "compare": "preimage compare: interrupted; no results were written",
    "invert": "preimage invert: interrupted; nothing was kept (the output folder is left empty)",
    "analyze": "preimage analyze: interrupted; nothing was kept (the output folder is left empty)",
}


def _quiet_lightning(record: logging.LogRecord) -> bool:
    """Drop Lightning's Ctrl-C notice (the interrupt gets one line of ours) and its advertisement."""
    message = str(record.msg)
    return "Detected KeyboardInterrupt" not in message and not message.startswith("💡")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Expected failures (bad input, bad config) print one line on stderr and return 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-")]
    if unknown or (extra and not hasattr(args, "items")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if hasattr(args, "items"):  # positional items may come after options: image paths and key=value overrides
        args.items = args.items + extra
    # Lightning's own use of a torch API torch deprecated, its Ctrl-C notice and its tip: nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_quiet_lightning)
    interrupted: list[int] = []

    def on_interrupt(signum: int, frame: object) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    # SIGTERM (kill, schedulers, containers) does what Ctrl-C does; Lightning adds its own handler in front of
    # ours while it runs and calls ours after it
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_interrupt) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}

    def stopped() -> int:
        signum = interrupted[0] if interrupted else signal.SIGINT
        name = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
        message = _INTERRUPTED.get(args.command, "preimage: interrupted")
        print(message.replace("interrupted", f"interrupted{name}", 1), file=sys.stderr)
        return 128 + signum

    keep_freed_memory()  # GD on the CPU would otherwise fault its freed tensors back in at every step
    try:
        return args.run(args)
    except (ValueError, OSError, OmegaConfBaseException) as err:
        print(f"preimage {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return stopped()
    except SystemExit:  # Lightning turns Ctrl-C during fit or predict into exit(1) after its graceful shutdown
        if not interrupted:
            raise
        return stopped()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
