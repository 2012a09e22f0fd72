"""Any layer of any torchvision (or timm) classification model: ``torchvision:<model>:<node>``, ``timm:<model>:<node>``.

Nodes are named as ``torchvision.models.feature_extraction`` names them (the module path for module calls,
e.g. ``features.29``, ``layer3``, ``avgpool``, ``fc``, ``encoder.layers.encoder_layer_3``; function calls get
their own names such as ``layer1.0.add``); ``preimage list torchvision:<model>`` prints every node with its
output shape. The network is traced with torch.fx and cut after the node, so nothing past it runs (in-place
operations included); modules are switched to ``inplace=False`` first as well. Each batch norm fed by a
convolution alone is folded into it (:func:`fold_graph_batch_norms`: the same eval-mode function, faster).

Weights (builder keyword ``weights``):

- ``"imagenet"``: torchvision: the model's DEFAULT weights, read from the torch hub cache only
  (``$TORCH_HOME/hub/checkpoints/<file>``) with ``weights_only=True``; a missing file is one clear error naming
  it, never a download. timm: not available offline (timm's weights come from a hub); save a state_dict on a
  machine with network and pass its path.
- a path to a state_dict file of the whole model (its own keys);
- ``"random"``: the model's own initialization under seed 0 (flagged in every output).

Input is RGB in ``[0, 1]``, normalized with the mean and std of the weights' own metadata (torchvision's
``weights.transforms()``, timm's ``pretrained_cfg``); no resize or crop.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..catalogue import OPEN_FAMILIES
from .network import NetworkLayer, WeightsArg, check_state_dict, hub_cache_file, read_state_dict, seeded
from .registry import register_family

__all__ = ["NodeOutput", "ZooModel", "fold_graph_batch_norms", "graph_nodes", "list_nodes", "no_inplace", "node_depth",
           "node_shapes", "returned_nodes", "zoo_model"]


class NodeOutput(nn.Module):
    """The traced network cut after one node; ``forward`` returns that node's tensor."""

    def __init__(self, extractor: nn.Module, node: str) -> None:
        super().__init__()
        self.extractor, self.node = extractor, node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x)[self.node]

    def extra_repr(self) -> str:
        return f"node={self.node!r}"


def no_inplace(model: nn.Module) -> nn.Module:
    """Switch every module with an ``inplace`` flag (ReLU, ReLU6, Hardswish, Dropout, ...) to out-of-place.

    Together with the cut after the node (nothing that comes after it in the graph runs, functional in-place
    ops included), no in-place operation can change a captured activation.
    """
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    return model


def fold_graph_batch_norms(graph: fx.GraphModule) -> fx.GraphModule:
    """Fold each eval-mode ``BatchNorm2d`` of a traced network into the ``Conv2d`` that feeds it, in place.

    Only those exact classes (not subclasses, whose forward may do more), and only where the convolution's output
    goes to the norm alone and each module is called once (a node that reads the convolution's own output, or a
    shared module, keeps both as they are): the convolution takes the norm's running scale and shift into its
    weights and bias and the norm's node is removed, its users reading the convolution's. The same eval-mode
    function (to float rounding); forward and backward on the CPU 1.3–1.7× faster for torchvision's resnet18 and
    mobilenet_v3_large (``scripts/benchmark_network.py``). For inference only: the running statistics are baked in.
    """
    modules = dict(graph.named_modules())
    calls = Counter(node.target for node in graph.graph.nodes if node.op == "call_module")
    for node in list(graph.graph.nodes):
        norm = modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if norm is not None and node.args else None
        # exact types: a subclass may do more in its forward (timm's BatchNormAct2d applies an activation, its
        # StdConv2d standardizes the weights the norm's scale would be folded into)
        if not (type(norm) is nn.BatchNorm2d and not norm.training and norm.track_running_stats
                and isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and type(modules.get(source.target)) is nn.Conv2d and calls[source.target] == calls[node.target] == 1):
            continue
        parent, _, name = source.target.rpartition(".")
        setattr(graph.get_submodule(parent), name, fuse_conv_bn_eval(modules[source.target], norm))
        node.replace_all_uses_with(source)
        graph.graph.erase_node(node)
    graph.delete_all_unused_submodules()
    graph.recompile()
    return graph


