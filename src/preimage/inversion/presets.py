"""GD presets: YAML files under ``configs/presets/``, resolved per representation; :func:`gd_config` is the one
way a preset (and overrides) becomes a :class:`~.settings.GDConfig`.

A preset file holds a ``defaults`` section and sections keyed by ``cnn`` (any layer of a network), a family
(``alexnet``, ``efficientnet_lite0``, ``torchvision``), a model (``torchvision:resnet50``), a layer name of a
fixed family (``conv3``, for ``alexnet:conv3`` and ``caffenet:conv3``) or an exact spec (``hog``,
``caffenet:fc8``), merged in that order of increasing specificity.
``inherit: OTHER`` starts from preset OTHER's resolution.

A section may hold ``by_depth: [[d1, {settings}], [d2, {settings}], ...]`` (increasing ``d``): a network
layer of relative depth ``(index + 1) / count`` among its network's named layers takes the settings of the
first entry with ``depth ≤ d``. The depth is the representation's own (``NetworkLayer.depth``, which
:func:`~preimage.from_module` measures for any module), so a user's module resolves as a built-in layer would. This is how M&V's CaffeNet rule (λTV 1 for layers 1–6 of 20, 10 for 7–12,
100 for 13–20) carries over to every network: by relative depth, boundaries at 0.3 and 0.6.
"""
from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from ..config import config_dir, list_presets, load_yaml
from ..representations import Representation, layer_depth
from .settings import GDConfig, config_from_dict

__all__ = ["gd_config", "list_presets", "resolve_preset"]


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


def _spec_and_depth(representation: Representation | str) -> tuple[str, float | None]:
    """The spec whose sections apply and the relative depth (``None``: not a network layer)."""
    if isinstance(representation, Representation):
        depth = getattr(representation, "depth", None)
        return representation.spec, float(depth) if depth is not None else None
    return representation, layer_depth(representation) if ":" in representation else None


def resolve_preset(name: str, representation: Representation | str) -> dict[str, Any]:
    """The GD settings of preset ``name`` for ``representation`` (or a spec) as a plain dict.

    Raises:
        ValueError: unknown preset (the valid names are listed).
    """
    if name not in list_presets():
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(list_presets())}")
    spec, depth = _spec_and_depth(representation)
    preset = load_yaml(config_dir() / "presets" / f"{name}.yaml")
    parent = preset.get("inherit")
    if parent == name:
        raise ValueError(f"preset {name!r} inherits from itself")
    merged = OmegaConf.create(resolve_preset(parent, representation) if parent else {})
    for section in dict.fromkeys(_sections(spec)):
        if section in preset:
            merged = OmegaConf.merge(merged, _at_depth(preset[section], depth, f"{name}.{section}"))
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def gd_config(preset: str, representation: Representation | str, overrides: Mapping[str, Any] | None = None,
              **fixed: Any) -> GDConfig:
    """The preset's settings for ``representation``, then ``overrides`` (e.g. the ``gd`` key of a job's config:
    ``None`` values are left to the preset), then ``fixed``, as a checked :class:`~.settings.GDConfig`.

    Raises:
        ValueError: unknown preset or setting, or a value out of range (one line).
    """
    given = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    return config_from_dict({**resolve_preset(preset, representation), **given, **fixed})
