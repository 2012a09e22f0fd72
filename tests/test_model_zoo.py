"""The open families torchvision:<model>:<node> and timm:<model>:<node>."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch.nn import functional as F

from preimage import build_representation
from preimage.cli import main
from preimage.representations import layer_depth
from preimage.representations.model_zoo import fold_graph_batch_norms, list_nodes, node_shapes

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _seeded_resnet18() -> torch.nn.Module:
    """torchvision's resnet18 with its own initialization under seed 0 (what weights='random' promises)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.resnet18().eval()


def _layer3(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """resnet18 up to layer3, written out module by module, on ImageNet-normalized input."""
    y = (x - IMAGENET_MEAN) / IMAGENET_STD
    y = model.maxpool(model.relu(model.bn1(model.conv1(y))))
    return model.layer3(model.layer2(model.layer1(y)))


def test_node_equals_the_model_run_by_hand() -> None:
    rep = build_representation("torchvision:resnet18:layer3", weights="random")
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        assert torch.allclose(rep(x), _layer3(_seeded_resnet18(), x), atol=1e-5)
    assert rep.random_weights and rep.params == {"weights": "random"} and rep.output_shape(64, 80) == (256, 4, 5)
    with torch.no_grad():  # grey input is replicated to RGB
        grey = torch.rand(1, 1, 32, 32)
        assert torch.equal(rep(grey), rep(grey.expand(1, 3, 32, 32)))


def test_batch_norms_are_folded_into_the_convolutions(tmp_path: Path) -> None:
    """No batch norm is left in the traced network, and with running statistics and affine parameters far from
    their defaults (a weights file) the node still equals the model run by hand, batch norms and all."""
    model = _seeded_resnet18()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5, generator=g)
            m.running_var.uniform_(0.3, 3.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.3, generator=g)
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    rep = build_representation("torchvision:resnet18:layer3", weights=path)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in rep.modules())
    x = torch.rand(2, 3, 64, 80, generator=g)
    with torch.no_grad():
        ours, by_hand = rep(x), _layer3(model, x)
    assert (ours - by_hand).abs().max() <= 1e-5 * by_hand.abs().max()


def test_a_convolution_read_elsewhere_or_a_norm_subclass_is_left_unfolded() -> None:
    class Twice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.norm(y) + y

    class NormAndAct(torch.nn.BatchNorm2d):  # as timm's BatchNormAct2d: more than a batch norm in its forward
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(super().forward(x))

    net = Twice().eval()
    net.norm.running_mean.fill_(0.5)
    graph = fold_graph_batch_norms(torch.fx.symbolic_trace(net))
    assert isinstance(graph.norm, torch.nn.BatchNorm2d)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(graph(x), net(x))
    class KeepsIt(torch.fx.Tracer):  # as timm's tracer does, a call of it is one node
        def is_leaf_module(self, module: torch.nn.Module, name: str) -> bool:
            return isinstance(module, NormAndAct) or super().is_leaf_module(module, name)

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), NormAndAct(4)).eval()
    net[1].running_mean.fill_(0.5)
    traced = torch.fx.GraphModule(net, KeepsIt().trace(net))
    assert [n.target for n in traced.graph.nodes if n.op == "call_module"] == ["0", "1"]
    graph = fold_graph_batch_norms(traced)
    assert [n.target for n in graph.graph.nodes if n.op == "call_module"] == ["0", "1"]
    with torch.no_grad():
        assert torch.equal(graph(x), net(x))


def test_in_place_ops_cannot_change_a_captured_activation() -> None:
    # AlexNet's features.0 (conv1) is followed by ReLU(inplace=True): the capture must keep the negatives.
    rep = build_representation("torchvision:alexnet:features.0", weights="random")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        conv = torchvision.models.alexnet().features[0]
    x = torch.rand(1, 3, 67, 67)
    with torch.no_grad():
        out = rep(x)
        expected = F.conv2d((x - IMAGENET_MEAN) / IMAGENET_STD, conv.weight, conv.bias, stride=4, padding=2)
    assert out.min() < 0 and torch.allclose(out, expected, atol=1e-5)


