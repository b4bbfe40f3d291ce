"""Benchmark metrics: pure numpy functions of similarity arrays (spec sections 6.1, 6.4, 6.5).

NearID-bench. For identity i with views p_a and the distractor n_v inpainted into view v's
background, every pair of views a < b gives two *directed margins*

    delta(a->b) = s(p_a, p_b) - s(p_a, n_a)        delta(b->a) = s(p_a, p_b) - s(p_b, n_b)

A margin is a valid trial when both similarities exist (are finite); it is a win when it is strictly
positive (a tie loses). SSR is the share of identities with at least one valid trial whose valid
trials all win; PA is wins / valid trials. Pooling several tables concatenates their identities
(micro-averaging), which is how the paper averages over sources.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

VIEW_PAIRS = ((0, 1), (0, 2), (1, 2))


@dataclass(frozen=True)
class DiscriminationScore:
    """SSR and PA in percent, with their supports."""

    ssr: float
    pa: float
    n_samples: int  # identities with at least one valid trial
    n_trials: int
    n_wins: int

    def as_dict(self) -> dict:
        return asdict(self)


def nearid_margins(pair_sims: np.ndarray, cross_sims: np.ndarray) -> np.ndarray:
    """Directed margins ``[N, 3 pairs, 2 directions]`` (NaN where a trial is invalid).

    ``pair_sims[i, k]`` is s(p_a, p_b) for the k-th pair of ``VIEW_PAIRS``; ``cross_sims[i, v]`` is
    s(p_v, n_v), the view against the distractor in its own background. Missing values are NaN.
    """
    pair_sims = np.asarray(pair_sims, dtype=np.float64)
    cross_sims = np.asarray(cross_sims, dtype=np.float64)
    first = np.array([a for a, _ in VIEW_PAIRS])
    second = np.array([b for _, b in VIEW_PAIRS])
    return np.stack([pair_sims - cross_sims[:, first], pair_sims - cross_sims[:, second]], axis=-1)


def discrimination(margins: np.ndarray) -> DiscriminationScore:
    """SSR and PA from margins of any shape ``[N, ...]`` (one row per identity, NaN = no trial)."""
    margins = np.asarray(margins, dtype=np.float64)
    margins = margins.reshape(len(margins), int(np.prod(margins.shape[1:])))
    valid = np.isfinite(margins)
    wins = valid & (np.where(valid, margins, 0.0) > 0)
    has_trial = valid.any(axis=1)
    all_win = (wins | ~valid).all(axis=1) & has_trial
    n_samples, n_trials, n_wins = int(has_trial.sum()), int(valid.sum()), int(wins.sum())
    return DiscriminationScore(
        ssr=100.0 * all_win.sum() / n_samples if n_samples else float("nan"),
        pa=100.0 * n_wins / n_trials if n_trials else float("nan"),
        n_samples=n_samples,
        n_trials=n_trials,
        n_wins=n_wins,
    )


def nearid_scores(pair_sims: np.ndarray, cross_sims: np.ndarray) -> DiscriminationScore:
    """SSR / PA of one similarity table; concatenate tables along axis 0 to pool them."""
    return discrimination(nearid_margins(pair_sims, cross_sims))
