"""CUDA check: GD, learned and hybrid inversion and a 50-step training on a device, each against the CPU, then
throughput and GD speed there. Run by scripts/gpu_check.sh; ``--device cpu`` runs the same code against
the CPU itself (to test the script where no GPU is).

Checks (exit 1 if one fails):
- Φ (hog, efficientnet_lite0:stage4) and the learned bundles' reconstructions equal the CPU's within 1e-4 in
  float32 (TF32 off; the differences with PyTorch's default TF32 convolutions are printed beside);
- GD (mv2015 cut to --iterations) and the hybrid (the same steps at mv2015's last rate, from the learned
  reconstruction) reach a final data loss within 2 % of the CPU's (descents
  follow float rounding apart, so the loss, not the pixels, is compared); and the whole ``fast`` preset (Adam on a
  clamped Laplacian pyramid at network layers) within 5 % (Adam's normalized steps carry rounding further);
- 50 training steps of configs/train/tiny.yaml end with a validation loss within 2 % of the CPU's, and within
  10 % of it with ``channels_last=true trainer.precision=bf16-mixed`` (bf16 rounds every product);
Figures: learned images/s at batch 1 and 64 (fastest of 5 passes), GD seconds per image (full mv2015 schedule,
extrapolated from --iterations steps) for hog and efficientnet_lite0:stage4 at 224×224; training images/s of
configs/train/efficientnet_lite0_stage4.yaml (its decoder and crops, the default built-in sources, batch 64 and
8 loader workers unless --train-batch / --train-workers say otherwise) in
float32, channels-last, bf16-mixed and both, from step 20 on (the run's TensorBoard event times).

    .venv/bin/python scripts/gpu_check.py [--device cuda] [--iterations 50] [--train-steps 200] [--train-workers 8]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from preimage import build_representation, keep_freed_memory
from preimage.imagesets import prepare_image
from preimage.config import config_dir
from preimage.inversion.methods import HybridMethod
from preimage.inversion.gd import invert_gd
from preimage.inversion.learned import LearnedInverter
from preimage.inversion.presets import gd_config
from preimage.photos import TEST_PHOTOS, load_photo
from preimage.schemas import TrainConfig, load_config
from preimage.training.datamodule import DEFAULT_SOURCES
from preimage.training.train import train

from benchmark_learned import inference_throughput  # scripts/, on the path when this file is run

SPECS = {"hog": "checkpoints/hog.pt", "efficientnet_lite0:stage4": "checkpoints/efficientnet_lite0_stage4.pt"}
CPU = torch.device("cpu")
FAST_TRAINING = {"float32": (), "channels-last": ("channels_last=true",), "bf16-mixed": ("trainer.precision=bf16-mixed",),
                 "channels-last + bf16": ("channels_last=true", "trainer.precision=bf16-mixed")}


def photos(n: int, grey: bool, size: int = 224) -> torch.Tensor:
    return torch.stack([prepare_image(load_photo(TEST_PHOTOS[i % len(TEST_PHOTOS)]), size=size, grey=grey)
                        for i in range(n)])


def shortened(spec: str, iterations: int):
    """mv2015 for ``spec`` cut to ``iterations`` steps at its first rate, and the full preset."""
    full = gd_config("mv2015", spec)
    return gd_config("mv2015", spec, schedule=[[full.schedule[0][0], iterations]]), full


def training_rate(run_dir: Path, accelerator: str, extra: tuple[str, ...], steps: int, batch: int = 64,
                  workers: int = 8) -> float:
    """Training images/s of the stage4 config over steps 20 … ``steps``, read from the wall times of the run's
    TensorBoard ``train/loss`` events (start-up, the first steps and the final validation excluded)."""
    cfg = load_config(TrainConfig, config_dir() / "train" / "efficientnet_lite0_stage4.yaml",
                      [f"run_dir={run_dir}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                       f"trainer.accelerator={accelerator}", f"data.batch_size={batch}", f"data.num_workers={workers}",
                       "data.val_size=32", "data.test_size=32", "trainer.deterministic=false",
                       "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=10", "progress=false",
                       "image_log_every=100000", *extra])
    cfg.data.sources = [dict(s) for s in DEFAULT_SOURCES]  # the stage4 config's extra photos need a download
    train(cfg)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    logged = [e for e in events.Scalars("train/loss") if e.step >= 20]
    first, last = logged[0], logged[-1]
    return (last.step - first.step) * batch / (last.wall_time - first.wall_time)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """cuDNN convolutions and CUDA matrix products in TF32 (PyTorch's default for convolutions) or in float32."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iterations", type=int, default=50, help="GD steps compared and timed")
    parser.add_argument("--train-steps", type=int, default=200, help="training steps per mode, timed from step 20 "
                        "(0: skip)")
    parser.add_argument("--train-batch", type=int, default=64, help="their batch size")
    parser.add_argument("--train-workers", type=int, default=8, help="their DataLoader workers")
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does: GD's freed tensors are not faulted back in at every step
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); --device cpu tests the script")
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}")
    failures: list[str] = []

    def check(what: str, ok: bool, detail: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")
        if not ok:
            failures.append(what)

    figures = []
    for spec, bundle in SPECS.items():
        inverter = LearnedInverter.from_bundle(bundle).eval()
        grey = inverter.decoder.config.out_channels == 1
        x = photos(2, grey)
        rep = build_representation(spec)
        with torch.no_grad():
            phi_cpu, recon_cpu = rep(x), inverter(x)
            rep, inverter = rep.to(device), inverter.to(device)
            with tf32(False):
                phi_dev, recon_dev = rep(x.to(device)).cpu(), inverter(x.to(device)).cpu()
            with tf32(True):
                phi_tf32, recon_tf32 = rep(x.to(device)).cpu(), inverter(x.to(device)).cpu()
        scale = float(phi_cpu.abs().max())
        check(f"{spec} Φ", torch.allclose(phi_dev, phi_cpu, rtol=1e-4, atol=1e-4),
              f"largest difference {float((phi_dev - phi_cpu).abs().max()):.1e} (TF32: "
              f"{float((phi_tf32 - phi_cpu).abs().max()):.1e}; largest |Φ| {scale:.3g})")
        check(f"{spec} learned", torch.allclose(recon_dev, recon_cpu, rtol=0, atol=1e-4),
              f"largest difference {float((recon_dev - recon_cpu).abs().max()):.1e} (TF32: "
              f"{float((recon_tf32 - recon_cpu).abs().max()):.1e})")

        config, full = shortened(spec, args.iterations)
        rep = build_representation(spec)
        losses = {}
        for label, where in (("cpu", CPU), ("device", device)):
            losses[label] = float(invert_gd(rep, x, config, device=where, progress=False).data_loss[-1].mean())
        check(f"{spec} gd", relative(losses["device"], losses["cpu"]) < 0.02,
              f"final data loss {losses['device']:.4g} vs CPU {losses['cpu']:.4g}")
        quick = gd_config("fast", spec)
        fast = {label: float(invert_gd(rep, x, quick, device=where, progress=False).data_loss[-1].mean())
                for label, where in (("cpu", CPU), ("device", device))}
        check(f"{spec} gd fast", relative(fast["device"], fast["cpu"]) < 0.05,
              f"final data loss {fast['device']:.4g} vs CPU {fast['cpu']:.4g} ({quick.iterations} it)")
        hybrid = {}  # from the learned start, at the preset's last (smallest) rate: its first overshoots there
        refine = gd_config("mv2015", spec, schedule=[[full.schedule[-1][0], args.iterations]])
        for label, where in (("cpu", CPU), ("device", device)):
            method = HybridMethod(inverter.to(where), refine)
            hybrid[label] = float(method(x.to(where), where).final_data_loss.mean())
        check(f"{spec} hybrid", relative(hybrid["device"], hybrid["cpu"]) < 0.02,
              f"final data loss {hybrid['device']:.4g} vs CPU {hybrid['cpu']:.4g}")

        inverter.to(device)
        rates = {batch: inference_throughput(inverter, photos(batch, grey), batch, device) for batch in (1, 64)}
        one = photos(1, grey)
        result = invert_gd(rep, one, config, device=device, progress=False)
        figures.append((spec, rates[1], rates[64], result.seconds / args.iterations * full.iterations,
                        full.iterations))

    accelerator = "gpu" if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        val = {}
        for label, where, extra in (("cpu", "cpu", []), ("device", accelerator, []),
                                    ("bf16", accelerator, list(FAST_TRAINING["channels-last + bf16"]))):
            cfg = load_config(TrainConfig, config_dir() / "train" / "tiny.yaml",
                              [f"run_dir={Path(tmp) / label}", "trainer.max_steps=50", "trainer.val_check_interval=50",
                               f"trainer.accelerator={where}", "trainer.deterministic=false", *extra])
            val[label] = float(train(cfg)[0]["val/loss"])
        check("training 50 steps", relative(val["device"], val["cpu"]) < 0.02,
              f"val/loss {val['device']:.5f} vs CPU {val['cpu']:.5f}")
        check("training 50 steps, channels-last + bf16", relative(val["bf16"], val["cpu"]) < 0.10,
              f"val/loss {val['bf16']:.5f} vs CPU {val['cpu']:.5f}")
        training_rates = {mode: training_rate(Path(tmp) / f"rate{i}", accelerator, extra, args.train_steps,
                                              args.train_batch, args.train_workers)
                          for i, (mode, extra) in enumerate(FAST_TRAINING.items())} if args.train_steps else {}

    print(f"\n| representation ({name}, 224×224) | learned images/s, batch 1 | batch 64 | GD s / image (mv2015) |")
    print("|---|---|---|---|")
    for spec, r1, r64, gd_seconds, full in figures:
        print(f"| {spec} | {r1:.1f} | {r64:.1f} | {gd_seconds:.2f} ({full} it) |")
    if training_rates:
        print(f"\n| training efficientnet_lite0:stage4 ({name}, 128-px crops, batch {args.train_batch}, "
              f"{args.train_workers} workers) | images/s | ×float32 |")
        print("|---|---|---|")
        for mode, rate in training_rates.items():
            print(f"| {mode} | {rate:.0f} | {rate / training_rates['float32']:.2f} |")
    print(f"\n{len(failures)} check(s) failed: {', '.join(failures)}" if failures else "\nall checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
