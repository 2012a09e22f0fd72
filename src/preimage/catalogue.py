"""What preimage ships, answered without importing torch (``preimage list`` starts at once): the built-in
representation specs, and the shipped inverter bundles with their manifests.

The layer tables here are the ones the representations register (``representations/cnn.py``,
``representations/efficientnet_lite.py``); the suite checks that :func:`builtin_specs` equals the registry.
A bundle's manifest is read from the ``torch.save`` archive by a restricted unpickler that knows only plain
values and ``OrderedDict`` (tensors read as ``None``: no tensor bytes are read, no code from the file runs).
"""
from __future__ import annotations

import collections
import io
import numbers
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Union

from .config import package_root
from .files import not_a_file

__all__ = ["ALEXNET_LAYERS", "BUNDLE_FORMAT", "BUNDLE_VERSION", "BundleError", "CAFFENET_LAYERS",
           "EFFICIENTNET_LITE0_LAYERS", "EFFICIENTNET_LITE0_OUTPUTS", "OPEN_FAMILIES", "PLAIN_SPECS",
           "builtin_specs", "bundle_manifest", "check_manifest", "list_inverters", "plain_value", "read_manifest",
           "shipped_bundles", "shipped_dir", "shipped_name"]

PathLike = Union[str, os.PathLike]

#: representations that are not layers of a network
PLAIN_SPECS: tuple[str, ...] = ("hog", "hogb", "dsift", "lbp", "sift")
ALEXNET_LAYERS: tuple[str, ...] = tuple(
    "conv1 relu1 pool1 conv2 relu2 pool2 conv3 relu3 conv4 relu4 conv5 relu5 pool5 fc6 relu6 fc7 relu7 fc8".split()
)
CAFFENET_LAYERS: tuple[str, ...] = tuple(
    "conv1 relu1 pool1 norm1 conv2 relu2 pool2 norm2 conv3 relu3 conv4 relu4 conv5 relu5 pool5 "
    "fc6 relu6 fc7 relu7 fc8".split()
)
#: EfficientNet-Lite0's named layers, in network order
EFFICIENTNET_LITE0_LAYERS: tuple[str, ...] = (
    "stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head", "pool", "logits",
)
#: every output a spec may name: the layers and the class probabilities (softmax of logits)
EFFICIENTNET_LITE0_OUTPUTS: tuple[str, ...] = (*EFFICIENTNET_LITE0_LAYERS, "prob")
#: families taking ``<family>:<model>:<node>`` specs
OPEN_FAMILIES: tuple[str, ...] = ("torchvision", "timm")

BUNDLE_FORMAT, BUNDLE_VERSION = "preimage-bundle", 1
_FIELDS: dict[str, tuple[Any, str]] = {  # manifest key: (type, what it must be)
    "spec": (str, "a string"), "params": (dict, "a dict"), "data": ((str, dict), "a string or a dict"),
    "steps": (int, "an integer"), "metrics": (dict, "a dict of numbers"),
    "image_size": (list, "[H, W] (positive integers)"), "feature_shape": (list, "[C, h, w], [N, D] or [D] (positive integers)"),
    "decoder": (dict, "a decoder config dict"), "package_version": (str, "a string"),
}


def builtin_specs() -> list[str]:
    """Every built-in fixed spec, in the registry's order (plain ones, then each network's layers in order)."""
    layers = {"alexnet": ALEXNET_LAYERS, "caffenet": CAFFENET_LAYERS, "efficientnet_lite0": EFFICIENTNET_LITE0_OUTPUTS}
    return [*PLAIN_SPECS, *(f"{family}:{layer}" for family, names in layers.items() for layer in names)]


_BUILTIN_SPECS = frozenset(builtin_specs())


class BundleError(ValueError):
    """A file that is not a valid inverter bundle (or not the one asked for); the message says why."""


