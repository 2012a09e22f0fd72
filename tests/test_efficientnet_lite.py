"""EfficientNet-Lite0 (efficientnet_lite0:<layer>) against an independent implementation and real predictions."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from preimage import build_representation
from preimage.imagesets import prepare_image
from preimage.photos import load_photo
from preimage.representations import efficientnet_lite
from preimage.representations.efficientnet_lite import EFFICIENTNET_LITE0_LAYERS, efficientnet_lite0_network, weights_file

STRIDES = {"stem": 2, "stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 16, "stage6": 32,
           "stage7": 32, "head": 32}
CHANNELS = {"stem": 32, "stage1": 16, "stage2": 24, "stage3": 40, "stage4": 80, "stage5": 112, "stage6": 192,
            "stage7": 320, "head": 1280}
LAST_BLOCK = {"stage1": 0, "stage2": 2, "stage3": 4, "stage4": 7, "stage5": 10, "stage6": 14, "stage7": 15}


@pytest.fixture(scope="module")
def reference():
    """The third-party efficientnet_lite_pytorch model (EfficientNet-PyTorch's code), dynamic "same" padding."""
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    model = lite.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_file()), image_size=None)
    return model.eval()


def _reference_layers(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every named layer from the third-party model, its input preprocessed as (255·x − 127) / 128 here."""
    inputs = (255.0 * x - 127.0) / 128.0
    out: dict[str, torch.Tensor] = {}
    hooks = [model._blocks[i].register_forward_hook(lambda m, a, o, name=name: out.__setitem__(name, o.clone()))
             for name, i in LAST_BLOCK.items()]
    try:
        with torch.no_grad():
            out["stem"] = model._swish(model._bn0(model._conv_stem(inputs)))
            out["head"] = model.extract_features(inputs)
            out["pool"] = out["head"].mean(dim=(2, 3))
            out["logits"] = model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return out


@pytest.mark.parametrize("size", [224, 193])
def test_every_layer_equals_the_third_party_implementation(reference, size: int) -> None:
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    expected = _reference_layers(reference, x)
    for layer in EFFICIENTNET_LITE0_LAYERS:
        with torch.no_grad():
            ours = build_representation(f"efficientnet_lite0:{layer}")(x)
        ref = expected[layer].reshape(ours.shape)
        assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max(), layer


def test_real_predictions_on_the_built_in_photos() -> None:
    logits = build_representation("efficientnet_lite0:logits")
    photos = torch.stack([prepare_image(load_photo(n), size=224, grey=False) for n in ("chelsea", "coffee")])
    with torch.no_grad():
        top = logits(photos).softmax(1).argmax(1).tolist()
    assert 281 <= top[0] <= 285  # a cat (tabby, tiger cat, Persian, Siamese, Egyptian cat)
    assert top[1] == 967  # espresso


@pytest.mark.parametrize("size", [(224, 224), (97, 130)])
def test_shapes_of_every_layer(size: tuple[int, int]) -> None:
    h, w = size
    x = torch.rand(1, 3, h, w)
    for layer in EFFICIENTNET_LITE0_LAYERS:
        rep = build_representation(f"efficientnet_lite0:{layer}", weights="random")
        if layer in STRIDES:  # TensorFlow "SAME": ceil(n / stride) at every stride-2 step
            s = STRIDES[layer]
            expected = (CHANNELS[layer], math.ceil(h / s), math.ceil(w / s))
        else:
            expected = (1280,) if layer == "pool" else (1000,)
        assert rep.output_shape(h, w) == expected, layer
        with torch.no_grad():
            assert tuple(rep(x).shape) == (1, *expected), layer
    assert rep.min_size == (1, 1) and rep.max_size is None


def test_parameters_match_the_weights_file() -> None:
    network = efficientnet_lite0_network("logits")
    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    file_params = sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert sum(p.numel() for p in network.parameters()) == file_params == 4_652_008


@pytest.mark.parametrize("layer", ["stem", "stage4", "head", "prob"])
def test_folded_batch_norms_change_no_feature_or_gradient(layer: str) -> None:
    """Φ runs the network with its batch norms folded into the convolutions: none is left, and its features and
    pixel gradients are those of the unfolded network (the weights file's layout) computed in float64."""
    rep = build_representation(f"efficientnet_lite0:{layer}")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in rep.network.modules())
    reference = build_representation(f"efficientnet_lite0:{layer}")
    reference.network = efficientnet_lite0_network(layer)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in reference.network.modules())
    x = torch.rand(2, 3, 227, 227, generator=torch.Generator().manual_seed(3))
    results = []
    for phi, dtype in ((rep, torch.float32), (reference.double(), torch.float64)):
        pixels = x.to(dtype).requires_grad_(True)
        features = phi(pixels)
        (grad,) = torch.autograd.grad(features.square().sum(), pixels)
        results.append((features.detach().double(), grad.double()))
    (ours, ours_grad), (exact, exact_grad) = results
    assert float((ours - exact).norm() / exact.norm()) < 1e-5
    # a ReLU6 whose input lies within rounding of 0 or 6 switches its gradient in any float32 variant, folded or not
    # (benchmark_network.py: 1e-3 to 1e-2 from stage2 on, the unfolded network's own included)
    assert float((ours_grad - exact_grad).norm() / exact_grad.norm()) < 5e-2


