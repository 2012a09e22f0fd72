"""AlexNet / CaffeNet layer representations: layer lists, shapes, weights, truncation, gradients."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from preimage import build_representation, list_representations
from preimage.representations.cnn import ALEXNET_LAYERS, CAFFENET_LAYERS

ALEXNET_NAMES = [
    "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "conv4", "relu4",
    "conv5", "relu5", "pool5", "fc6", "relu6", "fc7", "relu7", "fc8",
]
CAFFENET_NAMES = [
    "conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2", "conv3", "relu3",
    "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "fc7", "relu7", "fc8",
]
CNN_SPECS = [s for s in list_representations() if s.startswith(("alexnet:", "caffenet:"))]
FC_LAYERS = {"fc6", "relu6", "fc7", "relu7", "fc8"}
# Known shapes for the canonical 227x227 input (Caffe's deploy.prototxt; torchvision's AlexNet) of the layers
# that change the shape; relu and norm layers keep the shape of the layer before them.
_CHANGING_227 = {
    "caffenet:conv1": (96, 55, 55), "caffenet:pool1": (96, 27, 27), "caffenet:conv2": (256, 27, 27),
    "caffenet:pool2": (256, 13, 13), "caffenet:conv3": (384, 13, 13), "caffenet:conv4": (384, 13, 13),
    "caffenet:conv5": (256, 13, 13), "caffenet:pool5": (256, 6, 6), "caffenet:fc6": (4096,), "caffenet:fc7": (4096,),
    "caffenet:fc8": (1000,),
    "alexnet:conv1": (64, 56, 56), "alexnet:pool1": (64, 27, 27), "alexnet:conv2": (192, 27, 27),
    "alexnet:pool2": (192, 13, 13), "alexnet:conv3": (384, 13, 13), "alexnet:conv4": (256, 13, 13),
    "alexnet:conv5": (256, 13, 13), "alexnet:pool5": (256, 6, 6), "alexnet:fc6": (4096,), "alexnet:fc7": (4096,),
    "alexnet:fc8": (1000,),
}


def _shapes_227() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for family, names in (("alexnet", ALEXNET_NAMES), ("caffenet", CAFFENET_NAMES)):
        for name in names:
            spec = f"{family}:{name}"
            shapes[spec] = _CHANGING_227.get(spec) or shapes[f"{family}:{names[names.index(name) - 1]}"]
    return shapes


SHAPES_227 = _shapes_227()
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CAFFE_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


def test_layer_lists_in_network_order() -> None:
    assert [s.split(":")[1] for s in CNN_SPECS if s.startswith("alexnet:")] == ALEXNET_NAMES
    assert [s.split(":")[1] for s in CNN_SPECS if s.startswith("caffenet:")] == CAFFENET_NAMES
    assert list(ALEXNET_LAYERS) == ALEXNET_NAMES and list(CAFFENET_LAYERS) == CAFFENET_NAMES


@pytest.mark.parametrize("spec", CNN_SPECS)
def test_output_shape_matches_forward(spec: str) -> None:
    rep = build_representation(spec, weights="random")
    assert rep.random_weights and rep.params == {"weights": "random"} and not rep.training
    assert not any(p.requires_grad for p in rep.parameters())
    assert list(rep.network.named_children())[-1][0] == spec.split(":")[1]  # nothing past the layer
    assert rep.output_shape(227, 227) == SHAPES_227[spec]
    caffe_fc = spec.startswith("caffenet:") and spec.split(":")[1] in FC_LAYERS
    sizes = [(227, 227), rep.min_size] + ([rep.max_size] if caffe_fc else [(163, 195)])
    with torch.no_grad():
        for h, w in sizes:
            assert rep(torch.rand(1, 3, h, w)).shape == (1, *rep.output_shape(h, w)), (h, w)
    too_big = (rep.max_size[0] + 1, rep.max_size[1]) if caffe_fc else None
    for h, w in [(rep.min_size[0] - 1, rep.min_size[1]), (rep.min_size[0], rep.min_size[1] - 1)] + [too_big] * caffe_fc:
        with pytest.raises(ValueError, match=re.escape(spec)):
            rep.output_shape(h, w)
        with pytest.raises(ValueError, match=re.escape(spec)):
            rep(torch.rand(1, 3, h, w))


def test_min_and_max_sizes() -> None:
    assert build_representation("caffenet:conv1", weights="random").min_size == (11, 11)
    assert build_representation("caffenet:pool5", weights="random").min_size == (39, 39)
    pool5 = build_representation("alexnet:pool5", weights="random")
    assert pool5.min_size == (63, 63) and pool5.max_size is None  # torchvision's documented min_size
    assert pool5.min_size == torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["min_size"]
    caffe_fc6 = build_representation("caffenet:fc6", weights="random")
    assert (caffe_fc6.min_size, caffe_fc6.max_size) == ((199, 199), (230, 230))
    with pytest.raises(ValueError, match="smaller than the 199x199"):
        caffe_fc6(torch.rand(1, 3, 163, 195))
    with pytest.raises(ValueError, match=r"227x240 input gives no output \(fc6 needs a 6x6 pool5 map, got \(6, 7\)\).*199 to 230 pixels"):
        caffe_fc6(torch.rand(1, 3, 227, 240))
    with pytest.raises(ValueError, match="10x10 input gives no output.*valid input sides: at least 11 pixels"):
        build_representation("caffenet:conv1", weights="random").output_shape(10, 10)


def test_caffenet_pools_with_caffe_ceil_rounding() -> None:
    # Caffe: pooled = ceil((n - kernel) / stride) + 1; for 167 px conv1 is 40 wide, floor rounding would give 19
    rep = build_representation("caffenet:pool1", weights="random")
    conv1 = (167 - 11) // 4 + 1
    pooled = math.ceil((conv1 - 3) / 2) + 1
    assert pooled == 20 and rep.output_shape(167, 167) == (96, 20, 20)
    assert rep(torch.rand(1, 3, 167, 167)).shape == (1, 96, 20, 20)


def test_parameter_counts() -> None:
    caffenet = build_representation("caffenet:fc8", weights="random")
    assert sum(p.numel() for p in caffenet.parameters()) == 60_965_224  # bvlc_reference_caffenet
    alexnet = build_representation("alexnet:fc8", weights="random")
    expected = sum(p.numel() for p in torchvision.models.alexnet(weights=None).parameters())
    assert sum(p.numel() for p in alexnet.parameters()) == expected == 61_100_840


def test_random_weights_deterministic_and_independent_of_global_rng() -> None:
    torch.manual_seed(1)
    before = torch.get_rng_state()
    a = build_representation("caffenet:conv2", weights="random")
    assert torch.equal(torch.get_rng_state(), before)  # no global RNG draws
    torch.manual_seed(2)
    b = build_representation("caffenet:conv2", weights="random")
    longer = build_representation("caffenet:pool5", weights="random")
    for name, p in a.network.state_dict().items():
        assert torch.equal(p, b.network.state_dict()[name]) and torch.equal(p, longer.network.state_dict()[name])
    x = torch.rand(1, 3, 67, 67)
    assert torch.equal(a(x), b(x))


def test_state_dict_file_round_trip_is_bit_identical(tmp_path: Path) -> None:
    reference = build_representation("caffenet:fc8", weights="random")
    with torch.no_grad():  # weights no build produces, so that a load that did nothing would show
        for p in reference.parameters():
            p.mul_(0.5)
    path = tmp_path / "caffenet.pt"
    torch.save(reference.network.state_dict(), path)
    loaded = build_representation("caffenet:fc8", weights=str(path))
    assert not loaded.random_weights and loaded.params == {"weights": str(path)}
    x = torch.rand(2, 3, 227, 227)
    assert torch.equal(loaded(x), reference(x))
    conv3 = build_representation("caffenet:conv3", weights=path)
    assert torch.equal(conv3(x), reference.network[:9](reference.preprocess(x)))


def test_torchvision_keys_and_imagenet_cache_match_torchvision(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    tv = torchvision.models.alexnet(weights=None).eval()
    path = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), path)  # features.N.* / classifier.N.* keys
    x = torch.rand(2, 3, 163, 195)
    with torch.no_grad():
        expected = tv(torchvision.transforms.functional.normalize(x, IMAGENET_MEAN, IMAGENET_STD))
    for weights in (path, "imagenet"):
        rep = build_representation("alexnet:fc8", weights=weights)
        assert not rep.random_weights
        torch.testing.assert_close(rep(x), expected)


def test_imagenet_weights_absent_names_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(expected))):
        build_representation("alexnet:conv1")
    with pytest.raises(ValueError, match="bvlc_reference_caffenet"):
        build_representation("caffenet:conv1", weights="imagenet")


def test_bad_weights_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_representation("caffenet:conv1", weights=str(tmp_path / "nope.pt"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read a state_dict"):
        build_representation("caffenet:conv1", weights=corrupt)
    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(ValueError, match="does not hold a state_dict"):
        build_representation("caffenet:conv1", weights=not_dict)
    mismatched = tmp_path / "mismatched.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 11, 11), "extra.weight": torch.zeros(1)}, mismatched)
    with pytest.raises(ValueError) as info:
        build_representation("caffenet:conv1", weights=mismatched)
    message = str(info.value)
    for part in ("missing (15): conv1.bias", "and 7 more", "unexpected (1): extra.weight",
                 "conv1.weight: (64, 3, 11, 11) (expected (96, 3, 11, 11))"):
        assert part in message


def test_unknown_layers_and_overrides() -> None:
    with pytest.raises(ValueError, match="alexnet:conv1.*caffenet:fc8"):
        build_representation("alexnet:conv9")
    with pytest.raises(ValueError, match="unknown representation 'alexnet:norm1'"):
        build_representation("alexnet:norm1")  # torchvision's AlexNet has no LRN
    with pytest.raises(ValueError, match="weigths"):
        build_representation("alexnet:conv1", weigths="random")


def test_grey_input_is_replicated_and_bad_inputs_refused() -> None:
    rep = build_representation("alexnet:conv2", weights="random")
    grey = torch.rand(2, 1, 67, 67)
    assert torch.equal(rep(grey), rep(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="alexnet:conv2"):
        rep(torch.rand(2, 2, 67, 67))


def _caffe_max_pool(x: torch.Tensor) -> torch.Tensor:
    """Caffe's 3x3 stride-2 max pooling: ceil((n - 3) / 2) + 1 windows, the last one clipped to the image."""
    h, w = x.shape[-2:]
    out_h, out_w = math.ceil((h - 3) / 2) + 1, math.ceil((w - 3) / 2) + 1
    x = F.pad(x, (0, 2 * (out_w - 1) + 3 - w, 0, 2 * (out_h - 1) + 3 - h), value=-math.inf)
    return F.max_pool2d(x, 3, 2)


