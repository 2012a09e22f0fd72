"""GD presets: YAML files under ``configs/presets/``, resolved per representation spec.

A preset file holds a ``defaults`` section and sections keyed by ``cnn`` (any CNN layer), a family
(``alexnet``, ``caffenet``), a layer name (``conv3``) or an exact spec (``hog``, ``caffenet:fc8``),
merged in that order of increasing specificity. ``inherit: OTHER`` starts from preset OTHER's resolution.
"""
from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from ..config import config_dir, load_yaml


def list_presets() -> list[str]:
    """Names of the presets shipped in ``configs/presets``."""
    return sorted(p.stem for p in (config_dir() / "presets").glob("*.yaml"))


def resolve_preset(name: str, spec: str) -> dict[str, Any]:
    """The GD settings of preset ``name`` for representation ``spec`` as a plain dict.

    Raises:
        ValueError: unknown preset (the valid names are listed).
    """
    if name not in list_presets():
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(list_presets())}")
    preset = load_yaml(config_dir() / "presets" / f"{name}.yaml")
    family, _, layer = spec.partition(":")
    sections = ["defaults"] + (["cnn", family, layer] if layer else []) + [spec]
    parent = preset.get("inherit")
    if parent == name:
        raise ValueError(f"preset {name!r} inherits from itself")
    merged = OmegaConf.create(resolve_preset(parent, spec) if parent else {})
    for section in dict.fromkeys(sections):
        if section in preset:
            merged = OmegaConf.merge(merged, preset[section])
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
