"""One learned inverter per layer of a network (Dosovitskiy & Brox's whole-network study), then every layer
scored beside GD: ``preimage train --config CONFIG layers=[stem,stage1,...]``.

Each layer trains in ``<run_dir>/<spec with ':' as '_'>`` (its own TensorBoard run, checkpoints and bundle.pt)
with the config's keys, then ``per_layer.<layer>``'s over them. The sweep can stop anywhere (Ctrl-C, SIGTERM, a
crash) and the same command continues it: a layer whose folder holds ``bundle.pt`` is finished and skipped, one
that holds ``checkpoints/last.ckpt`` resumes from it, any other starts. ``<run_dir>/layers.json`` lists every
layer's bundle and validation scores; with ``compare`` set, ``preimage compare`` then scores every bundle beside
GD (``<run_dir>/compare``).
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from ..files import atomic_path
from ..inversion.bundles import load_bundle
from ..outputs import refuse_foreign, write_marker
from ..representations import is_representation

__all__ = ["layer_config", "layer_spec", "train_layers"]

log = logging.getLogger(__name__)


def layer_spec(representation: str, layer: str) -> str:
    """The spec of ``layer``: itself if it is a spec (``hog``, ``alexnet:conv3``), else ``representation`` with its
    last ``:`` part replaced (``efficientnet_lite0:stage4`` and ``stem`` → ``efficientnet_lite0:stem``)."""
    if ":" in layer or ":" not in representation and is_representation(layer):
        return layer
    if ":" not in representation:
        raise ValueError(f"layers: {layer!r} is not a spec, and representation={representation} names no network "
                         "whose layer it could be")
    return f"{representation.rpartition(':')[0]}:{layer}"


def _is_layer(representation: str, layer: str) -> bool:
    try:
        return is_representation(layer_spec(representation, layer))
    except ValueError:
        return False


def layer_config(c: dict[str, Any], layer: str, spec: str, run_dir: Path) -> dict[str, Any]:
    """The single-layer config of ``layer``: ``c`` without the sweep's keys, ``per_layer.<layer>`` merged over it."""
    single = {k: copy.deepcopy(v) for k, v in c.items() if k not in ("layers", "per_layer", "compare")}
    own = c["per_layer"].get(layer) or c["per_layer"].get(spec) or {}
    single = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(single), OmegaConf.create(own)), resolve=True)
    single.update(representation=spec, run_dir=str(run_dir),
                  resume=(run_dir / "checkpoints" / "last.ckpt").is_file(), name=f"{c['name']}-{layer}")
    return single  # type: ignore[return-value]


def train_layers(c: dict[str, Any], train_one: Callable[[dict[str, Any], str | None], tuple[dict, dict]],
                 command: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (or continue) an inverter per layer of ``c["layers"]`` with ``train_one`` (:func:`~.train.train`), then
    write ``layers.json`` and, with ``c["compare"]``, score the bundles beside GD.

    Returns:
        ``({}, objects)`` (as :func:`~.train.train` returns): ``objects["layers"]`` holds per spec its ``bundle``,
        ``steps``, validation ``metrics`` and ``status`` (``trained``, ``resumed`` or ``finished before``);
        ``run_dir``; ``compare``, the comparison's result (or None); ``bundle`` None (one per layer instead).
    """
    run_dir = Path(c["run_dir"])
    unknown = sorted(k for k in c["per_layer"] if not _is_layer(c["representation"], k))
    if unknown:  # a typo; a real layer left out of layers is fine (a config's per_layer serves any subset)
        raise ValueError(f"per_layer names {', '.join(unknown)}, which is no layer of {c['representation']}")
    plan = [(layer, layer_spec(c["representation"], layer)) for layer in c["layers"]]
    if len({spec for _, spec in plan}) != len(plan):
        raise ValueError(f"layers names a layer twice: {c['layers']}")
    refuse_foreign(run_dir, "preimage train layers=[...]", run_dir / "layers.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_marker(run_dir)
    summary: dict[str, Any] = {}
    for layer, spec in plan:
        folder = run_dir / spec.replace(":", "_")
        bundle = folder / "bundle.pt"
        if bundle.is_file():
            status = "finished before"
            log.info("%s: finished before (%s), skipped", spec, bundle)
        else:
            single = layer_config(c, layer, spec, folder)
            status = "resumed" if single["resume"] else "trained"
            log.info("%s: %s in %s", spec, "resuming" if single["resume"] else "training", folder)
            train_one(single, command)
        manifest, _ = load_bundle(bundle)
        summary[spec] = {"bundle": str(bundle), "steps": manifest["steps"], "metrics": manifest["metrics"],
                         "status": status}
    with atomic_path(run_dir / "layers.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2))
    result = None
    if c["compare"] is not None:
        from ..jobs.compare import run_compare  # a job run after the trainings, as the command asks

        compare = {"methods": ["gd", "learned"], **copy.deepcopy(c["compare"]),
                   "representations": list(summary), "bundles": {s: v["bundle"] for s, v in summary.items()},
                   "run_dir": str(run_dir / "compare"), "overwrite": True}
        result = run_compare(compare, command=command)
    return {}, {"run_dir": run_dir, "layers": summary, "compare": result, "bundle": None}
