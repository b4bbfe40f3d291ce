"""Shards of ``nearid score`` (``--num-shards S --shard-index I``) and the score kind of record.

Each shard scores a contiguous share of the planned pairs and writes ``<out>.shard-I-of-S.json``, a
record (:mod:`nearid.io.records`) keyed by content: every file the plan reads gets a content key
(:func:`file_key`: its real path, size and modification time, as every nearid fingerprint of files),
a pair is its two images' keys (masks included), the record's ``inputs`` is the whole plan's pairs by
those keys, and its payload is its share's similarities keyed by their pairs' content keys. So shards
run from other working directories, with the inputs spelled relative to each, are one run; an image
changed between two shards (or after them) is named and refused.

``nearid merge OUT`` (the one merge, :func:`nearid.io.records.merge`) calls :func:`build`: the pairs are
planned again from the newest record's locations (no model), checked against its content keys, each
pair's similarity found by its keys, and the outputs written by score's own writer, so they equal a
one-process run's, byte for byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import numpy as np

from nearid.io.records import SCHEMA_VERSION, Group, Record, RecordKind, Shard, ShardError, register  # noqa: F401
from nearid.io.records import merge as merge_score_shards  # noqa: F401  (the old name: every merge is the one merge)

SCORE_KIND = "score"
#: the settings that make two score shards parts of one run (with the inputs' content and the model)
SCORE_SETTINGS = (
    "rule",
    "mask_cleaning",
    "mask_dilate",
    "skip_errors",
    "format",
    "threshold",
    "fast_decode",
    "n_pairs",
)
#: where the inputs were found, to plan the pairs again (never compared: their content is)
LOCATIONS = ("refs", "gens", "pairing", "masks")


def score_shard_plan(plan, shard: Shard):
    """This shard's contiguous share of a prepared :class:`~nearid.score.PairPlan`'s pairs (the problems
    found while preparing stay with every share: each names its own bad inputs)."""
    return dataclasses.replace(plan, pairs=shard.take(plan.pairs), unmatched=list(plan.unmatched))


def score_record_path(out: str | os.PathLike, shard: Shard) -> Path:
    from nearid.score import side_file

    return side_file(out, f"{shard.name}.json")


def score_records(out: str | os.PathLike) -> list[Path]:
    out = Path(out)
    return sorted(out.parent.glob(f"{out.name}.shard-*-of-*.json")) if out.parent.is_dir() else []


def file_key(path: str | os.PathLike) -> str:
    """A file's content key: its real path, size and modification time (:func:`nearid.io.fingerprint.of_files`)."""
    from nearid.io.fingerprint import SHORT, of_files

    try:
        return of_files([path])[:SHORT]
    except OSError:
        return "absent"


def content_of(plan) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``(files, pairs)``: every file the plan reads by real path -> content key, and each pair's
    (reference, generated) keys, each with its mask's key when it is cut with one."""
    files: dict[str, str] = {}

    def key(path) -> str:
        real = os.path.realpath(path)
        if real not in files:
            files[real] = file_key(real)
        return files[real]

    def side(image, which: str) -> str:
        mask = plan.mask_of.get((image, which))
        return key(image) + (f"|mask={key(mask)}" if mask is not None else "")

    pairs = [(side(pair.reference, "refs"), side(pair.generated, "gens")) for pair in plan.pairs]
    return files, pairs


def inputs_of(plan, pairs: list[tuple[str, str]]) -> str:
    from nearid.io.fingerprint import of_json

    return of_json({"rule": plan.rule, "pairs": pairs})


