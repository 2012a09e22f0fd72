"""`preimage compare` over 2 CPU processes (Lightning DDP) gives the records of a single-process run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from preimage import build_representation
from preimage.cli import main
from preimage.images import load_npy
from preimage.inversion.bundles import save_bundle
from preimage.inversion.networks import build_decoder

TIMINGS = {"seconds", "images_per_second"}


def test_ddp_two_processes_equal_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    representation = build_representation("hog")
    decoder = build_decoder(representation.output_shape(32, 32), (32, 32), width=8, pre_convs=1, min_width=4,
                            out_channels=1)
    bundle = save_bundle(tmp_path / "hog.pt", decoder, {"spec": "hog", "params": representation.params,
                                                       "data": "untrained", "steps": 0, "metrics": {}})
    common = ["image_size=40", "limit=3", "representations=[hog]", f"bundles.hog={bundle}",
              "gd.schedule=[[0.004,6],[0.0004,2]]", "hybrid.iterations=3", "tensorboard=false"]

    single = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each DDP process below: other thread counts sum convolutions in another order
    try:
        assert main(["compare", f"run_dir={single}", "device=cpu", *common]) == 0  # the 3 images in one batch
    finally:
        torch.set_num_threads(threads)

    ddp = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "preimage.cli", "compare", f"run_dir={ddp}", "accelerator=cpu", "devices=2",
         "strategy=ddp", "batch_size=1", *common],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )  # capturing the output waits for rank 1 too: it holds the pipes until it exits
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    assert proc.stdout.count("wrote ") == 1  # rank 0 alone reports

    one, two = (json.loads((d / "results.json").read_text()) for d in (single, ddp))
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert len(one["records"]) == len(two["records"]) == 9  # 3 images × gd, learned, hybrid: no duplicates
    for a, b in zip(one["records"], two["records"]):
        assert a.keys() == b.keys()
        for key in a.keys() - TIMINGS:
            if isinstance(a[key], float):
                assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-6), (key, a, b)
            else:
                assert a[key] == b[key], (key, a, b)
        # batches of another make-up: float rounding of the learned pass, which the hybrid's GD carries on
        torch.testing.assert_close(load_npy(ddp / b["output"]), load_npy(single / a["output"]), rtol=0, atol=1e-5)
