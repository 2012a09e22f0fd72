"""`preimage invert` end to end on real files, and its one-line errors for bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from preimage.cli import main
from preimage.photos import load_photo, photo_path

FAST = ["gd.schedule=[[0.004,15],[0.0004,5]]", "progress=false", "device=cpu"]


def write_photo(path: Path, name: str, box=(0, 0, 48, 40), mode: str | None = None) -> Path:
    arr = (load_photo(name).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    arr = arr[box[1]:box[1] + box[3], box[0]:box[0] + box[2]]
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    if mode:
        im = im.convert(mode)
    im.save(path)
    return path


def test_invert_writes_outputs(tmp_path: Path, capsys) -> None:
    a = write_photo(tmp_path / "a.png", "astronaut", (100, 60, 50, 42))
    b = write_photo(tmp_path / "b.png", "camera", (200, 100, 50, 42), mode="RGBA")
    out = tmp_path / "out"
    assert main(["invert", "--representation", "hog", "--method", "gd", str(a), str(b), "--out", str(out), *FAST]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert [r["output"] for r in report["images"]] == ["a.png", "b.png"]
    for rec in report["images"]:
        for key in ("feature_error", "normalized_loss", "image_error", "psnr", "ssim", "seconds"):
            assert isinstance(rec[key], float) and np.isfinite(rec[key]), key
    assert report["config"]["representation"] == "hog" and report["gd"]["iterations"] == 20
    assert report["device"] == "cpu" and "torch" in report["versions"]
    recon = np.load(out / "a.npy")
    assert recon.dtype == np.float32 and recon.shape == (42, 50, 1) and 0 <= recon.min() <= recon.max() <= 1
    assert Image.open(out / "a.png").size == (50, 42)
    assert (out / "overview.png").is_file()


@pytest.mark.parametrize("spec, options", [("efficientnet_lite0:stage2", []),
                                           ("torchvision:resnet18:layer1", ["representation_options.weights=random"])])
def test_invert_takes_network_layers(tmp_path: Path, spec: str, options: list[str], capsys) -> None:
    a = write_photo(tmp_path / "a.png", "astronaut", (100, 60, 50, 42))
    b = write_photo(tmp_path / "b.png", "coffee", (200, 100, 50, 42))
    out = tmp_path / "out"
    assert main(["invert", "-r", spec, str(a), str(b), "--out", str(out), *FAST, *options]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["config"]["representation"] == spec and report["gd"]["lambda_tv"] == 1.0  # mv2015, shallow
    assert np.load(out / "a.npy").shape == (42, 50, 3)  # colour, as the preset's CNN section says
    assert ("RANDOM" in capsys.readouterr().err) == bool(options)


def test_invert_restarts_and_tensorboard(tmp_path: Path) -> None:
    a = write_photo(tmp_path / "a.png", "coins", (10, 10, 40, 40))
    b = write_photo(tmp_path / "b.png", "moon", (100, 100, 40, 40))
    out = tmp_path / "o"
    assert main(["invert", "-r", "hogb", str(a), str(b), "--out", str(out), *FAST, "gd.restarts=2",
                 "tensorboard=true", "snapshot_every=10"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a_r0.png", "a_r1.png", "b_r0.png", "b_r1.png", "overview.png"]
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "preimage.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("case", ["missing", "not_image", "truncated", "too_small", "unknown_rep", "unknown_layer",
                                  "unwritable", "nan", "non_numeric", "unknown_preset"])
def test_bad_input_is_one_clear_line(tmp_path: Path, case: str, capsys) -> None:
    good = write_photo(tmp_path / "good.png", "camera", (0, 0, 40, 40))
    image, extra, out = str(good), [], str(tmp_path / "out")
    if case == "missing":
        image = str(tmp_path / "nope.png")
    elif case == "not_image":
        (tmp_path / "text.png").write_text("hello")
        image = str(tmp_path / "text.png")
    elif case == "truncated":
        big = write_photo(tmp_path / "big.png", "astronaut", (0, 0, 200, 200))
        (tmp_path / "cut.png").write_bytes(big.read_bytes()[:3000])
        image = str(tmp_path / "cut.png")
    elif case == "too_small":
        image = str(write_photo(tmp_path / "tiny.png", "camera", (0, 0, 3, 3)))
    elif case == "unknown_rep":
        extra = ["representation=hogg"]
    elif case == "unknown_layer":
        extra = ["representation=caffenet:conv9"]
    elif case == "unwritable":
        (tmp_path / "file").write_text("")
        out = str(tmp_path / "file" / "sub")
    elif case == "nan":
        extra = ["gd.lambda_tv=.nan"]
    elif case == "non_numeric":
        extra = ["gd.lambda_tv=abc"]
    elif case == "unknown_preset":
        extra = ["preset=fast2099"]
    assert main(["invert", image, "--out", out, *FAST, *extra]) == 2
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    expect = {"missing": "nope.png", "not_image": "text.png", "truncated": "cut.png", "too_small": "smaller",
              "unknown_rep": "valid", "unknown_layer": "caffenet:conv1", "unwritable": "cannot write",
              "nan": "finite", "non_numeric": "gd.lambda_tv: Value 'abc'", "unknown_preset": "mv2015"}[case]
    assert expect in lines[0], lines[0]


def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    """The real process: exit status 2 and one line on stderr."""
    proc = run_cli("invert", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.png" in proc.stderr and "Traceback" not in proc.stderr


def test_analyze_is_wired(tmp_path: Path, capsys) -> None:
    """`preimage analyze` through the real parser: a tiny window run writes its files; a bad layer is one line, 2."""
    out = tmp_path / "w"
    assert main(["analyze", "window", "builtin:astronaut", "weights=random", "size=67", "layers=[caffenet:conv1]",
                 "gd.schedule=[[0.004,3]]", "device=cpu", "progress=false", "--out", str(out)]) == 0
    report = json.loads((out / "window.json").read_text())
    assert report["kind"] == "window" and "caffenet:conv1" in report["figures"]
    assert Image.open(out / "window.png").mode == "RGB" and "wrote" in capsys.readouterr().out
    assert main(["analyze", "window", "builtin:astronaut", "weights=random", "layers=[caffenet:conv9]",
                 "device=cpu", "--out", str(tmp_path / "bad")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("preimage analyze: error:") and "caffenet:conv9" in lines[0]
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", "--help"])
    assert exit_.value.code == 0 and "caricature" in capsys.readouterr().out


def test_every_input_gets_its_own_output(tmp_path: Path) -> None:
    """a/x.png, b/x.png and x_2.png give three outputs; an input named overview.png does not lose its own."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    inputs = [write_photo(tmp_path / "a" / "x.png", "camera"), write_photo(tmp_path / "b" / "x.png", "coins"),
              write_photo(tmp_path / "x_2.png", "astronaut"), write_photo(tmp_path / "overview.png", "chelsea")]
    out = tmp_path / "out"
    assert main(["invert", "-r", "hog", *map(str, inputs), "--out", str(out), *FAST]) == 0
    report = json.loads((out / "metrics.json").read_text())
    outputs = [r["output"] for r in report["images"]]
    assert outputs == ["x.png", "x_3.png", "x_2.png", "overview_2.png"] and len(set(outputs)) == 4
    for record in report["images"]:
        assert (out / record["output"]).is_file() and (out / record["output"].replace(".png", ".npy")).is_file()
    assert Image.open(out / "overview.png").size != Image.open(out / "overview_2.png").size  # the montage is its own


