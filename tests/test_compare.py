"""`preimage compare`: GD's ``init`` start, the image set, a tiny end-to-end run and its outputs, bad input."""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from preimage import build_representation
from preimage.cli import main
from preimage.imagesets import grey_square, list_images, load_image_set
from preimage.inversion.methods import truncate_schedule
from preimage.jobs.compare import grey_for, resolve_config
from preimage.jobs.report import (PAPER_FE_HEADER, PAPER_IE_HEADER, format_mean_std, paper_feature_error,
                                        paper_image_error, write_json)
from preimage.images import load_npy
from preimage.inversion.gd import GDConfig, invert_gd
from preimage.config import package_root
from preimage.inversion.bundles import bundle_file, save_bundle
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.networks import build_decoder
from preimage.inversion.parametrization import PixelSpace
from preimage.photos import TEST_PHOTOS

SIZE = 40
#: a tiny run: 2 built-in photos, hog, 8 GD iterations, 3 hybrid ones, no progress bars.
TINY = [f"image_size={SIZE}", "limit=2", "representations=[hog]", "gd.schedule=[[0.004,6],[0.0004,2]]",
        "hybrid.iterations=3", "device=cpu", "grid_images=2"]


def tiny_bundle(path: Path, spec: str = "hog") -> Path:
    """An untrained grey decoder for ``spec`` saved as a bundle (enough to exercise the learned path)."""
    representation = build_representation(spec)
    decoder = build_decoder(representation.output_shape(32, 32), (32, 32), width=8, pre_convs=1, min_width=4,
                            out_channels=1)
    return save_bundle(path, decoder, {"spec": spec, "params": representation.params, "data": "untrained",
                                       "steps": 0, "metrics": {}})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return tiny_bundle(tmp_path_factory.mktemp("bundle") / "hog.pt")


