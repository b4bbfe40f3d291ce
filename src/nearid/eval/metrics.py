"""Benchmark metrics: pure numpy functions of similarity arrays (spec sections 6.1, 6.4, 6.5).

NearID-bench. For identity i with views p_a and the distractor n_v inpainted into view v's
background, every pair of views a < b gives two *directed margins*

    delta(a->b) = s(p_a, p_b) - s(p_a, n_a)        delta(b->a) = s(p_a, p_b) - s(p_b, n_b)

A margin is a valid trial when both similarities exist (are finite); it is a win when it is strictly
positive (a tie loses). SSR is the share of identities with at least one valid trial whose valid
trials all win; PA is wins / valid trials. Scores are kept as counts, so pooling several tables
(micro-averaging, which is how the paper averages over sources) is adding them:
:meth:`DiscriminationScore.pool`.

PA as published (spec 12.1). The paper's tables were made by the authors' table script, which counts
per identity one extra trial: whether the identity's *mean* margin over its valid trials is > 0. So
PA_published = (wins + #identities with mean margin > 0) / (trials + #identities with a valid trial).
It is one more count (``n_mean_win``); its denominator is made of counts we already keep, so it pools
exactly like PA. The paper's Table 1 shows this one; ``pa`` stays the paper's *definition*.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from nearid.io.jsonvalues import number

VIEW_PAIRS = ((0, 1), (0, 2), (1, 2))


@dataclass(frozen=True)
class DiscriminationScore:
    """SSR and PA as *counts*, so scores of disjoint sets of identities add up exactly.

    Every field is a count, and every ratio is a property over a (numerator, denominator) pair of
    them: SSR = ``n_all_win / n_samples``, PA = ``n_wins / n_trials``, PA as published =
    ``(n_wins + n_mean_win) / (n_trials + n_samples)``. Pooling (:meth:`pool`) adds
    the counts field by field, which is micro-averaging, the paper's way of averaging over sources;
    a further pair of counts (e.g. the authors' "PA as published") is one more field and one more
    property, and pooling needs no change.
    """

    n_samples: int = 0  # identities with at least one valid trial
    n_all_win: int = 0  # of those, identities whose valid trials all win
    n_trials: int = 0  # valid trials
    n_wins: int = 0  # winning trials
    n_mean_win: int = 0  # identities (with a valid trial) whose mean margin over valid trials is > 0
    #: of ``n_trials``, trials a pair scorer (a judge) gave no answer for: lost (margin -inf), so not
    #: answering a hard pair costs what answering it wrongly does (issue 21.7); 0 for encoders
    n_unanswered: int = 0

    @property
    def ssr(self) -> float:
        """Percent of identities (with a valid trial) whose valid trials all win; NaN without one."""
        return 100.0 * self.n_all_win / self.n_samples if self.n_samples else float("nan")

    @property
    def pa(self) -> float:
        """Percent of valid trials that win; NaN without one."""
        return 100.0 * self.n_wins / self.n_trials if self.n_trials else float("nan")

    @property
    def pa_published(self) -> float:
        """PA as the paper's tables computed it (spec 12.1): every identity adds one trial, won when its
        mean margin is > 0, to PA's wins / trials. Percent; NaN without a valid trial."""
        total = self.n_trials + self.n_samples
        return 100.0 * (self.n_wins + self.n_mean_win) / total if total else float("nan")

    @classmethod
    def pool(cls, *scores: DiscriminationScore) -> DiscriminationScore:
        """The score of the union of the scored sets: every count summed. The only pooling function."""
        return cls(**{f.name: sum(getattr(s, f.name) for s in scores) for f in fields(cls)})

    def __add__(self, other: DiscriminationScore) -> DiscriminationScore:
        return type(self).pool(self, other)

    def as_dict(self) -> dict:
        """``ssr``, ``pa``, ``pa_published`` (percent) and every count: the layout of ``results.json``."""
        return {
            "ssr": self.ssr,
            "pa": self.pa,
            "pa_published": self.pa_published,
            # n_unanswered only where a judge left trials unanswered: encoders' entries keep their layout
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "n_unanswered" or self.n_unanswered},
        }

    @classmethod
    def from_dict(cls, values: dict) -> DiscriminationScore:
        """The counts of an :meth:`as_dict` (the percentages are derived, never read)."""
        optional = {"n_unanswered"}  # absent in files written before it was counted: 0
        return cls(
            **{f.name: int(values.get(f.name, 0) if f.name in optional else values[f.name]) for f in fields(cls)}
        )


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
    """SSR and PA from margins of any shape ``[N, ...]`` (one row per identity, NaN = no trial).

    A margin of ``-inf`` is a trial a judge did not answer (:func:`nearid.eval.evaluate.fill_tables_from_judgments`
    writes its similarity as -inf, or its distractor's as +inf): a valid trial that loses, counted in
    ``n_unanswered`` too; an identity with one has no mean win."""
    margins = np.asarray(margins, dtype=np.float64)
    margins = margins.reshape(len(margins), int(np.prod(margins.shape[1:])))
    valid = ~np.isnan(margins)
    wins = valid & (np.where(valid, margins, 0.0) > 0)
    has_trial = valid.any(axis=1)
    all_win = (wins | ~valid).all(axis=1) & has_trial
    n_valid = valid.sum(axis=1)
    mean = np.where(valid, margins, 0.0).sum(axis=1) / np.maximum(n_valid, 1)
    mean_win = has_trial & (mean > 0)  # a mean of exactly 0 loses, like a tied trial
    return DiscriminationScore(
        n_samples=int(has_trial.sum()),
        n_all_win=int(all_win.sum()),
        n_trials=int(valid.sum()),
        n_wins=int(wins.sum()),
        n_mean_win=int(mean_win.sum()),
        n_unanswered=int(np.isneginf(margins).sum()),
    )


