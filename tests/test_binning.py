"""The shared vote binning of HOG and DSIFT against a naive loop over pixels, and its gradient."""
from __future__ import annotations

import math

import numpy as np
import torch

from preimage.representations.binning import AxisTaps, bin_layout, correctly_rounded_sqrt, lookup, scatter_bins


def _random_taps(length: int, bins: int, generator: torch.Generator) -> AxisTaps:
    first = torch.randint(0, bins + 1, (length,), generator=generator)
    weights = torch.rand(2, length, dtype=torch.float64, generator=generator)
    return AxisTaps(first, weights[0], weights[1])


def _naive(values, bins, taps_y: AxisTaps, taps_x: AxisTaps, planes: int, rows: int, cols: int) -> torch.Tensor:
    b, k, h, w = values.shape
    out = torch.zeros(b, planes, rows + 2, cols + 2, dtype=values.dtype)  # padded bin p is bin p - 1
    for i in range(b):
        for v in range(k):
            for y in range(h):
                for x in range(w):
                    for dy, wy in ((0, taps_y.weight_first[y]), (1, taps_y.weight_next[y])):
                        for dx, wx in ((0, taps_x.weight_first[x]), (1, taps_x.weight_next[x])):
                            r, c = taps_y.first[y] + dy, taps_x.first[x] + dx
                            out[i, bins[i, v, y, x], r, c] += values[i, v, y, x] * wy * wx
    return out[:, :, 1:-1, 1:-1]


def test_scatter_bins_equals_a_loop_over_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    b, k, h, w, planes, rows, cols = 2, 2, 7, 9, 5, 3, 4
    taps_y, taps_x = _random_taps(h, rows, generator), _random_taps(w, cols, generator)
    values = torch.randn(b, k, h, w, dtype=torch.float64, generator=generator)
    bins = torch.randint(0, planes, (b, k, h, w), generator=generator)
    layout = bin_layout(taps_y, taps_x, rows, cols, torch.float64, "cpu")
    out = scatter_bins(values, bins, layout, planes)
    assert out.shape == (b, planes, rows, cols)
    torch.testing.assert_close(out, _naive(values, bins, taps_y, taps_x, planes, rows, cols), rtol=0, atol=1e-12)


def test_scatter_bins_gradcheck() -> None:
    generator = torch.Generator().manual_seed(1)
    b, k, h, w, planes, rows, cols = 2, 2, 5, 6, 3, 2, 3
    layout = bin_layout(_random_taps(h, rows, generator), _random_taps(w, cols, generator), rows, cols,
                        torch.float64, "cpu")
    values = torch.randn(b, k, h, w, dtype=torch.float64, generator=generator, requires_grad=True)
    bins = torch.randint(0, planes, (b, k, h, w), generator=generator)
    assert torch.autograd.gradcheck(lambda v: scatter_bins(v, bins, layout, planes), (values,))


def test_straight_through_scatter_sums_one_set_of_votes_with_the_gradient_of_the_other() -> None:
    """Hard votes (one per pixel) forward, soft votes (two per pixel) backward: the output is the naive loop's
    sum of the hard votes, the gradient the soft votes' (each the tent weights' sum at its bin, by gradcheck)."""
    generator = torch.Generator().manual_seed(2)
    b, h, w, planes, rows, cols = 2, 5, 6, 4, 2, 3
    taps_y, taps_x = _random_taps(h, rows, generator), _random_taps(w, cols, generator)
    layout = bin_layout(taps_y, taps_x, rows, cols, torch.float64, "cpu")
    soft = torch.randn(b, 2, h, w, dtype=torch.float64, generator=generator, requires_grad=True)
    soft_bins = torch.randint(0, planes, (b, 2, h, w), generator=generator)
    hard = torch.randn(b, 1, h, w, dtype=torch.float64, generator=generator)
    hard_bins = torch.randint(0, planes, (b, 1, h, w), generator=generator)
    out = scatter_bins(soft, soft_bins, layout, planes, forward_values=hard, forward_bins=hard_bins)
    torch.testing.assert_close(out, _naive(hard, hard_bins, taps_y, taps_x, planes, rows, cols), rtol=0, atol=1e-12)
    upstream = torch.randn(out.shape, dtype=torch.float64, generator=generator)
    (grad,) = torch.autograd.grad((out * upstream).sum(), soft)
    (expected,) = torch.autograd.grad((scatter_bins(soft, soft_bins, layout, planes) * upstream).sum(), soft)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)


def test_lookup_equals_indexing() -> None:
    table = torch.arange(10.0) ** 2
    index = torch.randint(0, 10, (2, 1, 3, 4), dtype=torch.int32)
    assert torch.equal(lookup(table, index), table[index.long()])


def test_correctly_rounded_sqrt_is_sqrtf() -> None:
    x = torch.rand(20000, generator=torch.Generator().manual_seed(2)) * 1e5
    expected = np.array([np.float32(math.sqrt(float(v))) for v in x.numpy()])  # double sqrt, rounded once
    assert np.array_equal(correctly_rounded_sqrt(x).numpy(), expected)
    doubles = x.double()
    assert correctly_rounded_sqrt(doubles).tolist() == [math.sqrt(v) for v in doubles.tolist()]
