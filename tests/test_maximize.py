"""Maximization on the real network: transforms against hand-made cases, the Fourier parametrization, Adam,
the class scores under transforms, and the .npy naming contract."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from preimage import build_representation
from preimage.analysis.transform_score import class_probabilities, transformed_scores
from preimage.analysis.visualize import maximize
from preimage.inversion.gd import GDConfig, gd_setup, optimize_gd
from preimage.inversion.objectives import NeuronActivation, neuron_weights
from preimage.inversion.parametrization import COLOR_CORRELATION_SQRT, FourierSpace
from preimage.inversion.presets import resolve_preset
from preimage.inversion.transforms import Affine, affine, evaluation_transforms, random_affine

LOGITS = "efficientnet_lite0:logits"


# ------------------------------------------------------------------------------------------ transforms


def test_identity_transform_returns_the_image() -> None:
    x = torch.rand(2, 3, 9, 12)
    assert torch.equal(affine(x, [Affine(), Affine()]), x)


def test_integer_shift_moves_the_content() -> None:
    x = torch.rand(1, 3, 20, 24, dtype=torch.float64)
    out = affine(x, [Affine(shift=(2.0, -3.0))])  # content 2 px down, 3 px left
    # out[y, x] = in[y − 2, x + 3] wherever that pixel exists
    assert torch.allclose(out[..., 2:, :-3], x[..., :-2, 3:], atol=1e-6)


def test_quarter_turn_is_rot90_counter_clockwise() -> None:
    x = torch.rand(1, 2, 15, 15, dtype=torch.float64)
    out = affine(x, [Affine(angle=90.0)])
    assert torch.allclose(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-6)  # the top-right corner goes top-left


def test_scale_about_the_centre_on_a_ramp() -> None:
    w = 21
    ramp = torch.arange(w, dtype=torch.float64).expand(1, 1, 11, w).clone()  # value = column index
    out = affine(ramp, [Affine(scale=2.0)])
    centre = (w - 1) / 2
    expected = centre + (torch.arange(w, dtype=torch.float64) - centre) / 2  # bilinear is exact on a ramp
    assert torch.allclose(out[0, 0, 5], expected, atol=1e-6)


def test_random_affine_draws_from_the_row_generators() -> None:
    x = torch.rand(2, 3, 16, 16)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    a = random_affine(x, gens, scale=(0.9, 1.1), rotate=10.0)
    b = random_affine(x, [torch.Generator().manual_seed(s) for s in (0, 1)], scale=(0.9, 1.1), rotate=10.0)
    assert torch.equal(a, b) and not torch.allclose(a, x)


def test_evaluation_transforms_are_fixed_and_in_range() -> None:
    ts = evaluation_transforms(8)
    assert ts == evaluation_transforms(8) and len(set(ts)) == 8
    for t in ts:
        assert max(map(abs, t.shift)) <= 16 and 0.8 <= t.scale <= 1.2 and abs(t.angle) <= 15


# ------------------------------------------------------------------------------------------ parametrizations


def test_fourier_space_round_trip_and_start() -> None:
    space = FourierSpace(3, 17, 22)
    image = torch.rand(2, 3, 17, 22) * 0.9 + 0.05
    assert torch.allclose(space.to_image(space.from_image(image)), image, atol=1e-5)
    start = space.to_image(space.random(torch.Generator().manual_seed(0))[None])
    assert abs(float(start.mean()) - 0.5) < 0.01 and float(start.std()) < 0.05


def test_fourier_space_by_the_formula() -> None:
    """One real cosine in the spectrum gives sigmoid(M · cos-wave · S / 4) (orthonormal inverse FFT, written out)."""
    h, w = 8, 8
    space = FourierSpace(3, h, w)
    z = torch.zeros(1, 3, h, w // 2 + 1, 2)
    z[0, 0, 1, 0, 0] = 1.0  # channel 0, frequency (1/8, 0) cycles per pixel, real part 1
    ys = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    # irfft2 (ortho) of the one bin (1, 0), times S = 1/f = 8: the real part of exp(2πi y / 8) · 8 / sqrt(h w), / 4
    wave = torch.cos(2 * math.pi * ys / h) * 8 / math.sqrt(h * w) / 4
    m = torch.tensor(COLOR_CORRELATION_SQRT, dtype=torch.float64)
    m = m / m.norm(dim=0).max()
    expected = torch.sigmoid(m[:, 0, None, None] * wave)
    assert torch.allclose(space.to_image(z)[0].double(), expected, atol=1e-6)


def test_gd_config_checks_the_new_settings() -> None:
    for bad in ({"parametrization": "wavelet"}, {"optimizer": "lbfgs"}, {"scale": [1.1, 0.9]}, {"rotate": -1},
                {"scale": [0, 1]}, {"scale": "big"}):
        with pytest.raises(ValueError):
            GDConfig(**bad)
    assert GDConfig(scale=[0.9, 1.1]).record()["scale"] == [0.9, 1.1]


@pytest.fixture(scope="module")
def logits() -> nn.Module:
    return build_representation(LOGITS).eval()


@pytest.mark.parametrize("preset", ["maximize", "maximize_fourier"])
def test_each_parametrization_raises_the_class(logits: nn.Module, preset: str) -> None:
    settings = resolve_preset(preset, LOGITS)
    rate = settings["schedule"][0][0]
    config = GDConfig(**{**settings, "schedule": [[rate, 6]]})
    w = neuron_weights((1000,), 281)[None]
    objective = NeuronActivation(logits, w, 10.0)
    result = optimize_gd(objective, (1, 3, 64, 64), config, progress=False, device="cpu")
    setup = gd_setup(config, 1, 3, 64, 64)
    with torch.no_grad():
        start = float(logits(setup.space.to_image(setup.starts).clamp(0, 1))[0, 281])
        final = float(logits(result.images[:, 0])[0, 281])
    assert final > start + 0.5, (start, final)  # the class logit went up (6 steps: by about 1 in pixel space)


def test_adam_by_hand() -> None:
    """Adam on E = Σ x² from x = 1: the first step is exactly lr per value (m̂ / √v̂ = 1)."""
    from preimage.inversion.gd import descend

    x = torch.ones(1, 4)
    out, _, _ = descend(x, lambda v: ((v**2).sum(1), (v**2).sum(1)), [(0.1, 1)], momentum=0.9, step_scale=1.0,
                        optimizer="adam", progress=False)
    assert torch.allclose(out, torch.full((1, 4), 0.9), atol=1e-6)


# ------------------------------------------------------------------------------------------ class scores


class MeanLogits(nn.Module):
    """Logits (mean of R, mean of G, 0) × 4: softmax is written out below."""

    spec = "test:mean_logits"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean((2, 3))
        return torch.cat([means[:, :2], torch.zeros_like(means[:, :1])], 1) * 4


def test_class_probabilities_by_hand() -> None:
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    p = class_probabilities(MeanLogits(), x, [0, 2], [Affine(), Affine(angle=90.0)])
    r, g = x[:, 0].mean((1, 2)) * 4, x[:, 1].mean((1, 2)) * 4
    denominator = r.exp() + g.exp() + 1
    expected = torch.stack([r[0].exp() / denominator[0], 1 / denominator[1]])
    assert p.shape == (2, 2)
    assert torch.allclose(p[0], expected) and torch.allclose(p[1], expected)  # a quarter turn keeps the means


def test_transformed_scores_average_the_evaluation_transforms() -> None:
    x = torch.rand(3, 3, 24, 24, dtype=torch.float64)
    scores = transformed_scores(MeanLogits(), x, [0, 1, 2])
    by_hand = class_probabilities(MeanLogits(), x, [0, 1, 2], evaluation_transforms(8)).mean(0)
    assert np.allclose(scores["transformed"], by_hand.numpy()) and len(scores["transforms"]) == 8
    assert np.allclose(scores["plain"], class_probabilities(MeanLogits(), x, [0, 1, 2], [Affine()])[0].numpy())


# ------------------------------------------------------------------------------------------ .npy contract


def test_maximize_writes_each_image_as_npy(tmp_path: Path, logits: nn.Module) -> None:
    gd = {"schedule": [[0.05, 2]], "restarts": 2}
    report = maximize(layers=[LOGITS], out=tmp_path, channels=[281, 967], size=48, preset="maximize_fourier", gd=gd,
                      normalizer_images=["builtin:rocket"], normalizer_size=64, device="cpu", progress=False)
    names = [f"efficientnet_lite0_logits-c{c}-r{r}.npy" for c in (281, 967) for r in (0, 1)]
    assert report["arrays"] == names
    for c, k, name in [(0, 0, names[0]), (1, 1, names[3])]:
        array = np.load(tmp_path / name)
        assert array.dtype == np.float32 and array.shape == (48, 48, 3)
        with torch.no_grad():
            activation = float(logits(torch.from_numpy(array).permute(2, 0, 1)[None])[0, (281, 967)[c]])
        assert activation == pytest.approx(report["figures"][LOGITS]["activation_final"][c][k], rel=1e-4, abs=1e-4)
    single = maximize(layers=[LOGITS], out=tmp_path / "one", channels=[281], size=48, preset="maximize_fourier",
                      gd={"schedule": [[0.05, 1]]}, normalizer_images=["builtin:rocket"], normalizer_size=64,
                      device="cpu", progress=False)
    assert single["arrays"] == ["efficientnet_lite0_logits-c281.npy"]


@pytest.mark.parametrize("preset", ["maximize", "maximize_fourier"])
def test_maximize_a_channel_of_an_inner_layer(tmp_path: Path, preset: str) -> None:
    spec = "efficientnet_lite0:stage4"
    report = maximize(layers=[spec], out=tmp_path, channels=[3], target="channel", size=64, preset=preset,
                      gd={"schedule": [[resolve_preset(preset, spec)["schedule"][0][0], 8]]},
                      normalizer_images=["builtin:rocket"], normalizer_size=64, device="cpu", progress=False)
    figures = report["figures"][spec]
    assert figures["activation_final"][0][0] > figures["activation_start"][0][0]
    assert report["arrays"] == ["efficientnet_lite0_stage4-c3.npy"]
