"""`preimage analyze perturb | interpolate | sample`: D&B's analyses of a learned inverter, on a tiny real bundle.

The bundle is an untrained tiny HOG decoder on 32×32 images (``save_bundle``): enough to run every code path
on real features; the checks are on what the analyses compute, not on how good the pictures are.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from preimage import build_representation
from preimage.analysis.cli import add_analyze_parser
from preimage.analysis.feature_perturbations import binarize, drop_dimensions, interpolate_features, sample_features
from preimage.analysis.learned_studies import interpolate, interpolation, perturb, sample
from preimage.config import config_dir, load_yaml, package_root
from preimage.imagesets import grey_square, prepare_image
from preimage.inversion.bundles import bundle_file, save_bundle
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.networks import build_decoder
from preimage.photos import TEST_PHOTOS, load_photo, photo_path

SIDE = 32
TINY = {"width": 8, "pre_convs": 1, "min_width": 4, "stage_convs": 0}
THREE = ["builtin:astronaut", "builtin:chelsea", "builtin:coffee"]
REPORT_KEYS = {"kind", "figures", "definitions", "config", "bundle", "representations", "device", "seconds", "notes",
               "arrays", "versions"}


def make_bundle(path: Path, out_channels: int) -> Path:
    torch.manual_seed(0)
    representation = build_representation("hog")
    decoder = build_decoder(representation.output_shape(SIDE, SIDE), (SIDE, SIDE), out_channels=out_channels, **TINY)
    return save_bundle(path, decoder, {"spec": "hog", "params": representation.params, "data": "untrained (test)",
                                       "steps": 0, "metrics": {}})


@pytest.fixture(scope="module")
def grey_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grey HOG bundle, as the shipped checkpoints/hog.pt."""
    return make_bundle(tmp_path_factory.mktemp("bundle") / "hog.pt", out_channels=1)


@pytest.fixture(scope="module")
def colour_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "hog-rgb.pt", out_channels=3)


def checked(out: Path, kind: str) -> dict:
    """The report of ``kind`` in ``out``, after checking its files and top-level keys."""
    assert Image.open(out / f"{kind}.png").mode == "RGB"
    report = json.loads((out / f"{kind}.json").read_text())
    assert set(report) == REPORT_KEYS and report["kind"] == kind and "torch" in report["versions"]
    assert report["arrays"] and sorted(p.name for p in out.glob("*.npy")) == sorted(report["arrays"])
    for name in report["arrays"]:  # every image made, float H x W x C in [0, 1]
        array = np.load(out / name)
        assert array.dtype == np.float32 and array.ndim == 3 and array.shape[2] in (1, 3)
        assert 0 <= array.min() and array.max() <= 1
    assert report["device"] == "cpu" and report["bundle"]["spec"] == "hog" and report["bundle"]["steps"] == 0
    assert list(report["figures"]) == ["hog"]
    assert report["representations"]["hog"] == build_representation("hog").params
    return report


def grey_features(names: list[str]) -> torch.Tensor:
    """HOG of the built-in photos as the analyses see them (grey, shorter side to 32, centre crop)."""
    return build_representation("hog")(torch.stack([grey_square(n, SIDE) for n in names]))


# ------------------------------------------------------------------------------------------ feature maths


