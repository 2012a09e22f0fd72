"""D&B's whole-network study: the prob layer, one inverter per layer (train layers=[...], resumable), float16
bundles, and the dark-knowledge analysis."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from preimage import build_representation
from preimage.analysis.dark_knowledge import dark_knowledge, split_top
from preimage.cli import main
from preimage.imagesets import prepare_image
from preimage.inversion.bundles import load_bundle, save_bundle
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.networks import build_decoder
from preimage.photos import load_photo


def test_prob_is_the_softmax_of_logits() -> None:
    x = torch.stack([prepare_image(load_photo(n), size=96, grey=False) for n in ("chelsea", "coffee")])
    prob, logits = build_representation("efficientnet_lite0:prob"), build_representation("efficientnet_lite0:logits")
    p, z = prob(x), logits(x)
    by_hand = z.double().exp() / z.double().exp().sum(1, keepdim=True)  # the formula, written out
    torch.testing.assert_close(p.double(), by_hand, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(p.sum(1), torch.ones(2), rtol=0, atol=1e-5)
    assert prob.output_shape(96, 96) == (1000,) and prob.depth == logits.depth == 1.0


def test_split_top_keeps_the_k_largest_or_all_the_others() -> None:
    p = torch.tensor([[0.1, 0.5, 0.05, 0.3, 0.05], [0.6, 0.2, 0.1, 0.06, 0.04]])
    top, rest = split_top(p, 2)
    torch.testing.assert_close(top, torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.0], [0.6, 0.2, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(rest, torch.tensor([[0.1, 0.0, 0.05, 0.0, 0.05], [0.0, 0.0, 0.1, 0.06, 0.04]]))
    with pytest.raises(ValueError, match="between 1 and 4"):
        split_top(p, 5)


def test_float16_bundles_are_half_the_size_and_load_as_float32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    decoder = build_decoder((31, 8, 8), (64, 64), width=32, pre_convs=1, min_width=8, stage_convs=1, out_channels=1)
    manifest = {"spec": "hog", "params": build_representation("hog").params, "data": "test", "steps": 1, "metrics": {}}
    full, half = save_bundle(tmp_path / "full.pt", decoder, manifest), save_bundle(tmp_path / "half.pt", decoder,
                                                                                      manifest, float16=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    stored = torch.load(half, weights_only=True)
    assert stored["manifest"]["weights_dtype"] == "float16"
    assert {v.dtype for v in stored["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    manifest_back, state = load_bundle(half)
    for key, value in decoder.state_dict().items():
        assert state[key].dtype == torch.float32
        torch.testing.assert_close(state[key], value.half().float(), rtol=0, atol=0)
    inverter = LearnedInverter.from_bundle(half)
    assert next(inverter.decoder.parameters()).dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(inverter(torch.rand(1, 1, 64, 64)), LearnedInverter.from_bundle(full)(
            torch.rand(1, 1, 64, 64)), rtol=0, atol=0.05)
    stored["state_dict"][next(iter(stored["state_dict"]))] += 1  # tampering is still caught
    torch.save(stored, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="tampered"):
        load_bundle(tmp_path / "bad.pt")


def test_train_layers_resumes_without_retraining_finished_layers(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "sweep"
    sweep = ["train", "-c", "tiny", f"run_dir={run_dir}", "layers=[hog,hogb,dsift]",
             "per_layer={dsift: {decoder: {width: 12}}}", "data.crop=48"]
    # an interrupted sweep: hog finished, hogb stopped after its first checkpoint, dsift not started
    assert main([*sweep[:4], "layers=[hog]", "data.crop=48"]) == 0
    assert main(["train", "-c", "tiny", f"run_dir={run_dir / 'hogb'}", "representation=hogb", "data.crop=48",
                 "trainer.max_steps=2"]) == 0
    (run_dir / "hogb" / "bundle.pt").unlink()
    finished = (run_dir / "hog" / "bundle.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(sweep) == 0
    said = capsys.readouterr().out
    assert "hog: finished before" in said and "hogb: resumed" in said and "dsift: trained" in said
    assert (run_dir / "hog" / "bundle.pt").stat().st_mtime_ns == finished  # not retrained
    summary = json.loads((run_dir / "layers.json").read_text())
    assert list(summary) == ["hog", "hogb", "dsift"]
    assert summary["hogb"]["status"] == "resumed" and load_bundle(run_dir / "hogb" / "bundle.pt")[0]["trained_steps"] == 4
    assert load_bundle(run_dir / "dsift" / "bundle.pt")[0]["decoder"]["width"] == 12  # per_layer applied
    assert load_bundle(run_dir / "hog" / "bundle.pt")[0]["decoder"]["width"] == 8
    assert (run_dir / "dsift" / "tensorboard").is_dir()  # one TensorBoard run per layer
    assert main(sweep) == 0 and "dsift: finished before" in capsys.readouterr().out
    assert main([*sweep[:-2], "per_layer={hgo: {decoder: {width: 4}}}"]) == 2
    assert "per_layer names hgo, which is no layer" in capsys.readouterr().err


def test_train_layers_of_a_network_then_compare_and_dark_knowledge(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "sweep"
    assert main(["train", "-c", "tiny", f"run_dir={run_dir}", "representation=efficientnet_lite0:logits",
                 "grey=false", "representation_options={weights: random}", "layers=[stage1,prob]",
                 "compare={image_size: 32, limit: 2, gd: {schedule: [[0.004, 2]]}, tensorboard: false, "
                 "representation_options: {efficientnet_lite0:stage1: {weights: random}, "
                 "efficientnet_lite0:prob: {weights: random}}}"]) == 0
    bundles = {spec: Path(v["bundle"]) for spec, v in json.loads((run_dir / "layers.json").read_text()).items()}
    assert set(bundles) == {"efficientnet_lite0:stage1", "efficientnet_lite0:prob"}
    result = json.loads((run_dir / "compare" / "results.json").read_text())
    assert {(r["representation"], r["method"]) for r in result["records"]} == {
        (s, m) for s in bundles for m in ("gd", "learned")}
    report = dark_knowledge(["builtin:astronaut", "builtin:chelsea"], checkpoint=str(bundles["efficientnet_lite0:prob"]),
                            out=tmp_path / "dark", size=32, device="cpu")
    figures = report["figures"]["efficientnet_lite0:prob"]
    assert all(len(figures[f"image_error_{v}"]) == 2 for v in ("all", "top", "rest"))
    assert all(0 < m <= 1 for m in figures["top_mass"]) and len(figures["top_classes"][0]) == 5
    assert (tmp_path / "dark" / "dark_knowledge.png").is_file()
    with pytest.raises(ValueError, match="vectors"):  # a map layer has no probabilities to split
        dark_knowledge(["builtin:astronaut", "builtin:chelsea"], checkpoint=str(bundles["efficientnet_lite0:stage1"]),
                       out=tmp_path / "dark2", size=32, device="cpu")
