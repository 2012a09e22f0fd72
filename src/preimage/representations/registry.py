"""The registry of representations: names → builder functions.

``build_representation("hog")``, ``build_representation("alexnet:conv3", weights="random")``,
``build_representation("torchvision:resnet50:layer3")``.

Two kinds of entries: fixed specs (``hog``, ``efficientnet_lite0:stage4``), each with its own builder, and
open families (``torchvision``, ``timm``) whose builder takes the rest of the spec (``resnet50:layer3``).
"""
from __future__ import annotations

import difflib
from typing import Any, Callable

from .base import Representation

Builder = Callable[..., Representation]
FamilyBuilder = Callable[..., Representation]  # (rest of the spec, **overrides) -> Representation
_BUILDERS: dict[str, Builder] = {}
_DEPTHS: dict[str, float] = {}
_FAMILIES: dict[str, tuple[FamilyBuilder, Callable[[str], float | None]]] = {}


def register_representation(name: str, *, depth: float | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``name`` (a plain name or ``family:layer``); refuses duplicates.

    ``depth`` is a network layer's relative depth in ``(0, 1]`` (``None`` for representations that are not
    a layer of a network); the GD presets choose their per-depth settings by it.
    """

    def wrap(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"representation {name!r} is already registered")
        _BUILDERS[name] = builder
        if depth is not None:
            _DEPTHS[name] = depth
        return builder

    return wrap


def register_family(prefix: str, builder: FamilyBuilder, *, depth: Callable[[str], float | None]) -> None:
    """Register the open family ``prefix:<rest>``: ``builder(rest, **overrides)``, ``depth(rest)`` (``None``: no such layer)."""
    if prefix in _FAMILIES or any(name.startswith(f"{prefix}:") for name in _BUILDERS):
        raise ValueError(f"representation family {prefix!r} is already registered")
    _FAMILIES[prefix] = (builder, depth)


def list_representations() -> list[str]:
    """All fixed specs, sorted by family then in registration order (layers in network order)."""
    return list(_BUILDERS)


def list_families() -> list[str]:
    """The open families, each taking ``<family>:<model>:<node>`` specs."""
    return list(_FAMILIES)


def _family(spec: str) -> str | None:
    prefix = spec.partition(":")[0]
    return prefix if prefix in _FAMILIES and spec not in _BUILDERS else None


def is_representation(spec: str) -> bool:
    """Whether ``spec`` names a fixed spec or belongs to an open family (without building anything)."""
    return spec in _BUILDERS or _family(spec) is not None


def layer_depth(spec: str) -> float | None:
    """Relative depth in ``(0, 1]`` of a network layer spec; ``None`` for representations that are not layers
    (and for layers an open family does not have)."""
    family = _family(spec)
    if family is not None:
        return _FAMILIES[family][1](spec.partition(":")[2])
    return _DEPTHS.get(spec)


def build_representation(spec: str, **overrides: Any) -> Representation:
    """Build the frozen representation named ``spec`` with keyword ``overrides``.

    Raises:
        ValueError: if ``spec`` is unknown (the message lists the valid specs) or an override is not accepted.
    """
    family = _family(spec)
    if spec not in _BUILDERS and family is None:
        families = ", ".join(f"{f}:<model>:<node>" for f in _FAMILIES)
        close = difflib.get_close_matches(spec, list_representations(), n=4, cutoff=0.6)
        hint = f"closest: {', '.join(close)}; " if close else ""
        raise ValueError(f"unknown representation {spec!r}; {hint}valid: {', '.join(list_representations())}, {families}")
    try:
        if family is not None:
            rep = _FAMILIES[family][0](spec.partition(":")[2], **overrides)
        else:
            rep = _BUILDERS[spec](**overrides)
    except TypeError as err:  # an override the builder does not take
        raise ValueError(f"{spec}: {err}") from None
    rep.spec = spec
    return rep.freeze()
