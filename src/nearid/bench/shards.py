"""Rendezvous-free shards: one benchmark run split over independent jobs that never talk to each other.

Schedulers without a rendezvous (SLURM job arrays, Kubernetes indexed jobs) start S copies of one
command that differ only in an index. ``nearid bench --num-shards S --shard-index I`` plans the whole
benchmark as one run would, keeps the identities (and MTG samples) of its contiguous share
(:meth:`Shard.span`: shard I takes positions ``I*N//S`` to ``(I+1)*N//S``), embeds the images (or,
for a judge, judges the pairs) of that share into the shared, content-keyed store (several writers
are safe: one atomic file per chunk), and writes one record per encoder or judge into
``OUT/records/`` (:mod:`nearid.bench.merge`: the benchmark's content key and settings, the metric and
its fingerprint, this share's counts). No ``results.json`` is written by a shard, so nobody mistakes
a share for the result.

``nearid merge OUT`` (the one merge, :func:`nearid.io.records.merge`) then checks that every shard of
each metric is there, on one content and one set of settings, and finishes the tables from the stores
over the whole plan: the very scoring a one-process run goes through, so its results, tables and CSVs
equal a one-process run's exactly (SSR, PA, MTG correlations, calibration), judges included. An
un-sharded ``nearid bench`` over the full data does the same (it finds everything in the stores).

Splitting by identity makes counts add up: SSR and PA are counts per identity
(:class:`~nearid.eval.metrics.DiscriminationScore`), so the shards' partial counts sum to the whole. The
split is a selection of the plan (:func:`select_plan`), so any path that plans images and then
scores them (an encoder, or a pair scorer over the same plan) shards the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nearid.eval.evaluate import ImagePlan
from nearid.io.records import SCHEMA_VERSION, SHARDS_FOLDER, Shard, ShardError, shard_option  # noqa: F401


def select_plan(plan: ImagePlan, identities: Sequence[int], mtg: Sequence[int] = ()) -> ImagePlan:
    """The plan of a subset of ``plan``'s identities (and MTG samples), positions in ``plan``'s order.

    Rows are renumbered in the order :func:`~nearid.eval.evaluate.plan_images` would give them if it had
    walked only these identities (each identity's views, each followed by its distractors, then MTG),
    so the result is the plan of that subset; each (image, mask) key is still listed once."""
    out = ImagePlan(views_without_mask=0)
    remap: dict[int, int] = {}

    def row(r: int) -> int:
        if r < 0:
            return -1
        if r not in remap:
            remap[r] = out.add(plan.images[r], plan.masks[r])
        return remap[r]

    sources = plan.sources
    views, distractors = [], {source: [] for source in sources}
    for i in identities:
        out.ids.append(plan.ids[i])
        out.categories.append(plan.categories[i])
        mine, theirs = [-1, -1, -1], {source: [-1, -1, -1] for source in sources}
        for j in range(3):
            mine[j] = row(int(plan.views[i, j]))
            for source in sources:
                theirs[source][j] = row(int(plan.distractors[source][i, j]))
        views.append(mine)
        for source in sources:
            distractors[source].append(theirs[source])
    out.views = np.array(views, dtype=np.int64).reshape(-1, 3)
    out.distractors = {s: np.array(rows, dtype=np.int64).reshape(-1, 3) for s, rows in distractors.items()}
    if plan.mtg is not None:
        out.mtg = np.array([[row(int(r)) for r in plan.mtg[m]] for m in mtg], dtype=np.int64).reshape(-1, 4)
    return out


def shard_plan(plan: ImagePlan, mtg, shard: Shard) -> tuple[ImagePlan, list | None]:
    """This shard's plan and MTG samples: its contiguous share of the identities and of MTG."""
    identities = shard.span(len(plan.ids))
    samples = shard.span(len(mtg)) if mtg is not None else range(0)
    return select_plan(plan, identities, samples), ([mtg[m] for m in samples] if mtg is not None else None)


def settings_of(config) -> dict:
    """The settings of a bench config that change results (:data:`SETTINGS`), as its records hold them."""
    from nearid.bench.planning import planned

    return planned(config).settings()


def partial_entry(plan: ImagePlan, store, computed: int) -> dict:
    """An encoder share's payload in its record: how many vectors it computed, and its share's counts
    (partial: the merge scores the whole plan; the counts show that the shares add up)."""
    from nearid.eval.evaluate import fill_tables, score_tables

    return {
        "computed": computed,
        "unique_images": len(plan),
        "partial_nearid": score_tables(fill_tables(plan, store.matrix(plan.keys))).to_dict(),
    }


def write_record(out: str | os.PathLike, record) -> Path:
    """Write a share's record (:class:`~nearid.io.records.Record`) where the merge finds it."""
    from nearid.io.records import write

    return write(out, record)
