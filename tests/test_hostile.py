"""Hostile but realistic input: nothing written through links or outside the folder given, no user file lost,
half precision and non-finite pixels handled, every size bounded, one line for each refusal (exit 2)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from preimage import build_representation
from preimage.cli import main
from preimage.images import load_image
from preimage.photos import photo_path

FAST = ["gd.schedule=[[0.004,3]]", "progress=false", "metrics=[psnr]"]


def one_line_error(capsys, expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    return err


def photo(folder: Path, name: str = "camera", size: int = 48) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    Image.open(photo_path(name)).convert("L").resize((size, size)).save(path)
    return path


def test_the_output_marker_is_never_written_through_a_link(tmp_path: Path, capsys) -> None:
    victim, out = tmp_path / "victim.txt", tmp_path / "out"
    victim.write_text("precious")
    out.mkdir()
    (out / ".preimage-output").symlink_to(victim)
    for argv in (["invert", "-r", "hog", str(photo(tmp_path)), "--out", str(out), *FAST],
                 ["analyze", "caricature", str(photo(tmp_path)), "--out", str(out), "layers=[hog]", "size=48",
                  "gd.schedule=[[0.004,2]]"]):
        assert main(argv) == 2
        one_line_error(capsys, "is a link or not a file")
        assert victim.read_text() == "precious"


def test_train_refuses_a_folder_it_did_not_make(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("my own config\n")
    (run_dir / "bundle.pt").write_bytes(b"my own weights")
    assert main(["train", "-c", "tiny", f"run_dir={run_dir}"]) == 2
    one_line_error(capsys, "was not made by `preimage train`")
    assert (run_dir / "config.yaml").read_text() == "my own config\n"
    assert sorted(p.name for p in run_dir.iterdir()) == ["bundle.pt", "config.yaml"]


def test_a_users_own_lock_file_is_kept_and_the_run_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text("my notes on locks\n")
    assert main(["invert", "-r", "hog", str(photo(tmp_path)), "--out", str(out), *FAST]) == 2
    one_line_error(capsys, "is not a preimage lock")
    assert (out / ".lock").read_text() == "my notes on locks\n"
    assert main(["train", "-c", "tiny", f"run_dir={out}"]) == 2
    one_line_error(capsys, "is not a preimage lock")
    assert (out / ".lock").read_text() == "my notes on locks\n"


def test_invert_takes_a_lock_on_its_output_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (out / ".lock").write_text(f"{socket.gethostname()}:{holder.pid}")
        assert main(["invert", "-r", "hog", str(photo(tmp_path)), "--out", str(out), *FAST]) == 2
        one_line_error(capsys, "is in use by another preimage process")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    assert main(["invert", "-r", "hog", str(photo(tmp_path)), "--out", str(out), *FAST]) == 0  # stale: taken over
    assert not (out / ".lock").exists() and (out / "camera.png").is_file()


def test_overwrite_never_deletes_the_inputs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["invert", "-r", "hog", str(photo(tmp_path)), "--out", str(out), *FAST]) == 0
    inside = photo(out / "inputs", "coins")
    assert main(["invert", "-r", "hog", str(inside), "--out", str(out), "overwrite=true", *FAST]) == 2
    one_line_error(capsys, "is inside the output folder")
    assert inside.is_file()
    assert main(["compare", f"run_dir={out}", f"images={out / 'inputs'}", "representations=[hog]", "methods=[gd]",
                 "image_size=32", "gd.schedule=[[0.004,2]]", "overwrite=true", "tensorboard=false"]) == 2
    one_line_error(capsys, "is inside the output folder")
    assert inside.is_file()


def test_compare_does_not_read_its_own_outputs_as_inputs(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    photo(images, "camera"), photo(images, "coins")
    args = ["compare", f"run_dir={images / 'run'}", f"images={images}", "representations=[hog]", "methods=[gd]",
            "image_size=32", "gd.schedule=[[0.004,2]]", "overwrite=true", "tensorboard=false"]
    assert main(args) == 0 and (images / "run" / "grid.png").is_file()
    assert main(args) == 0  # the first run's grid.png is not an input now
    import json

    records = json.loads((images / "run" / "results.json").read_text())["records"]
    assert sorted(Path(r["image"]).name for r in records) == ["camera.png", "coins.png"]


@pytest.mark.parametrize("spec", ["hog", "hogb", "dsift"])
def test_half_precision_gives_the_float32_features(spec: str) -> None:
    phi = build_representation(spec)
    x = load_image(photo_path("coins"), grey=True)[None, :, :96, :96]
    half = phi(x.half())
    assert half.dtype == torch.float16 and bool(torch.isfinite(half).all())
    torch.testing.assert_close(half.float(), phi(x.half().float()), rtol=0, atol=2e-3)


@pytest.mark.parametrize("spec", ["hog", "hogb", "dsift"])
def test_a_nan_image_gets_nan_features_and_the_others_theirs(spec: str) -> None:
    phi = build_representation(spec)
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    bad = x.clone()
    bad[0, 0, 5, 7] = float("nan")
    features = phi(bad)
    assert bool(features[0].isnan().all())
    torch.testing.assert_close(features[1], phi(x[1:])[0], rtol=0, atol=0)


def test_tiff_pixel_values_are_never_clipped_silently(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    cases = {
        "float255": (rng.random((16, 16), dtype=np.float32) * 255, "F", "outside [0, 1]"),
        "floatnan": (np.full((16, 16), np.nan, np.float32), "F", "NaN or infinite"),
        "negative": (-np.ones((16, 16), np.int32), "I", "negative pixel values"),
    }
    for name, (values, mode, message) in cases.items():
        path = tmp_path / f"{name}.tif"
        Image.fromarray(values, mode=mode).save(path)
        with pytest.raises(ValueError, match=re.escape(message)):
            load_image(path)
        assert main(["invert", "-r", "hog", str(path), "--out", str(tmp_path / f"out_{name}"), *FAST]) == 2
        one_line_error(capsys, message)
    wide = (rng.random((16, 16)) * 2**30).astype(np.int32)  # values past 16 bits: the int32 range scales them
    Image.fromarray(wide, mode="I").save(tmp_path / "wide.tif")
    torch.testing.assert_close(load_image(tmp_path / "wide.tif")[0].double(),
                               torch.from_numpy(wide / (2**31 - 1)), rtol=0, atol=1e-7)
    narrow = (rng.random((16, 16)) * 4000).astype(np.int32)  # 12-bit data in 32-bit integers: ÷ 65535 as 16-bit
    Image.fromarray(narrow, mode="I").save(tmp_path / "narrow.tif")
    torch.testing.assert_close(load_image(tmp_path / "narrow.tif")[0].double(),
                               torch.from_numpy(narrow / 65535), rtol=0, atol=1e-7)


def test_compare_notes_a_hog_descent_that_diverges(tmp_path: Path, capsys) -> None:
    import json

    assert main(["compare", f"run_dir={tmp_path / 'run'}", "representations=[hog]", "methods=[gd]", "limit=2",
                 "image_size=48", "gd.schedule=[[10,5]]", "tensorboard=false"]) == 0
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert all(r["image_error"] is None for r in result["records"])
    assert any("diverged" in note for note in result["notes"])


@pytest.mark.parametrize("argv, message", [
    (["invert", "-r", "hog", "builtin:camera", "gd.restarts=100000"], "at most 1000 restarts"),
    (["invert", "-r", "hog", "builtin:camera", "gd.schedule=[[0.004,100000000000000000000]]"], "iterations in all"),
    (["invert", "-r", "hog", "builtin:camera", "gd.restarts=600"], "over the budget"),
    (["compare", "image_size=12000"], "over the budget"),
    (["analyze", "caricature", "builtin:camera", "size=20000", "layers=[hog]"], "over the budget"),
])
def test_sizes_and_counts_are_bounded_before_any_work(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    out = ["--out", str(tmp_path / "out")] if argv[0] in ("invert", "analyze") else [f"run_dir={tmp_path / 'run'}"]
    start = time.perf_counter()
    assert main([*argv, *out]) == 2
    one_line_error(capsys, message)
    assert time.perf_counter() - start < 30


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "-c", "tiny", f"run_dir={run_dir}"]) == 0
    return run_dir


def _state(run_dir: Path) -> tuple[str, list[str]]:
    return (run_dir / "config.yaml").read_text(), sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))


def test_resume_refuses_another_runs_checkpoint_before_changing_anything(tiny_run: Path, tmp_path: Path,
                                                                         capsys) -> None:
    other = tmp_path / "hogb"
    assert main(["train", "-c", "tiny", f"run_dir={other}", "representation=hogb"]) == 0
    run_dir = tmp_path / "hog"
    shutil.copytree(tiny_run, run_dir)
    shutil.copy(other / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "last.ckpt")
    before = _state(run_dir)
    assert main(["train", "-c", "tiny", f"run_dir={run_dir}", "resume=true", "trainer.max_steps=6"]) == 2
    one_line_error(capsys, "was trained on hogb")
    assert _state(run_dir) == before


def test_resume_refuses_a_checkpoint_that_does_not_fit_the_config(tiny_run: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    before = _state(run_dir)
    assert main(["train", "-c", "tiny", f"run_dir={run_dir}", "resume=true", "trainer.max_steps=6",
                 "decoder.width=16"]) == 2
    one_line_error(capsys, "decoder of another shape")
    assert _state(run_dir) == before


@pytest.mark.parametrize("argv, message", [
    (["invert", "-r", "hog", "/dev/null"], "is not a regular file"),
    (["invert", "-r", "hog", "FOLDER"], "is a folder, not a file"),
    (["invert", "--method", "learned", "--checkpoint", "FOLDER", "builtin:camera"], "is a folder, not a file"),
    (["invert", "-r", "efficientnet_lite0:stem", "representation_options.weights=JUNK", "builtin:camera"],
     "could not read a state_dict"),
    (["compare", "run_dir=/dev/null"], "exists and is not a folder"),
    (["invert", "-r", "hog", "builtin:camera", "--out", "/dev/null"], "exists and is not a folder"),
])
def test_unclear_inputs_get_a_clear_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("not weights\n" * 10)
    argv = [{"FOLDER": str(tmp_path), "representation_options.weights=JUNK": f"representation_options.weights={junk}"}
            .get(a, a) for a in argv]
    if argv[0] == "invert" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    one_line_error(capsys, message)


def test_sigterm_during_invert_leaves_nothing_half_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "preimage.cli", "invert", "-r", "hog", "builtin:camera", "--out", str(out),
           "gd.schedule=[[0.004,100000]]", "progress=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not (out / ".preimage-output").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("preimage invert: interrupted by SIGTERM; nothing was kept"), err
    assert sorted(p.name for p in out.iterdir()) == [".preimage-output"]
