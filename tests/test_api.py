"""The Python API (preimage.invert / maximize / caricature / from_module / load_inverter / list_inverters) on a
small model defined here (in-place ReLUs, residual adds), on one fx cannot trace, and on torchvision's ViT."""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import preimage
from preimage.analysis.receptive_field import receptive_field
from preimage.cli import main
from preimage.images import load_image
from preimage.imagesets import prepare_image
from preimage.inversion.presets import gd_config, resolve_preset
from preimage.photos import load_photo, photo_path


class Block(nn.Module):
    """A residual block as torchvision's ResNets write it: conv → in-place ReLU → conv, then the input added in place."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.relu(self.conv1(x)))
        y += x
        return y


class Tiny(nn.Module):
    """stem → in-place ReLU → block1 → (its output doubled in place) → block2 → ReLU → pool → fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.block1, self.block2 = Block(8), Block(8)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.act(self.stem(x)))
        x.mul_(2)  # an in-place op on block1's output: it must not reach the captured activation
        return self.fc(self.pool(F.relu(self.block2(x))).flatten(1))


class Untraceable(Tiny):
    """Tiny with data-dependent control flow, which torch.fx cannot trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        if float(x.detach().mean()) > -1.0:
            x = self.block1(x)
        x.mul_(2)
        return self.fc(self.pool(F.relu(self.block2(x))).flatten(1))


def by_hand(model: Tiny, x: torch.Tensor, node: str) -> torch.Tensor:
    """The node's activation, computed step by step out of place."""
    def block(b: Block, h: torch.Tensor) -> torch.Tensor:
        return b.conv2(F.relu(b.conv1(h))) + h

    with torch.no_grad():
        block1 = block(model.block1, F.relu(model.stem(x)))
        if node == "block1":
            return block1
        block2 = block(model.block2, 2 * block1)
        return block2 if node == "block2" else model.fc(F.relu(block2).mean((2, 3)))


@pytest.fixture(scope="module")
def tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.stack([prepare_image(load_photo(n), size=32, grey=False) for n in ("astronaut", "chelsea")])


@pytest.mark.parametrize("node", ["block1", "block2", "fc"])
def test_from_module_equals_the_module_run_by_hand(tiny: Tiny, images: torch.Tensor, node: str) -> None:
    phi = preimage.from_module(tiny, node)
    assert phi.traced and phi.spec == f"module:Tiny:{node}"
    torch.testing.assert_close(phi(images), by_hand(tiny, images, node), rtol=1e-5, atol=1e-6)
    assert tiny.act.inplace and tiny.block1.relu.inplace  # the caller's module is left as it was
    assert all(p.requires_grad for p in tiny.parameters())


def test_an_untraceable_module_works_through_hooks(tiny: Tiny, images: torch.Tensor) -> None:
    model = Untraceable().eval()
    model.load_state_dict(tiny.state_dict())
    phi = preimage.from_module(model, "block1")
    assert not phi.traced
    torch.testing.assert_close(phi(images), by_hand(tiny, images, "block1"), rtol=1e-5, atol=1e-6)
    result = preimage.invert(images, phi, schedule=[[0.004, 40]])
    assert result.images.shape == images.shape and all(v < 0.5 for v in result.normalized_loss)
    with pytest.raises(ValueError, match="must be a module path"):
        preimage.from_module(model, "block1.relu.nope")


def test_invert_lowers_the_loss_far_below_a_random_image(tiny: Tiny, images: torch.Tensor) -> None:
    phi = preimage.from_module(tiny, "block2")
    result = preimage.invert(images, phi, schedule=[[0.004, 100]], lambda_tv=1.0, device="cpu")
    assert result.images.shape == (2, 3, 32, 32) and 0 <= float(result.images.min()) <= float(result.images.max()) <= 1
    with torch.no_grad():
        target, random = phi(images), phi(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    random_loss = ((random - target).flatten(1).square().sum(1) / target.flatten(1).square().sum(1)).tolist()
    for ours, theirs in zip(result.normalized_loss, random_loss):
        assert ours < 0.1 * theirs
    assert len(result.seconds) == 2 and all(f is not None for f in result.feature_error)


def test_maximize_raises_the_chosen_channel(tiny: Tiny) -> None:
    picture = preimage.maximize(tiny, "block2:3", size=32, preset="maximize", schedule=[[0.05, 40]], device="cpu")
    assert picture.shape == (1, 3, 32, 32)
    phi = preimage.from_module(tiny, "block2")
    with torch.no_grad():
        ours = float(phi(picture)[0, 3].mean())
        grey = float(phi(torch.full((1, 3, 32, 32), 0.5))[0, 3].mean())
        noise = float(phi(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))[0, 3].mean())
    assert ours > 2 * max(grey, noise, 1e-6)
    with pytest.raises(ValueError, match="node:channel"):
        preimage.maximize(tiny, "block2")


def test_caricature_changes_the_images(tiny: Tiny, images: torch.Tensor) -> None:
    out = preimage.caricature(images, preimage.from_module(tiny, "block1"), schedule=[[0.05, 10]], device="cpu")
    assert out.shape == images.shape and float((out - images).abs().mean()) > 1e-3


