"""The registry of representations: names → builder functions.

``build_representation("hog")``, ``build_representation("alexnet:conv3", weights="random")``.
"""
from __future__ import annotations

from typing import Any, Callable

from .base import Representation

Builder = Callable[..., Representation]
_BUILDERS: dict[str, Builder] = {}


def register_representation(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``name`` (a plain name or ``family:layer``); refuses duplicates."""

    def wrap(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"representation {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return wrap


def list_representations() -> list[str]:
    """All valid specs, sorted by family then in registration order (layers in network order)."""
    return list(_BUILDERS)


def build_representation(spec: str, **overrides: Any) -> Representation:
    """Build the frozen representation named ``spec`` with keyword ``overrides``.

    Raises:
        ValueError: if ``spec`` is unknown (the message lists the valid specs) or an override is not accepted.
    """
    if spec not in _BUILDERS:
        raise ValueError(f"unknown representation {spec!r}; valid: {', '.join(list_representations())}")
    try:
        rep = _BUILDERS[spec](**overrides)
    except TypeError as err:  # an override the builder does not take
        raise ValueError(f"{spec}: {err}") from None
    rep.spec = spec
    return rep.freeze()
