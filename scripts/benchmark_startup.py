"""Start-up time of `preimage --help`, `preimage config invert` and `preimage list`, as whole processes.

Each command runs --runs times after one warm-up (which fills the file cache), in alternation with a bare
`python -c pass` as the floor of any Python process here; the median wall time of each is printed, and which
heavy packages each command imported (torch, Lightning, torchmetrics, scipy, torchvision must wait until used).

    .venv/bin/python scripts/benchmark_startup.py [--runs 7]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

#: imported only where a job needs them
HEAVY = ("torch", "pytorch_lightning", "torchmetrics", "scipy", "torchvision", "tensorboard")
COMMANDS = {"python -c pass": ["-c", "pass"], "preimage --help": ["-m", "preimage.cli", "--help"],
            "preimage config invert": ["-m", "preimage.cli", "config", "invert"],
            "preimage list": ["-m", "preimage.cli", "list"]}


def wall_seconds(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def imported(args: list[str]) -> list[str]:
    """The heavy top-level packages a command imports (from ``python -X importtime``)."""
    err = subprocess.run([sys.executable, "-X", "importtime", *args], check=True, capture_output=True, text=True).stderr
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in err.splitlines() if line.startswith("import time:")}
    return [h for h in HEAVY if h in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for name, argv in COMMANDS.items():
        wall_seconds(argv)  # warm-up
    for _ in range(args.runs):
        for name, argv in COMMANDS.items():
            times[name].append(wall_seconds(argv))
    print(f"{args.runs} runs each, alternating; wall seconds")
    print("| command | median s | min s | max s | heavy packages imported |")
    print("|---|---|---|---|---|")
    for name, argv in COMMANDS.items():
        t = times[name]
        heavy = ", ".join(imported(argv)) or "none"
        print(f"| `{name}` | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} | {heavy} |")


if __name__ == "__main__":
    main()
