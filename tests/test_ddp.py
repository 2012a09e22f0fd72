"""The same training under Lightning DDP: 2 CPU processes (gloo) end with identical weights and write one run;
a resumed DDP run equals an uninterrupted one."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

# Run as a script so that Lightning's "ddp" launcher can start rank 1 by re-running it.
SCRIPT = """
import sys
import torch
from preimage.config import config_dir
from preimage.schemas import TrainConfig, load_config
from preimage.training.train import train

metrics, objects = train(load_config(TrainConfig, config_dir() / "train" / "tiny.yaml", sys.argv[1:]))
trainer = objects["trainer"]
state = objects["module"].decoder.state_dict()
torch.save({k: v.clone() for k, v in state.items()}, objects["run_dir"] / f"rank{trainer.global_rank}.pt")
trainer.strategy.barrier()
"""


def fit_ddp(tmp_path: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The tiny training on 2 DDP processes; asserts it succeeded."""
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), f"run_dir={run_dir}", "trainer.strategy=ddp", "trainer.devices=2", *overrides],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )  # capturing the output waits for rank 1 too: it holds the pipes until it exits
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_ddp_two_processes_end_identical(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = fit_ddp(tmp_path, run_dir)
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    rank0, rank1 = (torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)

    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(names) == 2 and names[0].startswith("best-step") and names[1] == "last.ckpt", names
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4
    assert all(torch.equal(last["state_dict"][f"decoder.{k}"], v) for k, v in rank0.items())
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["bundle.pt", "rank0.pt", "rank1.pt"]
    assert torch.load(run_dir / "bundle.pt", weights_only=True)["manifest"]["trained_steps"] == 4
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0 logs alone


def test_a_ddp_run_resumed_mid_epoch_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    """Each rank's data order resumes: 2 steps, then a resume to 4, give the weights of 4 steps in one go (8
    batches per rank an epoch, so step 2 is mid-epoch; a constant learning rate, whatever max_steps)."""
    common = ["scheduler.name=constant", "scheduler.warmup_steps=0", "trainer.val_check_interval=2"]
    fit_ddp(tmp_path, tmp_path / "straight", "trainer.max_steps=4", *common)
    fit_ddp(tmp_path, tmp_path / "resumed", "trainer.max_steps=2", *common)
    fit_ddp(tmp_path, tmp_path / "resumed", "trainer.max_steps=4", "resume=true", *common)
    straight, resumed = (torch.load(tmp_path / run / "rank0.pt", weights_only=True) for run in ("straight", "resumed"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