@pytest.fixture(scope="module")
def run(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny comparison through the console entry point; returns its run directory."""
    run_dir = tmp_path_factory.mktemp("compare") / "run"
    assert main(["compare", f"run_dir={run_dir}", f"bundles.hog={bundle}", *TINY]) == 0
    return run_dir


# ------------------------------------------------------------------------------------ GD's init start


def _energy_at(representation, images: torch.Tensor, config: GDConfig, pixels_at_start: torch.Tensor) -> torch.Tensor:
    """M&V's energy written out, at given start pixels x (grey, mean 128, 0–255 units):
    ‖Φ((x + 128)/255) − Φ0‖²/‖Φ0‖² + (λα/2 · Σ x⁶ + λTV/2 · Σ (dx² + dy²)) / σ0², σ0 = 27098.1 · √(CHW / (227²·3))."""
    assert config.alpha == 6 and config.tv_beta == 2 and config.pixel_mean == (128.0,)
    x = pixels_at_start.double()
    c, h, w = images.shape[1:]
    sigma0 = 27098.1 * math.sqrt(c * h * w / (227 * 227 * 3))
    with torch.no_grad():
        target = representation(images).double()
        features = representation(((x + 128.0) / 255.0).float()).double()
    data = (features - target).flatten(1).square().sum(1) / target.flatten(1).square().sum(1)
    dx, dy = x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]
    tv = dx.square().flatten(1).sum(1) + dy.square().flatten(1).sum(1)
    prior = (config.lambda_alpha / 2 * x.pow(6).flatten(1).sum(1) + config.lambda_tv / 2 * tv) / sigma0**2
    return (data + prior).float()


def test_gd_without_init_starts_from_the_seeded_noise_as_before() -> None:
    representation = build_representation("hog")
    images = torch.stack([grey_square(n, 32) for n in ("camera", "coins")])
    config = GDConfig(schedule=[(0.004, 3)], grey=True, seed=5)
    res = invert_gd(representation, images, config, device="cpu", progress=False)
    noise = torch.stack([torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(5)) for _ in range(2)])
    start = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * config.sigma0(1, 32, 32)
    torch.testing.assert_close(res.energy[0, :, 0], _energy_at(representation, images, config, start))
    again = invert_gd(representation, images, config, device="cpu", progress=False, init=None)
    assert torch.equal(res.images, again.images) and torch.equal(res.energy, again.energy)


def test_gd_with_init_starts_exactly_there() -> None:
    representation = build_representation("hog")
    images = torch.stack([grey_square(n, 32) for n in ("camera", "coins")])
    start = images.flip(-1)  # some other images
    config = GDConfig(schedule=[(0.004, 3)], grey=True, restarts=2)
    first_step: list[torch.Tensor] = []
    res = invert_gd(representation, images, config, device="cpu", progress=False, init=start,
                    callback=lambda t, x, e: first_step.append(x.clone()) if t == 0 else None)
    expected = _energy_at(representation, images, config, PixelSpace().from_image(start))
    torch.testing.assert_close(res.energy[0], expected[:, None].expand(2, 2))  # both restarts start at init
    assert torch.equal(first_step[0][0], first_step[0][1])  # no noise: the two restarts move alike
    at_originals = invert_gd(representation, images, config, device="cpu", progress=False, init=images)
    assert torch.all(at_originals.data_loss[0] < 1e-10)  # Φ(init) is the target: the data term starts at ~0
    colour = invert_gd(representation, images, config, device="cpu", progress=False, init=images.expand(-1, 3, -1, -1))
    assert torch.all(colour.data_loss[0] < 1e-10)  # a colour init is turned grey like the images
    with pytest.raises(ValueError, match="init must be"):
        invert_gd(representation, images, config, device="cpu", progress=False, init=start[:1])
    with pytest.raises(ValueError, match="NaN"):
        invert_gd(representation, images, config, device="cpu", progress=False, init=start * math.nan)


# ------------------------------------------------------------------------------------------ image set


def test_image_set_preparation(tmp_path: Path) -> None:
    x = grey_square("astronaut", 64)
    assert x.shape == (1, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert [n for n, _ in list_images("builtin")] == [f"builtin:{n}" for n in TEST_PHOTOS]
    arr = (np.random.default_rng(0).random((30, 50, 3)) * 255).astype(np.uint8)
    (tmp_path / "sub").mkdir()
    Image.fromarray(arr).save(tmp_path / "sub" / "b.png")
    Image.fromarray(arr[..., 0]).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    names, _, images = load_image_set(str(tmp_path), size=24, grey=False)
    assert names == [str(tmp_path / "a.jpg"), str(tmp_path / "sub" / "b.png")]
    assert [tuple(i.shape) for i in images] == [(3, 24, 24), (3, 24, 24)]  # grey files replicated to RGB
    _, _, native = load_image_set([str(tmp_path / "sub" / "b.png")], size=None, grey=True)
    assert native[0].shape == (1, 30, 50)


def test_truncate_schedule_and_default_config() -> None:
    assert truncate_schedule([[0.004, 200], [0.0004, 200]], 250) == [[0.004, 200], [0.0004, 50]]
    assert truncate_schedule([[0.004, 200]], 50) == [[0.004, 50]]
    assert truncate_schedule([[0.0002, 100]], 150) == [[0.0002, 150]]  # the last rate continues
    c = resolve_config({})  # the schema's defaults
    assert c["bundles"] == {} and c["gd"] == {}  # each representation's shipped bundle, found by its spec
    for spec in c["representations"]:
        assert bundle_file(spec) == package_root() / "checkpoints" / f"{spec.replace(':', '_')}.pt"
    assert c["images"] == "builtin" and c["representations"] == ["hog", "hogb", "dsift", "efficientnet_lite0:stage4"]
    assert c["grey"] == "auto" and [grey_for(c, s) for s in c["representations"]] == [True, True, True, False]


# ---------------------------------------------------------------------------------------- end to end


def test_results_json_holds_every_record(run: Path, bundle: Path) -> None:
    result = json.loads((run / "results.json").read_text())
    records = result["records"]
    assert [(r["representation"], r["method"], r["index"]) for r in records] == [
        ("hog", m, i) for m in ("gd", "learned", "hybrid") for i in (0, 1)]
    for r in records:
        assert r["image"] == f"builtin:{TEST_PHOTOS[r['index']]}"
        for key in ("feature_error", "normalized_loss", "image_error", "psnr", "ssim", "seconds", "images_per_second"):
            low = -1 if key == "ssim" else 0  # SSIM lies in [-1, 1]
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] >= low, (key, r)
        assert r["images_per_second"] == pytest.approx(1 / r["seconds"])
        assert (r["final_data_loss"] is None) == (r["method"] == "learned")
    assert result["config"]["image_size"] == SIZE and result["config"]["bundles"]["hog"] == str(bundle)
    assert result["methods"]["hog"]["gd"]["iterations"] == 8
    assert result["methods"]["hog"]["hybrid"]["schedule"] == [[0.002, 3]]
    assert result["device"] == "cpu" and result["world_size"] == 1
    assert {"torch", "pytorch_lightning", "preimage"} <= set(result["versions"])
    assert result["notes"] == []


def test_reconstructions_on_disk_are_the_methods_own(run: Path, bundle: Path) -> None:
    result = json.loads((run / "results.json").read_text())
    by = {(r["method"], r["index"]): r for r in result["records"]}
    image = grey_square(TEST_PHOTOS[1], SIZE)
    with torch.no_grad():
        learned = LearnedInverter.from_bundle(bundle)(image[None])[0]
    # compare ran it in a batch, this is one image: the same up to float rounding (an 8-bit round trip is 2e-3)
    torch.testing.assert_close(load_npy(run / by[("learned", 1)]["output"]), learned, rtol=0, atol=1e-5)
    for method in ("gd", "hybrid"):
        assert load_npy(run / by[(method, 1)]["output"]).shape == (1, SIZE, SIZE)


def test_csv_matches_json(run: Path) -> None:
    records = json.loads((run / "results.json").read_text())["records"]
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records)
    for row, rec in zip(rows, records):
        assert row["method"] == rec["method"] and int(row["index"]) == rec["index"]
        for key in ("feature_error", "image_error", "psnr", "ssim", "seconds"):
            assert float(row[key]) == pytest.approx(rec[key], rel=1e-12)


def _fmt(values: list[float], spec: str) -> str:
    return f"{spec.format(statistics.mean(values))} ± {spec.format(statistics.stdev(values))}"


def test_report_table_equals_a_recomputation_from_results_json(run: Path) -> None:
    records = json.loads((run / "results.json").read_text())["records"]
    report = (run / "report.md").read_text()
    lines = [line for line in report.splitlines() if line.startswith("| hog |")]
    header = next(line for line in report.splitlines() if line.startswith("| representation |"))
    assert PAPER_FE_HEADER in header and PAPER_IE_HEADER in header
    expected = []
    for method in ("gd", "learned", "hybrid"):
        recs = [r for r in records if r["method"] == method]
        col = {k: [r[k] for r in recs] for k in recs[0]}
        paper = "28.10 ± 7.9" if method == "gd" else "—"
        cells = ["hog", method, str(len(recs)), _fmt(col["feature_error"], "{:.2f}"), paper,
                 _fmt(col["normalized_loss"], "{:.4f}"), _fmt(col["image_error"], "{:.3f}"), "—",
                 _fmt(col["psnr"], "{:.2f}"), _fmt(col["ssim"], "{:.3f}"), f"{statistics.mean(col['seconds']):.3f}",
                 f"{len(recs) / sum(col['seconds']):.2f}"]
        expected.append("| " + " | ".join(cells) + " |")
    assert lines == expected
    assert "## Hybrid targets" in report and "- hog: feature_error" in report


def test_grid_and_tensorboard(run: Path) -> None:
    with Image.open(run / "grid.png") as im:
        width, height = im.size
    assert width > 4 * SIZE and 2 * SIZE < height < 3 * SIZE + 60  # 2 rows; original | gd | learned | hybrid
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    assert "compare/grid" in acc.Tags()["images"]
    grid = acc.Images("compare/grid")[0]
    assert (grid.width, grid.height) == (width, height)
    text = [t for t in acc.Tags()["tensors"] if t.startswith("compare/table")]
    assert text and "| hog | hybrid |" in acc.Tensors(text[0])[0].tensor_proto.string_val[0].decode()
    assert "feature_error/hog/gd" in acc.Tags()["scalars"]


def test_a_method_without_bundle_is_skipped_with_a_note(bundle: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    args = ["compare", f"run_dir={run_dir}", *TINY, "representations=[hog,dsift]", "methods=[gd,learned]",
            f"bundles.hog={bundle}", "bundles.dsift=null", "save_reconstructions=false", "tensorboard=false"]
    assert main(args) == 0
    result = json.loads((run_dir / "results.json").read_text())
    assert sorted({(r["representation"], r["method"]) for r in result["records"]}) == [
        ("dsift", "gd"), ("hog", "gd"), ("hog", "learned")]
    assert result["notes"] == ["dsift: learned skipped: no bundle (bundles.dsift=null)"]
    assert "dsift: learned skipped" in (run_dir / "report.md").read_text()
    assert "10.89 ± 7.5" in (run_dir / "report.md").read_text()  # M&V's DSIFT figure beside dsift gd
    assert "note: dsift: learned skipped" in capsys.readouterr().err
    assert not (run_dir / "reconstructions").exists() and not (run_dir / "tensorboard").exists()


@pytest.mark.parametrize("override, expected", [
    ("images=MISSING", "neither a folder nor an image file"),
    ("images=EMPTY", "no image files"),
    ("representations=[hgo]", "unknown representation 'hgo'"),
    ("methods=[gd,magic]", "unknown method(s) magic"),
    ("limit=0", "limit must be an integer >= 1"),
    ("gd.lambda_tv=.nan", "must be a finite number"),
    ("image_size=.inf", "image_size: Value 'inf' of type 'float' could not be converted to Integer"),
    ("hybrid.iterations=0", "hybrid.iterations must be"),
    ("imgaes=x", "Key 'imgaes' not in 'CompareConfig'"),
    ("grey=maybe", "grey must be true, false or auto, got 'maybe'"),
    ("gd.restarts=abc", "gd.restarts: Value 'abc' of type 'str' could not be converted to Integer"),
    ("image_size=8", "smaller than"),
    ("representation_options.cell_size=4", "representation_options.cell_size: Value 4 (int) is incompatible"),
    ("hybrid.schedule=[0.001]", "hybrid.schedule: Invalid value assigned"),
    ("gd.restarts=2", "set gd.restarts=1"),
    ("strategy=ddp_spawn", "use strategy=ddp"),
])
def test_bad_input_is_one_line_and_exit_2(override: str, expected: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    override = override.replace("MISSING", str(tmp_path / "nope")).replace("EMPTY", str(tmp_path / "empty"))
    assert main(["compare", f"run_dir={tmp_path / 'run'}", *TINY, override]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("preimage compare: error:") and expected in lines[0], lines


def test_one_image_and_a_list_of_images(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert main(["compare", f"run_dir={run_dir}", *TINY, "images=[builtin:coins]", "methods=[gd]",
                 "tensorboard=false"]) == 0
    result = json.loads((run_dir / "results.json").read_text())
    (record,) = result["records"]
    assert record["image"] == "builtin:coins" and record["feature_error"] is None and record["image_error"] is None
    assert "at least 2 images" in result["notes"][0]
    assert "| hog | gd | 1 | n/a | 28.10 ± 7.9 |" in (run_dir / "report.md").read_text()


def test_report_helpers() -> None:
    assert format_mean_std([1.0, 3.0], "{:.2f}") == "2.00 ± 1.41" and format_mean_std([1.0, None], "{:.2f}") == "n/a"
    assert format_mean_std([1.0, 3.0], "{:.2f}", spread=False) == "2.00"
    assert paper_feature_error("hogb", "gd") == "10.67 ± 5.2" and paper_feature_error("hogb", "hybrid") == "—"
    assert paper_image_error("caffenet:fc8", "learned") == "≈0.58" and paper_image_error("alexnet:conv5", "gd") == "≈0.71"
    assert paper_image_error("alexnet:conv3", "gd") == "—" and paper_image_error("hog", "learned") == "—"


def test_results_json_is_strict_json(tmp_path: Path) -> None:
    write_json(tmp_path / "r.json", {"a": [math.nan, 1.0, math.inf], "b": {"c": -math.inf}})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": [None, 1.0, None], "b": {"c": None}}


def test_a_named_bundle_that_cannot_be_used_is_an_error(tmp_path: Path, capsys) -> None:
    """The default bundles' absence is a note; a bundle the user names that is refused stops the run (exit 2)."""
    hog_bundle = Path(__file__).resolve().parents[1] / "checkpoints" / "hog.pt"
    not_a_bundle = tmp_path / "evil.pt"
    not_a_bundle.write_bytes(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.")  # a code-running pickle
    for value, expected in [(hog_bundle, "bundles.dsift: "), (not_a_bundle, "bundles.dsift: "),
                            (tmp_path / "missing.pt", "bundles.dsift: no bundle '")]:
        assert main(["compare", f"run_dir={tmp_path / 'run'}", *TINY, "representations=[dsift]",
                     "methods=[learned]", f"bundles.dsift={value}"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "run" / "results.json").exists()


def test_auto_grey_compares_hog_in_grey_and_a_network_layer_in_colour(tmp_path: Path) -> None:
    run_dir = tmp_path / "mixed"
    assert main(["compare", f"run_dir={run_dir}", "representations=[hog,efficientnet_lite0:stem]", "methods=[gd]",
                 "limit=2", f"image_size={SIZE}", "gd.schedule=[[0.004,2]]", "tensorboard=false", "progress=false"]) == 0
    result = json.loads((run_dir / "results.json").read_text())
    shapes = {r["representation"]: np.load(run_dir / r["output"]).shape for r in result["records"]}
    assert shapes == {"hog": (SIZE, SIZE, 1), "efficientnet_lite0:stem": (SIZE, SIZE, 3)}
    assert result["methods"]["hog"]["gd"]["grey"] is True
    assert result["methods"]["efficientnet_lite0:stem"]["gd"]["grey"] is False
    assert [i["shape"] for i in result["images"]] == [[3, SIZE, SIZE]] * 2
    assert "grey for hog; RGB for efficientnet_lite0:stem" in (run_dir / "report.md").read_text()


def test_sigterm_during_the_predict_loop_stops_compare_like_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM (kill, schedulers) while GD runs inside Lightning's predict loop: exit 143, one line, nothing kept."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "preimage.cli", "compare", f"run_dir={run_dir}", "representations=[hog]",
           "methods=[gd]", "image_size=64", "limit=2", "gd.schedule=[[0.004,100000]]", "tensorboard=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run_dir / ".lock").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # inside the descent by now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "preimage compare: interrupted by SIGTERM; no results were written", err
    assert "Traceback" not in err and sorted(p.name for p in run_dir.iterdir()) == [".preimage-output"]
