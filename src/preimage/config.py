"""Where the YAML configs and shipped bundles live, reading one YAML file, and the checks of config values a type cannot
express (the schemas merge the configs: schemas.py)."""
from __future__ import annotations

import importlib.resources
import math
import os
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from .files import not_a_file


def package_root() -> Path:
    """The installed ``preimage`` package folder, which holds ``configs/`` and ``checkpoints/`` as package data
    (in a source checkout the repository's top-level ``configs`` and ``checkpoints`` link to them)."""
    return Path(str(importlib.resources.files("preimage")))


def config_dir() -> Path:
    """The ``configs/`` folder: ``$PREIMAGE_CONFIG_DIR`` if set, else the package's own."""
    env = os.environ.get("PREIMAGE_CONFIG_DIR")
    path = Path(env) if env else package_root() / "configs"
    if not path.is_dir():
        raise FileNotFoundError(f"config folder {path} not found (set PREIMAGE_CONFIG_DIR)")
    return path


def list_presets() -> list[str]:
    """Names of the GD presets shipped in ``configs/presets``."""
    return sorted(p.stem for p in (config_dir() / "presets").glob("*.yaml"))


def load_yaml(path: str | Path) -> DictConfig:
    """Load one YAML file as a DictConfig, with a clear error if it is missing or malformed."""
    path = Path(path)
    if not_a_file(path):
        raise FileNotFoundError(f"config file {path}: {not_a_file(path)}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and OmegaConf errors share no base class
        raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"config file {path} must hold a mapping")
    return cfg


def check_int(name: str, value: Any, *, minimum: int | None = 1, allow_none: bool = False) -> int | None:
    """``value`` as an integer of at least ``minimum`` (``None``: any), or ``ValueError`` naming ``name``; the one
    check of every integer setting a type alone cannot bound (a bool is not an integer here)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be an integer{bound}{' or null' if allow_none else ''}, got {value!r}")
    return value


def check_finite(values: Any, where: str = "config") -> None:
    """Raise ``ValueError`` if any float in a nested structure is NaN or infinite."""
    if isinstance(values, dict):
        for key, value in values.items():
            check_finite(value, f"{where}.{key}")
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            check_finite(value, f"{where}[{i}]")
    elif isinstance(values, float) and not math.isfinite(values):
        raise ValueError(f"{where} must be a finite number, got {values}")


#: the scores a job can compute (preimage.metrics computes them); what invert scores by default
METRICS = ("feature_error", "normalized_loss", "image_error", "psnr", "ssim")


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """``metrics`` as a list, each one of :data:`METRICS` (``ValueError`` naming the unknown ones)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown {', '.join(map(repr, unknown))}; choose among {', '.join(METRICS)}")
    if not metrics:
        raise ValueError(f"metrics: give at least one of {', '.join(METRICS)}")
    return list(metrics)
