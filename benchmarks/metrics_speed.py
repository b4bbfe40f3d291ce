"""SSR / PA over 1,000,000 identities (target: under 2 s), against a per-identity Python loop.

The baseline is the straightforward loop (one identity at a time, as a reference implementation
would write it) timed on a 1 % subset in the same run and scaled up.

    python benchmarks/metrics_speed.py [--identities 1000000]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from nearid.eval.metrics import VIEW_PAIRS, nearid_scores


def loop_ssr_pa(pair: np.ndarray, cross: np.ndarray) -> tuple[float, float]:
    successes = samples = wins = trials = 0
    for p, c in zip(pair.tolist(), cross.tolist()):
        outcomes = []
        for (a, b), s in zip(VIEW_PAIRS, p):
            for d in (s - c[a], s - c[b]):
                if math.isfinite(d):
                    outcomes.append(d > 0)
        if outcomes:
            samples += 1
            successes += all(outcomes)
            wins += sum(outcomes)
            trials += len(outcomes)
    return 100 * successes / samples, 100 * wins / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.identities
    pair = rng.uniform(-1, 1, (n, 3))
    cross = rng.uniform(-1, 1, (n, 3))
    two_view = rng.random(n) < 2 / 3  # as in the paper: 67 % of identities have 2 views
    pair[two_view, 1:] = np.nan
    cross[two_view, 2] = np.nan
    start = time.perf_counter()
    score = nearid_scores(pair, cross)
    vectorised = time.perf_counter() - start
    subset = n // 100
    start = time.perf_counter()
    loop = loop_ssr_pa(pair[:subset], cross[:subset])
    looped = (time.perf_counter() - start) * 100
    check = nearid_scores(pair[:subset], cross[:subset])
    assert abs(loop[0] - check.ssr) < 1e-9 and abs(loop[1] - check.pa) < 1e-9, "loop and vectorised disagree"
    print(
        f"{n:,} identities, {score.n_trials:,} trials: SSR {score.ssr:.2f} PA {score.pa:.2f} in {vectorised:.3f} s "
        f"(target 2 s: {'met' if vectorised < 2 else 'MISSED'})"
    )
    print(f"baseline per-identity loop (1% subset, scaled x100): {looped:.2f} s; ratio {looped / vectorised:.1f}x")


if __name__ == "__main__":
    main()