def test_the_heads_stand_in_passes_its_clips_gradient() -> None:
    """``fast``'s stand-in at the head: the head's features to the bit; its pixel gradient that of the head's affine
    input (the network with the head's ReLU6 taken out), which the clip's own gradient is not; Φ itself elsewhere."""
    rep = build_representation("efficientnet_lite0:head")
    stand_in = rep.surrogate()
    unclipped = build_representation("efficientnet_lite0:head")
    unclipped.network.head.act = torch.nn.Identity()
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    weights = torch.randn(2, 1280, 3, 3, generator=torch.Generator().manual_seed(6))
    grads = []
    for phi in (stand_in, unclipped, rep):
        pixels = x.clone().requires_grad_(True)
        features = phi(pixels)
        grads.append(torch.autograd.grad((features * weights).sum(), pixels)[0])
        if phi is stand_in:
            assert torch.equal(features, rep(x))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert float((grads[2] - grads[1]).norm() / grads[1].norm()) > 0.1
    for layer in ("stage7", "pool"):
        other = build_representation(f"efficientnet_lite0:{layer}")
        assert other.surrogate() is other


@pytest.mark.parametrize("layer", ["stage3", "head", "logits"])
def test_channels_last_input_changes_no_feature_or_gradient(layer: str) -> None:
    """On the CPU the network runs on a channels-last copy of its input; features and their gradient with
    respect to the pixels are those of the contiguous layout, and the features come back contiguous."""
    rep = build_representation(f"efficientnet_lite0:{layer}")
    assert rep.channels_last
    for size in (224, 227):
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        results = []
        for flag in (True, False):
            rep.channels_last = flag
            pixels = x.clone().requires_grad_(True)
            features = rep(pixels)
            (grad,) = torch.autograd.grad(features.square().sum(), pixels)
            results.append((features.detach(), grad))
        (ours, ours_grad), (plain, plain_grad) = results
        assert ours.is_contiguous()
        assert (ours - plain).abs().max() <= 1e-5 * plain.abs().max(), size
        assert (ours_grad - plain_grad).abs().max() <= 1e-4 * plain_grad.abs().max(), size


@pytest.mark.parametrize("layer", ["stem", "stage2"])
def test_gradcheck(layer: str) -> None:
    rep = build_representation(f"efficientnet_lite0:{layer}").double()
    x = torch.rand(1, 3, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    assert torch.autograd.gradcheck(rep, (x,), eps=1e-6, atol=1e-5)


def _support_start(rep, side: int, row: int) -> int:
    """First input row where ∂(Σ_channels Φ[:, row, row])/∂x is non-zero (a random photo-free input)."""
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    (grad,) = torch.autograd.grad(rep(x)[0, :, row, row].sum(), x)
    rows = grad[0].abs().sum((0, 2)).nonzero().flatten()
    assert 0 < int(rows[0]) and int(rows[-1]) < side - 1, "the field reaches the border: pick a larger side"
    return int(rows[0])


@pytest.mark.parametrize("layer, sides", [("stage2", (227, 226, 230, 233)), ("stage3", (227, 229, 235)),
                                          ("stage4", (291, 297, 303))])
def test_grid_offset_is_where_the_cells_windows_moved(layer: str, sides: tuple[int, ...]) -> None:
    """At a side that is not a multiple of the stride, "SAME" padding moves every cell's window up by
    grid_offset pixels from where it lies at the next multiple: measured here on the gradient's support."""
    rep = build_representation(f"efficientnet_lite0:{layer}", weights="random")
    step = rep.grid_step
    assert step == STRIDES[layer]
    for side in sides:
        multiple = -(-side // step) * step
        row = side // step // 2
        offset = rep.grid_offset(side, side)
        assert offset[0] == offset[1] and rep.grid_offset(multiple, multiple) == (0, 0)
        assert _support_start(rep, side, row) + offset[0] == _support_start(rep, multiple, row), side
