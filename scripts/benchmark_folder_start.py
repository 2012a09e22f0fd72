"""Training on a folder starts in a time that does not grow with the folder: `preimage train` for 2 steps on folders
of --small and --large PNG files (made here, 32×32 random images), side by side, as whole processes; each process's
wall time and peak memory (max RSS of the child), and the ratios large / small (targets: 1.5× the time, 1.3× the
memory).

    .venv/bin/python scripts/benchmark_folder_start.py [--small 2000] [--large 40000] [--rounds 2]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    for k in range(count):
        sub = folder / f"{k // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(sub / f"{k:06d}.png")
    return folder


def run(folder: Path, run_dir: Path) -> tuple[float, float]:
    """Wall seconds and peak memory (MiB) of one 2-step training on ``folder``."""
    cmd = [sys.executable, "-m", "preimage.cli", "train", "-c", "tiny", f"run_dir={run_dir}", "trainer.max_steps=2",
           "trainer.val_check_interval=2", f"data.sources=[{{kind: folder, root: {folder}, weight: 1.0}}]",
           "grey=false"]
    start = time.perf_counter()
    pid = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = pid.communicate()
    seconds = time.perf_counter() - start
    if pid.returncode != 0:
        raise SystemExit(err.decode()[-2000:])
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=40000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folders = {n: make_folder(root / f"images_{n}", n) for n in (args.small, args.large)}
        best: dict[int, float] = {}
        for r in range(args.rounds):
            for n, folder in folders.items():
                seconds, _ = run(folder, root / f"run_{n}_{r}")
                best[n] = min(best.get(n, float("inf")), seconds)
        memory = {}
        for n, folder in folders.items():  # one process per measure: RUSAGE_CHILDREN keeps the largest child
            probe = subprocess.run([sys.executable, __file__, "--memory-of", str(folder), str(root / f"mem_{n}")],
                                   capture_output=True, text=True, check=True)
            memory[n] = float(probe.stdout.strip())
    print("| files | wall s (best of rounds) | peak memory MiB |\n|---|---|---|")
    for n in folders:
        print(f"| {n} | {best[n]:.2f} | {memory[n]:.0f} |")
    print(f"ratio {args.large} / {args.small}: time {best[args.large] / best[args.small]:.2f} (target 1.5), "
          f"memory {memory[args.large] / memory[args.small]:.2f} (target 1.3)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-of":
        _, peak = run(Path(sys.argv[2]), Path(sys.argv[3]))
        print(peak)
    else:
        main()
