"""Where the YAML configs and shipped bundles live, and reading one YAML file (the schemas merge them: schemas.py)."""
from __future__ import annotations

import importlib.resources
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


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


def load_yaml(path: str | Path) -> DictConfig:
    """Load one YAML file as a DictConfig, with a clear error if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and OmegaConf errors share no base class
        raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"config file {path} must hold a mapping")
    return cfg


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
