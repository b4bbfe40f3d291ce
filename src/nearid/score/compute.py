"""The scores of a planned run: each unique (image, mask) input embedded once per encoder, a cosine per
pair, and a pair scorer asked the listed pairs only.

The unique inputs are planned once for all metrics; each encoder embeds each of them once (its own
preprocessing: images are decoded once per encoder). Encoders run first, so with ``skip_errors`` a pair
scorer is not asked about an image an encoder could not read.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from nearid.models.embedding import check_batch_size, embed
from nearid.score.inputs import check_plan, prepare, usable
from nearid.score.plan import PairPlan
from nearid.score.result import MetricScores, MultiScoreResult, ScoreResult

#: Pairs per ``score_pairs`` call of a pair scorer when the pairing has no subjects to group by.
JUDGE_BATCH = 32

#: Per pair, the rows of its reference and generated input in the unique inputs (None: a bad input).
PairRows = list[tuple[int, int] | None]


def score_pairs(
    encoder,
    plan: PairPlan,
    *,
    masks: str | os.PathLike | None = None,
    batch_size: int = 32,
    skip_errors: bool = False,
    progress: bool | None = None,
    mask_cleaning: str = "authors",
    mask_dilate: int = 0,
    num_workers: int | str = 0,
    fast_decode: bool = False,
) -> ScoreResult:
    """Cosine similarity of every planned pair; each unique (image, mask) is embedded once. Masks are
    cleaned as the authors clean them (``mask_cleaning="authors"``, spec 12.2) unless ``"none"``.

    Runs :func:`~nearid.score.inputs.prepare` (masks, header checks) if the caller has not; pairs with a
    bad input are NaN and their inputs are listed in ``failures`` (without ``skip_errors`` they stop the
    run first). The one-metric case of :func:`score_metrics`."""
    return score_metrics(
        [(encoder.name, encoder)],
        plan,
        masks=masks,
        batch_size=batch_size,
        skip_errors=skip_errors,
        progress=progress,
        mask_cleaning=mask_cleaning,
        mask_dilate=mask_dilate,
        num_workers=num_workers,
        fast_decode=fast_decode,
    ).single()


def score_metrics(
    metrics: list[tuple[str, object]],
    plan: PairPlan,
    *,
    masks: str | os.PathLike | None = None,
    batch_size: int = 32,
    skip_errors: bool = False,
    progress: bool | None = None,
    mask_cleaning: str = "authors",
    mask_dilate: int = 0,
    num_workers: int | str = 0,
    fast_decode: bool = False,
) -> MultiScoreResult:
    """Every planned pair's similarity under each of ``metrics`` (``(spec, Encoder or PairScorer)``):
    an encoder's cosine of the two embeddings, a pair scorer's answer (a subject's pairs in one call, or
    :data:`JUDGE_BATCH` at a time)."""
    from nearid.images.mask_cleaning import evaluation_mask
    from nearid.models.pair_scorers import is_pair_scorer

    check_batch_size(batch_size)
    evaluation_mask(None, mask_cleaning, mask_dilate)
    prepare(plan, masks)
    check_plan(plan, skip_errors)
    keys, index = _unique_inputs(plan)
    cut_with = [evaluation_mask(mask, mask_cleaning, mask_dilate) for _, mask in keys]
    failed: dict[int, str] = {}  # row of the unique inputs -> why an encoder could not read it
    by_spec: dict[str, MetricScores] = {}
    for spec, metric in sorted(metrics, key=lambda m: is_pair_scorer(m[1])):  # encoders first (a stable sort)
        if is_pair_scorer(metric):
            by_spec[spec] = _ask_pair_scorer(spec, metric, plan, keys, cut_with, index, failed)
            continue
        failures: dict[int, str] | None = {} if skip_errors else None
        vectors = embed(
            metric,
            [image for image, _ in keys],
            cut_with,
            batch_size=batch_size,
            progress=progress,
            failures=failures,
            num_workers=num_workers,
            fast_decode=fast_decode,
        )
        failed.update(failures or {})
        by_spec[spec] = MetricScores(spec, metric.name, "encoder", _cosines(vectors, index), len(keys))
    failures_by_path = {str(path): why for path, why in plan.unmatched}
    failures_by_path.update({str(keys[i][0]): message for i, message in failed.items()})
    masked = len({key for key in keys if key[1] is not None})
    return MultiScoreResult(
        plan,
        [by_spec[spec] for spec, _ in metrics],
        failures_by_path,
        len(keys),
        masked,
        mask_cleaning=mask_cleaning if masked else None,
        mask_dilate=mask_dilate if masked else 0,
    )


def _unique_inputs(plan: PairPlan) -> tuple[list[tuple[Path, Path | None]], PairRows]:
    """Each unique (image, mask) once, and per pair its (reference row, generated row), ``None`` for a
    pair with a bad input."""
    row_of: dict[tuple[Path, Path | None], int] = {}  # (image, mask) -> row of the embedding matrix
    keys: list[tuple[Path, Path | None]] = []
    index: PairRows = []
    for pair in plan.pairs:
        if not usable(pair, plan):
            index.append(None)
            continue
        rows = []
        for side, image in (("refs", pair.reference), ("gens", pair.generated)):
            key = (image, plan.mask_of.get((image, side)))
            if key not in row_of:
                row_of[key] = len(keys)
                keys.append(key)
            rows.append(row_of[key])
        index.append((rows[0], rows[1]))
    return keys, index


def _cosines(vectors: np.ndarray, index: PairRows) -> np.ndarray:
    """Per pair the dot product of its two (unit) embeddings; NaN for a pair with a bad input."""
    similarities = np.full(len(index), np.nan)
    for i, rows in enumerate(index):
        if rows is not None:
            similarities[i] = float((vectors[rows[0]] * vectors[rows[1]]).sum())
    return similarities


def _ask_pair_scorer(spec, scorer, plan: PairPlan, keys, cut_with, index: PairRows, failed) -> MetricScores:
    """``scorer``'s answers for the pairs whose inputs are usable and were read by every encoder."""
    from nearid.models.pair_scorers import ask

    similarities = np.full(len(plan.pairs), np.nan)
    todo = [i for i, rows in enumerate(index) if rows is not None and not (set(rows) & set(failed))]
    for group in _judge_groups(plan, todo):
        similarities[group] = ask(
            scorer,
            [(keys[index[i][0]][0], keys[index[i][1]][0]) for i in group],
            [(cut_with[index[i][0]], cut_with[index[i][1]]) for i in group],
        )
    no_answer = int(np.isnan(similarities[todo]).sum()) if todo else 0
    return MetricScores(spec, scorer.name, "pair scorer", similarities, 0, no_answer)


def _judge_groups(plan: PairPlan, todo: list[int]) -> list[list[int]]:
    """The pairs of one subject together (a judge batches one call), at most JUDGE_BATCH per call."""
    by_subject: dict[str, list[int]] = defaultdict(list)
    for i in todo:
        by_subject[plan.pairs[i].subject].append(i)
    return [group[k : k + JUDGE_BATCH] for group in by_subject.values() for k in range(0, len(group), JUDGE_BATCH)]
