"""Tests for preimage.metrics: hand-computed values, padding, naive references, bad inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from preimage.metrics import (
    feature_error,
    flat_colour,
    image_error,
    mean_pairwise_sq_dist,
    mean_std,
    normalized_loss,
    psnr,
    ssim,
)


def _naive_spread(vectors: list[np.ndarray]) -> float:
    """Mean over all n² ordered pairs (j = k included) of ‖v_j − v_k‖², zero-padding to the longest."""
    d = max(len(v) for v in vectors)
    padded = [np.concatenate([v, np.zeros(d - len(v))]) for v in vectors]
    total = 0.0
    for vj in padded:
        for vk in padded:
            total += float(np.sum((vj - vk) ** 2))
    return total / len(padded) ** 2


# ---------------------------------------------------------------------------------------- feature_error


def test_feature_error_three_vectors_by_hand() -> None:
    # references y1 = (0, 0), y2 = (3, 0), y3 = (0, 4)
    # ‖y1−y2‖² = 9, ‖y1−y3‖² = 16, ‖y2−y3‖² = 9 + 16 = 25
    # ordered pairs: 2·(9 + 16 + 25) = 100 plus three zero diagonal terms, over n² = 9 → N² = 100/9
    ref = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    # reconstructions: (1, 0) → ‖·‖² = 1 → 1/(100/9) = 0.09 ; (3, 2) → 4 → 0.36 ; (0, 4) → 0
    rec = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0]])
    err = feature_error(rec, ref)
    assert err.dtype == torch.float64 and err.shape == (3,)
    torch.testing.assert_close(err, torch.tensor([0.09, 0.36, 0.0], dtype=torch.float64))
    torch.testing.assert_close(mean_pairwise_sq_dist(list(ref.double())), torch.tensor(100 / 9, dtype=torch.float64))


def test_feature_error_two_vectors_by_hand() -> None:
    # y1 = (0, 0), y2 = (2, 0): pairs (1,1)=0, (1,2)=4, (2,1)=4, (2,2)=0 → N² = 8/4 = 2
    # x1 = (1, 0): 1/2 ; x2 = (2, 1): 1/2 ; a fraction, ×100 gives 50 %
    ref = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    rec = torch.tensor([[1.0, 0.0], [2.0, 1.0]])
    torch.testing.assert_close(feature_error(rec, ref), torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_feature_error_spatial_batch_equals_list_and_float32_matches_float64() -> None:
    ref = torch.rand(4, 3, 5, 6)
    rec = ref + 0.1 * torch.randn(4, 3, 5, 6)
    batched = feature_error(rec, ref)
    listed = feature_error(list(rec), list(ref))
    torch.testing.assert_close(batched, listed)
    torch.testing.assert_close(batched, feature_error(rec.double(), ref.double()))


def test_feature_error_padding_by_hand_1d() -> None:
    # y1 = (1, 2) is padded to (1, 2, 0); y2 = (1, 2, 2): ‖y1−y2‖² = 4 → N² = (0 + 4 + 4 + 0)/4 = 2
    # x1 = (1, 1): ‖x1 − y1‖² = 1 → 0.5 ; x2 = (1, 2, 0): ‖x2 − y2‖² = 4 → 2.0
    ref = [torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0, 2.0])]
    rec = [torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0, 0.0])]
    torch.testing.assert_close(feature_error(rec, ref), torch.tensor([0.5, 2.0], dtype=torch.float64))


def test_feature_error_padding_follows_matlab_column_major_order() -> None:
    # y1: (C, h, w) = (1, 1, 2) = [[1, 2]]        → MATLAB 1×2×1, (:) = (1, 2)       → padded (1, 2, 0, 0)
    # y2: (1, 2, 2) = [[1, 5], [2, 0]]           → MATLAB 2×2×1, (:) column-major = (1, 2, 5, 0)
    # ‖y1 − y2‖² = 25 → N² = 2·25/4 = 12.5   (a row-major flatten (1, 5, 2, 0) would give 13/2 = 6.5)
    # x1 = [[1, 7]]: error 25 → 2.0 ; x2 = y2 → 0
    ref = [torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[1.0, 5.0], [2.0, 0.0]]])]
    rec = [torch.tensor([[[1.0, 7.0]]]), ref[1].clone()]
    torch.testing.assert_close(feature_error(rec, ref), torch.tensor([2.0, 0.0], dtype=torch.float64))


def test_mean_pairwise_sq_dist_against_naive_double_loop() -> None:
    gen = np.random.default_rng(0)
    equal = [gen.normal(size=50) for _ in range(7)]
    ragged = [gen.normal(size=int(m)) for m in gen.integers(10, 60, size=6)]
    for vectors in (equal, ragged):
        got = float(mean_pairwise_sq_dist([torch.from_numpy(v) for v in vectors]))
        assert got == pytest.approx(_naive_spread(vectors), rel=1e-12)


def test_feature_error_against_naive_on_random_ragged_data() -> None:
    gen = np.random.default_rng(1)
    ref = [gen.normal(size=int(m)) for m in gen.integers(5, 40, size=5)]
    rec = [r + gen.normal(scale=0.3, size=r.shape) for r in ref]
    expected = [float(np.sum((x - y) ** 2)) / _naive_spread(ref) for x, y in zip(rec, ref)]
    got = feature_error([torch.from_numpy(x) for x in rec], [torch.from_numpy(y) for y in ref])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_feature_error_needs_two_different_images() -> None:
    x = torch.rand(1, 8)
    with pytest.raises(ValueError, match="at least 2 different images"):
        feature_error(x, x)
    same = torch.ones(3, 8)
    with pytest.raises(ValueError, match="at least 2 different images"):
        feature_error(same, same)


@pytest.mark.parametrize(
    ("rec", "ref", "match"),
    [
        (torch.zeros(2, 4), torch.zeros(3, 4), "shapes differ"),
        ([torch.zeros(4)], [torch.zeros(4), torch.zeros(4)], "1 reconstructions but 2"),
        ([torch.zeros(4), torch.zeros(3)], [torch.zeros(4), torch.zeros(4)], "image 1"),
        ([], [], "no images"),
        ("abc", torch.zeros(2, 3), "tensor"),
    ],
)
def test_feature_error_bad_inputs(rec: object, ref: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        feature_error(rec, ref)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- normalized_loss


def test_normalized_loss_by_hand() -> None:
    # y = (3, 4): ‖y‖² = 25, x = (3, 5): ‖x − y‖² = 1 → 0.04
    # y = (0, 2): ‖y‖² = 4,  x = (1, 1): ‖x − y‖² = 1 + 1 = 2 → 0.5
    ref = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    rec = torch.tensor([[3.0, 5.0], [1.0, 1.0]])
    torch.testing.assert_close(normalized_loss(rec, ref), torch.tensor([0.04, 0.5], dtype=torch.float64))
    # a single image is fine here (no pairwise normalization)
    torch.testing.assert_close(normalized_loss(rec[:1], ref[:1]), torch.tensor([0.04], dtype=torch.float64))


def test_normalized_loss_zero_reference() -> None:
    with pytest.raises(ValueError, match=r"image\(s\) \[1\]"):
        normalized_loss(torch.ones(2, 3), torch.tensor([[1.0, 0, 0], [0, 0, 0]]))


# ----------------------------------------------------------------------------------------- image_error


def test_image_error_by_hand() -> None:
    # two 1×1×2 images x0_1 = [0, 0], x0_2 = [1, 1]: ‖x0_1 − x0_2‖² = 2 → N² = (0 + 2 + 2 + 0)/4 = 1
    # x*_1 = [0.5, 0]: 0.25 / 1 = 0.25 ; x*_2 = x0_2: 0
    ref = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 1.0]]]])
    rec = torch.tensor([[[[0.5, 0.0]]], [[[1.0, 1.0]]]])
    torch.testing.assert_close(image_error(rec, ref), torch.tensor([0.25, 0.0], dtype=torch.float64))


def test_image_error_ragged_list_pads() -> None:
    # grey 1×1×1 [1] padded to [1, 0] against 1×1×2 [1, 1]: distance 1 → N² = 2/4 = 0.5
    # x*_1 = [0]: 1/0.5 = 2 ; x*_2 = [1, 0]: 1/0.5 = 2
    ref = [torch.ones(1, 1, 1), torch.ones(1, 1, 2)]
    rec = [torch.zeros(1, 1, 1), torch.tensor([[[1.0, 0.0]]])]
    torch.testing.assert_close(image_error(rec, ref), torch.tensor([2.0, 2.0], dtype=torch.float64))


def test_image_error_single_image_raises() -> None:
    with pytest.raises(ValueError, match="image_error needs at least 2 different images"):
        image_error(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))


# ----------------------------------------------------------------------------------------- psnr / ssim


def test_psnr_closed_form() -> None:
    # constant 0.5 vs 0.6: MSE = 0.01 → 10·log10(1/0.01) = 20 dB
    ref = torch.full((2, 3, 8, 8), 0.6)
    rec = torch.full((2, 3, 8, 8), 0.5)
    torch.testing.assert_close(psnr(rec, ref), torch.full((2,), 20.0, dtype=torch.float64), atol=1e-5, rtol=0)
    # random grey images against 10·log10(1/MSE) per image
    a, b = torch.rand(3, 1, 9, 7), torch.rand(3, 1, 9, 7)
    mse = (a.double() - b.double()).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(psnr(a, b), 10 * torch.log10(1 / mse))
    from torchmetrics.functional.image import peak_signal_noise_ratio  # and a third-party implementation

    expected = peak_signal_noise_ratio(a.double(), b.double(), data_range=1.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(psnr(a, b), expected, rtol=0, atol=1e-6)


def test_psnr_list_of_sizes_and_identical() -> None:
    a, b = torch.rand(3, 12, 12), torch.rand(1, 10, 14)
    got = psnr([a, b], [a, b.clamp(0.1, 0.9)])
    assert got.shape == (2,) and math.isinf(got[0].item()) and math.isfinite(got[1].item())


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_identical_and_different(channels: int) -> None:
    x = torch.rand(2, channels, 16, 16)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    got = ssim(noisy, x)
    assert got.shape == (2,) and bool((got < 1).all()) and bool((got > 0).all())


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_equals_torchmetrics_and_the_formula_written_out(channels: int) -> None:
    """Against torchmetrics' SSIM (a third-party implementation) on random images of several sizes, and
    against Wang et al.'s formula written out pixel by pixel with a 2-d window over the mirrored image."""
    from torchmetrics.functional.image import structural_similarity_index_measure as reference_ssim

    for h, w in [(11, 11), (16, 23), (40, 31)]:
        x = torch.rand(3, channels, h, w, dtype=torch.float64)
        y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
        torch.testing.assert_close(ssim(y, x), reference_ssim(y, x, data_range=1.0, reduction="none"),
                                   rtol=0, atol=1e-12)
    x = torch.rand(1, 1, 12, 13, dtype=torch.float64)
    y = (x + 0.3 * torch.rand_like(x)).clamp(0, 1)
    d = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-d ** 2 / (2 * 1.5 ** 2))
    window = torch.outer(g, g) / torch.outer(g, g).sum()
    px, py = (torch.nn.functional.pad(t, (5, 5, 5, 5), mode="reflect")[0, 0] for t in (x, y))
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    total = 0.0
    for i in range(12):
        for j in range(13):
            a, b = px[i:i + 11, j:j + 11], py[i:i + 11, j:j + 11]
            mx, my = (window * a).sum(), (window * b).sum()
            vx, vy = (window * a * a).sum() - mx ** 2, (window * b * b).sum() - my ** 2
            cxy = (window * a * b).sum() - mx * my
            total += (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    torch.testing.assert_close(ssim(x, y), (total / (12 * 13)).view(1), rtol=0, atol=1e-12)


def test_image_metrics_bad_inputs() -> None:
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.rand(1, 1, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="as many references"):
        psnr([torch.rand(1, 8, 8)], [])


# ------------------------------------------------------------------------------------------- mean_std


def test_mean_std_matches_numpy_ddof1() -> None:
    values = np.random.default_rng(2).normal(size=17)
    mean, std = mean_std(torch.from_numpy(values))
    assert mean == pytest.approx(values.mean()) and std == pytest.approx(values.std(ddof=1))
    assert mean_std([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, np.std([1, 2, 4], ddof=1)))
    assert mean_std(torch.tensor([0.25])) == (0.25, 0.0)
    with pytest.raises(ValueError, match="no values"):
        mean_std([])


def test_ssim_of_float32_images_is_within_1e5_of_float64() -> None:
    x = torch.rand(4, 3, 40, 37, dtype=torch.float64)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    wide, narrow = ssim(y, x), ssim(y.float(), x.float())
    assert narrow.dtype == torch.float64
    torch.testing.assert_close(narrow, wide, rtol=0, atol=1e-5)
    mixed = ssim([t.float() for t in y], list(x))  # one input float64: computed in float64
    assert mixed.equal(ssim(y.float().double(), x))


def test_flat_colour_by_loops() -> None:
    """Each image's own mean colour, and the set's, as flat images: means taken pixel by pixel in loops."""
    x = torch.rand(3, 2, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    own, shared = flat_colour(x), flat_colour(x, shared=True)
    for n in range(3):
        for c in range(2):
            mean = sum(float(x[n, c, i, j]) for i in range(4) for j in range(5)) / 20
            assert torch.allclose(own[n, c], torch.full((4, 5), mean, dtype=torch.float64))
    for c in range(2):
        mean = sum(float(x[n, c, i, j]) for n in range(3) for i in range(4) for j in range(5)) / 60
        assert torch.allclose(shared[:, c], torch.full((3, 4, 5), mean, dtype=torch.float64))
