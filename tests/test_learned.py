"""Inverter bundles: round trip, weights_only loading, every bad file refused clearly, LearnedInverter."""
from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from preimage import build_representation
from preimage.inversion.bundles import BundleError, load_bundle, save_bundle
from preimage.inversion.gd import GDConfig, invert_gd
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.networks import build_decoder

SIDE = 32
TINY = {"width": 8, "pre_convs": 1, "min_width": 4}


def _touch(path: str) -> None:
    Path(path).write_text("code ran")


class _Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (_touch, (str(self.marker),))


def _manifest(spec: str, params: dict) -> dict:
    return {"spec": spec, "params": params, "data": "dead leaves, seed 0", "steps": 10,
            "metrics": {"val/image_error": 0.5, "val/psnr": torch.tensor(12.5)}}


def _bundle(tmp_path: Path, spec: str = "hog", name: str = "b.pt", **decoder_knobs) -> tuple[Path, torch.nn.Module]:
    representation = build_representation(spec, weights="random") if ":" in spec else build_representation(spec)
    decoder = build_decoder(representation.output_shape(SIDE, SIDE), (SIDE, SIDE), **{**TINY, **decoder_knobs})
    return save_bundle(tmp_path / name, decoder, _manifest(spec, representation.params)), decoder


def _raw(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_round_trip_is_bit_identical(tmp_path: Path) -> None:
    """The weights come back bit for bit; the loaded decoder runs channels-last (faster on CPU), which changes
    the reconstructions by float rounding only."""
    path, decoder = _bundle(tmp_path)
    features = torch.rand(2, 31, 4, 4)
    with torch.no_grad():
        before = decoder(features, (SIDE, SIDE))
        inverter = LearnedInverter.from_bundle(path)
        after = inverter.decoder(features, (SIDE, SIDE))
    saved, loaded = decoder.state_dict(), inverter.decoder.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert inverter.decoder.layers[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    assert inverter.manifest["spec"] == "hog" and inverter.manifest["image_size"] == [SIDE, SIDE]
    assert inverter.manifest["metrics"]["val/psnr"] == 12.5  # a 0-d tensor stored as a float
    manifest, state = load_bundle(path, "hog")
    assert state.keys() == decoder.state_dict().keys()
    assert manifest["decoder"]["width"] == 8 and isinstance(manifest["package_version"], str)


def test_torch_load_weights_only(tmp_path: Path) -> None:
    path, _ = _bundle(tmp_path)
    raw = _raw(path)
    assert raw["format"] == "preimage-bundle" and raw["version"] == 1
    assert set(raw) == {"format", "version", "manifest", "state_dict", "sha256"}


def test_inverter_reconstructs_images_at_their_size(tmp_path: Path) -> None:
    path, _ = _bundle(tmp_path)
    inverter = LearnedInverter.from_bundle(path, device="cpu")
    with torch.no_grad():
        out = inverter(torch.rand(2, 3, 40, 48))
    assert out.shape == (2, 3, 40, 48)
    assert out.min() >= 0 and out.max() <= 1
    features = torch.randn(1, 31, 3, 5) * 100  # far outside the training range: still clamped
    with torch.no_grad():
        out = inverter.invert_features(features, (24, 40))
    assert out.shape == (1, 3, 24, 40) and out.min() >= 0 and out.max() <= 1


def test_grey_inverter_and_hogb_params(tmp_path: Path) -> None:
    path, _ = _bundle(tmp_path, "hogb", out_channels=1)
    inverter = LearnedInverter.from_bundle(path)
    assert inverter.representation.spec == "hogb" and inverter.representation.bilinear_orientations
    with torch.no_grad():
        assert inverter(torch.rand(1, 3, SIDE, SIDE)).shape == (1, 1, SIDE, SIDE)


def test_random_cnn_weights_are_rebuilt(tmp_path: Path) -> None:
    path, _ = _bundle(tmp_path, "alexnet:conv2")
    inverter = LearnedInverter.from_bundle(path)
    fresh = build_representation("alexnet:conv2", weights="random")
    x = torch.rand(1, 3, SIDE, SIDE)
    with torch.no_grad():
        assert torch.equal(inverter.representation(x), fresh(x))
        assert inverter(x).shape == (1, 3, SIDE, SIDE)


def test_another_representation(tmp_path: Path) -> None:
    path, _ = _bundle(tmp_path, "hog")
    with pytest.raises(BundleError, match=r"inverts 'hog'.*not the 'dsift'"):
        load_bundle(path, "dsift")
    with pytest.raises(BundleError, match=r"inverts 'hog'.*not the 'hogb'"):
        LearnedInverter.from_bundle(path, representation=build_representation("hogb"))
    with pytest.raises(BundleError, match=r"cell_size=8.*not cell_size=4"):
        LearnedInverter.from_bundle(path, representation=build_representation("hog", cell_size=4))


def test_lightning_checkpoint(tmp_path: Path) -> None:
    ckpt = {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.0", "state_dict": {"w": torch.ones(2)},
            "optimizer_states": [], "lr_schedulers": [], "callbacks": {}, "loops": {}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    with pytest.raises(BundleError, match="Lightning training checkpoint.*preimage train"):
        load_bundle(tmp_path / "last.ckpt")
    marker = tmp_path / "marker"  # a checkpoint whose hyper-parameters are pickled objects
    torch.save({**ckpt, "hyper_parameters": _Payload(marker)}, tmp_path / "hp.ckpt")
    with pytest.raises(BundleError, match="Lightning training checkpoint"):
        load_bundle(tmp_path / "hp.ckpt")
    assert not marker.exists()


def test_pickled_code_is_refused_without_running(tmp_path: Path) -> None:
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof)))  # the payload does run code when unpickled...
    assert proof.exists()
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"format": "preimage-bundle", "version": 1, "manifest": {"spec": _Payload(marker)}}, path)
    with pytest.raises(BundleError, match=r"needs pickled code.*_touch.*refused"):  # ...but never from a bundle
        load_bundle(path)
    with pytest.raises(BundleError, match="needs pickled code"):
        LearnedInverter.from_bundle(path)
    assert not marker.exists()


