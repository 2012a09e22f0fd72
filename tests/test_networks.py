"""Decoder architectures of the learned inverter: shapes for every representation, any size, budgets, gradients."""
from __future__ import annotations

import pytest
import torch

from preimage import build_representation, list_representations
from preimage.inversion.networks import Decoder, DecoderConfig, build_decoder, count_upsamplings

SMALL_FC = {"fc_widths": (32,), "width": 16}  # a tiny vector decoder: the D&B widths are checked on `meta`


def _representation(spec: str):
    return build_representation(spec, weights="random") if ":" in spec else build_representation(spec)


def _image_side(representation) -> int:
    """A small valid side: 64, or more if the representation needs it (227 for CaffeNet's fc layers)."""
    if getattr(representation, "max_size", None) is not None:
        return 227
    return max(64, representation.min_size[0])


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("spec", list_representations())
def test_output_shape_for_every_representation(spec: str) -> None:
    representation = _representation(spec)
    side = _image_side(representation)
    shape = representation.output_shape(side, side)
    decoder = build_decoder(shape, (side, side), **(SMALL_FC if len(shape) == 1 else {"width": 32}))
    with torch.no_grad():
        out = decoder(torch.rand(1, *shape), output_size=(side, side))
    assert out.shape == (1, 3, side, side)
    # the decoder's own output is within SHORTFALL of the image, never a tiny map blown up
    native = (shape[1] if len(shape) == 3 else decoder.config.seed_side) * 2**decoder.upsamplings
    assert side / 1.2 <= native < 2 * side


def test_fully_convolutional_on_another_size() -> None:
    hog = build_representation("hog")
    decoder = build_decoder(hog.output_shape(64, 64), (64, 64), width=32)
    features = hog(torch.rand(1, 3, 96, 80))
    assert features.shape[-2:] == (12, 10)
    with torch.no_grad():
        assert decoder(features, output_size=(96, 80)).shape == (1, 3, 96, 80)  # native 96x80: no resize
        assert decoder(features, output_size=(101, 77)).shape == (1, 3, 101, 77)


def test_vector_decoder_defaults_are_dosovitskiy_brox() -> None:
    with torch.device("meta"):
        decoder = build_decoder((4096,), None)
    linears = [m for m in decoder.fc if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4096, 4096)] * 3  # → 256 x 4 x 4
    assert decoder.upsamplings == 4  # 4 x 4 → 64 x 64
    out = decoder(torch.empty(2, 4096, device="meta"), output_size=(227, 227))
    assert out.shape == (2, 3, 227, 227)
    assert 50e6 < _params(decoder) < 52e6


@pytest.mark.parametrize("spec", ["hog", "hogb", "dsift"])
@pytest.mark.parametrize("side", [64, 128])
def test_handcrafted_defaults_fit_the_bundle_budget(spec: str, side: int) -> None:
    shape = build_representation(spec).output_shape(side, side)
    with torch.device("meta"):
        decoder = build_decoder(shape, (side, side))
    assert _params(decoder) <= 5_000_000  # float32: a bundle of at most 20 MB


def test_upsamplings_from_the_stride() -> None:
    config = DecoderConfig()
    assert count_upsamplings((31, 8, 8), (64, 64), config) == 3  # HOG: cell 8
    assert count_upsamplings((128, 4, 4), (64, 64), config) == 4  # DSIFT: step 15
    assert count_upsamplings((256, 13, 13), (227, 227), config) == 4  # conv5: stride 16, 227/13 = 17.5
    assert count_upsamplings((64, 56, 56), (227, 227), config) == 2  # conv1: stride 4
    assert count_upsamplings((4096,), (227, 227), config) == 6  # 4 x 4 → 256 x 256
    assert count_upsamplings((31, 8, 8), None, DecoderConfig(upsamplings=2)) == 2
    with pytest.raises(ValueError, match="image_size"):
        count_upsamplings((31, 8, 8), None, config)