def test_listing_shapes_and_token_outputs() -> None:
    side, shapes = node_shapes("torchvision", "resnet18")
    table = dict(shapes)
    assert side == 224 and table["layer3"] == (256, 14, 14) and table["flatten"] == (512,) and table["fc"] == (1000,)
    assert "layer1.0.add" in list_nodes("torchvision", "resnet18")
    vit = build_representation("torchvision:vit_b_16:encoder.layers.encoder_layer_3", weights="random")
    assert vit.output_shape(224, 224) == (197, 768) and vit.min_size == vit.max_size == (224, 224)
    with torch.no_grad():
        assert vit(torch.rand(1, 3, 224, 224)).shape == (1, 197, 768)
    with pytest.raises(ValueError, match="valid input sides: 224 pixels"):
        vit.output_shape(200, 200)
    with pytest.raises(ValueError, match="getattr"):
        build_representation("torchvision:vit_b_16:getattr", weights="random")  # x.shape: not a tensor


def test_unknown_model_or_node_names_the_closest() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet5'; closest: resnet50"):
        build_representation("torchvision:resnet5:layer3", weights="random")
    with pytest.raises(ValueError, match="no node 'layer33'; closest: layer3"):
        build_representation("torchvision:resnet18:layer33", weights="random")
    with pytest.raises(ValueError, match="torchvision:<model>:<node>"):
        build_representation("torchvision:resnet18", weights="random")


def test_imagenet_weights_come_from_the_hub_cache_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected_file = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError, match=f"resnet18-f37072fd.pth at '{expected_file}'.*never downloaded"):
        build_representation("torchvision:resnet18:layer3")
    reference = torchvision.models.resnet18()  # any weights, placed where torchvision's cache would hold them
    expected_file.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), expected_file)
    rep = build_representation("torchvision:resnet18:layer3")
    assert not rep.random_weights and rep.params == {"weights": "imagenet"}
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(rep(x), _layer3(reference.eval(), x), atol=1e-5)
    from_path = build_representation("torchvision:resnet18:layer3", weights=expected_file)
    with torch.no_grad():
        assert torch.equal(from_path(x), rep(x))
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="torchvision:resnet18: the state_dict .* does not match .*conv1.weight"):
        build_representation("torchvision:resnet18:layer3", weights=bad)
    state = torch.random.get_rng_state()
    build_representation("torchvision:resnet18:layer1")  # loading weights draws nothing from the caller's RNG
    assert torch.equal(torch.random.get_rng_state(), state)


def test_shapes_follow_the_device_and_dtype() -> None:
    rep = build_representation("torchvision:resnet18:layer2", weights="random").to("meta")  # stands in for CUDA
    assert rep.output_shape(97, 65) == (128, 13, 9)
    assert rep.double().output_shape(33, 33) == (128, 5, 5)


def test_depth_and_preset() -> None:
    from preimage.inversion.presets import resolve_preset

    nodes = list_nodes("torchvision", "resnet18")
    assert 0 < layer_depth("torchvision:resnet18:conv1") < 0.1 and layer_depth("torchvision:resnet18:fc") == 1.0
    assert resolve_preset("mv2015", "torchvision:resnet18:conv1")["lambda_tv"] == 1.0
    assert resolve_preset("mv2015", "torchvision:resnet18:fc")["lambda_tv"] == 100.0
    assert nodes[-1] == "fc"


def test_cli_lists_nodes_with_shapes(capsys) -> None:
    assert main(["list", "torchvision:resnet18"]) == 0
    out = capsys.readouterr().out
    assert "torchvision:resnet18:layer3  256x14x14" in out and "torchvision:resnet18:fc  1000" in out
    assert main(["list", "torchvision:resnet1"]) == 2
    assert "closest: resnet18" in capsys.readouterr().err


def test_timm_family_when_installed() -> None:
    timm = pytest.importorskip("timm")
    rep = build_representation("timm:resnet18:layer3", weights="random")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model("resnet18", pretrained=False).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = (x - IMAGENET_MEAN) / IMAGENET_STD
        y = model.maxpool(model.act1(model.bn1(model.conv1(y))))
        expected = model.layer3(model.layer2(model.layer1(y)))
        assert torch.allclose(rep(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="not available offline"):
        build_representation("timm:resnet18:layer3")