def changed_files(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """The files whose content key differs (or that are in one map only), sorted."""
    return sorted(path for path in set(before) | set(now) if before.get(path) != now.get(path))


def run_score_shard(encoder, plan, shard: Shard, *, out, settings: dict, **options) -> Path:
    """Score this shard's share of ``plan`` (:func:`nearid.score.score_pairs` with ``options``) and write
    its record; ``settings`` are the run's options as given: where the inputs are (refs, gens, pairing,
    masks) and what changes the results (format, threshold, skip_errors, mask cleaning, fast decoding)."""
    from nearid.io.records import write
    from nearid.score import score_pairs

    files, pairs = content_of(plan)
    share = shard.take(pairs)
    # more shards than pairs: an empty share writes an empty record (nothing to score is its whole
    # job), so `nearid merge` finds every shard; scoring it would refuse "no pairs to score"
    similarities, failures = np.zeros(0), {}
    if share:
        result = score_pairs(encoder, score_shard_plan(plan, shard), **options)
        similarities, failures = result.similarities, result.failures
    values = {**settings, "rule": plan.rule, "n_pairs": len(plan.pairs)}
    record = Record(
        kind=SCORE_KIND,
        shard=shard,
        inputs=inputs_of(plan, pairs),
        settings={name: values.get(name) for name in SCORE_SETTINGS},
        metric={"spec": encoder.name, "name": encoder.name, "fingerprint": getattr(encoder, "fingerprint", None)},
        locations={**{name: settings.get(name) for name in LOCATIONS}, "cwd": os.getcwd()},
        payload={
            "pairs": [[a, b, float(v) if np.isfinite(v) else None] for (a, b), v in zip(share, similarities)],
            "failures": {os.path.realpath(path): why for path, why in failures.items()},
            "files": files,
        },
    )
    return write(out, record)


def write_score_record(out: str | os.PathLike, record: Record) -> Path:
    """Write a score shard's record (``<out>.shard-I-of-S.json``)."""
    from nearid.io.records import write

    return write(out, record)


def explain(record: Record, newest: Record) -> str:
    """Why ``record`` is not of ``newest``'s run: its settings, or else the images that changed."""
    differences = record.differences(newest, SCORE_SETTINGS)
    if differences:
        return f"another run ({'; '.join(differences)})"
    changed = changed_files(record.payload.get("files", {}), newest.payload.get("files", {}))
    more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
    return f"other inputs ({changed[0] if changed else 'the pairs'} changed{more} between the two)"


def build(out: Path, groups: list[Group], context=None, notes=()):
    """The outputs of a sharded ``nearid score`` from one complete group of records, written by score's
    own writer (:func:`nearid.score.write_outputs`): a one-process run's files."""
    from nearid.score import ScoreResult, plan_pairs, prepare, write_outputs

    if len(groups) > 1:
        raise ShardError(
            f"{out}: holds shards of {len(groups)} models ({', '.join(g.newest.name for g in groups)}); delete "
            f"the records ({Path(out).name}.shard-I-of-S.json) of those you do not want and merge again"
        )
    out, group = Path(out).absolute(), groups[0]  # the merge's working directory, not the shards'
    for note in notes:
        print(note, flush=True)
    newest = group.newest
    where, settings = newest.locations, newest.settings
    with contextlib.chdir(where["cwd"]):  # paths as the shards (and a one-process run) saw them
        plan = prepare(plan_pairs(where["refs"], where["gens"], where["pairing"]), where["masks"])
        files, pairs = content_of(plan)
        failures = _failures(plan, group)
    changed = changed_files(newest.payload["files"], files)
    if changed or inputs_of(plan, pairs) != newest.inputs:
        what = changed[0] if changed else f"the pairs of {where['refs']}"
        raise ShardError(f"{what}: changed since the shards ran; run the shards again, then merge")
    scored = {(a, b): np.nan if v is None else v for r in group.records for a, b, v in r.payload["pairs"]}
    similarities = np.array([scored[pair] for pair in pairs], dtype=np.float64)
    result = ScoreResult(plan, newest.name, similarities, failures, *_embedded(plan, settings))
    with contextlib.chdir(where["cwd"]):
        return write_outputs(result, out, threshold=settings["threshold"], fmt=settings["format"])


def _failures(plan, group: Group) -> dict[str, str]:
    """The shards' failures, each under the path as the plan spells it (call it in the plan's directory)."""
    spelled = {os.path.realpath(str(p)): str(p) for pair in plan.pairs for p in (pair.reference, pair.generated)}
    spelled.update({os.path.realpath(path): path for path, _ in plan.unmatched})
    failures: dict[str, str] = {}
    for record in group.records:
        failures.update({spelled.get(real, real): why for real, why in record.payload["failures"].items()})
    return failures


def _embedded(plan, settings: dict) -> tuple:
    """``(embedded, masked, mask_cleaning, mask_dilate)`` of :class:`~nearid.score.ScoreResult`: the unique
    (image, mask) inputs of the usable pairs, as a one-process run counts them."""
    bad = {path for path, _ in plan.unmatched}
    keys = {
        (image, plan.mask_of.get((image, side)))
        for pair in plan.pairs
        if str(pair.reference) not in bad and str(pair.generated) not in bad
        for side, image in (("refs", pair.reference), ("gens", pair.generated))
    }
    masked = sum(mask is not None for _, mask in keys)
    return len(keys), masked, settings["mask_cleaning"] if masked else None, settings["mask_dilate"] if masked else 0


SCORE = register(
    RecordKind(
        name=SCORE_KIND,
        command="nearid score",
        files=lambda out: score_records(out),
        path=lambda out, record: score_record_path(out, record.shard),
        aside=lambda path: path.with_name(path.name.replace(".shard-", ".stale.shard-", 1)),
        build=build,
        explain=explain,
    )
)
