"""Any ``nn.Module`` a user brings, cut at one node, as a representation: :func:`from_module`.

The node is named as ``torchvision.models.feature_extraction`` names it (a module path such as ``layer3`` or
``encoder.layers.encoder_layer_3``, or a function call's node such as ``layer1.0.add``), exactly as the
``torchvision:`` family does. The module is copied (the caller's is never changed or frozen), switched to
out-of-place operations, and cut after the node:

- traced with torch.fx when it can be: nothing past the node runs, and each batch norm fed by a convolution alone
  is folded into it (the same eval-mode function, faster: :func:`~.model_zoo.fold_graph_batch_norms`);
- otherwise (data-dependent control flow, say) through a forward hook on the node's module, which ends the
  forward pass as soon as the node has run, so no later operation, in-place or not, touches the activation.

The node's relative depth is measured like the built-in networks' (its place among the traced graph's nodes,
or among the modules called, for hooks), so the GD presets choose their per-depth settings for it as they
would for a built-in layer of that depth.
"""
from __future__ import annotations

import copy
import difflib
from typing import Sequence

import torch
from torch import nn

from .model_zoo import NodeOutput, fold_graph_batch_norms, graph_nodes, no_inplace, node_depth, returned_nodes
from .network import NetworkLayer

__all__ = ["ModuleLayer", "from_module"]


class _NodeReached(Exception):
    """Raised by the capturing hook to end the forward pass once the node has run."""


class HookedOutput(nn.Module):
    """``model`` run until its submodule ``node`` returns; ``forward`` gives that module's output."""

    def __init__(self, model: nn.Module, node: str) -> None:
        super().__init__()
        self.model, self.node = model, node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[object] = []

        def capture(module: nn.Module, inputs: object, output: object) -> None:
            captured.append(output)
            raise _NodeReached

        handle = self.model.get_submodule(self.node).register_forward_hook(capture)
        try:
            self.model(x)
        except _NodeReached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"node {self.node!r} was not called by the forward pass")
        if not isinstance(captured[0], torch.Tensor):
            raise ValueError(f"node {self.node!r} returns a {type(captured[0]).__name__}, not a tensor")
        return captured[0]

    def extra_repr(self) -> str:
        return f"node={self.node!r}"


def _hook_depth(model: nn.Module, node: str, side: int) -> float:
    """``(leaf modules called until node returns) / (leaf modules called)`` in one forward pass of a zero image."""
    called: list[str] = []
    handles = [m.register_forward_hook(lambda m, i, o, name=name: called.append(name))
               for name, m in model.named_modules() if not list(m.children())]
    handles.append(model.get_submodule(node).register_forward_hook(lambda m, i, o: called.append("\0")))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side))
    finally:
        for handle in handles:
            handle.remove()
    if "\0" not in called:
        raise ValueError(f"node {node!r} was not called by the forward pass")
    leaves = [name for name in called if name != "\0"]
    return max(called.index("\0"), 1) / max(len(leaves), 1)


class ModuleLayer(NetworkLayer):
    """One node of a user's module (see :func:`from_module`); a :class:`NetworkLayer` in every other respect.

    Attributes:
        layer: the node's name; traced: whether torch.fx cut the module (else a forward hook does).
    """

    traced: bool = True

    def _shape_or_error(self, height: int, width: int) -> tuple[int, ...] | str:
        """The output shape on fake tensors, or, for modules fake tensors cannot run (data-dependent control
        flow), from one real forward pass of a zero image."""
        key = (int(height), int(width))
        known = key in self._shapes
        shape = super()._shape_or_error(height, width)
        if isinstance(shape, str) and not self.traced and not known:
            try:
                with torch.no_grad():
                    out = self.network(torch.zeros(1, 3, height, width, device=self.mean.device))
                shape = tuple(int(s) for s in out.shape[1:]) if out.numel() else f"the {height}x{width} input is too small"
            except Exception as err:  # shape errors surface as RuntimeError, ValueError, ...
                shape = f"the {height}x{width} input gives no output ({(str(err).splitlines() or [''])[0]})"
            self._shapes[key] = shape
        return shape