def nearid_scores(pair_sims: np.ndarray, cross_sims: np.ndarray) -> DiscriminationScore:
    """SSR / PA of one similarity table (pool several with :meth:`DiscriminationScore.pool`)."""
    return discrimination(nearid_margins(pair_sims, cross_sims))


# --------------------------------------------------------------------------------- correlations
def pearson(x, y) -> float:
    """Pearson r over the pairs where both are finite; NaN when undefined (fewer than 2, zero variance)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:  # constant input: undefined, not 1e-16 noise
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else float("nan")


def average_ranks(values) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (scipy's ``rankdata(method="average")``)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ordered) != 0) + 1]) if len(values) else np.zeros(0, int)
    ends = np.concatenate([starts[1:], [len(values)]]) if len(values) else np.zeros(0, int)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman's rho over the pairs where both are finite: Pearson r of their average ranks (ties share
    a rank, so a judge's integer scores are handled as scipy does); NaN when undefined."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    return pearson(average_ranks(x[keep]), average_ranks(y[keep]))


def fisher_z_mean(values, *, clip: float = 0.999, nan_as_zero: bool = False) -> float:
    """tanh(mean(atanh(clip(r)))): the average of correlations on Fisher's z scale.

    MTG's M-O uses clip 0.999 and counts an undefined correlation as 0 (``nan_as_zero``); DreamBench++'s
    M-H uses clip 0.9999 over the methods it has.
    """
    r = np.asarray(values, dtype=np.float64)
    r = np.where(np.isnan(r), 0.0, r) if nan_as_zero else r[~np.isnan(r)]
    if r.size == 0:
        return float("nan")
    return float(np.tanh(np.mean(np.arctanh(np.clip(r, -clip, clip)))))


# --------------------------------------------------------------------------------- MTG
@dataclass(frozen=True)
class MTGScore:
    """MTG benchmark: oracle alignment (M-O, M-Opair) and part-level discrimination (SSR, PA, percent).

    SSR / PA are kept as the counts of a :class:`DiscriminationScore` (``discrimination``), so they pool
    like NearID-bench's; M-O and M-Opair are correlations over the samples and do not add up."""

    m_o: float
    m_opair: float
    correlations: tuple[float, float, float, float]  # r(s11p,o1), r(s22p,o2), r(s12p,o2), r(s21p,o1)
    discrimination: DiscriminationScore

    @property
    def ssr(self) -> float:
        return self.discrimination.ssr

    @property
    def pa(self) -> float:
        return self.discrimination.pa

    @property
    def pa_published(self) -> float:
        return self.discrimination.pa_published

    @property
    def n_samples(self) -> int:
        return self.discrimination.n_samples

    @property
    def n_trials(self) -> int:
        return self.discrimination.n_trials

    def as_dict(self) -> dict:
        """``m_o``, ``m_opair``, the discrimination's ``ssr``, ``pa`` and counts, ``correlations``."""
        return {
            "m_o": self.m_o,
            "m_opair": self.m_opair,
            **self.discrimination.as_dict(),
            "correlations": list(self.correlations),
        }

    @classmethod
    def from_dict(cls, values: dict) -> MTGScore:
        return cls(
            m_o=number(values["m_o"]),
            m_opair=number(values["m_opair"]),
            correlations=tuple(number(r) for r in values["correlations"]),
            discrimination=DiscriminationScore.from_dict(values),
        )


