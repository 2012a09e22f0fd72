"""The torch-free catalogue: the same specs as the registry, the same manifests as torch.load, hostile files refused."""
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from preimage.catalogue import (BundleError, OPEN_FAMILIES, builtin_specs, list_inverters, read_manifest,
                                shipped_bundles, shipped_name)
from preimage.representations import is_representation, list_families, list_representations


def test_builtin_specs_are_the_registry() -> None:
    registered = list_representations()
    assert registered[:len(builtin_specs())] == builtin_specs()  # a user's registrations come after
    assert list(OPEN_FAMILIES) == list_families()


def test_manifests_equal_torch_load() -> None:
    """Read by the restricted unpickler, every shipped manifest equals what torch.load(weights_only) gives."""
    bundles = shipped_bundles()
    assert len(bundles) >= 17
    for name, path in bundles.items():
        reference = torch.load(path, map_location="cpu", weights_only=True)["manifest"]
        assert read_manifest(path) == reference, name
        assert is_representation(reference["spec"]) and name == shipped_name(path)
    assert [i["name"] for i in list_inverters()] == list(bundles)


def test_python_listing_imports_no_torch() -> None:
    code = ("import sys, preimage\nnames = [i['name'] for i in preimage.list_inverters()]\n"
            "assert 'hog' in names and 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


class _Exploit:
    def __reduce__(self):
        return os.system, ("touch exploited",)


def test_hostile_files_refused_in_one_line(tmp_path: Path) -> None:
    torch.save({"format": "preimage-bundle", "version": 1, "manifest": _Exploit()}, tmp_path / "code.pt")
    with pytest.raises(BundleError, match=r"GLOBAL posix.system refused|GLOBAL os.system refused"):
        read_manifest(tmp_path / "code.pt")
    assert not (tmp_path / "exploited").exists() and not Path("exploited").exists()
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(BundleError, match="not an inverter bundle"):
        read_manifest(tmp_path / "plain.pt")
    torch.save({"format": "preimage-bundle", "version": 2}, tmp_path / "v2.pt")
    with pytest.raises(BundleError, match="format version 2"):
        read_manifest(tmp_path / "v2.pt")
    torch.save({"format": "preimage-bundle", "version": 1, "manifest": {"spec": "hog"}}, tmp_path / "bare.pt")
    with pytest.raises(BundleError, match="lacks state_dict, sha256"):
        read_manifest(tmp_path / "bare.pt")
    torch.save({"format": "preimage-bundle", "version": 1, "manifest": {"spec": "hog"}, "state_dict": {},
                "sha256": ""}, tmp_path / "thin.pt")
    with pytest.raises(BundleError, match="the manifest lacks params"):
        read_manifest(tmp_path / "thin.pt")
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(BundleError, match="unreadable"):
        read_manifest(tmp_path / "text.pt")
    half = tmp_path / "half.pt"
    half.write_bytes(next(iter(shipped_bundles().values())).read_bytes()[:3000])
    with pytest.raises(BundleError, match="unreadable"):
        read_manifest(half)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("a/data.pkl", pickle.dumps(["x"]))
    with pytest.raises(BundleError, match="not an inverter bundle"):
        read_manifest(tmp_path / "other.zip")
    with pytest.raises(BundleError, match="is a folder"):
        read_manifest(tmp_path)
