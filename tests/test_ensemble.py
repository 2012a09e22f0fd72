"""Ensembles of decoders: the mean of the members' clamped reconstructions, stored and loaded as one bundle."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from preimage import build_representation
from preimage.cli import main
from preimage.inversion.bundles import BundleError, load_bundle, save_bundle
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.networks import DecoderEnsemble, build_decoder

ROOT = Path(__file__).resolve().parents[1]
SIDE = 32
TINY = {"width": 8, "pre_convs": 1, "min_width": 4}


def _decoders(spec: str = "hog", seed: int = 0, **knobs) -> list[torch.nn.Module]:
    """Two decoders of ``spec`` of different shapes, with weights large enough that some outputs leave [0, 1]."""
    shape = build_representation(spec).output_shape(SIDE, SIDE)
    torch.manual_seed(seed)
    members = [build_decoder(shape, (SIDE, SIDE), **{**TINY, **knobs}),
               build_decoder(shape, (SIDE, SIDE), **{**TINY, "pre_convs": 2, **knobs})]
    with torch.no_grad():
        for member in members:
            for p in member.parameters():
                p.normal_(0, 0.5)
    return members


def _manifest(spec: str = "hog") -> dict:
    return {"spec": spec, "params": build_representation(spec).params, "data": "dead leaves", "steps": 3,
            "metrics": {"val/image_error": 0.5}}


def test_ensemble_is_the_mean_of_its_clamped_members() -> None:
    members = _decoders()
    features = torch.randn(2, *members[0].feature_shape)
    ensemble = DecoderEnsemble(members)
    with torch.no_grad():
        got = ensemble(features, (SIDE + 3, SIDE - 2), (1, 2))
        outputs = [m(features, (SIDE + 3, SIDE - 2), (1, 2)) for m in members]
    assert any(float(o.min()) < 0 or float(o.max()) > 1 for o in outputs)  # the clamp matters here
    expected = torch.zeros_like(outputs[0])
    for o in outputs:
        expected += o.clamp(0, 1) / len(outputs)
    torch.testing.assert_close(got, expected)
    assert ensemble.config is members[0].config and ensemble.image_size == (SIDE, SIDE)


def test_ensemble_refuses_members_that_do_not_agree() -> None:
    hog = _decoders()
    with pytest.raises(ValueError, match="two or more"):
        DecoderEnsemble(hog[:1])
    with pytest.raises(ValueError, match="channel"):
        DecoderEnsemble([hog[0], _decoders(out_channels=1)[0]])
    with pytest.raises(ValueError, match="feature_shape"):
        DecoderEnsemble([hog[0], _decoders("dsift")[0]])


def test_ensemble_bundle_round_trips_and_inverts_as_the_mean(tmp_path: Path) -> None:
    members = _decoders()
    paths = [save_bundle(tmp_path / f"m{i}.pt", m, _manifest(), float16=True) for i, m in enumerate(members)]
    path = save_bundle(tmp_path / "e.pt", DecoderEnsemble(members), _manifest(), float16=True)
    raw = torch.load(path, weights_only=True)
    assert len(raw["manifest"]["ensemble"]) == 1 and raw["manifest"]["decoder"]["pre_convs"] == 1
    assert raw["manifest"]["ensemble"][0]["pre_convs"] == 2
    assert all(k.startswith("members.") for k in raw["state_dict"])
    images = torch.rand(2, 3, SIDE + 8, SIDE)
    inverter = LearnedInverter.from_bundle(path)
    singles = [LearnedInverter.from_bundle(p) for p in paths]
    with torch.no_grad():
        got = inverter(images)
        expected = (singles[0](images) + singles[1](images)) / 2
    torch.testing.assert_close(got, expected)
    raw["manifest"]["ensemble"] = "three"
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(BundleError, match="decoder config"):
        load_bundle(tmp_path / "bad.pt")


def test_ensemble_script_and_what_refuses_an_ensemble(tmp_path: Path) -> None:
    members = _decoders()
    paths = [save_bundle(tmp_path / f"m{i}.pt", m, _manifest()) for i, m in enumerate(members)]
    script = [sys.executable, str(ROOT / "scripts" / "ensemble_bundles.py")]
    out = tmp_path / "e.pt"
    done = subprocess.run([*script, "--bundles", *map(str, paths), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    manifest, _ = load_bundle(out)
    assert [m["bundle"] for m in manifest["members"]] == list(map(str, paths)) and manifest["steps"] == 6
    assert "weights_dtype" not in manifest  # the members' are float32
    images = torch.rand(1, 3, SIDE, SIDE)
    with torch.no_grad():
        expected = sum(LearnedInverter.from_bundle(p)(images) for p in paths) / 2
        torch.testing.assert_close(LearnedInverter.from_bundle(out)(images), expected)
    other = save_bundle(tmp_path / "dsift.pt", _decoders("dsift")[0], _manifest("dsift"))
    refused = subprocess.run([*script, "--bundles", str(paths[0]), str(other), "--out", str(tmp_path / "no.pt")],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "inverts 'dsift'" in refused.stderr and not (tmp_path / "no.pt").exists()
    assert main(["train", "-c", "tiny", f"run_dir={tmp_path / 'ft'}", "representation=hog", "grey=false",
                 f"init={out}"]) == 2
