"""`preimage analyze`: receptive fields against autograd, the new data terms, and each analysis on a tiny budget."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from preimage import build_representation
from preimage.inversion import methods
from preimage.analysis.cli import add_analyze_parser
from preimage.analysis.receptive_field import measured_field, receptive_field
from preimage.analysis.studies import groups, invariance, window
from preimage.analysis.visualize import caricature, maximize
from preimage.inversion.masks import build_mask
from preimage.inversion.gd import GDConfig, config_from_dict, invert_gd, optimize_gd
from preimage.inversion.objectives import Caricature, FeatureReconstruction, NeuronActivation, neuron_weights
from preimage.inversion.presets import resolve_preset
from preimage.photos import load_photo
from preimage.representations import Representation, list_representations

RANDOM = dict(weights="random", device="cpu", progress=False)
SHORT = {"schedule": [[0.004, 10]]}
REPORT_KEYS = {"kind", "figures", "definitions", "config", "gd", "representations", "device", "seconds", "notes",
               "arrays", "versions"}


def nonzero_box(grad: torch.Tensor) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of the pixels where a ``(1, C, H, W)`` gradient is non-zero."""
    ys, xs = (grad.abs().sum((0, 1)) != 0).nonzero(as_tuple=True)
    return int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())


def field_box(rep: Representation, rows: tuple[int, int], cols: tuple[int, int],
              size: int) -> tuple[int, int, int, int]:
    """The pixel box of neurons ``rows`` × ``cols`` (inclusive) by :func:`receptive_field`, clipped to the image."""
    rf = receptive_field(rep)
    (top, bottom), (left, right) = rf.span(*rows, size), rf.span(*cols, size)
    return top, left, bottom, right


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
    return report


# ------------------------------------------------------------------------------------------ receptive fields


