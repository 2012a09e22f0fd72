"""Inverter bundles: the file format, and the one resolver from a shipped name or a path to a bundle file.

A bundle is one ``torch.save`` file (``checkpoints/*.pt``) holding only plain values and tensors, so that
``torch.load(path, weights_only=True)`` reads it and no code ever runs on loading::

    {"format": "preimage-bundle", "version": 1, "manifest": {...}, "state_dict": {...}, "sha256": "..."}

The manifest records what the decoder inverts and how it was trained:

- given by the trainer: ``spec`` (str) and ``params`` (dict) of the representation, ``data`` (what it was
  trained on: str or dict), ``steps`` (int), ``metrics`` (dict of validation numbers), anything else plain;
- filled in by :func:`save_bundle`: ``image_size`` ``[H, W]``, ``feature_shape``, ``decoder`` (the
  :class:`DecoderConfig` as a dict), ``package_version`` (``preimage.__version__``) and, for weights stored at
  half size and read back as float32, ``weights_dtype: float16``; for a :class:`DecoderEnsemble`, ``decoder`` is
  its first member's config and ``ensemble`` the list of the others' (its weights ``members.<i>.…``).

``sha256`` covers the manifest and every tensor, so edited weights or manifests are caught on loading.

The shipped bundles live in the package's ``checkpoints/`` folder, named after the spec they invert
(``efficientnet_lite0:stage4`` → ``efficientnet_lite0_stage4.pt``). :func:`bundle_file` is the one resolver
every caller uses (the CLI, ``compare``, the Python API): a shipped name, else a path. The format's constants,
the manifest's fields and the listing of the shipped bundles are read without torch in :mod:`preimage.catalogue`.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..catalogue import (BUNDLE_FORMAT, BUNDLE_VERSION, BundleError, PathLike, bundle_manifest, check_manifest,
                         plain_value, shipped_bundles)
from ..config import package_root
from ..files import atomic_path, not_a_file
from .networks import Decoder, DecoderConfig, DecoderEnsemble

__all__ = ["BundleError", "bundle_file", "load_bundle", "meta_decoder", "save_bundle"]

_LIGHTNING_MARK = "pytorch-lightning_version"


def _checksum(manifest: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the manifest (as sorted JSON) and of every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode())
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"\n{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _mismatch(state_dict: dict[str, Any], expected: dict[str, torch.Tensor]) -> str:
    """What differs between ``state_dict`` and the decoder's own (empty if nothing)."""
    problems = [f"missing {k}" for k in expected if k not in state_dict]
    problems += [f"unexpected {k}" for k in state_dict if k not in expected]
    for key, ref in expected.items():
        value = state_dict.get(key)
        if not isinstance(value, torch.Tensor):
            if key in state_dict:
                problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif value.shape != ref.shape or value.dtype != ref.dtype:
            problems.append(f"{key} is {value.dtype} {tuple(value.shape)}, expected {ref.dtype} {tuple(ref.shape)}")
    return "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")


def meta_decoder(manifest: dict[str, Any], config: DecoderConfig) -> Decoder | DecoderEnsemble:
    """The manifest's decoder (``config``; with ``ensemble``, a :class:`DecoderEnsemble` of it and those) on the
    ``meta`` device: its architecture, no memory, no RNG draws."""
    shape, size = tuple(manifest["feature_shape"]), tuple(manifest["image_size"])
    with torch.device("meta"):
        if "ensemble" not in manifest:
            return Decoder(shape, size, config)
        return DecoderEnsemble([Decoder(shape, size, c) for c in (config, *_ensemble_configs(manifest))])


def _ensemble_configs(manifest: dict[str, Any]) -> list[DecoderConfig]:
    """The configs of an ensemble's members after the first (``ValueError`` if ``ensemble`` holds none)."""
    members = manifest["ensemble"]
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        raise ValueError(f"manifest['ensemble'] is {members!r}, not a list of decoder config dicts")
    return [DecoderConfig(**m) for m in members]


