"""One typed schema per job, the single place of every default: ``invert``, ``compare``, ``train`` and each
``analyze`` kind.

A job's config is its schema (a dataclass, loaded as an OmegaConf structured config: unknown keys are refused,
values are checked against the field's type), then the YAML file the user names (holding only what differs),
then ``key=value`` overrides: :func:`load_config`. ``preimage config JOB [key=value ...]`` prints the result.
Checks a type cannot express (a positive size, a known method, a finite number) stay with the jobs.

The analyses' schemas are made from their functions' signatures (:func:`analysis_schema`), so that each
analysis keeps its defaults in its own signature and nowhere else.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import METRICS, load_yaml
from .inversion.settings import GDConfig

__all__ = ["CompareConfig", "GDSettings", "HybridConfig", "InvertConfig", "TrainConfig", "analysis_schema",
           "gd_overrides", "load_config", "merged", "plain", "split_overrides"]

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """A command line's items as ``(positional items, key=value overrides)``: an item is an override when it
    starts with a key (a name, dots allowed) and ``=``; anything else (an image path) is positional."""
    return [i for i in items if not _OVERRIDE.match(i)], [i for i in items if _OVERRIDE.match(i)]


def _optional_field(f: dataclasses.Field) -> tuple[str, Any, Any]:
    """A GDConfig field as an optional override: its type made OmegaConf-friendly, default None (the preset's)."""
    hints = typing.get_type_hints(GDConfig)
    kind = {"schedule": List[List[float]], "pixel_mean": List[float]}.get(f.name, hints[f.name])
    return f.name, Optional[kind], field(default=None)


#: Overrides of a GD preset (``gd.lambda_tv=10``, ``gd.schedule=[[0.004,100]]``): every field of
#: :class:`~preimage.inversion.gd.GDConfig`, ``None`` meaning "the preset's value".
GDSettings = dataclasses.make_dataclass("GDSettings", [_optional_field(f) for f in dataclasses.fields(GDConfig)])


def gd_overrides(settings: Any) -> dict[str, Any]:
    """The fields of a :data:`GDSettings` (as config or mapping) that are set, as plain values."""
    values = OmegaConf.to_container(settings, resolve=True) if isinstance(settings, DictConfig) else dict(settings or {})
    return {k: v for k, v in values.items() if v is not None}


@dataclass
class InvertConfig:
    """``preimage invert``."""

    representation: Optional[str] = "hog"  # any spec of `preimage list`; method learned: the bundle's unless given
    representation_options: Dict[str, Any] = field(default_factory=dict)  # builder overrides, e.g. .cell_size=4
    method: str = "gd"            # gd (optimization, M&V), learned (a trained decoder, D&B) or hybrid (learned, then GD)
    preset: str = "mv2015"        # a preset of configs/presets/
    checkpoint: Optional[str] = None  # method learned: a shipped name (`preimage list`) or a bundle.pt of `preimage
    #                                   train` (also --checkpoint); unset: the representation's shipped bundle
    gd: GDSettings = field(default_factory=GDSettings)  # overrides of the preset, e.g. gd.lambda_tv=10 gd.restarts=3
    mask: Optional[Dict[str, Any]] = None  # null, {window: k} (central k×k neurons) or {channels: [i, j, ...]}
    device: str = "auto"          # auto (CUDA when present), cpu, cuda, cuda:1
    batch_size: int = 8           # images of the same size inverted together
    metrics: List[str] = field(default_factory=lambda: list(METRICS))  # scored per image (metrics.json); fewer is faster
    overview_images: int = 16     # the first N images (original beside reconstruction) in overview.png
    progress: bool = True         # progress bar over iterations
    tensorboard: bool = False     # write the loss curves and snapshots to OUT/tensorboard
    snapshot_every: int = 100     # iterations between TensorBoard snapshots
    overwrite: bool = False       # an --out folder an earlier run wrote is emptied first (otherwise: refused)


@dataclass
class HybridConfig:
    """The hybrid method of ``preimage compare``: the learned reconstruction, then K GD steps."""

    iterations: int = 120         # K (≈1/7 of mv2015's 800, inside the 1/5 time budget)
    schedule: Optional[List[List[float]]] = field(default_factory=lambda: [[0.002, 80], [0.0002, 40]])
    clamp: bool = True            # keep the pixels in [0, 1] at every hybrid step


@dataclass
class CompareConfig:
    """``preimage compare``: GD, learned and hybrid inverters on the same images, one table, one picture."""

    run_dir: str = "runs/compare"
    images: Any = "builtin"       # builtin (the built-in test photos), a folder (recursive), a file, or a list
    limit: Optional[int] = None   # only the first N images (folders: sorted by path)
    image_size: Optional[int] = 192  # shorter side resized to this, centre-cropped square; null: as they are
    grey: Any = "auto"            # true | false | auto: grey for HOG/HOGb/DSIFT (M&V; their bundles are grey), RGB
    #                               for network layers (family:layer, e.g. efficientnet_lite0:stage4)
    representations: List[str] = field(default_factory=lambda: ["hog", "hogb", "dsift", "efficientnet_lite0:stage4"])
    representation_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # per spec builder overrides
    methods: List[str] = field(default_factory=lambda: ["gd", "learned", "hybrid"])
    preset: str = "mv2015"        # GD hyper-parameters (configs/presets), for gd and hybrid
    gd: GDSettings = field(default_factory=GDSettings)  # overrides of the preset (grey follows `grey`)
    bundles: Dict[str, Optional[str]] = field(default_factory=dict)  # per spec a bundle name or path, e.g.
    #                               bundles.hog=runs/hog/bundle.pt; unset: the shipped bundle named after the spec;
    #                               null: none (learned and hybrid skipped for it)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    batch_size: int = 6           # images per predict step (GD inverts them together)
    device: str = "auto"          # auto, cpu, cuda, cuda:1 — used when accelerator is null
    accelerator: Optional[str] = None  # Lightning accelerator (cpu, gpu, auto); null: from `device`
    devices: Any = 1              # Lightning processes/GPUs per node (a number or a list of indices)
    strategy: str = "auto"        # auto or ddp (records gathered to rank 0, which scores and writes)
    num_nodes: int = 1
    save_reconstructions: bool = True  # float reconstructions as run_dir/reconstructions/<spec>/<method>/<stem>.npy
    grid_images: int = 16         # rows (images) of grid.png
    tensorboard: bool = True      # run_dir/tensorboard: the table as text, the grid as an image
    progress: bool = False        # Lightning's progress bar over batches
    overwrite: bool = False       # a run_dir an earlier compare wrote is emptied first (otherwise: refused)


@dataclass
class TrainConfig:
    """``preimage train``: a learned inverter for one representation, exported as a bundle."""

    name: str = "inverter"        # run name: run_dir defaults to runs/<name>
    run_dir: Optional[str] = None
    resume: bool = False          # continue from <run_dir>/checkpoints/last.ckpt
    seed: int = 0                 # pl.seed_everything: decoder initialization (data.seed is the training stream)
    representation: str = "hog"
    representation_options: Dict[str, Any] = field(default_factory=dict)
    grey: bool = False            # invert grey images: sets data.grey and decoder.out_channels (1)
    init: Optional[str] = None    # start from a bundle's decoder (fine-tuning): a shipped name, a path, or
    #                               "shipped" (the shipped bundle of `representation`); its decoder config is used
    data: Dict[str, Any] = field(default_factory=dict)     # ImageDataModule arguments
    decoder: Dict[str, Any] = field(default_factory=dict)  # DecoderConfig overrides; input_scale: auto = 1 / std of
    #                               Φ on training crops; cell: auto = Φ's grid_step (None where its grid is not exact)
    optim: Dict[str, Any] = field(default_factory=dict)      # OptimizerConfig (AdamW)
    scheduler: Dict[str, Any] = field(default_factory=dict)  # SchedulerConfig
    lambda_feat: float = 0.0
    fit: str = "gradient"         # gradient: the decoder trained by AdamW (Lightning); ridge: a linear decoder of
    #                               vector features fitted in closed form (training/ridge.py), its penalty by `monitor`
    ridge: Dict[str, Any] = field(default_factory=dict)    # RidgeConfig: lambdas, batches
    monitor: str = "val/feature_error"  # the exported checkpoint is the one lowest in this: val/feature_error,
    #                               val/image_error or val/loss
    image_log_every: int = 500
    image_log_count: int = 8
    progress: bool = True         # a tqdm progress bar
    bundle_float16: bool = False  # store the bundle's weights in float16 (half the file; loaded as float32)
    channels_last: bool = False   # train the decoder channels-last (faster convolutions on CUDA and with oneDNN on
    #                               CPU; with trainer.precision=bf16-mixed, bf16 autocast on CUDA)
    trainer: Dict[str, Any] = field(default_factory=dict)    # pl.Trainer arguments: max_steps, val_check_interval, ...
    layers: List[str] = field(default_factory=list)  # one inverter per layer: [stem, stage1, ...] (a layer of
    #                               `representation`'s network, or a whole spec), each in run_dir/<spec>; a finished one
    #                               (bundle.pt) is skipped, an interrupted one resumed, so rerunning continues the sweep
    per_layer: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # a layer's own keys, e.g. stem: {decoder: ...}
    compare: Optional[Dict[str, Any]] = None  # with layers: score every layer's bundle beside GD afterwards with
    #                               `preimage compare` (these keys over its defaults) in run_dir/compare; null: don't


def _config_type(hint: Any) -> Any:
    """An analysis parameter's annotation as a type OmegaConf checks (containers as List/Dict, paths as str)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Path:
        return str
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = list(dict.fromkeys(_config_type(a) for a in rest))
        if len(inner) == 1:
            base = inner[0]
        elif all(t in (int, float, str, bool) for t in inner):
            base = Union[tuple(inner)]
        else:
            base = Any  # a list or a single value: the analysis checks it
        return Optional[base] if len(rest) < len(args) else base
    if origin in (list, tuple, collections.abc.Sequence):
        return List[_config_type(args[0])] if args else List[Any]
    if origin in (dict, collections.abc.Mapping):
        return Dict[str, Any]
    return hint


@functools.lru_cache(maxsize=None)
def analysis_schema(kind: str, fn: Callable[..., Any]) -> type:
    """The schema of analysis ``kind``: one field per parameter of ``fn``, with ``fn``'s defaults (no default:
    required), ``gd`` typed as :data:`GDSettings`."""
    hints = typing.get_type_hints(fn)
    fields = []
    for name, param in inspect.signature(fn).parameters.items():
        if name == "gd":
            fields.append((name, GDSettings, field(default_factory=GDSettings)))
            continue
        kind_ = _config_type(hints.get(name, Any))
        default = param.default
        if default is inspect.Parameter.empty:
            fields.append((name, kind_, field(default=MISSING)))
        elif isinstance(default, (list, tuple, dict)):
            fields.append((name, kind_, field(default_factory=lambda d=default: list(d) if not isinstance(d, dict) else dict(d))))
        else:
            fields.append((name, kind_, field(default=default)))
    return dataclasses.make_dataclass(f"Analyze{kind.title()}Config", fields)


def _error(err: OmegaConfBaseException, where: str, key: str | None = None) -> ValueError:
    key = getattr(err, "full_key", None) or key
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "Missing mandatory value" in message:
        message = "missing: give it in the config file or as key=value"
    return ValueError(f"{where}: {key + ': ' if key and key not in message else ''}{message}")


def load_config(schema: type, path: str | Path | None = None, overrides: Sequence[str] = (), *,
                where: str = "config") -> DictConfig:
    """``schema``'s defaults, merged with the YAML file ``path`` (if any), then ``key=value`` ``overrides``.

    Raises:
        ValueError: one line naming the key, for an unknown key, a value of the wrong type, a missing
            required value, a malformed override or YAML file.
    """
    bad = [o for o in overrides if "=" not in o or not o.split("=", 1)[0]]
    if bad:
        raise ValueError(f"overrides must look like key=value, got {bad}")
    try:
        cfg = OmegaConf.structured(schema)
        if path is not None:
            cfg = OmegaConf.merge(cfg, load_yaml(path))
    except OmegaConfBaseException as err:
        raise _error(err, f"{where} ({path})" if path else where) from None
    for override in overrides:  # one at a time, so that an error names its key
        key = override.split("=", 1)[0]
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([override]))
        except OmegaConfBaseException as err:
            raise _error(err, where, key) from None
        except TypeError:  # OmegaConf's own: a dotted path that enters a list (data.sources.0.scale=...)
            parts = key.split(".")
            listed = ".".join(parts[:next((i for i, p in enumerate(parts) if p.isdigit()), len(parts))])
            raise ValueError(f"{where}: {key}: cannot set a key inside a list; give the whole list, "
                             f"{listed}=[...], in the config file or the override") from None
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise _error(err, where) from None
    return cfg  # type: ignore[return-value]


def merged(schema: type, cfg: DictConfig | dict[str, Any], *, where: str = "config") -> DictConfig:
    """``cfg`` (a loaded config, or a mapping of some keys) over ``schema``'s defaults, checked as by
    :func:`load_config`; for jobs called from Python."""
    try:
        out = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        OmegaConf.to_container(out, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise _error(err, where) from None
    return out  # type: ignore[return-value]


def plain(cfg: DictConfig) -> dict[str, Any]:
    """A loaded config as plain values, its ``gd`` overrides reduced to those that are set."""
    values = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(values, dict) and "gd" in values:
        values["gd"] = gd_overrides(values["gd"])
    return values  # type: ignore[return-value]
