"""Image representations Φ shared by both inverters, behind one registry."""
from .base import Representation
from .registry import (build_representation, is_representation, layer_depth, list_families, list_representations,
                       register_family, register_representation)

# Importing the modules registers their builders.
from . import hog as _hog  # noqa: E402,F401
from . import dsift as _dsift  # noqa: E402,F401
from . import lbp as _lbp  # noqa: E402,F401
from . import sift as _sift  # noqa: E402,F401
from . import cnn as _cnn  # noqa: E402,F401
from . import efficientnet_lite as _efficientnet_lite  # noqa: E402,F401
from . import model_zoo as _model_zoo  # noqa: E402,F401
from .user_module import ModuleLayer, from_module  # noqa: E402

__all__ = ["ModuleLayer", "Representation", "build_representation", "from_module", "is_representation", "layer_depth",
           "list_families", "list_representations", "register_family", "register_representation"]
