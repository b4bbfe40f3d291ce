"""Speed of ``nearid synth``: 2,000 identities x 4 sources at 128 px (target: under 2 minutes here).

The baseline measured in the same run is the same job on one worker process over a 10 % subset,
scaled up; the ratio is the speed-up of the default (all cores) run over it.

    python benchmarks/synth_speed.py [--identities 2000] [--out /tmp/nearid-synth-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from nearid.data.synth import SynthConfig, generate


def timed(out: Path, config: SynthConfig) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    generate(out, config, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=2000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nearid-synth-bench-"))
    full = SynthConfig(identities=args.identities, size=128, seed=0)
    subset = replace(
        full, identities=args.identities // 10, workers=1, mtg_train=full.mtg_train // 10, mtg_test=full.mtg_test // 10
    )
    one_worker = timed(out / "one-worker", subset) * 10
    seconds = timed(out / "full", full)
    size_mb = sum(f.stat().st_size for f in (out / "full").rglob("*") if f.is_file()) / 1e6
    print(
        f"{args.identities} identities x {len(full.sources)} sources at {full.size} px, MTG {full.mtg_train}+{full.mtg_test}, "
        f"{full.workers} workers: {seconds:.1f} s ({args.identities / seconds:.0f} identities/s), {size_mb:.0f} MB on disk"
    )
    print(f"baseline (1 worker, 10% subset, scaled x10): {one_worker:.1f} s")
    print(f"ratio baseline/full: {one_worker / seconds:.2f}x; target 120 s: {'met' if seconds < 120 else 'MISSED'}")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    main()
