"""preimage: reconstruct images from their representations, by optimization and by learned inverters."""
from importlib.metadata import PackageNotFoundError, version

from .representations import Representation, build_representation, list_representations

try:
    __version__ = version("preimage")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["Representation", "build_representation", "list_representations", "__version__"]
