"""Intensity jitter of training items: the factor's range, the new mean's range, channel offsets, grey items, determinism,
train-only use."""
from __future__ import annotations

import math

import pytest
import torch

from preimage.training.augment import IntensityJitter, check_jitter
from preimage.training.datamodule import ImageDataModule
from preimage.training.sources import BuiltinPhotos

SOURCE = BuiltinPhotos("train", crop=32, length=40, grey=True)


def test_contrast_scales_the_deviation_from_the_mean_by_a_factor_in_range() -> None:
    jitter = IntensityJitter(SOURCE, (0.2, 0.8), seed=3)
    factors = [jitter.draw(k, SOURCE[k])[0] for k in range(len(jitter))]
    assert all(0.2 <= c <= 0.8 for c in factors) and max(factors) / min(factors) > 2  # spread over the range
    logs = torch.tensor([math.log(c) for c in factors])  # log-uniform: mean of log c at the range's centre
    assert abs(logs.mean().item() - (math.log(0.2) + math.log(0.8)) / 2) < 0.2
    for k in range(len(jitter)):
        x, y = SOURCE[k], jitter[k]
        assert y.shape == x.shape and 0.0 <= y.min() and y.max() <= 1.0
        assert torch.allclose(y.mean(), x.mean(), atol=1e-6)  # brightness 0 keeps the mean
        assert torch.allclose(y - y.mean(), factors[k] * (x - x.mean()), atol=1e-5)
    assert torch.equal(IntensityJitter(SOURCE, (0.2, 0.8), seed=3)[7], jitter[7])  # a function of (seed, k)
    assert not torch.equal(IntensityJitter(SOURCE, (0.2, 0.8), seed=4)[7], jitter[7])


def test_brightness_moves_the_mean_within_the_range_without_clipping() -> None:
    jitter = IntensityJitter(SOURCE, (0.5, 1.0), brightness=0.3, seed=1)
    shifts = []
    for k in range(len(jitter)):
        x, y = SOURCE[k], jitter[k]
        c = (y - y.mean()).norm() / (x - x.mean()).norm()
        assert 0.5 - 1e-4 <= c <= 1.0 + 1e-4
        assert torch.allclose(y - y.mean(), c * (x - x.mean()), atol=1e-5)  # no pixel was clipped
        shifts.append((y.mean() - x.mean()).item())
    assert max(abs(s) for s in shifts) <= 0.3 + 1e-6
    assert min(shifts) < -0.05 and max(shifts) > 0.05  # both ways
    assert len(jitter) == len(SOURCE)
    x = torch.linspace(0.0, 1.0, 16).view(1, 4, 4)  # a full-range image can only keep its mean
    assert torch.allclose(IntensityJitter([x], brightness=1.0)[0], x)


@pytest.mark.parametrize("contrast, brightness", [((0.0, 1.0), 0.0), ((0.5, 1.5), 0.0), ((0.8, 0.4), 0.0),
                                                  ((0.5,), 0.0), ((1.0, 1.0), -0.1), ((1.0, 1.0), 1.5)])
def test_bad_settings(contrast, brightness) -> None:
    match = "contrast" if brightness == 0.0 else "brightness"
    with pytest.raises(ValueError, match=match):
        check_jitter(contrast, brightness)
    with pytest.raises(ValueError, match=match):
        ImageDataModule(crop=32, contrast=contrast, brightness=brightness)


def test_datamodule_jitters_training_items_only() -> None:
    kwargs = dict(sources=[{"kind": "builtin"}], crop=32, batch_size=8, train_length=8, val_size=8, grey=True)
    plain, jittered = ImageDataModule(**kwargs), ImageDataModule(**kwargs, contrast=(0.3, 0.6), brightness=0.2)
    assert torch.equal(next(iter(plain.val_dataloader())), next(iter(jittered.val_dataloader())))
    x, y = next(iter(plain.train_dataloader())), next(iter(jittered.train_dataloader()))
    ratio = (y.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3)))
    assert ((ratio > 0.29) & (ratio < 0.61)).all(), ratio
    assert not torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-3)


def test_colour_moves_each_channel_on_its_own_without_clipping() -> None:
    source = BuiltinPhotos("train", crop=24, length=40, seed=0, grey=False)
    jitter = IntensityJitter(source, colour=0.2, seed=2)
    shifts = []
    for k in range(len(jitter)):
        x, y = source[k], jitter[k]
        delta = (y - x).mean(dim=(1, 2))  # one offset per channel, the pattern kept: no pixel clipped
        assert torch.allclose(y - x, delta.view(-1, 1, 1).expand_as(x), atol=1e-6)
        assert bool((y >= 0).all() and (y <= 1).all()) and bool((delta.abs() <= 0.2 + 1e-6).all())
        shifts.append(delta)
    shifts = torch.stack(shifts)  # (items, 3)
    assert (shifts[:, 0] - shifts[:, 1]).abs().max() > 0.05  # the channels move apart: the colour changes
    assert torch.equal(IntensityJitter(source, colour=0.2, seed=2)[3], jitter[3])
    assert torch.equal(IntensityJitter(source, (0.5, 1.0), 0.3, seed=1)[5],
                       IntensityJitter(source, (0.5, 1.0), 0.3, seed=1, colour=0.0)[5])
    with pytest.raises(ValueError, match="colour"):
        ImageDataModule(crop=32, colour=1.5)


def test_grey_fraction_turns_that_share_of_colour_items_grey_by_luminance() -> None:
    source = BuiltinPhotos("train", crop=16, length=400, seed=0, grey=False)
    colour = [k for k in range(len(source)) if (source[k] - source[k].mean(0)).abs().max() > 0.01]
    jitter = IntensityJitter(source, grey_fraction=0.3, seed=4)
    made_grey = 0
    for k in colour:
        x, y = source[k], jitter[k]
        luminance = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
        if torch.allclose(y, luminance.expand_as(x), atol=1e-6):
            made_grey += 1
        else:
            assert torch.equal(y, x)  # the others pass unchanged
    share = made_grey / len(colour)
    assert len(colour) > 100 and 0.2 < share < 0.4, (len(colour), share)
    assert torch.equal(IntensityJitter(source, grey_fraction=0.3, seed=4)[colour[0]], jitter[colour[0]])
    grey = BuiltinPhotos("train", crop=16, length=8, seed=0, grey=True)
    assert torch.equal(IntensityJitter(grey, grey_fraction=1.0)[0], grey[0])  # one channel: nothing to do
    with pytest.raises(ValueError, match="grey_fraction"):
        ImageDataModule(crop=32, grey_fraction=1.5)
