"""preimage: reconstruct images from their representations, by optimization and by learned inverters.

The API (tensors in and out, nothing written): :func:`invert`, :func:`maximize`, :func:`caricature`,
:func:`from_module` (any ``nn.Module`` at any node as a representation), :func:`load_inverter` and
:func:`list_inverters` (the shipped learned inverters), :func:`build_representation` and
:func:`list_representations` (the built-in ones), :func:`keep_freed_memory` (faster GD on the CPU,
process-wide). The command line (``preimage``) runs the jobs built on it.

The names load on first use (``import preimage`` itself imports no torch), so that the command line answers
``--help`` and bad arguments at once.
"""
from importlib import import_module as _import_module
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any as _Any

try:
    __version__ = _version("preimage")
except _PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

#: each public name → the module that defines it
_HOME = {
    "InversionResult": "api", "caricature": "api", "invert": "api", "list_inverters": "catalogue", "load_inverter": "api",
    "keep_freed_memory": "allocator", "maximize": "api", "LearnedInverter": "inversion.learned",
    "Representation": "representations",
    "build_representation": "representations", "from_module": "representations", "list_representations": "representations",
}
__all__ = [*sorted(_HOME), "__version__"]


def __getattr__(name: str) -> _Any:
    if name not in _HOME:
        raise AttributeError(f"module 'preimage' has no attribute {name!r}")
    value = getattr(_import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