def test_what_can_be_checked_before_the_work_is(tmp_path: Path, capsys) -> None:
    """Two identical images, or one whose features are all zero, fail at once in one line naming the problem."""
    a = write_photo(tmp_path / "a.png", "camera")
    twin = tmp_path / "twin.png"
    twin.write_bytes(a.read_bytes())
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((40, 48), 128, np.uint8)).save(flat)  # HOG of a flat image is all zero
    for images, expected in [([a, twin], "the 2 images have the same hog features"),
                             ([a, flat], f"{flat}: the hog features of this image are all zero")]:
        out = tmp_path / f"out_{len(expected)}"
        assert main(["invert", "-r", "hog", *map(str, images), "--out", str(out), *FAST]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
        assert not list(out.glob("*.png"))  # nothing was written


def test_a_diverging_descent_stops_at_once_naming_the_image(tmp_path: Path, capsys) -> None:
    a, b = write_photo(tmp_path / "a.png", "camera"), write_photo(tmp_path / "b.png", "coins")
    out = tmp_path / "out"
    assert main(["invert", "-r", "hog", str(a), str(b), "--out", str(out), "gd.schedule=[[100,20]]",
                 "progress=false", "device=cpu", "tensorboard=true", "snapshot_every=1000"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "a.png: the descent diverged at iteration" in lines[0], lines
    assert int(lines[0].split("iteration ")[1].split()[0]) < 20  # stopped at once, not after all 20 steps
    assert not list(out.glob("*.png")) and not (out / "metrics.json").exists()


def test_a_used_output_folder_is_refused_or_cleared(tmp_path: Path, capsys) -> None:
    a, b = write_photo(tmp_path / "a.png", "camera"), write_photo(tmp_path / "b.png", "coins")
    c = write_photo(tmp_path / "c.png", "astronaut")
    out = tmp_path / "out"
    assert main(["invert", "-r", "hog", str(a), str(b), "--out", str(out), *FAST]) == 0
    assert main(["invert", "-r", "hog", str(a), str(c), "--out", str(out), *FAST]) == 2
    assert "is not empty" in capsys.readouterr().err and (out / "b.npy").exists()
    assert main(["invert", "-r", "hog", str(a), str(c), "--out", str(out), *FAST, "overwrite=true"]) == 0
    assert not (out / "b.npy").exists() and (out / "c.npy").exists()  # the earlier run's files are gone
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not preimage's")
    assert main(["invert", "-r", "hog", str(a), str(c), "--out", str(foreign), *FAST, "overwrite=true"]) == 2
    assert "was not written by preimage" in capsys.readouterr().err and (foreign / "notes.txt").exists()


def test_invert_scores_only_the_metrics_asked(tmp_path: Path, capsys) -> None:
    a = write_photo(tmp_path / "a.png", "astronaut", (100, 60, 50, 42))
    b = write_photo(tmp_path / "b.png", "camera", (200, 100, 50, 42))
    out = tmp_path / "out"
    assert main(["invert", "-r", "hog", str(a), str(b), "--out", str(out), "metrics=[psnr,image_error]",
                 "overview_images=1", *FAST]) == 0
    records = json.loads((out / "metrics.json").read_text())["images"]
    both = tmp_path / "both"
    assert main(["invert", "-r", "hog", str(a), str(b), "--out", str(both), "metrics=[psnr]", *FAST]) == 0
    with Image.open(out / "overview.png") as one, Image.open(both / "overview.png") as two:
        assert one.height == two.height and 2 * one.width < two.width + 20  # 2 panels of a against 4 (a and b)
    assert all({"psnr", "image_error"} <= r.keys() and not {"ssim", "feature_error", "normalized_loss"} & r.keys()
               for r in records)
    assert main(["invert", "-r", "hog", str(a), "--out", str(tmp_path / "o2"), "metrics=[psnr,sharpness]", *FAST]) == 2
    assert "metrics: unknown 'sharpness'; choose among feature_error" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["config", "invert"], ["config", "compare", "limit=3"], ["invert"],
                                  ["compare", "--nope"], ["list"]])
def test_help_config_list_and_argument_errors_import_no_torch(argv: list[str]) -> None:
    """The command line answers these at once: torch (seconds to import) is loaded only by the jobs."""
    code = ("import sys, runpy; sys.argv = ['preimage', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('preimage.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]



def test_invert_hybrid_refines_the_learned_start(tmp_path: Path) -> None:
    """--method hybrid: the shipped inverter's reconstruction, then GD steps: a lower feature loss than learned's."""
    paths = []
    for name in ("camera", "coins"):
        paths.append(tmp_path / f"{name}.png")
        Image.open(photo_path(name)).convert("L").resize((96, 96)).save(paths[-1])
    losses = {}
    for method in ("learned", "hybrid"):
        out = tmp_path / method
        extra = ["gd.schedule=[[0.002,30]]"] if method == "hybrid" else []
        assert main(["invert", "--method", method, "-r", "hog", *map(str, paths), "--out", str(out), "progress=false",
                     *extra]) == 0
        report = json.loads((out / "metrics.json").read_text())
        losses[method] = [r["normalized_loss"] for r in report["images"]]
    assert report["hybrid"]["start"]["grey"] is True and report["hybrid"]["iterations"] == 30
    assert all(h < 0.8 * lrn for h, lrn in zip(losses["hybrid"], losses["learned"])), losses