def from_module(model: nn.Module, node: str, *, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, scale: float = 1.0, canonical_size: int = 224,
                trace: bool = True) -> ModuleLayer:
    """A representation Φ(x) = the output of ``node`` in ``model((scale · x − mean) / std)``, for any module.

    Args:
        model: any ``nn.Module`` taking ``(B, 3, H, W)`` images; copied, never changed (nor frozen).
        node: a module path (``"layer3"``, ``"blocks.2"``) or an fx node name (``"layer1.0.add"``), as
            ``preimage list torchvision:<model>`` names the nodes of torchvision models.
        mean, std: per-channel input normalization in ``scale`` units (3 values, or 1 for all channels);
            default: none (mean 0, std 1).
        scale: multiplies ``x`` in ``[0, 1]`` first (255 for networks trained on 0–255 pixels).
        canonical_size: a side the model is known to accept; valid sizes are searched from it.
        trace: try torch.fx first (``False``: always the forward hook, which needs ``node`` to be a module).

    Returns:
        A frozen :class:`ModuleLayer`: maps ``(B, C, h, w)``, tokens ``(B, N, D)`` or vectors ``(B, D)``, whatever
        the node gives; ``spec`` is ``module:<ClassName>:<node>``, ``depth`` its measured relative depth.

    Raises:
        ValueError: an unknown node (the closest names are listed), or one whose output is not a tensor.

    Example:
        >>> import torchvision
        >>> phi = from_module(torchvision.models.resnet18(), "layer3")  # doctest: +SKIP
        >>> phi(torch.rand(1, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([1, 256, 14, 14])
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"from_module takes an nn.Module, got a {type(model).__name__}")
    if not isinstance(node, str) or not node:
        raise ValueError(f"node must be a node or module name, e.g. 'layer3', got {node!r}")
    mean3 = _per_channel(mean, 0.0, "mean")
    std3 = _per_channel(std, 1.0, "std")
    if any(s <= 0 for s in std3):
        raise ValueError(f"std must be positive, got {list(std3)}")
    network = no_inplace(copy.deepcopy(model)).eval()
    nodes = _traced_nodes(network) if trace else None
    if nodes is not None:
        if node not in nodes:
            close = difflib.get_close_matches(node, list(nodes), n=5, cutoff=0.4)
            raise ValueError(f"{type(model).__name__} has no node {node!r}; closest: {', '.join(close) or list(nodes)[-1]}")
        from torchvision.models.feature_extraction import create_feature_extractor

        extractor = create_feature_extractor(network, return_nodes=returned_nodes(nodes, node))
        cut: nn.Module = NodeOutput(fold_graph_batch_norms(extractor), node)
        depth = node_depth(nodes, node)
    else:
        modules = dict(network.named_modules())
        if node not in modules or not node:
            close = difflib.get_close_matches(node, [n for n in modules if n], n=5, cutoff=0.4)
            raise ValueError(f"{type(model).__name__} cannot be traced by torch.fx, so node must be a module path; "
                             f"it has no module {node!r}; closest: {', '.join(close) or 'none'}")
        cut = HookedOutput(network, node)
        depth = _hook_depth(network, node, canonical_size)
    layer = ModuleLayer(f"module:{type(model).__name__}:{node}", cut, weights="module", scale=scale, mean=mean3,
                        std=std3, canonical_size=canonical_size, depth=depth)
    layer.traced, layer.layer = nodes is not None, node
    layer.output_shape(canonical_size, canonical_size)  # a node that gives no tensor is refused now
    return layer.freeze()  # type: ignore[return-value]


def _per_channel(values: Sequence[float] | None, default: float, name: str) -> tuple[float, float, float]:
    if values is None:
        return (default,) * 3
    values = [float(v) for v in (values if isinstance(values, Sequence) else [values])]
    if len(values) not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 values (one per RGB channel), got {values}")
    return tuple(values * 3 if len(values) == 1 else values)  # type: ignore[return-value]


def _traced_nodes(network: nn.Module) -> dict[str, str] | None:
    """:func:`~.model_zoo.graph_nodes` of ``network`` traced with torch.fx, or ``None`` if fx cannot trace it."""
    from torchvision.models.feature_extraction import get_graph_node_names

    try:
        return graph_nodes(get_graph_node_names(network)[1])
    except Exception:  # fx raises TraceError, TypeError, NotImplementedError ... on control flow it cannot follow
        return None
