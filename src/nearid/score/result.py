"""What a ``nearid score`` run computed, in memory: one type for one metric and for several.

:class:`MultiScoreResult` holds one :class:`MetricScores` per metric over one pair plan. A one-metric
run is the same result with one metric; :class:`ScoreResult` is that case seen with the metric's fields
at hand (``similarities``, ``model``, ``embedded``), so code written for one model keeps reading them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nearid.score.plan import PairPlan


@dataclass
class MetricScores:
    """One metric's similarities over the plan's pairs (NaN: a bad input, or a judge's non-answer)."""

    spec: str  # as the user gave it: the column and summary key
    name: str  # the loaded metric's name (what bench results key it by)
    kind: str  # "encoder" or "pair scorer"
    similarities: np.ndarray
    embedded: int = 0  # unique images this encoder embedded (0 for a pair scorer)
    no_answer: int = 0  # a pair scorer's pairs with usable inputs but no answer


@dataclass
class MultiScoreResult:
    """Every metric of one run over one pair plan (``nearid score --model A [--model B ...]``)."""

    plan: PairPlan
    metrics: list[MetricScores]
    failures: dict[str, str]  # image path -> message (bad inputs, and images an encoder could not read)
    unique_images: int  # unique (image, mask) inputs
    masked: int = 0  # unique inputs with a mask
    mask_cleaning: str | None = None  # with masks: "authors" (spec 12.2) or "none"
    mask_dilate: int = 0

    @property
    def scored_any(self) -> bool:
        return any(np.isfinite(metric.similarities).any() for metric in self.metrics)

    @property
    def several(self) -> bool:
        """Several metrics: their own columns, summary sections and files; one keeps the one-model layout."""
        return len(self.metrics) > 1

    def single(self) -> ScoreResult:
        """The one metric's view (a single pair scorer goes through here too)."""
        (metric,) = self.metrics
        return ScoreResult.view(self, metric)


class ScoreResult(MultiScoreResult):
    """A :class:`MultiScoreResult` of one metric, built from that metric's figures (the constructor of
    the one-model result, which the score shards' merge still calls) or as a view of one metric of
    another result (:meth:`view`); it adds the metric's fields as attributes."""

    def __init__(
        self,
        plan: PairPlan,
        model: str,
        similarities: np.ndarray,
        failures: dict[str, str],
        embedded: int,
        masked: int = 0,
        mask_cleaning: str | None = None,
        mask_dilate: int = 0,
    ):
        metric = MetricScores(model, model, "encoder", similarities, embedded)
        super().__init__(plan, [metric], failures, embedded, masked, mask_cleaning, mask_dilate)

    @classmethod
    def view(cls, result: MultiScoreResult, metric: MetricScores) -> ScoreResult:
        """``metric`` of ``result`` alone, sharing the plan, failures and mask figures."""
        one = cls.__new__(cls)
        MultiScoreResult.__init__(
            one,
            result.plan,
            [metric],
            result.failures,
            result.unique_images,
            result.masked,
            result.mask_cleaning,
            result.mask_dilate,
        )
        return one

    @property
    def metric(self) -> MetricScores:
        return self.metrics[0]

    @property
    def model(self) -> str:
        return self.metric.name

    @property
    def similarities(self) -> np.ndarray:  # one per pair, NaN where an image failed
        return self.metric.similarities

    @property
    def embedded(self) -> int:  # unique images embedded
        return self.metric.embedded


def metric_column(spec: str, what: str = "similarity") -> str:
    """The per-pair column of one metric when several are scored: ``similarity:<spec>`` (``same:<spec>``)."""
    return f"{what}:{spec}"


def result_column(result: MultiScoreResult, metric: MetricScores, what: str = "similarity") -> str:
    """``what`` itself in a one-metric result (the one-model layout), else :func:`metric_column`."""
    return metric_column(metric.spec, what) if result.several else what