@pytest.mark.parametrize("cut", [1, 100, "half"])
def test_truncated_file(tmp_path: Path, cut: int | str) -> None:
    path, _ = _bundle(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if cut == "half" else -cut])
    with pytest.raises(BundleError, match="truncated or corrupt"):
        load_bundle(path)


def test_garbage_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("not a bundle")
    for name in ("empty.pt", "text.pt"):
        with pytest.raises(BundleError, match="truncated or corrupt"):
            load_bundle(tmp_path / name)


def _tamper(path: Path, edit) -> Path:
    raw = _raw(path)
    edit(raw)
    torch.save(raw, path)
    return path


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda b: b["state_dict"].update({"layers.0.weight": torch.zeros(8, 31, 1, 1)}), r"layers\.0\.weight is"),
        (lambda b: b["state_dict"].pop("layers.0.bias"), r"missing layers\.0\.bias"),
        (lambda b: b["state_dict"]["layers.0.bias"].add_(1e-3), "sha256"),
        (lambda b: b["manifest"].update(steps=20), "sha256"),
        (lambda b: b["manifest"].update(steps="many"), r"manifest\['steps'\]"),
        (lambda b: b["manifest"].pop("feature_shape"), "lacks feature_shape"),
        (lambda b: b["manifest"]["decoder"].update(width=-1), "width"),
        (lambda b: b.pop("sha256"), "lacks sha256"),
        (lambda b: b.update(version=2), "version 2"),
        (lambda b: b.update(format="other"), "format 'other'"),
    ],
    ids=["shape", "key", "weights", "manifest", "type", "field", "config", "checksum", "version", "format"],
)
def test_tampered_bundle(tmp_path: Path, edit, match: str) -> None:
    path = _tamper(_bundle(tmp_path)[0], edit)
    with pytest.raises(BundleError, match=match):
        load_bundle(path)


def test_bare_state_dict_and_missing_file(tmp_path: Path) -> None:
    torch.save(build_decoder((31, 4, 4), (SIDE, SIDE), **TINY).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(BundleError, match="bare state_dict"):
        load_bundle(tmp_path / "weights.pt")
    with pytest.raises(BundleError, match="no such file"):
        load_bundle(tmp_path / "absent.pt")


def test_recorded_feature_shape_must_match_the_representation(tmp_path: Path) -> None:
    representation = build_representation("hog", cell_size=4)
    decoder = build_decoder((31, 4, 4), (SIDE, SIDE), **TINY)  # the shape of cell 8, recorded as cell 4
    path = save_bundle(tmp_path / "b.pt", decoder, _manifest("hog", representation.params))
    with pytest.raises(BundleError, match=r"records features \[31, 4, 4\].*gives \[31, 8, 8\]"):
        LearnedInverter.from_bundle(path)


def test_save_refuses_non_plain_or_incomplete_manifests(tmp_path: Path) -> None:
    decoder = build_decoder((31, 4, 4), (SIDE, SIDE), **TINY)
    with pytest.raises(ValueError, match=r"manifest\['data'\] is a \w*Path"):
        save_bundle(tmp_path / "b.pt", decoder, {**_manifest("hog", {}), "data": tmp_path})
    with pytest.raises(ValueError, match="lacks metrics"):
        save_bundle(tmp_path / "b.pt", decoder, {k: v for k, v in _manifest("hog", {}).items() if k != "metrics"})
    with pytest.raises(ValueError, match="contradicts"):
        save_bundle(tmp_path / "b.pt", decoder, {**_manifest("hog", {}), "image_size": [64, 64]})
    assert not list(tmp_path.iterdir())


def test_learned_start_is_the_shipped_inverters_reconstruction() -> None:
    """gd.learned_start: the descent starts from the shipped inverter's forward pass (the very run given that
    reconstruction as ``init``), its seconds counted; HOG of another cell size has no shipped inverter, and a mask
    would leak the features it leaves out into the decoder's start, so both start as without the setting; the start
    is one, so restarts are refused."""
    images = torch.rand(2, 1, 48, 56, generator=torch.Generator().manual_seed(0))
    config = GDConfig(schedule=[(0.004, 2)], grey=True, learned_start=True)
    hog = build_representation("hog")
    start = LearnedInverter.from_bundle("hog", representation=hog)(images)
    learned = invert_gd(hog, images, config, progress=False)
    given = invert_gd(hog, images, replace(config, learned_start=False), init=start, progress=False)
    torch.testing.assert_close(learned.images, given.images, rtol=0, atol=1e-6)
    assert learned.seconds > 0
    other = build_representation("hog", cell_size=6)
    unshipped = invert_gd(other, images, config, progress=False)
    random_start = invert_gd(other, images, replace(config, learned_start=False), progress=False)
    torch.testing.assert_close(unshipped.images, random_start.images, rtol=0, atol=0)
    mask = torch.zeros(hog(images).shape[1:])
    mask[:, :2] = 1
    masked = invert_gd(hog, images, config, mask=mask, progress=False)
    torch.testing.assert_close(masked.images, invert_gd(hog, images, replace(config, learned_start=False), mask=mask,
                                                        progress=False).images, rtol=0, atol=0)
    with pytest.raises(ValueError, match="learned_start needs one restart"):
        replace(config, restarts=2)