def test_grey_output_and_knobs() -> None:
    decoder = build_decoder((31, 4, 4), (32, 32), width=8, pre_convs=1, stage_convs=0, out_channels=1)
    assert decoder(torch.rand(2, 31, 4, 4), (32, 32)).shape == (2, 1, 32, 32)
    convs = [m for m in decoder.layers if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2  # one pre-conv and the output conv


@pytest.mark.parametrize(
    "kwargs, match",
    [({"out_channels": 2}, "out_channels"), ({"width": 0}, "width"), ({"leaky_slope": -1.0}, "leaky_slope"),
     ({"fc_widths": 7}, "fc_widths"), ({"bogus": 1}, "unknown decoder option"),
     ({"input_dropout": 1.0}, "input_dropout"), ({"input_dropout": -0.1}, "input_dropout"),
     ({"input_dropout": True}, "input_dropout")],
)
def test_bad_knobs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_decoder((31, 8, 8), (64, 64), **kwargs)


def test_bad_features() -> None:
    decoder = build_decoder((31, 4, 4), (32, 32), width=8)
    with pytest.raises(ValueError, match=r"\(B, 31, h, w\)"):
        decoder(torch.rand(1, 30, 4, 4), (32, 32))
    with pytest.raises(ValueError, match="feature_shape"):
        Decoder((31, 4, 4, 4), (32, 32))
    tokens = build_decoder((5, 6), (32, 32), width=8, fc_widths=[16])  # tokens: their count is fixed
    assert tokens(torch.rand(2, 5, 6), (32, 32)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\(B, 5, 6\)"):
        tokens(torch.rand(2, 4, 6), (32, 32))


def test_gradients_flow_to_every_parameter_and_the_features() -> None:
    decoder = build_decoder((128, 2, 2), (32, 32), width=16, min_width=8)
    features = torch.rand(2, 128, 2, 2, requires_grad=True)
    decoder(features, (30, 34)).square().mean().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())


def _fan_in_by_probe(layer: torch.nn.Module) -> int:
    """Inputs feeding one output unit, counted by running the layer on ones with its weights set to ones."""
    probe = type(layer)(**({"in_features": layer.in_features, "out_features": 1} if isinstance(layer, torch.nn.Linear)
                          else {"in_channels": layer.in_channels, "out_channels": 1, "kernel_size": layer.kernel_size,
                                "stride": layer.stride, "padding": layer.padding}))
    torch.nn.init.ones_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    shape = (1, layer.in_features) if isinstance(layer, torch.nn.Linear) else (1, layer.in_channels, 8, 8)
    with torch.no_grad():
        return int(probe(torch.ones(shape)).max())  # an interior unit sees every tap


@pytest.mark.parametrize("spec", ["hog", "dsift", "alexnet:fc7"])
def test_initialization_is_he_for_leaky_relu(spec: str) -> None:
    """Weights start at std gain / sqrt(fan_in) (fan-in counted by a probe, not from the weight shape), and the
    hidden activations keep their scale through every layer (PyTorch's default init shrinks it ~√3 per layer)."""
    torch.manual_seed(0)
    representation = _representation(spec)
    side = _image_side(representation) * (1 if ":" in spec else 4)  # large maps: zero padding loses little
    shape = representation.output_shape(side, side)
    decoder = build_decoder(shape, (side, side), **(SMALL_FC if len(shape) == 1 else {"width": 128, "min_width": 32}))
    slope = decoder.config.leaky_slope
    gain = (2 / (1 + slope**2)) ** 0.5
    weighted = [m for m in decoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    for layer in weighted[:-1]:
        expected = gain / _fan_in_by_probe(layer) ** 0.5
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.1), layer
        assert torch.count_nonzero(layer.bias) == 0
    assert weighted[-1].bias.eq(0.5).all()

    x = torch.randn(4, *shape)
    assert 0.25 < _scale_kept(decoder, x) < 4  # He init: a random walk around 1 at this width
    for layer in weighted:
        layer.reset_parameters()  # PyTorch's default init, for contrast
    assert _scale_kept(decoder, x) < 0.05


def _scale_kept(decoder: Decoder, features: torch.Tensor) -> float:
    """Mean square of the last hidden activation over that of the first."""
    moments, x = [], features
    with torch.no_grad():
        if decoder.fc is not None:
            x = decoder.fc(x).view(-1, decoder.config.width, decoder.config.seed_side, decoder.config.seed_side)
            moments.append(x.square().mean().item())
        for layer in decoder.layers[:-1]:
            x = layer(x)
            if isinstance(layer, torch.nn.LeakyReLU):
                moments.append(x.square().mean().item())
    return moments[-1] / moments[0]


@pytest.mark.parametrize("side", [64, 100, 192])
def test_cell_puts_each_dsift_frame_at_its_centre(side: int) -> None:
    """With ``cell = grid_step`` the pixels a feature cell paints are centred where VLFeat centres its frame
    (upper-left bin centre at step·r, four bins: centre step·r + 1.5·bin_size), at every image size."""
    dsift = build_representation("dsift")
    assert dsift.grid_step == 15 and build_representation("hog").grid_step == 8
    assert build_representation("dsift", bin_size=4).grid_step is None  # frames no longer tile
    rows, cols = dsift.output_shape(side, side)[1:]
    decoder = build_decoder((1, rows, cols), (side, side), pre_convs=0, stage_convs=0, upsamplings=0,
                            cell=dsift.grid_step, out_channels=1)
    last = decoder.layers[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    with torch.no_grad():
        last.weight[0, 0, 1, 1] = 1.0  # the image is the feature map itself, resized
    for r, c in [(0, 0), (rows - 1, cols - 1), (rows // 2, 1)]:
        features = torch.zeros(1, 1, rows, cols)
        features[0, 0, r, c] = 1.0
        with torch.no_grad():
            image = decoder(features, (side, side))[0, 0].clamp(min=0)
        assert image.shape == (side, side)
        span = (rows * 15, cols * 15)  # past the last cell the edge repeats
        assert torch.equal(image[span[0]:], image[span[0] - 1].expand(side - span[0], side))
        image = image[: span[0], : span[1]]
        ys, xs = torch.meshgrid(torch.arange(span[0], dtype=torch.float32),
                                torch.arange(span[1], dtype=torch.float32), indexing="ij")
        centre = ((image * ys).sum() / image.sum(), (image * xs).sum() / image.sum())
        expected = (15 * r + 7.5, 15 * c + 7.5)
        # within a tenth of a cell (the last cell loses its bilinear tail at the crop); stretching the output
        # over the whole image instead put the last frame of a 192-px image 11 px off
        assert abs(centre[0] - expected[0]) < 1.5 and abs(centre[1] - expected[1]) < 1.5, (r, c, centre, expected)


@pytest.mark.parametrize("side", [64, 76, 192])
def test_paint_margin_paints_past_the_last_cell(side: int) -> None:
    """``paint_margin`` lets the decoder paint the pixels past the last DSIFT cell from a zero cell, where the
    default repeats the last cell's edge; the cells' own pixels are unchanged away from that border."""
    dsift = build_representation("dsift")
    rows, cols = dsift.output_shape(side, side)[1:]
    span, cell = rows * 15, 15
    outputs = {}
    for paint in (False, True):
        decoder = build_decoder((1, rows, cols), (side, side), pre_convs=0, stage_convs=0, upsamplings=0,
                                cell=cell, out_channels=1, paint_margin=paint)
        last = decoder.layers[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.constant_(last.bias, 0.25)
        with torch.no_grad():
            last.weight[0, 0, 1, 1] = 1.0  # image = 0.25 + the feature map, resized
            outputs[paint] = decoder(torch.ones(1, 1, rows, cols), (side, side))[0, 0]
        assert outputs[paint].shape == (side, side)
    plain, painted = outputs[False], outputs[True]
    assert torch.allclose(plain, torch.full_like(plain, 1.25))  # every pixel repeats a cell's value
    assert torch.equal(painted[: span - cell, : span - cell], plain[: span - cell, : span - cell])
    if side > span:  # the margin blends from the last cell's paint (1.25) into the zero cell's (0.25)
        assert painted[span:].max() < 1.25 and painted[-1, 0] < 1.0
        assert painted[:, span:].max() < 1.25 and painted[0, -1] < 1.0
    else:
        assert torch.equal(painted, plain)


@pytest.mark.parametrize("key", ["paint_margin", "input_log"])
def test_switches_must_be_bools(key: str) -> None:
    with pytest.raises(ValueError, match=key):
        DecoderConfig(**{key: "yes"})


def test_input_log_reads_the_log_of_the_features() -> None:
    """A decoder with ``input_log`` is the same decoder fed ``log(max(f, 1e-30))`` less each row's mean: zeros
    read as log(1e-30)."""
    probs = torch.softmax(torch.randn(3, 10, generator=torch.Generator().manual_seed(0)) * 4, dim=1)
    probs[0, :5] = 0.0  # the dark-knowledge experiment's zeroed classes
    logged = build_decoder((10,), (32, 32), width=8, fc_widths=(16,), input_scale=0.5, input_log=True).eval()
    plain = build_decoder((10,), (32, 32), width=8, fc_widths=(16,), input_scale=0.5).eval()
    plain.load_state_dict(logged.state_dict())
    log_probs = torch.where(probs > 0, probs.log(), torch.full_like(probs, -69.07755278982137))  # ln 1e-30
    expected_input = log_probs - log_probs.sum(dim=1, keepdim=True) / 10
    with torch.no_grad():
        assert torch.allclose(logged(probs, (32, 32)), plain(expected_input, (32, 32)), atol=1e-6)


def test_input_dropout_zeroes_whole_channels_in_training_only() -> None:
    """In training each (item, channel) of the prepared features is either zeroed or scaled by 1 / (1 − p), as
    read at the first convolution; in evaluation the decoder is the same decoder without dropout."""
    p = 0.5
    decoder = build_decoder((12, 4, 4), (32, 32), width=8, pre_convs=1, input_scale=2.0, input_dropout=p)
    plain = build_decoder((12, 4, 4), (32, 32), width=8, pre_convs=1, input_scale=2.0)
    plain.load_state_dict(decoder.state_dict())
    features = torch.rand(6, 12, 4, 4) + 0.1
    seen = []
    decoder.layers[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    torch.manual_seed(0)
    decoder.train()(features, (32, 32))
    ratio = seen[0] / (2.0 * features)  # per entry: 0 (dropped) or 1 / (1 - p)
    per_channel = ratio.flatten(2)
    assert torch.equal(per_channel.amin(2), per_channel.amax(2))  # one factor per (item, channel)
    factors = per_channel[..., 0]
    dropped = factors == 0
    assert torch.allclose(factors[~dropped], torch.full_like(factors[~dropped], 1 / (1 - p)))
    assert 0 < int(dropped.sum()) < dropped.numel()
    with torch.no_grad():
        torch.testing.assert_close(decoder.eval()(features, (32, 32)), plain.eval()(features, (32, 32)), rtol=0, atol=0)


def test_offset_places_the_painted_cells_above_and_left_of_the_image() -> None:
    """With ``cell``, the image is the painted cells' canvas from pixel ``offset`` on; without, offset is ignored."""
    decoder = build_decoder((8, 4, 5), (32, 40), width=8, cell=8).eval()
    features = torch.rand(2, 8, 4, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        canvas = decoder(features, (32, 40))
        assert torch.equal(decoder(features, (27, 33), (3, 5)), canvas[..., 3:30, 5:38])
        shifted = decoder(features, (31, 38), (3, 5))  # past the canvas: the last painted row/column repeats
        assert torch.equal(shifted[..., :29, :35], canvas[..., 3:, 5:])
        assert torch.equal(shifted[..., 29:, :35], canvas[..., 31:, 5:].expand(-1, -1, 2, -1))
    with pytest.raises(ValueError, match="offset must be non-negative"):
        decoder(features, (32, 40), (-1, 0))
    resized = build_decoder((8, 4, 5), (32, 40), width=8).eval()
    with torch.no_grad():
        assert torch.equal(resized(features, (27, 33), (3, 5)), resized(features, (27, 33)))
