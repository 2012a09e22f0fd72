"""A full disk, for real: a tiny tmpfs (where this machine lets the tests mount one) under invert, compare, train
and the writers of numpy and torch; the same code paths patched where it does not; a failed or interrupted job
leaves its output folder empty."""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from preimage.cli import main
from preimage.files import atomic_path

from conftest import MACHINE_SKIP
from test_cli import FAST, write_photo


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 KiB tmpfs mounted on a fresh folder (skipped where mounting is not allowed, e.g. without root)."""
    mount = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip(f"{MACHINE_SKIP} (needs root); the patched tests below cover the same code")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _left(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _photos(tmp_path: Path) -> list[str]:
    return [str(write_photo(tmp_path / f"{name}.png", name, (40, 30, 96, 96))) for name in ("astronaut", "camera")]


def test_invert_on_a_full_disk_leaves_an_empty_folder(tiny_disk: Path, tmp_path: Path, capsys) -> None:
    out = tiny_disk / "out"
    assert main(["invert", "-r", "hog", *_photos(tmp_path), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the disk is full" in err and f"{out} was emptied" in err, err
    assert _left(out) == [".preimage-output"]


def test_compare_on_a_full_disk_leaves_an_empty_run_dir(tiny_disk: Path, tmp_path: Path, capsys) -> None:
    run_dir = tiny_disk / "run"
    assert main(["compare", f"images=[{','.join(_photos(tmp_path))}]", "representations=[hog]", "methods=[learned]",
                 f"run_dir={run_dir}", "image_size=96", "tensorboard=false", "device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the disk is full" in err, err
    assert _left(run_dir) == [".preimage-output"]


def test_train_on_a_full_disk_keeps_only_whole_checkpoints(tiny_disk: Path, capsys) -> None:
    run_dir = tiny_disk / "run"
    assert main(["train", "-c", "tiny", f"run_dir={run_dir}", "decoder.width=48"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the disk is full" in err, err
    for checkpoint in (run_dir / "checkpoints").glob("*"):
        assert checkpoint.suffix == ".ckpt", checkpoint  # no temporary file left
        torch.load(checkpoint, weights_only=True)  # and each one loads


def test_torch_and_numpy_writers_on_a_full_disk(tiny_disk: Path) -> None:
    """Both report a full disk without an errno (torch: RuntimeError, numpy: OSError 'requested and written')."""
    def save_npy(path: Path) -> None:
        with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, np.zeros(40_000, np.float32))

    for name, write in [("x.pt", lambda p: torch.save({"a": torch.zeros(40_000)}, p)), ("x.npy", save_npy)]:
        with pytest.raises(ValueError, match=f"{name}: the disk is full"), atomic_path(tiny_disk / name) as temporary:
            write(temporary)
    assert _left(tiny_disk) == []


def test_an_errno_less_failure_is_a_full_disk_only_when_little_space_is_left(tmp_path: Path, monkeypatch) -> None:
    """The same code without a tiny filesystem: a writer failing with no errno is put down to a full disk when
    statvfs reports under 1 MiB free, and is passed on as it is otherwise."""
    real = os.statvfs

    def failing(p: Path) -> None:
        p.write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos 576 vs 534")

    with pytest.raises(RuntimeError, match="unexpected pos"), atomic_path(tmp_path / "a.pt") as temporary:
        failing(temporary)

    class Stats:
        def __init__(self, free_blocks: int) -> None:
            self.f_bavail, self.f_frsize = free_blocks, 4096

    monkeypatch.setattr(os, "statvfs", lambda p: Stats(10) if Path(p) == tmp_path else real(p))
    with pytest.raises(ValueError, match="a.pt: the disk is full"), atomic_path(tmp_path / "a.pt") as temporary:
        failing(temporary)
    assert _left(tmp_path) == []


@pytest.mark.parametrize("failure", ["full disk", "ctrl-c"])
def test_a_failed_or_interrupted_invert_removes_what_it_wrote(tmp_path: Path, monkeypatch, capsys,
                                                              failure: str) -> None:
    """Whatever stops invert once outputs are being written (here at metrics.json), the folder is left empty."""
    from preimage.jobs import invert

    def fails(path, report):
        if failure == "ctrl-c":
            raise KeyboardInterrupt
        raise ValueError(f"{path}: the disk is full; nothing was written there")

    monkeypatch.setattr(invert, "write_json", fails)
    out, photos = tmp_path / "out", _photos(tmp_path)
    assert main(["invert", "-r", "hog", *photos, "--out", str(out), *FAST]) == (130 if failure == "ctrl-c" else 2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.endswith("nothing was kept (the output folder is left empty)" if failure == "ctrl-c" else
                        f"{out} was emptied of the outputs this run had written"), err
    assert _left(out) == [".preimage-output"] and all(Path(p).is_file() for p in photos)  # the inputs stay
