"""Start-up of the light commands (target: `nearid --help` and `nearid metrics` on 50 rows under 1.5 s).

Each command runs in a fresh interpreter, best of ``--repeats``; alongside, the same interpreter
importing numpy only (the floor: what `metrics` cannot avoid) and importing torch + transformers
(what every command paid before the lazy package face).

    python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        table = Path(folder) / "sims.csv"
        rng = np.random.default_rng(0)
        with open(table, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "sample_id",
                    "category",
                    "n_pos",
                    "n_neg",
                    "sim_01",
                    "sim_02",
                    "sim_12",
                    *(f"cross_{a}{b}" for a in range(3) for b in range(3)),
                ]
            )
            writer.writerows([f"id{i}", "", 3, 3, *np.round(rng.uniform(0.3, 0.9, 12), 6)] for i in range(50))
        python = sys.executable
        runs = {
            "floor: import numpy": [python, "-c", "import numpy"],
            "before: import torch, transformers": [python, "-c", "import torch, transformers"],
            "nearid --help": [python, "-m", "nearid", "--help"],
            "nearid metrics (50 rows)": [python, "-m", "nearid", "metrics", str(table)],
        }
        seconds = {name: best_of(argv, args.repeats) for name, argv in runs.items()}
    floor, heavy = seconds["floor: import numpy"], seconds["before: import torch, transformers"]
    for name, value in seconds.items():
        print(
            f"{name:36s} {value:6.2f} s   x{value / floor:5.1f} of the numpy floor   {heavy / value:5.1f}x faster than torch+transformers"
        )


if __name__ == "__main__":
    main()
