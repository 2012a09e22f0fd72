"""GD presets: YAML files under ``configs/presets/``, resolved per representation spec.

A preset file holds a ``defaults`` section and sections keyed by ``cnn`` (any layer of a network), a family
(``alexnet``, ``efficientnet_lite0``, ``torchvision``), a model (``torchvision:resnet50``), a layer name of a
fixed family (``conv3``, for ``alexnet:conv3`` and ``caffenet:conv3``) or an exact spec (``hog``,
``caffenet:fc8``), merged in that order of increasing specificity.
``inherit: OTHER`` starts from preset OTHER's resolution.

A section may hold ``by_depth: [[d1, {settings}], [d2, {settings}], ...]`` (increasing ``d``): a network
layer of relative depth ``(index + 1) / count`` among its network's named layers takes the settings of the
first entry with ``depth ≤ d``. This is how M&V's CaffeNet rule (λTV 1 for layers 1–6 of 20, 10 for 7–12,
100 for 13–20) carries over to every network: by relative depth, boundaries at 0.3 and 0.6.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..config import config_dir, load_yaml
from ..representations import layer_depth


def list_presets() -> list[str]:
    """Names of the presets shipped in ``configs/presets``."""
    return sorted(p.stem for p in (config_dir() / "presets").glob("*.yaml"))


def _sections(spec: str) -> list[str]:
    """The sections that apply to ``spec``, least specific first. A bare layer name (``conv3``) is a section
    for the fixed families' ``family:layer`` specs only, not for the nodes of open families' models."""
    parts = spec.split(":")
    if len(parts) == 1:
        return ["defaults", spec]
    prefixes = [":".join(parts[:k]) for k in range(1, len(parts))]  # family, family:model, ...
    return ["defaults", "cnn", *prefixes, *([parts[-1]] if len(parts) == 2 else []), spec]


def _at_depth(section: DictConfig, depth: float | None, where: str) -> DictConfig:
    """``section`` with its ``by_depth`` table replaced by the entry for ``depth``."""
    table = section.get("by_depth")
    plain = OmegaConf.create({k: v for k, v in section.items() if k != "by_depth"})
    if table is None or depth is None:
        return plain
    for bound, settings in table:
        if depth <= bound + 1e-9:
            return OmegaConf.merge(plain, settings)
    raise ValueError(f"preset section {where}: by_depth ends at {table[-1][0]}, below depth {depth:.3f}")


def resolve_preset(name: str, spec: str) -> dict[str, Any]:
    """The GD settings of preset ``name`` for representation ``spec`` as a plain dict.

    Raises:
        ValueError: unknown preset (the valid names are listed).
    """
    if name not in list_presets():
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(list_presets())}")
    preset = load_yaml(config_dir() / "presets" / f"{name}.yaml")
    parent = preset.get("inherit")
    if parent == name:
        raise ValueError(f"preset {name!r} inherits from itself")
    merged = OmegaConf.create(resolve_preset(parent, spec) if parent else {})
    depth = layer_depth(spec) if ":" in spec else None
    for section in dict.fromkeys(_sections(spec)):
        if section in preset:
            merged = OmegaConf.merge(merged, _at_depth(preset[section], depth, f"{name}.{section}"))
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
