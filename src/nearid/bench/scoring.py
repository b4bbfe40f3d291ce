"""One encoder's or judge's bench figures, from its store over the whole plan: the one scoring function.

Every bench result is made here, by the merge (:mod:`nearid.bench.merge`) -- for a run in one process
as for one split into shards -- so a sharded run's tables, CSVs and scores are a one-process run's.
The metric comes as plain values (:class:`MetricInfo`: what its record says, no model), and the
similarities from its store: an encoder's vectors (:class:`~nearid.bench.store.EmbeddingStore`,
cosines of the planned images) or a pair scorer's judgments (:class:`~nearid.bench.judgments.JudgmentStore`,
the pairs the metrics read). Both become the same tables, written in the authors' CSV layout and
scored alike (SSR / PA per source and group, MTG, the calibrated threshold).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nearid.bench.planning import PlannedBench
from nearid.eval.evaluate import (
    calibration,
    fill_tables,
    fill_tables_from_judgments,
    mtg_similarities,
    mtg_similarities_from_judgments,
    score_mtg,
    score_tables,
)
from nearid.eval.results import EncoderResult, JudgmentCounts
from nearid.eval.simtables import write_mtg_csv, write_nearid_csv
from nearid.io.errors import NearIDError

ENCODER, JUDGE = "encoder", "judge"


@dataclass(frozen=True)
class MetricInfo:
    """An encoder or a pair scorer as its record names it: no model, only what scoring needs."""

    spec: str
    name: str
    fingerprint: str
    kind: str  # ENCODER or JUDGE
    store: str  # its store folder, relative to the --out (embeddings/... or judgments/...)
    untrained: bool = False
    dim: int = 0  # an encoder's vector size
    #: a judge's rule for pairs without an answer (``nearid.eval.evaluate.UNANSWERED``); records written
    #: before the rule could be chosen had the default
    unanswered: str = "lose"

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, values: dict) -> MetricInfo:
        return cls(**{name: values[name] for name in cls.__dataclass_fields__ if name in values})


def judge_entry_name(name: str, unanswered: str) -> str:
    """A judge's ``results.json`` entry: its name, marked when unanswered pairs were left out rather than
    lost -- the rule is part of what the numbers are, so the two rules' results never share an entry."""
    return name if unanswered == "lose" else f"{name} [unanswered skipped]"


def score_metric(
    planned: PlannedBench, metric: MetricInfo, computed: int, say: Callable[[str], None] = print
) -> EncoderResult:
    """The tables, CSVs (``<out>/sims/<store>/``) and scores of ``metric`` over the whole of ``planned``,
    from its store; ``computed``: how many embeddings or judgments the runs made (the rest were reused)."""
    out, plan = planned.out, planned.plan
    if metric.kind == JUDGE:
        tables, mtg_sims, fields = _judged(planned, metric, computed, say)
    else:
        matrix = _vectors(planned, metric)
        tables = fill_tables(plan, matrix)
        mtg_sims = mtg_similarities(plan, matrix) if planned.mtg is not None else None
        fields = {"unique_images": len(plan), "embeddings_computed": computed}
    folder = out / "sims" / Path(metric.store).name
    for source, table in tables.items():
        write_nearid_csv(folder / f"{source}_{planned.condition}.csv", table, plan.categories)
    result = EncoderResult(
        spec=metric.spec,
        fingerprint=metric.fingerprint,
        nearid=score_tables(tables),
        untrained=metric.untrained,
        sims_folder=str(folder.relative_to(out)),
        calibration=_calibration(planned, tables, required=metric.kind != JUDGE),
        **fields,
    )
    if mtg_sims is not None:
        write_mtg_csv(folder / f"mtg_{planned.condition}.csv", mtg_sims, planned.oracles)
        result.mtg = score_mtg(mtg_sims, planned.oracles)
    return result


def _vectors(planned: PlannedBench, metric: MetricInfo) -> np.ndarray:
    """The planned keys' vectors in plan order, float64 (memory-mapped: the store is never loaded whole)."""
    from nearid.bench.store import EmbeddingStore

    store = EmbeddingStore(planned.out / metric.store, metric.name, metric.dim, metric.fingerprint)
    missing = store.missing(planned.plan.keys)
    if missing:
        raise NearIDError(
            f"{store.folder}: {len(missing)} of the {len(planned.plan)} images of {metric.name} are not in the "
            f"store (e.g. {missing[0]}); a shard did not finish or wrote elsewhere: run it again, then merge"
        )
    return store.matrix(planned.plan.keys, dtype=np.float64)


def _judged(planned: PlannedBench, metric: MetricInfo, computed: int, say):
    """A pair scorer's tables and MTG similarities from its judgment store, and its result's counts."""
    from nearid.bench.judgments import JudgmentStore, pair_key

    store = JudgmentStore(planned.out / metric.store, metric.name, metric.fingerprint)
    plan, pairs = planned.plan, planned.judged_pairs
    keys = [pair_key(plan.keys[a], plan.keys[b]) for a, b in pairs.rows]
    stored = store.load()
    missing = [key for key in keys if key not in stored]
    if missing:
        raise NearIDError(
            f"{store.folder}: {len(missing)} of the {len(keys)} pairs {metric.name} is asked are not in the "
            f"store (e.g. {missing[0]}); a shard did not finish or wrote elsewhere: run it again, then merge"
        )
    scores = np.array([stored[key] for key in keys], dtype=np.float64)
    no_answer = int(np.isnan(scores).sum())
    if no_answer:
        rule = "count as lost" if metric.unanswered == "lose" else "are left out (--judge-unanswered skip)"
        say(f"[{metric.name}] no answer (NaN) for {no_answer} of {len(scores)} pairs: their trials {rule}")
    tables = fill_tables_from_judgments(plan, pairs, scores, unanswered=metric.unanswered)
    mtg_sims = mtg_similarities_from_judgments(plan, pairs, scores) if planned.mtg is not None else None
    counts = JudgmentCounts(
        pairs=len(pairs),
        computed=computed,
        no_answer=no_answer,
        full_table=pairs.full_table,
        unanswered=metric.unanswered,
    )
    fields = {
        "unique_images": len(np.unique(pairs.rows)) if len(pairs) else 0,
        "embeddings_computed": 0,
        "judgments": counts,
    }
    return tables, mtg_sims, fields


def _calibration(planned: PlannedBench, tables, *, required: bool):
    """The calibrated threshold; for a judge ``None`` when it answered no true pair or no distractor pair."""
    config = planned.config
    try:
        return calibration(tables, split=config.split_name, split_file=config.split_file)
    except ValueError:
        if required:
            raise
        return None