def test_binarize_keeps_signs_and_norm_with_one_magnitude() -> None:
    phi = grey_features(["astronaut", "chelsea", "coffee"])
    assert phi.min() >= 0 and (phi == 0).any()  # HOG: non-negative, with some zero entries
    out, c = binarize(phi)
    for i in range(len(phi)):
        values = set(out[i].unique().tolist())
        assert values <= {0.0, float(c[i])} and float(c[i]) in values  # binary: 0 or the one constant
        assert torch.equal(out[i] != 0, phi[i] != 0)
        assert out[i].norm() == pytest.approx(float(phi[i].norm()), rel=1e-5)
    signed = torch.tensor([[-2.0, 0.0, 1.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    out, c = binarize(signed)
    assert torch.allclose(out[0], torch.tensor([-1.0, 0.0, 1.0, 1.0]) * 21**0.5 / 3**0.5)
    assert torch.equal(out[1], signed[1]) and c[1] == 0  # an all-zero image stays zero


def test_drop_dimensions_zeroes_half_seeded_and_keeps_norm() -> None:
    phi = grey_features(["astronaut", "chelsea"]) + 0.01  # no zero entries: every dropped one shows
    d = phi[0].numel()
    out, kept = drop_dimensions(phi, 0.5, generator=torch.Generator().manual_seed(3))
    assert kept.shape == phi.shape and kept.flatten(1).sum(1).tolist() == [d - round(d / 2)] * 2
    assert torch.equal(out == 0, ~kept)
    assert not torch.equal(kept[0], kept[1])  # each image draws its own dimensions
    for i in range(2):
        assert out[i].norm() == pytest.approx(float(phi[i].norm()), rel=1e-5)
        ratio = out[i][kept[i]] / phi[i][kept[i]]
        assert torch.allclose(ratio, ratio[0].expand_as(ratio)) and ratio[0] > 1  # one scale for the kept entries
    again, _ = drop_dimensions(phi, 0.5, generator=torch.Generator().manual_seed(3))
    other, _ = drop_dimensions(phi, 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(out, again) and not torch.equal(out, other)
    with pytest.raises(ValueError, match="fraction"):
        drop_dimensions(phi, 1.5)


def test_sample_features_draw_each_dimension_from_its_observed_values() -> None:
    bank = grey_features(list(TEST_PHOTOS))  # (6, 31, 4, 4)
    drawn = sample_features(bank, 50, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (50, *bank.shape[1:])
    assert (drawn[:, None] == bank[None]).any(1).all()  # every entry is a value its own dimension took
    for s in range(50):  # ... drawn per dimension: no sample is one image's whole vector
        assert not any(torch.equal(drawn[s], bank[j]) for j in range(len(bank)))
    assert torch.equal(drawn, sample_features(bank, 50, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(drawn, sample_features(bank, 50, generator=torch.Generator().manual_seed(1)))
    # a dimension's values are drawn from all images: here each of the 6 shows up in dimension 0
    shuffled = torch.arange(6.0)[:, None].expand(6, 10)
    assert set(sample_features(shuffled, 200)[:, 0].tolist()) == set(range(6))


def test_interpolate_features_is_exact_at_the_ends() -> None:
    a, b = torch.rand(2, 31, 3, 3) * 0.3, torch.rand(2, 31, 3, 3) * 0.3
    assert torch.equal(interpolate_features(a, b, 0.0), a) and torch.equal(interpolate_features(a, b, 1), b)
    assert torch.allclose(interpolate_features(a, b, 0.25), 0.75 * a + 0.25 * b)


# ---------------------------------------------------------------------------------------------- analyses


def test_perturb(grey_bundle: Path, tmp_path: Path) -> None:
    report = perturb(THREE, checkpoint=str(grey_bundle), out=tmp_path, size=SIDE, dropout=0.5, seed=0, device="cpu")
    assert checked(tmp_path, "perturb") == json.loads(json.dumps(report))
    fig = report["figures"]["hog"]
    assert fig["images"] == THREE
    for p in ("plain", "binarized", "dropout"):
        for key in (f"image_error_{p}", f"normalized_loss_{p}"):
            assert len(fig[key]) == 3 and all(v >= 0 for v in fig[key])
            assert fig[f"{key}_mean"] == pytest.approx(sum(fig[key]) / 3)
    assert fig["dropped_fraction"] == [0.5] * 3  # 496 HOG entries at 32×32: exactly half
    assert all(0 < v <= 1 for v in fig["feature_change_dropout"])
    # the binarization constant is the one computed from the same features here
    _, c = binarize(grey_features(["astronaut", "chelsea", "coffee"]))
    assert fig["binary_value"] == pytest.approx(c.tolist(), rel=1e-5)
    assert all(0.9 < f <= 1 for f in fig["nonzero_fraction"])
    assert report["config"] == {"images": THREE, "checkpoint": str(grey_bundle), "out": str(tmp_path), "size": SIDE,
                                "dropout": 0.5, "seed": 0, "device": "cpu"}
    again = perturb(THREE, checkpoint=str(grey_bundle), out=tmp_path / "again", size=SIDE, device="cpu")
    assert again["figures"] == report["figures"]  # seeded


def test_interpolate_endpoints_are_the_plain_reconstructions(colour_bundle: Path, tmp_path: Path) -> None:
    t = [0.0, 0.5, 1.0]
    report = interpolate(THREE[:2], checkpoint=str(colour_bundle), out=tmp_path, size=SIDE, t=t, device="cpu")
    fig = checked(tmp_path, "interpolate")["figures"]["hog"]
    assert fig == report["figures"]["hog"]
    assert (fig["a"], fig["b"]) == tuple(THREE[:2]) and fig["endpoints_equal_plain"] is True
    steps = fig["steps"]
    assert [s["t"] for s in steps] == t and fig["endpoint_rms"] > 0
    assert steps[0]["rms_to_a"] == 0 and steps[-1]["rms_to_b"] == 0
    assert steps[0]["rms_to_b"] == steps[-1]["rms_to_a"] == fig["endpoint_rms"]
    assert steps[0]["relative_to_b"] == steps[-1]["relative_to_a"] == 1
    assert steps[0]["rms_to_blend"] == steps[-1]["rms_to_blend"] == 0
    # the same reconstructions as tensors, against the inverter's own forward pass on each image
    inverter = LearnedInverter.from_bundle(colour_bundle)
    a, b = (prepare_image(load_photo(n), size=SIDE, grey=False) for n in ("astronaut", "chelsea"))
    recon = interpolation(inverter, a, b, t)
    with torch.no_grad():
        assert recon.shape == (3, 3, SIDE, SIDE)
        assert torch.equal(recon[0], inverter(a[None])[0]) and torch.equal(recon[-1], inverter(b[None])[0])
        middle = inverter.invert_features(0.5 * inverter.representation(a[None]) + 0.5 * inverter.representation(
            b[None]), (SIDE, SIDE))[0]
    assert torch.allclose(recon[1], middle)


def test_sample(grey_bundle: Path, tmp_path: Path) -> None:
    report = sample("builtin", checkpoint=str(grey_bundle), out=tmp_path, size=SIDE, samples=5, seed=1, device="cpu")
    fig = checked(tmp_path, "sample")["figures"]["hog"]
    assert fig == report["figures"]["hog"]
    assert fig["images_in_set"] == len(TEST_PHOTOS) and fig["dimensions"] == 31 * 4 * 4
    assert len(fig["pixel_std"]) == len(fig["nearest_distance"]) == len(fig["nearest_image"]) == 5
    assert set(fig["nearest_image"]) <= {f"builtin:{n}" for n in TEST_PHOTOS}
    assert all(v >= 0 for v in fig["pixel_std"] + fig["nearest_distance"]) and fig["plain_image_error_mean"] > 0
    assert fig["set_pixel_std_mean"] > 0.05
    # a folder works as the set; limit takes its first images
    folder = tmp_path / "set"
    folder.mkdir()
    for name in ("camera", "coins", "moon"):
        Image.open(photo_path(name)).save(folder / f"{name}.png")
    small = sample(str(folder), checkpoint=str(grey_bundle), out=tmp_path / "folder", size=SIDE, samples=2,
                   limit=2, device="cpu")
    assert small["figures"]["hog"]["images_in_set"] == 2
    assert set(small["figures"]["hog"]["nearest_image"]) <= {str(folder / "camera.png"), str(folder / "coins.png")}


def test_bad_input_is_one_line_value_error(grey_bundle: Path, tmp_path: Path) -> None:
    cases = [
        (lambda: perturb(THREE, checkpoint=str(tmp_path / "none.pt"), out=tmp_path, size=SIDE, device="cpu"),
         "no such file, and not a shipped name"),
        (lambda: interpolate(THREE, checkpoint=str(grey_bundle), out=tmp_path, size=SIDE, device="cpu"),
         "exactly 2 images"),
        (lambda: interpolate(THREE[:2], checkpoint=str(grey_bundle), out=tmp_path, t=[], device="cpu"),
         "non-empty list"),
        (lambda: perturb(THREE[:1], checkpoint=str(grey_bundle), out=tmp_path, size=SIDE, device="cpu"),
         "at least 2 images"),
        (lambda: sample(THREE, checkpoint=str(grey_bundle), out=tmp_path, samples=0, device="cpu"), "samples"),
        (lambda: perturb(THREE, checkpoint=str(grey_bundle), out=tmp_path, size=3, device="cpu"), "smaller than"),
    ]
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(grey_bundle.read_bytes()[:500])
    cases.append((lambda: sample(THREE, checkpoint=str(corrupt), out=tmp_path, size=SIDE, device="cpu"),
                  "truncated or corrupt"))
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "\n" not in str(err.value)


# -------------------------------------------------------------------------------------------- configs, CLI


def test_configs_name_the_shipped_bundle() -> None:
    for kind in ("perturb", "interpolate", "sample"):
        cfg = load_yaml(config_dir() / "analyze" / f"{kind}.yaml")
        assert cfg.checkpoint == "hog" and cfg.out == f"outputs/analyze/{kind}"
        assert bundle_file(cfg.checkpoint) == package_root() / "checkpoints" / "hog.pt"


def test_cli(grey_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="preimage")
    add_analyze_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", "interpolate", "builtin:camera", "builtin:coins", f"checkpoint={grey_bundle}",
                              f"size={SIDE}", "t=[0,0.5,1]", "device=cpu", "--out", str(tmp_path)])
    assert args.run(args) == 0
    assert checked(tmp_path, "interpolate")["config"]["images"] == ["builtin:camera", "builtin:coins"]
    assert "wrote" in capsys.readouterr().out
    args = parser.parse_args(["analyze", "sample", f"checkpoint={tmp_path / 'missing.pt'}", "device=cpu",
                              "--out", str(tmp_path / "bad")])
    with pytest.raises(ValueError, match="not a shipped name"):
        args.run(args)
