"""Every YAML under configs/ loads against its schema; the schemas refuse what they should, in one line."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from preimage.analysis.cli import _analyses, schema
from preimage.cli import main
from preimage.config import config_dir, load_yaml
from preimage.inversion.gd import config_from_dict
from preimage.inversion.presets import list_presets, resolve_preset
from preimage.schemas import CompareConfig, InvertConfig, TrainConfig, load_config, plain
from preimage.training.train import resolve_config

YAMLS = sorted(config_dir().rglob("*.yaml"))


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(config_dir())))
def test_every_yaml_loads(path: Path) -> None:
    folder = path.parent.name
    if folder == "train":
        c = resolve_config(load_config(TrainConfig, path))
        assert c["trainer"]["max_steps"] > 0
    elif folder == "analyze":
        values = plain(load_config(schema(path.stem), path))
        assert set(values) == set(inspect.signature(_analyses()[path.stem]).parameters)  # the schema is the signature
    elif folder == "presets":
        for spec in ("hog", "dsift", "caffenet:conv3", "efficientnet_lite0:stage4", "efficientnet_lite0:logits"):
            config_from_dict(resolve_preset(path.stem, spec))
    else:
        pytest.fail(f"{path}: a YAML file that no job reads")
    raw = load_yaml(path)
    assert len(raw) > 0  # a file holds what differs from its schema, so it is never empty


def test_no_training_config_reads_the_check_photos() -> None:
    """data/check_photos (scripts/extra_photos.py) is a check on photos no inverter saw: no training config reads it,
    whatever layer of a sweep."""
    for path in (p for p in YAMLS if p.parent.name == "train"):
        c = resolve_config(load_config(TrainConfig, path))
        datas = [c["data"], *(layer.get("data", {}) for layer in (c.get("per_layer") or {}).values())]
        roots = [str(source.get("root", "")) for data in datas for source in data.get("sources") or []]
        assert not any("check_photos" in root for root in roots), path


def test_yaml_files_hold_only_what_differs() -> None:
    for path in YAMLS:
        if path.parent.name not in ("train", "analyze"):
            continue
        kind = TrainConfig if path.parent.name == "train" else schema(path.stem)
        defaults = OmegaConf.to_container(OmegaConf.structured(kind))
        for key, value in OmegaConf.to_container(load_yaml(path)).items():
            assert defaults.get(key) != value, f"{path.name}: {key}: {value!r} is the default"


def test_defaults_come_from_the_schema_and_files_merge_over_them(tmp_path: Path) -> None:
    partial = tmp_path / "partial.yaml"
    partial.write_text("representation: dsift\ngd: {lambda_tv: 10}\n")
    cfg = plain(load_config(InvertConfig, partial, ["batch_size=2"]))
    assert cfg["representation"] == "dsift" and cfg["gd"] == {"lambda_tv": 10.0} and cfg["batch_size"] == 2
    assert cfg["device"] == InvertConfig.device and cfg["preset"] == "mv2015"
    assert plain(load_config(CompareConfig))["hybrid"]["iterations"] == 120
    assert {"mv2015", "tuned", "fast"} <= set(list_presets())


@pytest.mark.parametrize("argv, expected", [
    (["invert", "-r", "hog", "builtin:camera", "--out", "OUT", "foo=1"], "Key 'foo' not in 'InvertConfig'"),
    (["invert", "-r", "hog", "builtin:camera", "--out", "OUT", "batch_size=1.5"], "batch_size: Value '1.5'"),
    (["invert", "-r", "hog", "builtin:camera", "--out", "OUT", "progress=maybe"], "progress: Value 'maybe'"),
    (["invert", "-r", "hog", "builtin:camera", "--out", "OUT", "batch_size=0"], "batch_size must be an integer >= 1"),
    (["invert", "--method", "learned", "builtin:camera", "--out", "OUT", "gd.restarts=abc"], "gd.restarts: Value 'abc'"),
    (["train", "-c", "tiny", "grey=abc"], "grey: Value 'abc' is not a valid bool"),
    (["train", "-c", "tiny", "data.foo=1"], "data: got an unexpected keyword argument 'foo'"),
    (["config", "-c", str(config_dir() / "train" / "efficientnet_lite0_layers.yaml"), "train",
      "data.sources.0.scale=[0.5,1.0]"], "data.sources.0.scale: cannot set a key inside a list; give the whole list, "
                                         "data.sources=[...]"),
    (["analyze", "window", "nope=1"], "Key 'nope' not in 'AnalyzeWindowConfig'"),
    (["config", "analyze:window", "window=abc"], "window: Value 'abc'"),
    (["config", "nope"], "unknown job"),
    (["invert", "-r", "hog", "builtin:camera", "--out", "OUT", "device=tpu"], "device=tpu is not a device"),
    (["invert", "-r", "hog", "builtin:camera", "--out", "OUT", "device=meta"], "device=meta is not a device"),
    (["compare", "run_dir=OUT", "device=meta"], "device=meta is not a device"),
    (["analyze", "window", "layers=[hog]", "device=tpu", "--out", "OUT"], "device=tpu is not a device"),
    (["invert", "-r", "hog", "builtin:camera", "--out", "OUT", "batch_size=-1"], "batch_size must be an integer >= 1"),
    (["train", "-c", "tiny", "run_dir=OUT", "trainer.devices=0"], "trainer: `Trainer(devices=0)`"),
    (["train", "-c", "tiny", "run_dir=OUT", "trainer.accelerator=tpu"], "trainer: "),
])
def test_bad_keys_and_values_are_one_line(argv: list[str], expected: str, tmp_path: Path, capsys) -> None:
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_config_command_prints_the_merged_config(capsys) -> None:
    assert main(["config", "compare", "representations=[hog]", "hybrid.iterations=5"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.representations == ["hog"] and printed.hybrid.iterations == 5 and printed.image_size == 192
    assert main(["config", "analyze:maximize"]) == 0
    assert "normalizer_images" in capsys.readouterr().out


def test_invert_config_file_merges_over_the_defaults(tmp_path: Path, capsys) -> None:
    """A partial --config file keeps every other default; an unknown key in it is refused, naming the file."""
    partial = tmp_path / "partial.yaml"
    partial.write_text("representation: hog\ngd: {schedule: [[0.004, 3]]}\nprogress: false\n")
    out = tmp_path / "out"
    assert main(["invert", "--config", str(partial), "builtin:camera", "builtin:coins", "--out", str(out)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("representation: hog\nfoo: 1\n")
    assert main(["invert", "--config", str(bad), "builtin:camera", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"invert ({bad})" in err[0] and "Key 'foo' not in 'InvertConfig'" in err[0], err