@pytest.mark.parametrize("spec, size", [
    ("caffenet:conv1", 67), ("caffenet:pool1", 67), ("caffenet:norm1", 67), ("caffenet:conv2", 99),
    ("caffenet:pool2", 131), ("caffenet:conv3", 131), ("caffenet:conv4", 163), ("caffenet:conv5", 195),
    ("caffenet:pool5", 227), ("alexnet:conv2", 99), ("alexnet:pool2", 131), ("hog", 64), ("hogb", 64), ("dsift", 64),
])
def test_receptive_field_is_the_support_of_the_gradient(spec: str, size: int) -> None:
    """Naive reference: autograd of one neuron w.r.t. the input is non-zero exactly on the computed field."""
    rep = build_representation(spec, **({"weights": "random"} if ":" in spec else {}))
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(3), requires_grad=True)
    features = rep(x)
    h, w = features.shape[-2:]
    for y, xx in [(h // 2, w // 2), (0, 0), (h - 1, w - 1)]:
        (grad,) = torch.autograd.grad(features[0, :, y, xx].sum(), x, retain_graph=True)
        got, field = nonzero_box(grad), field_box(rep, (y, y), (xx, xx), size)
        if y < h - 1:
            assert got == field, (y, xx)
        else:  # floor rounding may leave the last pixels of the image to no neuron: contained, not equal
            assert got[:2] == field[:2] and got[2] <= field[2] and got[3] <= field[3]


def test_receptive_field_values_and_errors() -> None:
    rf = receptive_field(build_representation("caffenet:pool5", weights="random"))
    assert tuple(rf) == (195, 32, -64)
    conv3 = build_representation("caffenet:conv3", weights="random")
    assert tuple(receptive_field(conv3, "pool1")) == (19, 8, 0)
    assert receptive_field(build_representation("alexnet:fc8", weights="random")).size == 355
    assert tuple(receptive_field(build_representation("hog", cell_size=4))) == (18, 4, -7)
    assert tuple(receptive_field(build_representation("dsift", bin_size=4, step=7))) == (21, 7, -4)
    with pytest.raises(ValueError, match="no layer 'conv5'"):
        receptive_field(conv3, "conv5")
    with pytest.raises(ValueError, match="has no layers"):
        receptive_field(build_representation("hog"), "conv1")


@pytest.mark.parametrize("spec, size, k", [("caffenet:conv2", 99, 3), ("hog", 64, 2)])
def test_window_data_term_gradient_is_zero_outside_the_field(spec: str, size: int, k: int) -> None:
    rep = build_representation(spec, **({"weights": "random"} if ":" in spec else {}))
    g = torch.Generator().manual_seed(0)
    original, x = torch.rand(2, 1, 3, size, size, generator=g)
    mask = build_mask({"window": k}, rep, size, size)
    term = FeatureReconstruction(rep, rep(original), mask)
    start = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(term(start).sum(), start)
    ys, xs = mask[0].nonzero(as_tuple=True)
    top, left, bottom, right = field_box(rep, (int(ys.min()), int(ys.max())), (int(xs.min()), int(xs.max())), size)
    outside = torch.ones(size, size, dtype=torch.bool)
    outside[top:bottom + 1, left:right + 1] = False
    assert outside.any() and bool((grad[..., outside] == 0).all())
    assert nonzero_box(grad) == (top, left, bottom, right)


# ------------------------------------------------------------------------------------------------- terms


def test_terms_values() -> None:
    rep = build_representation("caffenet:conv2", weights="random")
    images = torch.rand(2, 3, 67, 67, generator=torch.Generator().manual_seed(1))
    features = rep(images)
    w = torch.stack([neuron_weights(features.shape[1:], 5, (2, 3)), neuron_weights(features.shape[1:], 7)])
    values = NeuronActivation(rep, w, torch.tensor([2.0, 4.0]))(images)
    torch.testing.assert_close(values, torch.stack([-features[0, 5, 2, 3] / 2, -features[1, 7].mean() / 4]))
    torch.testing.assert_close(Caricature(rep, features)(images), torch.full((2,), -1.0))
    assert float(neuron_weights((10,), 3).sum()) == 1.0
    with pytest.raises(ValueError, match="outside"):
        neuron_weights((4, 3, 3), 0, (3, 0))
    with pytest.raises(ValueError, match="positive"):
        NeuronActivation(rep, w, 0.0)
    with pytest.raises(ValueError, match="no positive value"):
        Caricature(rep, -features.abs())


def test_objectives_compose_and_expand_over_restarts() -> None:
    rep = build_representation("hog")
    originals, x = torch.rand(2, 2, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    target = rep(originals)
    w = torch.stack([neuron_weights(target.shape[1:], 3, (1, 1)), neuron_weights(target.shape[1:], 30)])
    combined = FeatureReconstruction(rep, target) + 0.5 * NeuronActivation(rep, w, torch.tensor([2.0, 3.0]))
    with torch.no_grad():
        f = rep(x)
        by_hand = ((f - target).flatten(1).square().sum(1) / target.flatten(1).square().sum(1)
                   - 0.5 * torch.stack([f[0, 3, 1, 1] / 2, f[1, 30].mean() / 3]))
        torch.testing.assert_close(combined(x), by_hand)
        # expanded for 3 restarts: rows i·3 + r all belong to problem i
        torch.testing.assert_close(combined.expand(3)(x.repeat_interleave(3, 0)), by_hand.repeat_interleave(3))
        assert sum([FeatureReconstruction(rep, target)])(x).shape == (2,)


def test_optimize_gd_is_invert_gd_with_another_term() -> None:
    """The sibling engine keeps invert_gd's conventions exactly (seeded starts, restarts, jitter, prior)."""
    hog = build_representation("hog")
    crops = torch.stack([load_photo(n)[:, 40:88, 60:108].mean(0, keepdim=True) for n in ("camera", "coins")])
    cfg = GDConfig(schedule=[(0.004, 8), (0.0004, 4)], grey=True, restarts=2, jitter=2)
    reference = invert_gd(hog, crops, cfg, device="cpu", progress=False)
    target = hog(crops)
    ours = optimize_gd(1.0 * FeatureReconstruction(hog, target), tuple(crops.shape), cfg, device="cpu", progress=False)
    torch.testing.assert_close(ours.images, reference.images)
    torch.testing.assert_close(ours.energy, reference.energy)


def test_optimize_gd_runs_phi_once_per_step_on_all_rows() -> None:
    """Restarts are one batch: the data term sees all N·R rows at every step, not one restart at a time."""
    hog = build_representation("hog")
    crops = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = GDConfig(schedule=[(0.004, 4)], grey=True, restarts=2, jitter=1)
    target = hog(crops)
    calls: list[int] = []

    def counted(images: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape[0])
        return hog(images)

    optimize_gd(FeatureReconstruction(counted, target), tuple(crops.shape), cfg, device="cpu", progress=False)
    assert calls == [6] * 4


# -------------------------------------------------------------------------------------------- the analyses


def test_invariance(tmp_path: Path) -> None:
    figures = invariance(["builtin:astronaut", "builtin:chelsea"], layers=["hog", "caffenet:conv2"], out=tmp_path,
                         size=48, restarts=2, gd=SHORT, **RANDOM)["figures"]
    report = checked(tmp_path, "invariance")
    assert report["config"]["restarts"] == 2 and report["gd"]["hog"]["restarts"] == 2
    assert any("RANDOM" in n and "caffenet:conv2" in n for n in report["notes"])
    for spec in ("hog", "caffenet:conv2"):
        f = figures[spec]
        assert f["error_metric"] == "feature_error"
        assert len(f["error_percent"]) == 2 and all(len(e) == 2 and min(e) > 0 for e in f["error_percent"])
        assert all(0 < s < 10 for s in f["spread"])  # restarts differ, on the scale of image differences


def test_window(tmp_path: Path) -> None:
    f = window(["builtin:camera"], layers=["caffenet:conv2"], out=tmp_path, size=99, window=3, gd=SHORT,
               **RANDOM)["figures"]["caffenet:conv2"]
    checked(tmp_path, "window")
    assert f["feature_map"] == [11, 11] and f["window_neurons"] == [4, 4, 6, 6]
    assert f["box"] == [16, 16, 82, 82] and f["receptive_field"] == {"size": 51, "stride": 8, "offset": -16}
    assert 0 < f["box_fraction"] < 1 and f["std_outside"][0] is not None


def test_groups_masks_select_the_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each group's mask keeps exactly CaffeNet's stream of channels (conv2 is split 48 → 128 per group)."""
    masks = []

    def spy(*args, mask, **kwargs):
        masks.append(mask)
        return invert_gd(*args, mask=mask, **kwargs)

    monkeypatch.setattr(methods, "invert_gd", spy)
    report = groups(["builtin:coffee"], layers=["caffenet:norm1", "caffenet:conv2"], out=tmp_path, size=67,
                    gd=SHORT, **RANDOM)
    checked(tmp_path, "groups")
    conv2 = build_representation("caffenet:conv2", weights="random").network.conv2
    per_in, per_out = conv2.in_channels // conv2.groups, conv2.out_channels // conv2.groups
    expected = [(per_in, 96), (per_in, 96), (per_out, 256), (per_out, 256)]
    for k, (mask, (per, total)) in enumerate(zip(masks, expected)):
        kept = mask.flatten(1).amax(1)
        assert bool((mask.flatten(1).amin(1) == kept).all())  # whole channels
        g = k % 2
        assert kept.tolist() == [1.0 if g * per <= c < (g + 1) * per else 0.0 for c in range(total)]
    assert [g["channels"] for g in report["figures"]["caffenet:conv2"]["groups"]] == [[0, 127], [128, 255]]
    assert all(c >= 0 for g in report["figures"]["caffenet:norm1"]["groups"] for c in g["chroma"])


def test_maximize_raises_the_target(tmp_path: Path) -> None:
    report = maximize(layers=["hog", "caffenet:conv2"], out=tmp_path, channels=[0, 5],
                      normalizer_images=["builtin:rocket"], normalizer_size=67, gd={"schedule": [[0.004, 15]]}, **RANDOM)
    checked(tmp_path, "maximize")
    for spec, side in (("hog", 43), ("caffenet:conv2", 70)):
        f = report["figures"][spec]
        assert f["image_size"] == side and min(f["normalizer"]) > 0
        for start, final in zip(f["activation_start"], f["activation_final"]):
            assert final[0] > start[0] + 0.1 * abs(start[0]), spec
    assert report["gd"]["caffenet:conv2"]["lambda_tv"] == resolve_preset("maximize", "caffenet:conv2")["lambda_tv"]


def test_caricature_exaggerates(tmp_path: Path) -> None:
    """⟨Φ(x*), Φ0⁺⟩ grows from its value 1 at the original. With random weights the preset's TV weight (M&V's)
    outweighs the data term of a CNN, so the prior is weakened here to test the term and engine."""
    report = caricature(["builtin:chelsea"], layers=["hog", "caffenet:relu3"], out=tmp_path, size=67,
                        gd={"lambda_tv": 1.0, "schedule": [[0.001, 15]]}, **RANDOM)
    checked(tmp_path, "caricature")
    for spec in ("hog", "caffenet:relu3"):
        assert report["figures"][spec]["exaggeration"][0] > 1.02
        assert 0 < report["figures"][spec]["rms_change"][0] < 0.5


# -------------------------------------------------------------------------------------------- configs, CLI


def test_analysis_presets() -> None:
    for preset in ("maximize", "caricature"):
        for spec in list_representations():
            if ":" not in spec and not build_representation(spec).differentiable:
                continue  # LBP: nothing to maximize or exaggerate without a gradient (refused in one line)
            cfg = config_from_dict(resolve_preset(preset, spec))
            assert cfg.clamp and cfg.lambda_tv > 0 and cfg.grey == (":" not in spec), (preset, spec)
    shallow, deep = (resolve_preset("maximize", s)["lambda_tv"] for s in ("caffenet:conv1", "caffenet:fc8"))
    assert deep / shallow == pytest.approx(355**2 / 11**2, rel=1e-3)  # M&V's 10⁴/rf² data weight, moved


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="preimage")
    add_analyze_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["analyze", *argv])


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("window", "builtin:camera", "layers=[hog]", "size=48", "window=2", "gd.schedule=[[0.004,5]]",
                 "device=cpu", "progress=false", "--out", str(tmp_path))
    assert args.run(args) == 0
    assert checked(tmp_path, "window")["config"]["images"] == ["builtin:camera"]
    assert "wrote" in capsys.readouterr().out
    for argv, match in [(("maximize", "builtin:camera"), "takes no images"),
                        (("window", "nope=1"), "Key 'nope' not in 'AnalyzeWindowConfig'"),
                        (("window", "layers=[caffenet:fc8]", "weights=random", "size=227", "device=cpu"),
                         "spatial window"),
                        (("caricature", "layers=[]"), "non-empty list")]:
        args = parse(*argv, "--out", str(tmp_path / "bad"))
        with pytest.raises(ValueError, match=match):
            args.run(args)


@pytest.mark.parametrize("node, layer", [("features.2", "pool1"), ("features.5", "pool2"), ("features.10", "conv5")])
def test_measured_field_equals_the_analytic_one(node: str, layer: str) -> None:
    """The gradient-support measurement on torchvision's AlexNet graph equals the field computed from kernels."""
    measured = measured_field(build_representation(f"torchvision:alexnet:{node}", weights="random"), side=227)
    assert measured == receptive_field(build_representation(f"alexnet:{layer}", weights="random"))


def test_measured_field_of_the_real_network() -> None:
    stage2 = build_representation("efficientnet_lite0:stage2")
    rf = receptive_field(stage2)
    assert rf.stride == 4 and rf.size == 19  # stem 3×3/2, block 0 3×3, blocks 1-2 3×3 at strides 2 and 4
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(5), requires_grad=True)
    (grad,) = torch.autograd.grad(stage2(x)[0, :, 12, 12].sum(), x)
    assert nonzero_box(grad) == field_box(stage2, (12, 12), (12, 12), 96)
    pool = build_representation("efficientnet_lite0:pool")
    assert receptive_field(pool) == (224, 224, 0)  # a vector sees the whole (canonical) image
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6), requires_grad=True)
    (grad,) = torch.autograd.grad(pool(x)[0].sum(), x)
    assert nonzero_box(grad) == (0, 0, 63, 63)