def mtg_scores(s_12, s_11p, s_12p, s_22p, s_21p, oracle_1, oracle_2) -> MTGScore:
    """Spec 6.4. Margins s(1,2) - s(1,1p) and s(1,2) - s(2,2p): the other view must beat the same
    image with one part edited. M-O is the Fisher-z mean of the four similarity-oracle correlations
    (an undefined one counts as 0); M-Opair of the two same-background ones."""
    s_12, s_11p, s_22p = (np.asarray(a, dtype=np.float64) for a in (s_12, s_11p, s_22p))
    r = (pearson(s_11p, oracle_1), pearson(s_22p, oracle_2), pearson(s_12p, oracle_2), pearson(s_21p, oracle_1))
    return MTGScore(
        m_o=fisher_z_mean(r, nan_as_zero=True),
        m_opair=fisher_z_mean(r[:2], nan_as_zero=True),
        correlations=r,
        discrimination=discrimination(np.stack([s_12 - s_11p, s_12 - s_22p], axis=1)),
    )


# --------------------------------------------------------------------------------- thresholds
@dataclass(frozen=True)
class Threshold:
    """A same/different cut on cosine similarity: ``same`` when similarity > ``value``."""

    value: float
    balanced_accuracy: float  # percent
    true_positive_rate: float  # percent of true pairs called same
    true_negative_rate: float  # percent of distractor pairs called different
    n_positive: int
    n_negative: int

    def as_dict(self) -> dict:
        return asdict(self)


def calibrate_threshold(positive, negative) -> Threshold:
    """The cut that maximises balanced accuracy between true pairs and matched-context distractors.

    Candidates are midpoints between consecutive distinct similarities, so the chosen value never
    sits on an observed score; evaluated for all candidates at once from sorted arrays. Among equally
    good cuts the middle one is taken.
    """
    pos = np.sort(np.asarray(positive, dtype=np.float64)[np.isfinite(positive)])
    neg = np.sort(np.asarray(negative, dtype=np.float64)[np.isfinite(negative)])
    if pos.size == 0 or neg.size == 0:
        raise ValueError("calibration needs at least one positive and one distractor similarity")
    values = np.unique(np.concatenate([pos, neg]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    tpr = 1.0 - np.searchsorted(pos, candidates, side="right") / pos.size  # share of positives > cut
    tnr = np.searchsorted(neg, candidates, side="right") / neg.size  # share of negatives <= cut
    balanced = (tpr + tnr) / 2
    ties = np.flatnonzero(balanced == balanced.max())
    best = int(ties[len(ties) // 2])  # the middle one of equally good cuts, not the lowest
    return Threshold(
        value=float(candidates[best]),
        balanced_accuracy=100 * float(balanced[best]),
        true_positive_rate=100 * float(tpr[best]),
        true_negative_rate=100 * float(tnr[best]),
        n_positive=int(pos.size),
        n_negative=int(neg.size),
    )
