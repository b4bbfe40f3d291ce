"""VLM judge time per pair, both readouts on the same pairs, and their SSR / PA.

Each identity of a synthetic bench gives the pairs the NearID metrics use: its view pairs and each
view against the distractor in its own background (3 + 3 with three views), all in one
``score_pairs`` call, as bench calls a pair scorer. ``generate`` (the paper's readout) is printed
beside ``expected`` (one forward pass); the baseline of the ratio is ``generate``.

With the default tiny random judge the scores are meaningless (random weights write random bytes,
so nearly every ``generate`` answer is unparsed); the times are those of the code path.

    python benchmarks/judge_speed.py [--judge FOLDER] [--identities 6] [--source Instance] [--device cpu]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from nearid.data import load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.eval.metrics import VIEW_PAIRS, nearid_scores
from nearid.judges.vlm import load_vlm_judge
from nearid.tiny.judge import save_tiny_judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", help="a Qwen-VL folder (default: a tiny random Qwen3-VL built here)")
    parser.add_argument("--identities", type=int, default=6)
    parser.add_argument("--source", default="Instance")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nearid-judge-speed-"))
    try:
        generate(
            work / "data",
            SynthConfig(identities=2 * args.identities, test=args.identities, val=1, mtg_train=0, mtg_test=1),
            progress=False,
        )
        bench = load_nearid(work / "data", [args.source], split="test")
        folder = args.judge or str(save_tiny_judge(work / "judge"))
        rows = {}
        for readout in ("generate", "expected"):
            judge = load_vlm_judge(folder, device=args.device, readout=readout, max_new_tokens=args.max_new_tokens)
            judge.score_pairs([(bench[0].views[0].image, bench[0].views[0].image)])  # warm-up, not counted
            judge.stats.__init__()
            pair_sims, cross_sims = [], []
            for identity in bench:  # a missing view or distractor is a NaN cell (no trial), slots kept
                views = [view.image if view is not None else None for view in identity.views]
                views += [None] * (3 - len(views))
                wanted = [(views[a], views[b]) for a, b in VIEW_PAIRS]
                wanted += [(views[v], identity.distractor(args.source, v) if views[v] else None) for v in range(3)]
                present = [i for i, (x, y) in enumerate(wanted) if x is not None and y is not None]
                row = np.full(6, np.nan)
                row[present] = judge.score_pairs([wanted[i] for i in present])
                pair_sims.append(row[:3])
                cross_sims.append(row[3:])
            score = nearid_scores(np.array(pair_sims), np.array(cross_sims))
            rows[readout] = (judge.stats, score)
        print(f"judge {folder}, {len(bench)} identities, up to 6 pairs each ({args.source}), device {args.device}")
        for readout, (stats, score) in rows.items():
            print(
                f"  {readout:8s}  {stats.seconds_per_pair * 1000:8.1f} ms/pair  "
                f"{stats.generated_tokens / max(stats.pairs, 1):6.1f} new tokens/pair  "
                f"unparsed {stats.unparsed}/{stats.pairs}  SSR {score.ssr:5.1f}  PA {score.pa:5.1f}"
            )
        ratio = rows["generate"][0].seconds_per_pair / rows["expected"][0].seconds_per_pair
        print(f"ratio generate/expected: {ratio:.1f}x time per pair")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s in all)")