def test_presets_resolve_per_depth_for_a_users_module_as_for_the_same_layer_by_name() -> None:
    model = torchvision.models.resnet18(weights=None)
    for node in ("conv1", "layer2", "layer3", "fc"):
        mine, named = preimage.from_module(model, node), preimage.build_representation(f"torchvision:resnet18:{node}",
                                                                                         weights="random")
        assert mine.depth == named.depth
        for preset in ("mv2015", "tuned", "maximize"):
            assert resolve_preset(preset, mine) == resolve_preset(preset, named), (node, preset)
    tiny = Tiny()
    # the CNN rule by relative depth: λTV 1 in the first 0.3, 100 past 0.6 (mv2015)
    assert gd_config("mv2015", preimage.from_module(tiny, "stem")).lambda_tv == 1.0
    assert gd_config("mv2015", preimage.from_module(tiny, "fc")).lambda_tv == 100.0


def test_receptive_field_is_measured_for_a_users_module(tiny: Tiny) -> None:
    field = receptive_field(preimage.from_module(tiny, "block1"))
    # stem 3×3 stride 2 (padding 1), then the block's two 3×3 (padding 1): 3 + 2·2 + 2·2 = 11 pixels, stride 2,
    # offset −1 − 2 − 2 (the residual path sees less, so it adds nothing)
    assert (field.size, field.stride, field.offset) == (11, 2, -5)


def test_vit_tokens_work_through_the_api() -> None:
    vit = torchvision.models.vit_b_16(weights=None)
    phi = preimage.from_module(vit, "encoder.layers.encoder_layer_0", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert phi.output_shape(224, 224) == (197, 768)
    x = prepare_image(load_photo("chelsea"), size=224, grey=False)[None]
    result = preimage.invert(x, phi, schedule=[[0.004, 2]], device="cpu")
    assert result.images.shape == (1, 3, 224, 224) and result.normalized_loss[0] > 0
    assert preimage.maximize(phi, 7, schedule=[[0.05, 2]], device="cpu").shape == (1, 3, 224, 224)
    assert receptive_field(phi).size == 224


def test_the_learned_method_through_the_api_equals_the_cli(tmp_path: Path) -> None:
    assert main(["invert", "--method", "learned", "--checkpoint", "hog", "builtin:camera", "--out", str(tmp_path),
                 "progress=false"]) == 0
    cli = torch.from_numpy(np.load(tmp_path / "camera.npy")).permute(2, 0, 1)
    ours = preimage.invert(load_image(photo_path("camera")), "hog", method="learned", device="cpu")
    assert ours.images.shape[1] == 1
    torch.testing.assert_close(ours.images[0], cli, rtol=0, atol=1e-6)


def test_load_inverter_and_list_inverters() -> None:
    listed = {i["name"]: i for i in preimage.list_inverters()}
    assert {"hog", "hogb", "dsift", "efficientnet_lite0:stage4", "efficientnet_lite0:pool"} <= set(listed)
    assert listed["hog"]["grey"] and listed["hog"]["image_size"] == [64, 64]
    assert "image_error" in listed["efficientnet_lite0:stage4"]["validation"]
    inverter = preimage.load_inverter("hog")
    assert inverter.representation.spec == "hog" and inverter.manifest["spec"] == "hog"
    with pytest.raises(ValueError, match="not a shipped name"):
        preimage.load_inverter("no_such_inverter")


def test_bad_input_is_named(images: torch.Tensor) -> None:
    cases = [(torch.zeros(0, 3, 32, 32), "empty batch"), (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
             (images * 255, r"in \[0, 1\]"), (torch.zeros(2, 4, 32, 32), "shape"), ([1, 2], "tensor")]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            preimage.invert(bad, "hog")
    with pytest.raises(ValueError, match="unknown method"):
        preimage.invert(images, "hog", method="magic")
    with pytest.raises(ValueError, match="not learned"):
        preimage.invert(images, "hog", method="learned", lambda_tv=3)


def test_top_level_exposes_the_api_and_little_else() -> None:
    public = {n for n in dir(preimage) if not n.startswith("_") and not isinstance(getattr(preimage, n), types.ModuleType)}
    assert public == set(preimage.__all__) - {"__version__"} and isinstance(preimage.__version__, str)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        preimage.nope  # noqa: B018


def test_vit_tokens_work_through_the_learned_and_hybrid_methods(tmp_path: Path) -> None:
    """A decoder of ViT-B/16 tokens (read as one vector), trained for a few steps, through the API's learned and
    hybrid methods, and the same bundle through the shipped-name resolver's path form."""
    spec = "torchvision:vit_b_16:encoder.layers.encoder_layer_0"
    run_dir = tmp_path / "vit"
    assert main(["train", "-c", "tiny", f"run_dir={run_dir}", f"representation={spec}", "grey=false",
                 "representation_options={weights: random}", "data.crop=224", "data.val_size=4", "data.batch_size=2",
                 "decoder.input_scale=1.0", "decoder.fc_widths=[32]", "trainer.max_steps=2",
                 "trainer.val_check_interval=2", "image_log_every=100"]) == 0
    bundle = run_dir / "bundle.pt"
    assert preimage.load_inverter(bundle).manifest["feature_shape"] == [197, 768]
    x = prepare_image(load_photo("chelsea"), size=224, grey=False)[None]
    phi = preimage.build_representation(spec, weights="random")
    learned = preimage.invert(x, phi, method="learned", bundle=bundle, device="cpu")
    hybrid = preimage.invert(x, phi, method="hybrid", bundle=bundle, schedule=[[0.002, 2]], device="cpu")
    assert learned.images.shape == hybrid.images.shape == (1, 3, 224, 224)
    assert hybrid.settings["iterations"] == 2 and learned.settings == {}
