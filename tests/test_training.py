"""Training learned inverters: a real Trainer on a tiny CPU budget, its logs, checkpoints, resume, bundle and CLI."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from preimage import build_representation
from preimage.cli import main
from preimage.config import config_dir
from preimage.schemas import TrainConfig, load_config
from preimage.images import load_image, to_grey
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.networks import build_decoder
from preimage.photos import load_photo
from preimage.training.module import InverterModule, lr_factor
from preimage.training.train import build, feature_scale, resolve_config, train

SCALARS = {"train/loss", "train/lr", "train/images_per_s", "val/loss", "val/feature_error", "val/image_error",
           "val/psnr", "val/ssim"}


def tiny(run_dir: Path, *overrides: str) -> DictConfig:
    """configs/train/tiny.yaml (4 steps, validation every 2) writing to ``run_dir``."""
    return load_config(TrainConfig, config_dir() / "train" / "tiny.yaml", [f"run_dir={run_dir}", *overrides])


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """One tiny training run, shared by the tests that only read it."""
    torch.manual_seed(123)  # train() seeds itself: the global state before it must not matter
    return train(tiny(tmp_path_factory.mktemp("fit") / "run"))


def write_photo(path: Path, name: str, top: int, left: int, side: int = 48) -> Path:
    arr = (load_photo(name).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)[top:top + side, left:left + side]
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path)
    return path


def test_fit_writes_tensorboard_scalars_and_images(fitted: tuple[dict, dict]) -> None:
    metrics, objects = fitted
    acc = events(objects["run_dir"])
    assert SCALARS <= set(acc.Tags()["scalars"])
    assert "val/reconstructions" in acc.Tags()["images"]
    assert [e.step for e in acc.Scalars("train/loss")] == [0, 1, 2, 3]
    assert all(e.value > 0 for e in acc.Scalars("train/images_per_s"))
    assert len(acc.Scalars("val/feature_error")) == 2  # validation every 2 of 4 steps
    grid = acc.Images("val/reconstructions")[0]
    assert (grid.width, grid.height) == (4 * 34 + 2, 2 * 34 + 2)  # 4 originals above their reconstructions, 32 px
    assert set(metrics) == {"val/loss", "val/feature_error", "val/image_error", "val/psnr", "val/ssim"}
    assert all(math.isfinite(v) for v in metrics.values()) and 0 < metrics["val/ssim"] < 1


def test_checkpoints_best_and_last_without_the_representation(fitted: tuple[dict, dict]) -> None:
    metrics, objects = fitted
    ckpt_dir = objects["run_dir"] / "checkpoints"
    names = sorted(p.name for p in ckpt_dir.iterdir())
    assert len(names) == 2 and names[1] == "last.ckpt" and names[0].startswith("best-step"), names
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    best = torch.load(objects["checkpoint"].best_model_path, weights_only=True)
    assert last["global_step"] == 4 and objects["trainer"].global_step == 4
    assert best["val_metrics"] == metrics
    assert best["val_metrics"]["val/feature_error"] == pytest.approx(float(objects["checkpoint"].best_model_score))
    assert all(k.startswith("decoder.") for k in last["state_dict"])  # Φ is rebuilt from its spec
    for key, value in objects["module"].decoder.state_dict().items():  # the module ends with the last weights
        assert torch.equal(last["state_dict"][f"decoder.{key}"], value)


def test_bundle_round_trip_is_bit_identical(fitted: tuple[dict, dict]) -> None:
    metrics, objects = fitted
    raw = torch.load(objects["bundle"], weights_only=True)
    manifest = raw["manifest"]
    best_step = torch.load(objects["checkpoint"].best_model_path, weights_only=True)["global_step"]
    assert manifest["spec"] == "hog" and manifest["steps"] == best_step and manifest["trained_steps"] == 4
    assert manifest["metrics"] == metrics and manifest["data"]["grey"] is True and manifest["image_size"] == [32, 32]
    assert manifest["decoder"]["out_channels"] == 1 and manifest["decoder"]["input_scale"] > 0
    inverter = LearnedInverter.from_bundle(objects["bundle"])
    trained, loaded = objects["decoder"].state_dict(), inverter.decoder.state_dict()
    assert trained.keys() == loaded.keys() and all(torch.equal(trained[k], loaded[k]) for k in trained)
    images = to_grey(torch.rand(3, 3, 40, 48))
    with torch.no_grad():  # the loaded decoder runs channels-last: the same up to float rounding
        features = inverter.representation(images)
        expected = objects["decoder"](features, (40, 48))
        torch.testing.assert_close(inverter.decoder(features, (40, 48)), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(inverter(images), expected.clamp(0, 1), rtol=0, atol=1e-5)


def test_cli_train_is_seeded_and_reproducible(fitted: tuple[dict, dict], tmp_path: Path, capsys) -> None:
    """The console entry point with overrides; the same seed gives the same weights as the fixture's run."""
    run_dir = tmp_path / "cli"
    assert main(["train", "--config", "tiny", f"run_dir={run_dir}", "progress=false"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {run_dir / 'bundle.pt'}" in out and "val/feature_error" in out
    mine, theirs = (torch.load(p, weights_only=True) for p in (run_dir / "bundle.pt", fitted[1]["bundle"]))
    assert mine["state_dict"].keys() == theirs["state_dict"].keys()
    assert all(torch.equal(mine["state_dict"][k], theirs["state_dict"][k]) for k in mine["state_dict"])
    assert mine["manifest"]["command"].startswith("preimage train --config tiny run_dir=")
    assert (run_dir / "config.yaml").is_file()


def test_resume_continues_from_the_saved_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _, first = train(tiny(run_dir, "trainer.max_steps=2"))
    assert first["trainer"].global_step == 2
    _, second = train(tiny(run_dir, "resume=true", "trainer.max_steps=4"))
    assert second["trainer"].global_step == 4
    assert second["module"].lr_schedulers().last_epoch == 4  # the schedule carried on too
    steps = [e.step for e in events(run_dir).Scalars("train/loss")]
    assert steps == [0, 1, 2, 3]  # the second fit logged steps 2 and 3 only: it did not restart from 0
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_run_dir_errors_are_one_line(fitted: tuple[dict, dict], tmp_path: Path, capsys) -> None:
    cases = [([f"run_dir={tmp_path / 'empty'}", "resume=true"], "nothing to resume"),
             ([f"run_dir={fitted[1]['run_dir']}"], "already holds checkpoints"),
             ([f"run_dir={tmp_path / 'x'}", "lamda_feat=1"], "Key 'lamda_feat' not in 'TrainConfig'. Did you mean: 'lambda_feat'?"),
             ([f"run_dir={tmp_path / 'x'}", "trainer.max_steps=5"], "multiple of val_check_interval"),
             ([f"run_dir={tmp_path / 'x'}", "data.grey=false"], "grey=True sets data.grey"),
             ([f"run_dir={tmp_path / 'x'}", "optim.momentum=0.9"], "unknown optimizer option(s) momentum")]
    for overrides, expected in cases:
        assert main(["train", "-c", "tiny", *overrides]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (overrides, lines)


@pytest.mark.parametrize("path", sorted((config_dir() / "train").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_train_config_builds(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # stand-ins for the folders scripts/extra_photos.py writes (a fresh clone has none)
    for source in OmegaConf.load(path).data.get("sources", []):
        if source.kind == "folder":
            folder = tmp_path / source.root
            folder.mkdir(parents=True)
            for i in range(3):
                image = np.random.default_rng(i).integers(0, 256, (200, 240, 3), dtype=np.uint8)
                Image.fromarray(image).save(folder / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    c = resolve_config(load_config(TrainConfig, path))
    representation, datamodule, module = build(c)
    assert representation.spec == c["representation"] and module.grey == c["grey"]
    assert isinstance(c["decoder"]["input_scale"], float)  # auto → a number
    crop = datamodule.hparams.crop
    x = torch.rand(2, 1 if c["grey"] else 3, crop, crop)
    with torch.no_grad():
        assert module.model_step(x)["recon"].shape == x.shape


def test_feature_scale_of_logged_probabilities() -> None:
    """``input_scale: auto`` with ``input_log``: 1 / std of log(prob) less each row's mean, as written out here."""
    prob = build_representation("efficientnet_lite0:prob")
    images = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    with torch.no_grad():
        probabilities = prob(torch.stack(images))
    logged = torch.log(probabilities.clamp_min(1e-30))
    centred = logged - logged.mean(dim=1, keepdim=True)
    assert feature_scale(prob, images, log=True) == pytest.approx(1 / float(centred.std()), rel=1e-3)
    assert feature_scale(prob, images) == pytest.approx(1 / float(probabilities.std()), rel=1e-3)


def test_channels_last_training_option(tmp_path: Path) -> None:
    """``channels_last=true``: the decoder's convolution weights are channels-last and a training step gives the
    loss and gradients of the default layout (within float32 rounding)."""
    outputs = []
    for layout in (False, True):
        torch.manual_seed(0)
        _, _, module = build(resolve_config(tiny(tmp_path / "run", f"channels_last={str(layout).lower()}")))
        weights = [p for p in module.decoder.parameters() if p.dim() == 4]
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last) == layout for p in weights
                               if p.shape[-1] > 1 or p.shape[-2] > 1)
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        loss = module.model_step(x)["loss"]
        loss.backward()
        outputs.append((loss.detach(), [p.grad.clone() for p in weights]))
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(outputs[0][1], outputs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_feature_term_backpropagates_through_the_representation() -> None:
    representation = build_representation("hog")
    decoder = build_decoder(representation.output_shape(32, 32), (32, 32), width=8, pre_convs=1, min_width=4,
                            out_channels=1)
    batch = torch.rand(3, 1, 32, 32)
    batch[0] = 0.5  # a flat crop: Φ is all zero, left out of the normalized feature term
    plain = InverterModule(representation, decoder, grey=True).model_step(batch)
    assert set(plain) == {"images", "features", "recon", "loss"}
    out = InverterModule(representation, decoder, lambda_feat=0.5, grey=True).model_step(batch)
    assert torch.isfinite(out["feature_loss"]) and out["feature_loss"] > 0
    assert torch.allclose(out["loss"], out["image_mse"] + 0.5 * out["feature_loss"])
    decoder.zero_grad()
    out["feature_loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in decoder.parameters())
    with pytest.raises(ValueError, match="out_channels=3"):
        InverterModule(representation, decoder, grey=False)
    with pytest.raises(ValueError, match="unknown name"):
        InverterModule(representation, decoder, grey=True, scheduler={"name": "linear"})


def test_lr_schedules() -> None:
    assert [lr_factor(s, total_steps=10, warmup_steps=2) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_factor(10, total_steps=10, min_factor=0.1) == pytest.approx(0.1)
    assert [lr_factor(s, total_steps=10, name="step", step_size=3, gamma=0.5) for s in (2, 3, 6)] == [1, 0.5, 0.25]
    assert lr_factor(7, total_steps=10, name="constant", warmup_steps=2) == 1.0


def test_invert_learned_writes_the_outputs_of_gd(fitted: tuple[dict, dict], tmp_path: Path, capsys) -> None:
    bundle = fitted[1]["bundle"]
    a = write_photo(tmp_path / "a.png", "astronaut", 60, 100)
    b = write_photo(tmp_path / "b.png", "camera", 100, 200, side=40)
    out = tmp_path / "out"
    assert main(["invert", "--method", "learned", "--checkpoint", str(bundle), str(a), str(b), "--out", str(out),
                 "device=cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".preimage-output", "a.npy", "a.png", "b.npy", "b.png", "metrics.json",
                                                    "overview.png"]
    report = json.loads((out / "metrics.json").read_text())
    for rec in report["images"]:
        for key in ("feature_error", "normalized_loss", "image_error", "psnr", "ssim", "seconds"):
            assert isinstance(rec[key], float) and math.isfinite(rec[key]), key
    assert report["representation"]["spec"] == "hog" and report["config"]["representation"] == "hog"
    assert report["learned"]["checkpoint"] == str(bundle) and report["learned"]["grey"] is True
    recon = np.load(out / "a.npy")
    assert recon.dtype == np.float32 and recon.shape == (48, 48, 1)
    with torch.no_grad():
        expected = LearnedInverter.from_bundle(bundle)(load_image(a, grey=True)[None])[0]
    assert np.array_equal(recon, expected.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("case", ["lightning_ckpt", "other_representation", "truncated", "no_checkpoint"])
def test_invert_learned_bad_checkpoint_is_one_line(fitted: tuple[dict, dict], tmp_path: Path, case: str,
                                                   capsys) -> None:
    objects = fitted[1]
    image = write_photo(tmp_path / "a.png", "camera", 0, 0, side=40)
    args = ["--checkpoint", str(objects["bundle"])]
    if case == "lightning_ckpt":
        args = ["--checkpoint", str(objects["run_dir"] / "checkpoints" / "last.ckpt")]
    elif case == "other_representation":
        args += ["-r", "dsift"]
    elif case == "truncated":
        cut = tmp_path / "cut.pt"
        cut.write_bytes(Path(objects["bundle"]).read_bytes()[:2000])
        args = ["--checkpoint", str(cut)]
    elif case == "no_checkpoint":
        args = []
    assert main(["invert", "--method", "learned", *args, str(image), "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    expected = {"lightning_ckpt": "Lightning training checkpoint", "other_representation": "not the 'dsift'",
                "truncated": "truncated or corrupt", "no_checkpoint": "--checkpoint NAME|PATH"}[case]
    assert len(lines) == 1 and expected in lines[0], lines


def test_a_rejected_resume_touches_nothing(fitted: tuple[dict, dict], capsys) -> None:
    """Bad settings on resume are refused before the run directory changes: same config.yaml, same files."""
    run_dir = fitted[1]["run_dir"]
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    assert main(["train", "-c", "tiny", f"run_dir={run_dir}", "resume=true", "data.batch_size=0"]) == 2
    assert "data.batch_size must be an integer >= 1" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    assert after == before


def test_one_run_per_run_directory(tmp_path: Path, capsys) -> None:
    """A run directory whose lock is held by a live process is refused at once, writing nothing; a lock left by a
    killed process is stale and taken over; the lock is gone after the run."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / ".lock").write_text(f"{socket.gethostname()}:{holder.pid}")
        assert main(["train", "-c", "tiny", f"run_dir={run_dir}"]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another preimage process (pid {holder.pid} on {socket.gethostname()})" in err
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "-c", "tiny", f"run_dir={run_dir}"]) == 0  # the killed holder's lock is stale
    assert not (run_dir / ".lock").exists() and (run_dir / "bundle.pt").is_file()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_saying_what_was_kept(tmp_path: Path, signum: int) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "preimage.cli", "train", "-c", "tiny", f"run_dir={run_dir}",
           "trainer.max_steps=2000", "trainer.val_check_interval=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err  # 130 for Ctrl-C, 143 for SIGTERM
    said = "interrupted" if signum == signal.SIGINT else "interrupted by SIGTERM"
    assert err.strip().splitlines()[-1].startswith(f"preimage train: {said}; the run directory keeps")
    assert "Traceback" not in err and not (run_dir / ".lock").exists()
    assert "KeyboardInterrupt" not in err  # Lightning's own notice would be a second line about the interrupt
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step >= 2
    logged = [e.step for e in events(run_dir).Scalars("train/loss")]
    # resumed to 2 steps past the checkpoint: what the interrupted run logged past it is not shown twice
    assert main(["train", "-c", "tiny", f"run_dir={run_dir}", "resume=true", f"trainer.max_steps={step + 2}",
                 "trainer.val_check_interval=2"]) == 0
    steps = [e.step for e in events(run_dir).Scalars("train/loss")]
    assert steps == list(range(step + 2)) and len(logged) >= step


def test_a_run_resumed_mid_epoch_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    """The data order resumes: 4 steps, then a resume to 8, give the weights of 8 steps in one go (16 batches an
    epoch, so step 4 is mid-epoch; a constant learning rate, so that the schedule does not depend on max_steps)."""
    common = ["scheduler.name=constant", "scheduler.warmup_steps=0", "trainer.val_check_interval=4"]
    _, straight = train(tiny(tmp_path / "straight", "trainer.max_steps=8", *common))
    train(tiny(tmp_path / "resumed", "trainer.max_steps=4", *common))
    _, resumed = train(tiny(tmp_path / "resumed", "trainer.max_steps=8", "resume=true", *common))
    a, b = straight["module"].decoder.state_dict(), resumed["module"].decoder.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_init_starts_from_a_bundle(fitted: tuple[dict, dict], tmp_path: Path) -> None:
    """init=<bundle>: the bundle's decoder, its config over `auto`; with a vanishing step the export keeps its weights."""
    bundle = fitted[1]["bundle"]
    _, objects = train(tiny(tmp_path / "again", f"init={bundle}", "optim.lr=1e-30", "optim.weight_decay=0",
                            "trainer.max_steps=2", "data.side_jitter=5"))
    start, again = (torch.load(p, weights_only=True) for p in (bundle, objects["bundle"]))
    assert start["manifest"]["decoder"] == again["manifest"]["decoder"]
    for k in start["state_dict"]:
        torch.testing.assert_close(again["state_dict"][k], start["state_dict"][k], rtol=0, atol=1e-20)
    with pytest.raises(ValueError, match=r"init=.*decoder\.width=16 \(the bundle's: 8\)"):
        train(tiny(tmp_path / "other", f"init={bundle}", "decoder.width=16"))
    _, objects = train(tiny(tmp_path / "dropout", f"init={bundle}", "decoder.input_dropout=0.3",  # training only
                            "trainer.max_steps=2"))
    dropout = torch.load(objects["bundle"], weights_only=True)["manifest"]["decoder"]
    assert dropout == {**start["manifest"]["decoder"], "input_dropout": 0.3}
    with pytest.raises(ValueError, match="init=nowhere.pt: "):
        train(tiny(tmp_path / "missing", "init=nowhere.pt"))
