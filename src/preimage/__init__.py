"""preimage: reconstruct images from their representations, by optimization and by learned inverters.

The API (tensors in and out, nothing written): :func:`invert`, :func:`maximize`, :func:`caricature`,
:func:`from_module` (any ``nn.Module`` at any node as a representation), :func:`load_inverter` and
:func:`list_inverters` (the shipped learned inverters), :func:`build_representation` and
:func:`list_representations` (the built-in ones). The command line (``preimage``) runs the jobs built on it.
"""
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from .api import InversionResult, caricature, invert, list_inverters, load_inverter, maximize
from .inversion.learned import LearnedInverter
from .representations import Representation, build_representation, from_module, list_representations

try:
    __version__ = _version("preimage")
except _PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
del _PackageNotFoundError, _version

__all__ = ["InversionResult", "LearnedInverter", "Representation", "__version__", "build_representation", "caricature",
           "from_module", "invert", "list_inverters", "list_representations", "load_inverter", "maximize"]
