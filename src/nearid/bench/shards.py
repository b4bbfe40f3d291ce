"""Rendezvous-free shards: one benchmark run split over independent jobs that never talk to each other.

Schedulers without a rendezvous (SLURM job arrays, Kubernetes indexed jobs) start S copies of one
command that differ only in an index. ``nearid bench --num-shards S --shard-index I`` plans the whole
benchmark as one run would, keeps the identities (and MTG samples) of its contiguous share
(:meth:`Shard.span`: shard I takes positions ``I*N//S`` to ``(I+1)*N//S``), embeds the images of that
share into the shared, content-keyed store (several writers are safe: one atomic file per chunk), and
writes a partial record, ``OUT/shards/shard-I-of-S.json`` (kind ``bench-shard``: the settings, the
encoders and their fingerprints, this share's counts). No ``results.json`` is written by a shard, so
nobody mistakes a share for the result.

``nearid merge OUT`` (:mod:`nearid.bench.merge`) then checks that every shard of one run is there (same
settings, same encoders) and finishes the tables from the store over the whole plan: the very code
path of a one-process run, so its results, tables and CSVs equal a one-process run's exactly (SSR,
PA, MTG correlations, calibration). An un-sharded ``nearid bench`` over the full data does the same
(it finds every image in the store and embeds nothing).

Splitting by identity makes counts add up: SSR and PA are counts per identity
(:class:`~nearid.eval.metrics.DiscriminationScore`), so the shards' partial counts sum to the whole. The
split is a selection of the plan (:func:`select_plan`), so any path that plans images and then
scores them (an encoder, or a pair scorer over the same plan) shards the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nearid.eval.evaluate import ImagePlan
from nearid.io.records import SCHEMA_VERSION, SHARDS_FOLDER, Shard, ShardError, complete, shard_option  # noqa: F401  (re-exported)

KIND = "bench-shard"


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


#: the settings that make two shards parts of one run (with the benchmark and the encoders)
SETTINGS = ("data", "sources", "split", "split_file", "masks", "mask_cleaning", "mask_dilate", "mtg", "mtg_split")


def settings_of(config) -> dict:
    """The settings of a bench config, local paths absolute, so a merge can plan from any directory."""
    from nearid.io.outputs import recorded_path

    values = {name: getattr(config, name) for name in SETTINGS}
    for name in ("data", "split_file", "mtg"):
        values[name] = recorded_path(values[name])
    if values["sources"]:
        values["sources"] = [
            f"{s.split('=', 1)[0]}={recorded_path(s.split('=', 1)[1])}" if "=" in s else s for s in values["sources"]
        ]
    return values


def write_record(out: str | os.PathLike, shard: Shard, config, benchmark, encoders: list[dict], log) -> Path:
    """Write this shard's partial record atomically: settings, benchmark, encoders, partial counts."""
    from nearid.io.atomic import write_text_atomic

    record = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "partial": f"shard {shard.index} of {shard.count}: not a result; `nearid merge` finishes the run",
        "shard": {"count": shard.count, "index": shard.index},
        "settings": settings_of(config),
        "benchmark": benchmark.to_dict(),
        "encoders": encoders,
        "log": list(log),
    }
    path = shard.record(out)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def read_records(out: str | os.PathLike) -> list[dict]:
    """Every shard record of one sharded run in ``out``, in shard order; a one-line :class:`ShardError`
    when there is none, when shards of several runs are mixed, or when one is missing or differs."""
    from nearid.eval.results import BenchInfo

    folder = Path(out) / SHARDS_FOLDER
    paths = sorted(folder.glob("shard-*-of-*.json"))
    if not paths:
        raise ShardError(
            f"{out}: no shard records in {folder}; run `nearid bench ... --num-shards S --shard-index I "
            f"--out {out}` for every I first"
        )
    ordered = complete(paths, KIND, str(out), "nearid bench")
    first = ordered[0]
    for record in ordered[1:]:
        theirs, mine = first, record
        differences = [
            f"{name}: {theirs['settings'].get(name)!r} -> {mine['settings'].get(name)!r}"
            for name in SETTINGS
            if theirs["settings"].get(name) != mine["settings"].get(name)
        ]
        differences += BenchInfo.from_dict(theirs["benchmark"]).differences(BenchInfo.from_dict(mine["benchmark"]))
        if differences:
            raise ShardError(
                f"{record['path']}: another benchmark than shard 0 ({'; '.join(differences)}); "
                "run every shard with the same options"
            )
        encoders = [(e["spec"], e["fingerprint"]) for e in theirs["encoders"]]
        if encoders != [(e["spec"], e["fingerprint"]) for e in mine["encoders"]]:
            raise ShardError(
                f"{record['path']}: other encoders than shard 0 (specs or fingerprints: "
                f"{[e['spec'] for e in mine['encoders']]} vs {[e['spec'] for e in theirs['encoders']]}); "
                "run every shard with the same --model options and models"
            )
    return ordered


def partial_entry(plan: ImagePlan, encoder, spec: str, store, computed: int) -> dict:
    """One encoder's entry in a shard record: what the merge needs to find its store, and this share's
    counts (partial: the merge recomputes every figure over the whole plan)."""
    from nearid.eval.evaluate import fill_tables, score_tables

    return {
        "spec": spec,
        "name": encoder.name,
        "fingerprint": store.fingerprint,
        "dim": store.dim,
        "store": store.folder.name,
        "untrained": bool(getattr(encoder, "untrained", False)),
        "unique_images": len(plan),
        "embeddings_computed": computed,
        "partial_nearid": score_tables(fill_tables(plan, store.matrix(plan.keys))).to_dict(),
    }
