"""``fit: ridge``: the linear decoder of vector features fitted in closed form, checked against least squares solved
another way, the bilinear resize written out, and a real `preimage train` run read back from its files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from preimage.cli import main
from preimage.inversion.bundles import load_bundle
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.networks import build_decoder
from preimage.metrics import image_error
from preimage.training.datamodule import ImageDataModule
from preimage.training.ridge import Moments, ridge_weights, seed_images, set_linear

LINEAR = ["decoder.fc_widths=[]", "decoder.width=3", "decoder.seed_side=4", "decoder.upsamplings=0",
          "decoder.leaky_slope=1.0"]


def test_seed_images_undo_the_bilinear_resize() -> None:
    seeds = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    images = F.interpolate(seeds, size=(40, 36), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seed_images(images, 4), seeds.flatten(1), rtol=0, atol=1e-10)
    # for any image, the resize of its seed image is the nearest one: the residual is orthogonal to every resize
    other = torch.rand(1, 1, 40, 36, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    residual = other - F.interpolate(seed_images(other, 4).view(1, 1, 4, 4), size=(40, 36), mode="bilinear",
                                     align_corners=False)
    basis = F.interpolate(torch.eye(16, dtype=torch.float64).view(16, 1, 4, 4), size=(40, 36), mode="bilinear",
                          align_corners=False)
    assert float((basis * residual).flatten(1).sum(1).abs().max()) < 1e-10


def test_ridge_weights_against_least_squares_of_the_augmented_system() -> None:
    g = torch.Generator().manual_seed(0)
    n, d, t, lam = 60, 6, 4, 0.3
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 3.0, 1.0, 1.0])
    z[:, 4] = 0.1  # a constant feature (not exact in binary): weight 0
    z[:, 5] = z[:, 0] + 0.1 * z[:, 5]  # two correlated ones
    y = torch.randn(n, t, generator=g, dtype=torch.float64) + z[:, :2] @ torch.randn(2, t, generator=g, dtype=torch.float64)
    moments = Moments(d, t)
    moments.add(z[:25], y[:25])  # in two batches
    moments.add(z[25:], y[25:])
    w, b = ridge_weights(moments, lam)
    # reference: standardize the live features, then min ‖Zs B − Yc‖²/n + λ‖B‖² as one least-squares problem,
    # [Zs; √(nλ) I] B = [Yc; 0], solved by torch.linalg.lstsq (QR), not by the normal equations
    live = [0, 1, 2, 3, 5]
    mean, std = z[:, live].mean(0), z[:, live].std(0, unbiased=False)
    zs, yc = (z[:, live] - mean) / std, y - y.mean(0)
    a = torch.cat([zs, (n * lam) ** 0.5 * torch.eye(len(live), dtype=torch.float64)])
    rhs = torch.cat([yc, torch.zeros(len(live), t, dtype=torch.float64)])
    expected = torch.linalg.lstsq(a, rhs).solution / std[:, None]
    torch.testing.assert_close(w[live], expected, rtol=1e-8, atol=1e-10)
    assert float(w[4].abs().max()) == 0.0
    torch.testing.assert_close(b, y.mean(0) - z.mean(0) @ w, rtol=1e-10, atol=1e-12)


def test_the_linear_decoder_is_the_read_out_resized() -> None:
    decoder = build_decoder((10,), (24, 24), fc_widths=[], width=3, seed_side=4, upsamplings=0, leaky_slope=1.0,
                            input_scale=0.5)
    g = torch.Generator().manual_seed(0)
    w, b, z = torch.randn(10, 48, generator=g), torch.randn(48, generator=g), torch.randn(2, 10, generator=g)
    set_linear(decoder, w, b)
    with torch.no_grad():
        out = decoder(z, (24, 24))
    by_hand = F.interpolate((0.5 * z @ w + b).view(2, 3, 4, 4), size=(24, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, by_hand, rtol=1e-5, atol=1e-5)


def test_train_fit_ridge_writes_a_bundle_that_scores_what_it_says(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "-c", "tiny", f"run_dir={run}", "representation=efficientnet_lite0:pool", "grey=false", "fit=ridge",
            "ridge.batches=6", "ridge.lambdas=[0.01,100.0]", "monitor=val/image_error", "bundle_float16=true", *LINEAR]
    assert main(args) == 0
    manifest, _ = load_bundle(run / "bundle.pt")
    fit = manifest["ridge"]
    scores = {float(k): v["val/image_error"] for k, v in fit["scores"].items()}
    assert set(scores) == {0.01, 100.0} and fit["crops"] == 6 * 4
    assert fit["lambda"] == min(scores, key=scores.get)
    assert manifest["metrics"]["val/image_error"] == scores[fit["lambda"]]
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("val/image_error")}
    assert logged == pytest.approx({0: scores[0.01], 1: scores[100.0]}, rel=1e-6)
    # the bundle, loaded as users load it, on the run's validation crops: the image_error the fit recorded
    data = ImageDataModule(**OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))["data"])
    data.setup("validate")
    crops = torch.cat(list(data.val_dataloader()))
    with torch.no_grad():
        recon = LearnedInverter.from_bundle(run / "bundle.pt")(crops)
    assert float(image_error(recon, crops).mean()) == pytest.approx(scores[fit["lambda"]], rel=1e-4)  # float16 too
    capsys.readouterr()
    assert main(args) == 2  # a second fit into the same run directory
    assert "already holds a fitted bundle" in capsys.readouterr().err


POOL = ["representation=efficientnet_lite0:pool", "grey=false"]


@pytest.mark.parametrize("overrides, expected", [
    (POOL, "fit=ridge fits a linear decoder"),
    (["representation=hog", *LINEAR[:1]], "is for vector features"),
    ([*POOL, "resume=true", *LINEAR], "do not apply"),
    ([*POOL, "decoder.input_dropout=0.2", *LINEAR], "input_dropout do not apply"),
    ([*POOL, "ridge.lambdas=[]", *LINEAR], "ridge.lambdas"),
    ([*POOL, "monitor=val/loss", *LINEAR], "not val/loss"),
    ([*POOL, "lambda_feat=0.1", *LINEAR], "lambda_feat must be 0"),
    ([*POOL, "ridge.batches=17", *LINEAR], "more than the training"),
    ([*POOL, *LINEAR, "decoder.seed_side=40"], "larger than the 32-px crops"),
])
def test_fit_ridge_errors_are_one_line_and_write_nothing(tmp_path: Path, capsys, overrides: list[str],
                                                         expected: str) -> None:
    run = tmp_path / "run"
    assert main(["train", "-c", "tiny", f"run_dir={run}", "fit=ridge", *overrides]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (run / "config.yaml").exists() and not (run / "tensorboard").exists()


def test_fit_must_be_gradient_or_ridge(tmp_path: Path, capsys) -> None:
    assert main(["train", "-c", "tiny", f"run_dir={tmp_path / 'run'}", "fit=closed"]) == 2
    assert "fit must be one of gradient, ridge" in capsys.readouterr().err
