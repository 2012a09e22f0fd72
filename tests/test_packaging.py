"""The wheel carries every config and shipped bundle (package data), and the top-level folders link to them."""
from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from preimage.inversion.bundles import bundle_file
from preimage.config import config_dir, package_root

ROOT = Path(__file__).resolve().parents[1]


def test_package_data_covers_every_config_and_bundle() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["preimage"]
    package = ROOT / "src" / "preimage"
    for folder in ("configs", "checkpoints"):
        files = [p.relative_to(package).as_posix() for p in (package / folder).rglob("*") if p.is_file()]
        assert files
        uncovered = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
        assert not uncovered, f"not in the wheel: {uncovered}"
        assert (ROOT / folder).resolve() == (package / folder).resolve()  # the top-level link


def test_configs_and_bundles_resolve_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_dir() == package_root() / "configs" and (config_dir() / "presets" / "mv2015.yaml").is_file()
    assert bundle_file("checkpoints/hog.pt") == package_root() / "checkpoints" / "hog.pt"
    assert bundle_file("hog") == package_root() / "checkpoints" / "hog.pt"  # a shipped name
    assert bundle_file("efficientnet_lite0:stage4") == package_root() / "checkpoints" / "efficientnet_lite0_stage4.pt"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "hog.pt").write_bytes(b"")
    assert bundle_file("checkpoints/hog.pt") == Path("checkpoints/hog.pt")  # the working folder's comes first
