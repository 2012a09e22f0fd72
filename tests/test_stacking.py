"""A deep layer's decoder stacked on a shallower one's (preimage.training.stacking): the folded decoder equals the
adapter followed by the shallow decoder (run one after the other as the reference), the adapter learns a known
local map, and scripts/stack_decoder.py writes a bundle that `preimage train init=` fine-tunes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from preimage.cli import main
from preimage.inversion.bundles import load_bundle
from preimage.inversion.networks import Decoder, DecoderConfig
from preimage.training.stacking import build_adapter, fit_adapter, stack_decoder

ROOT = Path(__file__).resolve().parents[1]


def _randomize_(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def test_stacked_decoder_is_the_adapter_then_the_shallow_decoder() -> None:
    shallow = Decoder((6, 4, 4), (32, 32), DecoderConfig(width=8, pre_convs=2, min_width=4, cell=8, input_scale=2.0))
    _randomize_(shallow, 0)
    features = torch.randn(2, 5, 5, 7, generator=torch.Generator().manual_seed(2))
    for kernel in (3, 1):
        adapter = build_adapter(5, 6, width=8, convs=2, kernel=kernel)
        _randomize_(adapter, 1)
        stacked = stack_decoder(adapter, shallow, (5, 4, 4), input_scale=0.5)
        assert stacked.config.pre_convs == 4 and stacked.config.input_scale == 0.5
        assert stacked.feature_shape == (5, 4, 4)
        with torch.no_grad():
            for size, offset in (((40, 56), (0, 0)), ((37, 53), (3, 1))):  # the border cells too: zero padding
                expected = shallow(adapter(0.5 * features) / 2.0, size, offset)
                assert torch.allclose(stacked(features, size, offset), expected, atol=1e-5)


def test_stack_decoder_refuses_what_does_not_fold() -> None:
    shallow = Decoder((6, 4, 4), (32, 32), DecoderConfig(width=8, pre_convs=1, min_width=4, cell=8))
    with pytest.raises(ValueError, match="through 8 to 6"):
        stack_decoder(build_adapter(5, 6, width=4), shallow, (5, 4, 4), 1.0)
    with_bias = build_adapter(5, 6, width=8)
    with_bias[-1] = torch.nn.Conv2d(8, 6, 1)
    with pytest.raises(ValueError, match="without bias"):
        stack_decoder(with_bias, shallow, (5, 4, 4), 1.0)
    with pytest.raises(ValueError, match="slope 0.2"):  # the folded decoder would use its own slope
        stack_decoder(build_adapter(5, 6, width=8, leaky_slope=0.1), shallow, (5, 4, 4), 1.0)
    margin = Decoder((6, 4, 4), (32, 32), DecoderConfig(width=8, pre_convs=1, cell=8, paint_margin=True))
    with pytest.raises(ValueError, match="paint_margin"):
        stack_decoder(build_adapter(5, 6, width=8), margin, (5, 4, 4), 1.0)


def test_fit_adapter_learns_a_local_map() -> None:
    g = torch.Generator().manual_seed(0)
    deep = torch.randn(256, 4, 5, 5, generator=g)
    kernel = torch.randn(3, 4, 3, 3, generator=g) / 6
    shallow = F.leaky_relu(F.conv2d(deep, kernel, padding=1), 0.2)  # what each cell's neighbourhood says
    adapter = build_adapter(4, 3, width=32, convs=1)
    with torch.no_grad():
        untrained = float((adapter(deep) - shallow).pow(2).mean())
        mse = fit_adapter(adapter, deep, shallow, steps=800, batch_size=32, lr=1e-2, generator=g)  # grad on inside
        assert mse == pytest.approx(float((adapter(deep) - shallow).pow(2).mean()), rel=1e-4)
    assert mse < 0.02 * float(shallow.var()) < untrained


def test_stack_decoder_script_writes_a_bundle_that_train_fine_tunes(tmp_path: Path) -> None:
    network = ["representation_options={weights: random}", "grey=false", "data.crop=64"]
    shallow_run = tmp_path / "stage6"
    assert main(["train", "-c", "tiny", f"run_dir={shallow_run}", "representation=efficientnet_lite0:stage6",
                 *network]) == 0
    init = tmp_path / "stage7_init.pt"
    script = [sys.executable, str(ROOT / "scripts" / "stack_decoder.py"), "--config",
              str(ROOT / "src/preimage/configs/train/tiny.yaml"), "--on", str(shallow_run / "bundle.pt"),
              "--crops", "8", "--steps", "3"]
    done = subprocess.run([*script, "--out", str(init), "representation=efficientnet_lite0:stage7", *network],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "validation image_error: stacked decoder" in done.stdout
    manifest, _ = load_bundle(init)
    assert manifest["spec"] == "efficientnet_lite0:stage7" and manifest["decoder"]["pre_convs"] == 3
    assert manifest["stacked_on"] == str(shallow_run / "bundle.pt")
    assert main(["train", "-c", "tiny", f"run_dir={tmp_path / 'stage7'}", "representation=efficientnet_lite0:stage7",
                 f"init={init}", "decoder.pre_convs=3", *network]) == 0
    assert load_bundle(tmp_path / "stage7" / "bundle.pt")[0]["decoder"]["pre_convs"] == 3
    other = subprocess.run([*script, "--out", str(tmp_path / "no.pt"), "representation=efficientnet_lite0:stage5",
                            *network], capture_output=True, text=True, cwd=tmp_path)
    assert other.returncode != 0 and "one grid" in other.stderr and not (tmp_path / "no.pt").exists()