def plain_value(value: Any, where: str) -> Any:
    """``value`` as plain JSON-like Python (tuples → lists, number subclasses and one-element tensors →
    int/float), or ``ValueError``."""
    numel = getattr(value, "numel", None)
    if callable(numel) and hasattr(value, "item") and numel() == 1:  # e.g. a torchmetrics result
        value = value.item()
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [plain_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where} has a key that is not a string")
        return {k: plain_value(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise ValueError(f"{where} is a {type(value).__name__}, not a plain str/int/float/bool/None/list/dict")


def check_manifest(manifest: Any) -> dict[str, Any]:
    """The manifest as plain values, every field of the format present and of its type; ``ValueError`` naming
    the first bad field. (Whether ``decoder`` builds a decoder is checked where weights are loaded.)"""
    if not isinstance(manifest, dict):
        raise ValueError(f"the manifest is a {type(manifest).__name__}, not a dict")
    manifest = plain_value(manifest, "manifest")
    missing = [k for k in _FIELDS if k not in manifest]
    if missing:
        raise ValueError(f"the manifest lacks {', '.join(missing)}")
    for key, (kind, expected) in _FIELDS.items():
        value = manifest[key]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok and key == "metrics":
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())
        if ok and key in ("image_size", "feature_shape"):
            ok = len(value) in ((2,) if key == "image_size" else (1, 2, 3)) and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        if not ok:
            raise ValueError(f"manifest['{key}'] is {value!r}, expected {expected}")
    return manifest


def _no_tensor(*args: Any) -> None:
    """What a tensor of the state_dict becomes: nothing (the manifest holds none)."""
    return None


class _ManifestUnpickler(pickle.Unpickler):
    """Plain values, with tensors and their storages read as ``None``; any other class or function is refused,
    never imported."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _no_tensor
        if module == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} refused")

    def persistent_load(self, pid: Any) -> None:
        return None  # a storage: its bytes are not read


def read_manifest(path: PathLike) -> dict[str, Any]:
    """A bundle's checked manifest, read without torch and without its weights (nor its checksum: loading the
    bundle checks the whole file).

    Raises:
        BundleError: not a file, not a ``torch.save`` archive, a pickle needing code, another format or version,
            a bad manifest field (one line naming the file).
    """
    name = f"bundle {str(path)!r}"
    if not_a_file(Path(path)):
        raise BundleError(f"{name}: {not_a_file(Path(path))}")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            bundle = _ManifestUnpickler(io.BytesIO(archive.read(pickles[0]))).load() if len(pickles) == 1 else None
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        first = (str(err).splitlines() or [""])[0]
        raise BundleError(f"{name} is unreadable ({type(err).__name__}: {first})") from None
    if not isinstance(bundle, dict) or "format" not in bundle:
        raise BundleError(f"{name} is not an inverter bundle: it holds no format '{BUNDLE_FORMAT}'")
    return bundle_manifest(bundle, name)


def bundle_manifest(bundle: dict[str, Any], name: str) -> dict[str, Any]:
    """The checked manifest of an unpickled bundle dict that has a ``format``: its format and version, its keys
    and its manifest's fields (:func:`check_manifest`); ``BundleError`` naming ``name`` and the problem."""
    if not isinstance(bundle["format"], str) or bundle["format"] != BUNDLE_FORMAT:
        raise BundleError(f"{name} has format {bundle['format']!r}, not {BUNDLE_FORMAT!r}")
    if type(bundle.get("version")) is not int or bundle["version"] != BUNDLE_VERSION:
        raise BundleError(f"{name} is format version {bundle.get('version')!r}; this preimage reads {BUNDLE_VERSION}")
    missing = [k for k in ("manifest", "state_dict", "sha256") if k not in bundle]
    if missing:
        raise BundleError(f"{name} is tampered or incomplete: it lacks {', '.join(missing)}")
    try:
        return check_manifest(bundle["manifest"])
    except ValueError as err:
        raise BundleError(f"{name} is tampered or invalid: {err}") from None


def shipped_dir() -> Path:
    """The package's ``checkpoints/`` folder (the repository's top-level ``checkpoints`` links to it)."""
    return package_root() / "checkpoints"


def shipped_name(path: PathLike) -> str:
    """The name a shipped bundle file answers to: the spec it is named after, its last ``_`` read as ``:`` where
    that makes a spec (``efficientnet_lite0_stage4.pt`` → ``efficientnet_lite0:stage4``), else its stem (``hog``)."""
    stem = Path(path).stem
    family, _, layer = stem.rpartition("_")
    spec = f"{family}:{layer}"
    return spec if family and layer and (spec in _BUILTIN_SPECS or family in OPEN_FAMILIES) else stem


def shipped_bundles() -> dict[str, Path]:
    """Every shipped bundle file by name, sorted by file name."""
    return {shipped_name(p): p for p in sorted(shipped_dir().glob("*.pt"))}


def list_inverters() -> list[dict[str, Any]]:
    """The shipped inverters: per bundle its ``name`` (what a bundle argument takes), ``path``, ``spec``,
    ``params``, ``image_size`` ``[H, W]`` it was trained at, ``grey``, training ``data`` and ``steps``,
    ``fitted_crops`` (the crops of a linear decoder fitted in closed form, ``fit: ridge``; None for a descended one)
    and ``validation`` (its validation scores: ``image_error``, ``feature_error`` % ...), read from the manifests
    (:func:`read_manifest`: the weights are checked when a bundle is loaded)."""
    out = []
    for name, path in shipped_bundles().items():
        manifest = read_manifest(path)
        out.append({"name": name, "path": str(path), "spec": manifest["spec"], "params": manifest["params"],
                    "image_size": manifest["image_size"], "grey": manifest["decoder"].get("out_channels") == 1,
                    "data": manifest["data"], "steps": manifest["steps"],
                    "fitted_crops": (manifest.get("ridge") or {}).get("crops"),
                    "validation": {k.removeprefix("val/"): v for k, v in manifest["metrics"].items()}})
    return out
