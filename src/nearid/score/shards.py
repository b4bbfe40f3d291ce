"""Shards of ``nearid score`` (``--num-shards S --shard-index I``): each scores a contiguous share of the
planned pairs and writes ``<out>.shard-I-of-S.json``; :func:`merge_score_shards` plans the pairs again
(no model), puts each share's similarities back in pair order and writes the outputs with score's own
writer, so they equal a one-process run's."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from nearid.io.records import SCHEMA_VERSION, Shard, ShardError, complete

SCORE_KIND = "score-shard"
#: the settings that make two score shards parts of one run
SCORE_SETTINGS = (
    "refs",
    "gens",
    "pairing",
    "masks",
    "mask_cleaning",
    "mask_dilate",
    "skip_errors",
    "format",
    "model",
    "fingerprint",
    "threshold",
    "n_pairs",
    "cwd",
)


def score_shard_plan(plan, shard: Shard):
    """This shard's contiguous share of a prepared :class:`~nearid.score.run.PairPlan`'s pairs (the problems
    found while preparing stay with every share: each names its own bad inputs)."""
    import dataclasses

    return dataclasses.replace(plan, pairs=shard.take(plan.pairs), unmatched=list(plan.unmatched))


def score_record_path(out: str | os.PathLike, shard: Shard) -> Path:
    from nearid.score.run import side_file

    return side_file(out, f"{shard.name}.json")


def run_score_shard(encoder, plan, shard: Shard, *, out, settings: dict, **options) -> Path:
    """Score this shard's share of ``plan`` (:func:`nearid.score.run.score_pairs` with ``options``) and write
    its record; ``settings`` are the run's options as given (checked equal across shards by the merge)."""
    from nearid.score.run import score_pairs

    result = score_pairs(encoder, score_shard_plan(plan, shard), **options)
    settings = {**settings, "model": encoder.name, "fingerprint": getattr(encoder, "fingerprint", None)}
    settings.update(n_pairs=len(plan.pairs), cwd=os.getcwd())
    return write_score_record(out, shard, result, settings)


def write_score_record(out: str | os.PathLike, shard: Shard, result, settings: dict) -> Path:
    """``<out>.shard-I-of-S.json``: this share's pairs, similarities (float64, NaN as null) and failures."""
    from nearid.io.atomic import write_text_atomic

    record = {
        "kind": SCORE_KIND,
        "schema_version": SCHEMA_VERSION,
        "partial": f"shard {shard.index} of {shard.count}: not a result; `nearid merge` finishes the run",
        "shard": {"count": shard.count, "index": shard.index},
        "settings": settings,
        "pairs": [[str(p.reference), str(p.generated)] for p in result.plan.pairs],
        "similarities": [float(v) if np.isfinite(v) else None for v in result.similarities],
        "failures": result.failures,
    }
    path = score_record_path(out, shard)
    write_text_atomic(path, json.dumps(record) + "\n")
    return path


def score_records(out: str | os.PathLike) -> list[Path]:
    out = Path(out)
    return sorted(out.parent.glob(f"{out.name}.shard-*-of-*.json")) if out.parent.is_dir() else []


def merge_score_shards(out: str | os.PathLike):
    """Finish a sharded ``nearid score``: the pairs are planned again from the recorded settings (no
    model), each share's similarities put back in pair order, and the outputs written by score's own
    writer, so they equal a one-process run's."""
    from nearid.score.run import ScoreResult, plan_pairs, prepare, usable, write_outputs

    out = Path(out).absolute()
    records = complete(score_records(out), SCORE_KIND, str(out), "nearid score")
    settings = records[0]["settings"]
    for record in records[1:]:
        differences = [
            f"{name}: {settings.get(name)!r} -> {record['settings'].get(name)!r}"
            for name in SCORE_SETTINGS
            if settings.get(name) != record["settings"].get(name)
        ]
        if differences:
            raise ShardError(
                f"{record['path']}: another run than shard 0 ({'; '.join(differences)}); "
                "run every shard with the same options and model"
            )
    with contextlib.chdir(settings["cwd"]):  # paths as the shards (and a one-process run) saw them
        plan = prepare(plan_pairs(settings["refs"], settings["gens"], settings["pairing"]), settings["masks"])
    shards = [Shard(len(records), i) for i in range(len(records))]
    for shard, record in zip(shards, records):
        expected = [[str(p.reference), str(p.generated)] for p in shard.take(plan.pairs)]
        if len(plan.pairs) != settings["n_pairs"] or record["pairs"] != expected:
            raise ShardError(
                f"{record['path']}: its pairs are not those {settings['refs']} gives now "
                f"({len(plan.pairs)} pairs, {settings['n_pairs']} when the shards ran); run the shards again"
            )
    similarities = np.array(
        [np.nan if v is None else v for record in records for v in record["similarities"]], dtype=np.float64
    )
    failures = {}
    for record in records:
        failures.update(record["failures"])
    keys = {
        (image, plan.mask_of.get((image, side)))
        for pair in plan.pairs
        if usable(pair, plan)
        for side, image in (("refs", pair.reference), ("gens", pair.generated))
    }
    masked = sum(mask is not None for _, mask in keys)
    result = ScoreResult(
        plan,
        settings["model"],
        similarities,
        failures,
        len(keys),
        masked,
        mask_cleaning=settings["mask_cleaning"] if masked else None,
        mask_dilate=settings["mask_dilate"] if masked else 0,
    )
    with contextlib.chdir(settings["cwd"]):
        return write_outputs(result, out, threshold=settings["threshold"], fmt=settings["format"])