def save_bundle(path: PathLike, decoder: Decoder | DecoderEnsemble, manifest: dict[str, Any], *,
                float16: bool = False) -> Path:
    """Write ``decoder`` and ``manifest`` as an inverter bundle (atomically: a temporary file, then a rename).

    Args:
        path: the ``.pt`` file to write (parent folders are created).
        decoder: the trained decoder, or an ensemble of decoders; its ``image_size`` must be set.
        manifest: ``spec``, ``params``, ``data``, ``steps``, ``metrics`` and any other plain values (see the
            module docstring); ``image_size``, ``feature_shape``, ``decoder`` and ``package_version`` are
            filled in from ``decoder`` and the package (a conflicting value given here is an error).
        float16: store the weights in float16 (half the file; ``weights_dtype`` in the manifest says so, and
            :func:`load_bundle` gives them back as float32).

    Returns:
        the path written.

    Raises:
        ValueError: a missing or non-plain manifest value, or one that contradicts the decoder.
    """
    from .. import __version__  # here, not at the top: the package may import this module before defining it

    if decoder.image_size is None:
        raise ValueError("save_bundle: the decoder has no image_size; build it with the training image size")
    derived = {
        "image_size": list(decoder.image_size), "feature_shape": list(decoder.feature_shape),
        "decoder": plain_value(asdict(decoder.config), "decoder config"),
    }
    if isinstance(decoder, DecoderEnsemble):
        derived["ensemble"] = [plain_value(asdict(m.config), "decoder config") for m in decoder.members[1:]]
    full = plain_value(manifest, "manifest")
    for key, value in derived.items():
        if key in full and full[key] != value:
            raise ValueError(f"save_bundle: manifest['{key}'] = {full[key]!r} contradicts the decoder's {value!r}")
    full.pop("ensemble", None)  # the decoder's own, from derived
    full.update(derived, package_version=__version__)
    full.pop("weights_dtype", None)  # the stored weights' own, set below (absent: float32)
    if float16:
        full["weights_dtype"] = "float16"
    full = check_manifest(full)  # the decoder entry is its own config's asdict: valid by construction
    state = {k: v.detach().cpu() for k, v in decoder.state_dict().items()}
    if float16:  # half the file; read back as float32 (load_bundle)
        state = {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
    bundle = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "manifest": full, "state_dict": state,
              "sha256": _checksum(full, state)}
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.save(bundle, temporary)
    return path


def _is_lightning_archive(path: Path) -> bool:
    """Whether a ``torch.save`` zip archive's pickle mentions Lightning's version key (read as bytes, never run)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            return bool(names) and _LIGHTNING_MARK.encode() in archive.read(names[0])
    except (OSError, zipfile.BadZipFile):
        return False


def _lightning_error(name: str) -> BundleError:
    return BundleError(f"{name} is a Lightning training checkpoint (.ckpt), not an inverter bundle; "
                       "export a bundle from the training run with `preimage train` and load that")


def _read(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` with every failure turned into a one-line :class:`BundleError`."""
    name = f"bundle {str(path)!r}"
    if not_a_file(path):
        raise BundleError(f"{name}: {not_a_file(path)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))  # the weights-only reader refused a class or function
        if found is None:
            reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(err)) or re.search(r"(.+)", str(err))
            detail = reason.group(1) if reason else type(err).__name__
            raise BundleError(f"{name} is truncated or corrupt (torch.load: {detail})") from None
        if _is_lightning_archive(path):
            raise _lightning_error(name) from None
        raise BundleError(
            f"{name} needs pickled code to load ({found.group(1)}) and was refused without running it: a bundle "
            "holds only tensors and plain values"
        ) from None
    except Exception as err:  # torch.load raises OSError, EOFError, RuntimeError, KeyError... on bad bytes
        first = (str(err).splitlines() or [""])[0]
        detail = f"{type(err).__name__}: {first}" if first else type(err).__name__
        raise BundleError(f"{name} is truncated or corrupt (torch.load: {detail})") from None


def _open(path: Path) -> tuple[dict[str, Any], dict[str, Any], DecoderConfig]:
    """The bundle dict, its checked manifest and decoder config (format, version and keys checked; not the
    weights or the checksum)."""
    name = f"bundle {str(path)!r}"
    bundle = _read(path)
    if not isinstance(bundle, dict) or "format" not in bundle:
        if isinstance(bundle, dict) and (_LIGHTNING_MARK in bundle or {"state_dict", "epoch"} <= bundle.keys()):
            raise _lightning_error(name)
        held = "a bare state_dict" if isinstance(bundle, dict) and bundle and all(
            isinstance(v, torch.Tensor) for v in bundle.values()) else f"a {type(bundle).__name__}"
        raise BundleError(f"{name} is not an inverter bundle: it holds {held}, with no format '{BUNDLE_FORMAT}'")
    manifest = bundle_manifest(bundle, name)
    try:
        config = DecoderConfig(**manifest["decoder"])
        if "ensemble" in manifest:
            _ensemble_configs(manifest)
    except (TypeError, ValueError) as err:  # an unknown, missing or invalid field
        raise BundleError(f"{name} is tampered or invalid: its manifest's decoders are not decoder configs: {err}"
                          ) from None
    return bundle, manifest, config


