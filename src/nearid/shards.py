"""Rendezvous-free shards: one benchmark run split over independent jobs that never talk to each other.

Schedulers without a rendezvous (SLURM job arrays, Kubernetes indexed jobs) start S copies of one
command that differ only in an index. ``nearid bench --num-shards S --shard-index I`` plans the whole
benchmark as one run would, keeps the identities (and MTG samples) of its contiguous share
(:meth:`Shard.span`: shard I takes positions ``I*N//S`` to ``(I+1)*N//S``), embeds the images of that
share into the shared, content-keyed store (several writers are safe: one atomic file per chunk), and
writes a partial record, ``OUT/shards/shard-I-of-S.json`` (kind ``bench-shard``: the settings, the
encoders and their fingerprints, this share's counts). No ``results.json`` is written by a shard, so
nobody mistakes a share for the result.

``nearid merge OUT`` (:mod:`nearid.merge`) then checks that every shard of one run is there (same
settings, same encoders) and finishes the tables from the store over the whole plan: the very code
path of a one-process run, so its results, tables and CSVs equal a one-process run's exactly (SSR,
PA, MTG correlations, calibration). An un-sharded ``nearid bench`` over the full data does the same
(it finds every image in the store and embeds nothing).

Splitting by identity makes counts add up: SSR and PA are counts per identity
(:class:`~nearid.metrics.DiscriminationScore`), so the shards' partial counts sum to the whole. The
split is a selection of the plan (:func:`select_plan`), so any path that plans images and then
scores them (an encoder, or a pair scorer over the same plan) shards the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import NearIDError
from .evaluate import ImagePlan

#: where a sharded run's partial records go, inside ``--out``
SHARDS_FOLDER = "shards"
KIND = "bench-shard"
SCHEMA_VERSION = 1


class ShardError(NearIDError):
    """A bad ``--num-shards`` / ``--shard-index``, or shards that cannot be merged."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    count: int
    index: int

    @property
    def name(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def span(self, n: int) -> range:
        """This shard's contiguous share of ``n`` items in order; the shares of 0..count-1 tile 0..n."""
        return range(self.index * n // self.count, (self.index + 1) * n // self.count)

    def take(self, items: Sequence) -> list:
        return [items[i] for i in self.span(len(items))]

    def record(self, out: str | os.PathLike) -> Path:
        """This shard's partial record in ``out``."""
        return Path(out) / SHARDS_FOLDER / f"{self.name}.json"


def shard_option(num_shards: int | None, shard_index: int | None) -> Shard | None:
    """``--num-shards`` / ``--shard-index`` as a :class:`Shard` (``None``: not sharded); checked before
    any data is read or model loaded."""
    if num_shards is None and shard_index is None:
        return None
    if num_shards is None or shard_index is None:
        given, needed = ("--num-shards", "--shard-index") if shard_index is None else ("--shard-index", "--num-shards")
        raise ShardError(f"{given} needs {needed}: a shard is --shard-index I (0-based) of --num-shards S")
    if num_shards < 1:
        raise ShardError(f"--num-shards {num_shards}: must be at least 1")
    if not 0 <= shard_index < num_shards:
        raise ShardError(
            f"--shard-index {shard_index}: out of range for --num-shards {num_shards} (0 to {num_shards - 1})"
        )
    return Shard(num_shards, shard_index)


def select_plan(plan: ImagePlan, identities: Sequence[int], mtg: Sequence[int] = ()) -> ImagePlan:
    """The plan of a subset of ``plan``'s identities (and MTG samples), positions in ``plan``'s order.

    Rows are renumbered in the order :func:`~nearid.evaluate.plan_images` would give them if it had
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
    from .outputs import recorded_path

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
    from .io import write_text_atomic

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
    from .results import BenchInfo

    folder = Path(out) / SHARDS_FOLDER
    paths = sorted(folder.glob("shard-*-of-*.json"))
    if not paths:
        raise ShardError(
            f"{out}: no shard records in {folder}; run `nearid bench ... --num-shards S --shard-index I "
            f"--out {out}` for every I first"
        )
    ordered = _complete(paths, KIND, str(out), "nearid bench")
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
                "run every shard with the same --encoder options and models"
            )
    return ordered


def partial_entry(plan: ImagePlan, encoder, spec: str, store, computed: int) -> dict:
    """One encoder's entry in a shard record: what the merge needs to find its store, and this share's
    counts (partial: the merge recomputes every figure over the whole plan)."""
    from .evaluate import fill_tables, score_tables

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


# ------------------------------------------------------------------------------------------ nearid score
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
    """This shard's contiguous share of a prepared :class:`~nearid.score.PairPlan`'s pairs (the problems
    found while preparing stay with every share: each names its own bad inputs)."""
    import dataclasses

    return dataclasses.replace(plan, pairs=shard.take(plan.pairs), unmatched=list(plan.unmatched))


def score_record_path(out: str | os.PathLike, shard: Shard) -> Path:
    from .score import side_file

    return side_file(out, f"{shard.name}.json")


def run_score_shard(encoder, plan, shard: Shard, *, out, settings: dict, **options) -> Path:
    """Score this shard's share of ``plan`` (:func:`nearid.score.score_pairs` with ``options``) and write
    its record; ``settings`` are the run's options as given (checked equal across shards by the merge)."""
    from .score import score_pairs

    result = score_pairs(encoder, score_shard_plan(plan, shard), **options)
    settings = {**settings, "model": encoder.name, "fingerprint": getattr(encoder, "fingerprint", None)}
    settings.update(n_pairs=len(plan.pairs), cwd=os.getcwd())
    return write_score_record(out, shard, result, settings)


def write_score_record(out: str | os.PathLike, shard: Shard, result, settings: dict) -> Path:
    """``<out>.shard-I-of-S.json``: this share's pairs, similarities (float64, NaN as null) and failures."""
    from .io import write_text_atomic

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


def _complete(paths: list[Path], kind: str, where: str, rerun: str) -> list[dict]:
    """The records of ``paths`` in shard order: all of one run, none missing, one settings."""
    records = {}
    for path in paths:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("kind") != kind or record.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"not a {kind} record of this nearid")
            shard = Shard(int(record["shard"]["count"]), int(record["shard"]["index"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ShardError(
                f"{path}: not readable as a shard record ({exc}); delete it and run that shard again"
            ) from None
        record["path"] = str(path)
        records[shard] = record
    counts = sorted({shard.count for shard in records})
    if len(counts) > 1:
        raise ShardError(
            f"{where}: holds shards of runs split {' and '.join(map(str, counts))} ways; "
            "delete the records of the run you do not want (shard-I-of-S.json) and merge again"
        )
    count = counts[0]
    for index in range(count):
        if Shard(count, index) not in records:
            raise ShardError(
                f"{where}: shard {index} of {count} is missing ({Shard(count, index).name}.json); run `{rerun}` "
                f"with the same options and --num-shards {count} --shard-index {index}, then merge"
            )
    return [records[Shard(count, index)] for index in range(count)]


def merge_score_shards(out: str | os.PathLike):
    """Finish a sharded ``nearid score``: the pairs are planned again from the recorded settings (no
    model), each share's similarities put back in pair order, and the outputs written by score's own
    writer, so they equal a one-process run's."""
    from .score import ScoreResult, _usable, plan_pairs, prepare, write_outputs

    out = Path(out).absolute()
    records = _complete(score_records(out), SCORE_KIND, str(out), "nearid score")
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
        if _usable(pair, plan)
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