def _caffe_lrn(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> torch.Tensor:
    """Caffe's ACROSS_CHANNELS LRN: x_c / (k + alpha / size · Σ_{|c' - c| <= size // 2} x_c'²) ** beta."""
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        window = x[:, max(0, c - size // 2): c + size // 2 + 1]
        out[:, c] = x[:, c] / (k + alpha / size * (window**2).sum(1)) ** beta
    return out


def _grouped_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """Caffe's group 2: the first half of the filters sees the first half of the channels."""
    half_in, half_out = x.shape[1] // 2, weight.shape[0] // 2
    return torch.cat([
        F.conv2d(x[:, :half_in], weight[:half_out], bias[:half_out], padding=padding),
        F.conv2d(x[:, half_in:], weight[half_out:], bias[half_out:], padding=padding),
    ], 1)


def test_caffenet_conv3_equals_naive_reference() -> None:
    rep = build_representation("caffenet:conv3", weights="random").double()
    assert [name for name, _ in rep.network.named_children()] == CAFFENET_NAMES[:9]
    p = dict(rep.network.named_parameters())
    x = torch.rand(2, 3, 167, 227, dtype=torch.float64)  # 167 rows: ceil and floor pooling differ
    y = x[:, [2, 1, 0]] * 255 - CAFFE_MEAN_BGR.double()  # BGR, 0-255, mean pixel subtracted
    y = _caffe_lrn(_caffe_max_pool(F.relu(F.conv2d(y, p["conv1.weight"], p["conv1.bias"], stride=4))))
    y = _caffe_lrn(_caffe_max_pool(F.relu(_grouped_conv(y, p["conv2.weight"], p["conv2.bias"], padding=2))))
    y = F.conv2d(y, p["conv3.weight"], p["conv3.bias"], padding=1)
    torch.testing.assert_close(rep(x), y)


@pytest.mark.parametrize(("spec", "size"), [("caffenet:conv2", 35), ("alexnet:pool2", 35)])
def test_gradcheck(spec: str, size: int) -> None:
    rep = build_representation(spec, weights="random").double()
    x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rep, (x,), fast_mode=True)