def params_differ(recorded: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The names of the representation parameters in which ``params`` differ from a manifest's ``recorded`` ones
    (compared as plain values), sorted; empty if the bundle was trained with ``params``."""
    wanted = plain_value(params, "expected_params")
    return sorted(k for k in set(recorded) | set(wanted)
                  if (k in recorded, recorded.get(k)) != (k in wanted, wanted.get(k)))


def load_bundle(
    path: PathLike, expected_spec: str | None = None, *, expected_params: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check an inverter bundle, never running code from the file.

    Args:
        path: the bundle file.
        expected_spec: if given, the representation the bundle must invert.
        expected_params: if given, the representation parameters it must have been trained with.

    Returns:
        ``(manifest, state_dict)``: the manifest (plain values) and the decoder's weights, on the CPU.

    Raises:
        BundleError: a missing, truncated or corrupt file; one needing pickled code; a Lightning ``.ckpt``;
            another format or version; a tampered manifest or state_dict; another representation or
            other parameters than expected. The one-line message names the file and the problem.
    """
    path = Path(path)
    name = f"bundle {str(path)!r}"
    bundle, manifest, config = _open(path)
    spec, params = manifest["spec"], manifest["params"]
    if expected_spec is not None and spec != expected_spec:
        raise BundleError(f"{name} inverts {spec!r} ({params}), not the {expected_spec!r} asked for")
    differ = params_differ(params, expected_params) if expected_params is not None else []
    if differ:
        wanted = plain_value(expected_params, "expected_params")
        raise BundleError(
            f"{name} was trained on {spec} with " + ", ".join(f"{k}={params.get(k)!r}" for k in differ)
            + ", not " + ", ".join(f"{k}={wanted.get(k)!r}" for k in differ)
        )
    state = bundle["state_dict"]
    if not isinstance(state, dict):
        raise BundleError(f"{name} is tampered: its state_dict is a {type(state).__name__}")
    try:
        expected = meta_decoder(manifest, config).state_dict()
    except ValueError as err:
        raise BundleError(f"{name} is tampered or invalid: its manifest describes no valid decoder ({err})") from None
    stored = manifest.get("weights_dtype", "float32")
    if stored not in ("float32", "float16"):
        raise BundleError(f"{name} is tampered or invalid: weights_dtype {stored!r} is not float32 or float16")
    if stored == "float16":
        expected = {k: v.half() if v.dtype == torch.float32 else v for k, v in expected.items()}
    problems = _mismatch(state, expected)
    if problems:
        raise BundleError(f"{name} is tampered: its state_dict does not fit its manifest's decoder ({problems})")
    if bundle["sha256"] != _checksum(manifest, state):
        raise BundleError(f"{name} is tampered or corrupt: its content does not match its sha256 checksum")
    # the whole decoder config: keys added since the bundle was written take their defaults, as the decoder does
    manifest = {**manifest, "decoder": plain_value(asdict(config), "decoder config")}
    if "ensemble" in manifest:
        manifest["ensemble"] = [plain_value(asdict(c), "decoder config") for c in _ensemble_configs(manifest)]
    return manifest, {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}


# ------------------------------------------------------------------------------------------ shipped bundles


def bundle_file(bundle: PathLike) -> Path:
    """The bundle file ``bundle`` names: a shipped name (``"hog"``, ``"efficientnet_lite0:stage4"``, see
    :func:`list_inverters`), else a path, from the working folder; a relative path that exists only inside the
    package (``checkpoints/hog.pt``) resolves there, so configs work from any folder and from a wheel.

    Raises:
        BundleError: nothing there (one line, with the shipped names).
    """
    if not isinstance(bundle, (str, os.PathLike)) or not os.fspath(bundle):
        raise BundleError(f"a bundle is a shipped name or a path, got {bundle!r}")
    shipped = shipped_bundles()
    if isinstance(bundle, str) and bundle in shipped:
        return shipped[bundle]
    path = Path(os.fspath(bundle))
    if not path.is_absolute() and not path.exists() and (package_root() / path).exists():
        path = package_root() / path
    if path.exists() and not_a_file(path):
        raise BundleError(f"bundle {str(bundle)!r} {not_a_file(path)}: give a bundle file (a bundle.pt of `preimage "
                          "train`) or a shipped name")
    if not path.is_file():
        raise BundleError(f"no bundle {str(bundle)!r}: no such file, and not a shipped name ({', '.join(shipped)}); "
                          "train one with `preimage train` and give its bundle.pt")
    return path