@pytest.mark.parametrize("kind, extra", [
    ("invariance", ["layers=[efficientnet_lite0:stage2,torchvision:resnet18:layer1]", "weights=random"]),
    ("window", ["layers=[efficientnet_lite0:stage2]", "window=2"]),
    ("groups", ["layers=[efficientnet_lite0:stage1]"]),
    ("caricature", ["layers=[efficientnet_lite0:stage2]"]),
    ("maximize", ["layers=[efficientnet_lite0:stage1]", "channels=[3]", "size=33"]),
])
def test_every_analysis_takes_the_real_network(tmp_path: Path, kind: str, extra: list[str]) -> None:
    images = [] if kind == "maximize" else (["builtin:astronaut", "builtin:chelsea"] if kind == "invariance"
                                            else ["builtin:chelsea"])
    size = [] if kind == "maximize" else ["size=48"]
    args = parse(kind, *images, *extra, *size, "gd.schedule=[[0.004,3]]", "device=cpu", "progress=false",
                 "--out", str(tmp_path))
    assert args.run(args) == 0
    assert checked(tmp_path, kind)["config"]["layers"] == extra[0].split("=", 1)[1].strip("[]").split(",")


def test_an_analysis_refuses_a_used_folder_unless_overwrite(tmp_path: Path) -> None:
    args = ["builtin:camera", "layers=[hog]", "size=48", "window=2", "gd.schedule=[[0.004,3]]", "device=cpu",
            "progress=false"]
    out = ["--out", str(tmp_path / "w")]
    first = parse("window", *args, *out)
    assert first.run(first) == 0
    again = parse("window", *args, *out)
    with pytest.raises(ValueError, match="is not empty"):
        again.run(again)
    third = parse("window", *args, "overwrite=true", *out)
    assert third.run(third) == 0 and (tmp_path / "w" / "window.json").is_file()


def test_a_diverged_image_gets_a_note_not_an_npy(tmp_path: Path) -> None:
    from preimage.analysis.common import write_report

    good, bad = torch.rand(3, 8, 8), torch.full((3, 8, 8), float("nan"))
    report = write_report(tmp_path, "test", [[good, bad]], None, ["row"], {"notes": ["kept"]},
                          {"hog-a": good, "hog-b": bad})
    assert report["arrays"] == ["hog-a.npy"] and sorted(p.name for p in tmp_path.glob("*.npy")) == ["hog-a.npy"]
    assert report["notes"][0] == "kept" and "diverged" in report["notes"][1] and "hog-b" in report["notes"][1]
    assert np.array_equal(np.load(tmp_path / "hog-a.npy"), good.permute(1, 2, 0).numpy())