@contextlib.contextmanager
def _hub_cache_only(path: Path) -> Iterator[None]:
    """Make torchvision's weight loading read ``path`` with ``weights_only=True`` instead of downloading."""
    import torchvision.models._api as api

    def load(url: str, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return read_state_dict(path)

    original = api.load_state_dict_from_url
    api.load_state_dict_from_url = load
    try:
        yield
    finally:
        api.load_state_dict_from_url = original


class ZooModel:
    """How one model zoo (torchvision, timm) names, builds, normalizes and traces its models."""

    def __init__(self, family: str) -> None:
        if family not in OPEN_FAMILIES:
            raise ValueError(f"unknown model family {family!r}; valid: {', '.join(OPEN_FAMILIES)}")
        if family == "timm" and importlib.util.find_spec("timm") is None:
            raise ValueError("timm: the timm package is not installed (pip install timm, or preimage[timm])")
        self.family = family

    def models(self) -> list[str]:
        if self.family == "torchvision":
            import torchvision.models

            return torchvision.models.list_models(module=torchvision.models)  # classification models only
        import timm

        return timm.list_models()

    def check_model(self, model: str) -> None:
        models = self.models()
        if model not in models:
            close = difflib.get_close_matches(model, models, n=5, cutoff=0.5)
            hint = f"closest: {', '.join(close)}" if close else f"valid: {', '.join(models[:40])}, ..."
            raise ValueError(f"{self.family}: unknown model {model!r}; {hint}")

    def build(self, model: str, weights: WeightsArg) -> nn.Module:
        """The whole model in eval mode, with ``weights`` (the caller's RNG is left as it was)."""
        self.check_model(model)
        if self.family == "torchvision":
            from torchvision.models import get_model_builder, get_model_weights

            builder = get_model_builder(model)
            if weights == "random":
                return seeded(lambda: builder(weights=None)).eval()
            default = get_model_weights(model).DEFAULT
            path = hub_cache_file(default.url, f"torchvision:{model}") if weights == "imagenet" else Path(weights)
            # torchvision's builder with its DEFAULT weights, their file replaced by `path`: a state_dict file gets
            # exactly the architecture the released weights get (googlenet's transform_input, aux heads, ...)
            try:
                with _hub_cache_only(path):
                    return seeded(lambda: builder(weights=default)).eval()
            except RuntimeError as err:  # load_state_dict's mismatch report
                lines = [line.strip()[:240] for line in str(err).splitlines() if line.strip()]
                raise ValueError(f"torchvision:{model}: the state_dict in {str(path)!r} does not match the network "
                                 f"({'; '.join(lines[1:4])})") from None
        import timm

        if weights == "random":
            return seeded(lambda: timm.create_model(model, pretrained=False)).eval()
        if weights == "imagenet":
            raise ValueError(
                f"timm:{model}: weights='imagenet' is not available offline (timm downloads them from a hub); "
                f"on a machine with network save timm.create_model({model!r}, pretrained=True).state_dict() "
                "with torch.save and pass weights=<that file>"
            )
        network = seeded(lambda: timm.create_model(model, pretrained=False))
        state = read_state_dict(weights)
        check_state_dict(f"timm:{model}", state, network.state_dict(), repr(os.fspath(weights)))
        network.load_state_dict(state)
        return network.eval()

    def normalization(self, model: str, network: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...], int]:
        """``(mean, std, canonical side)`` of the model's input, from its weights' metadata."""
        if self.family == "torchvision":
            from torchvision.models import get_model_weights

            transform = get_model_weights(model).DEFAULT.transforms()
            return tuple(transform.mean), tuple(transform.std), int(transform.crop_size[0])
        cfg = network.pretrained_cfg
        return tuple(cfg["mean"]), tuple(cfg["std"]), int(cfg["input_size"][-1])

    def _fx(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        if self.family == "torchvision":
            from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
        else:
            from timm.models._features_fx import create_feature_extractor, get_graph_node_names
        return create_feature_extractor, get_graph_node_names

    def nodes(self, network: nn.Module) -> dict[str, str]:
        """Every name a spec may use → the graph node whose output it is (:func:`graph_nodes`)."""
        return graph_nodes(self._fx()[1](network)[1])

    def cut(self, network: nn.Module, nodes: list[str]) -> nn.Module:
        """``network`` traced and cut so that it returns the dict of ``nodes``' outputs."""
        return self._fx()[0](no_inplace(network), return_nodes={n: n for n in nodes})


def graph_nodes(eval_nodes: list[str]) -> dict[str, str]:
    """Every name a spec may use → the graph node whose output it is, in execution order.

    The names are the eval-mode graph nodes (``get_graph_node_names(model)[1]``, input excluded) and the modules
    that hold them (``layer3`` is the output of its last node, as ``create_feature_extractor`` takes it), each
    module listed right after its last node, inner modules first.
    """
    leaves = [n for n in eval_nodes if n != "x"]
    last: dict[str, int] = {}
    for i, name in enumerate(leaves):
        parts = name.split(".")
        for k in range(len(parts) - 1, 0, -1):
            last[".".join(parts[:k])] = i
    order = {name: (i, 0) for i, name in enumerate(leaves)}
    for prefix, i in last.items():
        order.setdefault(prefix, (i, 100 - prefix.count(".")))
    return {name: leaves[order[name][0]] for name in sorted(order, key=order.__getitem__)}


def returned_nodes(nodes: dict[str, str], node: str) -> list[str]:
    """What to cut the traced graph at for ``node``: ``node`` and every in-place method before it (``x.mul_(2)``,
    a name ending in ``_`` or ``__<k>``). fx's dead-code elimination drops an in-place method whose result nothing
    uses, yet it changes a tensor the node reads; returning it too keeps it in the graph."""
    leaves = list(dict.fromkeys(nodes.values()))
    before = leaves[:leaves.index(nodes[node])]
    return [node, *(n for n in before if re.search(r"[^_]_(_\d+)?$", n.rsplit(".", 1)[-1]))]


def node_depth(nodes: dict[str, str], node: str) -> float:
    """Relative depth ``(index + 1) / count`` of ``node``'s graph node among the graph's nodes."""
    leaves = list(dict.fromkeys(nodes.values()))
    return (leaves.index(nodes[node]) + 1) / len(leaves)


def zoo_model(family: str, rest: str, *, weights: WeightsArg = "imagenet") -> NetworkLayer:
    """Build ``family:<model>:<node>`` (``rest`` = ``"<model>:<node>"``), see the module docstring."""
    zoo = ZooModel(family)
    model, sep, node = rest.partition(":")
    if not sep or not node:
        raise ValueError(f"{family}: a spec is {family}:<model>:<node>, got {family}:{rest} "
                         f"(`preimage list {family}:{model or '<model>'}` prints the nodes)")
    network = zoo.build(model, weights)
    nodes = zoo.nodes(network)
    if node not in nodes:
        close = difflib.get_close_matches(node, list(nodes), n=5, cutoff=0.4)
        raise ValueError(f"{family}:{model} has no node {node!r}; closest: {', '.join(close) or list(nodes)[-1]} "
                         f"(`preimage list {family}:{model}` prints them all)")
    mean, std, side = zoo.normalization(model, network)
    extractor = fold_graph_batch_norms(zoo.cut(network, returned_nodes(nodes, node)))
    layer = NetworkLayer(f"{family}:{model}:{node}", NodeOutput(extractor, node), weights=weights,
                         scale=1.0, mean=mean, std=std, canonical_size=side,
                         depth=node_depth(nodes, node))
    layer.output_shape(side, side)  # a node that gives no tensor is refused now, not at the first forward
    layer.family, layer.layer = family, node
    return layer


def node_shapes(family: str, model: str) -> tuple[int, list[tuple[str, tuple[int, ...] | str]]]:
    """``(side, [(node, output shape without batch, or a type name for non-tensor nodes), ...])`` at the model's
    canonical input side (224 for most), computed on fake tensors with random weights (no FLOPs, no files)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    zoo = ZooModel(family)
    network = zoo.build(model, "random")
    nodes = zoo.nodes(network)
    side = zoo.normalization(model, network)[2]
    with FakeTensorMode(allow_non_fake_inputs=True):
        outputs = zoo.cut(network, list(dict.fromkeys(nodes.values())))(torch.empty(1, 3, side, side))
    shapes = [(name, tuple(int(s) for s in v.shape[1:]) if isinstance(v, torch.Tensor) else type(v).__name__)
              for name, v in ((name, outputs[leaf]) for name, leaf in nodes.items())]
    return side, shapes


def list_nodes(family: str, model: str) -> list[str]:
    """The node names a ``family:<model>:<node>`` spec accepts (those whose output is a tensor)."""
    return [n for n, shape in node_shapes(family, model)[1] if isinstance(shape, tuple)]


def _depth(family: str) -> Callable[[str], float | None]:
    @functools.lru_cache(maxsize=None)  # a preset resolves it once per inherit level: trace each model once
    def depth(rest: str) -> float | None:
        model, _, node = rest.partition(":")
        zoo = ZooModel(family)
        try:
            with torch.device("meta"):  # no memory, no initialization
                network = zoo.build(model, "random")
        except NotImplementedError:  # builders that read their own tensors (RegNet's block widths)
            network = zoo.build(model, "random")
        nodes = zoo.nodes(network)
        return node_depth(nodes, node) if node in nodes else None

    return depth


for _family in OPEN_FAMILIES:
    register_family(_family, lambda rest, _f=_family, **kw: zoo_model(_f, rest, **kw), depth=_depth(_family))
