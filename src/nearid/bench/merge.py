"""The bench kind of record (:mod:`nearid.io.records`) and its builder: records -> ``results.json``, tables, CSVs.

Every bench run writes one record per encoder or judge into ``OUT/records/`` (a run that is not split
is shard 0 of 1): the benchmark's content key (:func:`~nearid.bench.planning.plan_fingerprint`) and
settings, the metric (spec, name, fingerprint, its store), its share and that share's counts. The one
merge (:func:`nearid.io.records.merge`) checks them and calls :func:`build` with the complete groups:
the benchmark is planned whole (the run's own plan at the end of a run; planned again from the newest
record's locations for ``nearid merge``, and refused if its content changed since), and each metric
is scored from its store over the whole plan by :func:`~nearid.bench.scoring.score_metric`, the one
scoring function, so a merged sharded run's results, tables and CSVs are a one-process run's.
Judges are finished from their judgment store like encoders from theirs: the merge asks no pair and
loads no model. ``embeddings_computed`` (a judge's ``judgments.computed``) is the shards' sum.

The entries are written into ``results.json`` per metric (:func:`nearid.eval.results.merge_bench_results`:
a metric built now replaces its earlier entry, the others stay), then the tables are rendered.
Records made on other data are moved to ``OUT/records/stale/`` by the merge (:mod:`nearid.io.records`),
and a ``results.json`` made on other data to ``results.stale.json``, each said in the log: entries of
two contents never meet in one table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nearid.bench.planning import SETTINGS, PlannedBench, config_of, planned
from nearid.bench.scoring import JUDGE, MetricInfo, score_metric
from nearid.io.records import RECORDS_FOLDER, Group, Record, RecordKind, ShardError, register
from nearid.io.records import merge as merge_bench  # noqa: F401  (the old name: every merge is the one merge)

KIND = "bench"


def record_files(out: Path) -> list[Path]:
    folder = Path(out) / RECORDS_FOLDER
    return sorted(folder.glob("*-shard-*-of-*.json")) if folder.is_dir() else []


def record_path(out: Path, record: Record) -> Path:
    """``OUT/records/<family>-<content key>-shard-I-of-S.json``: a run of the same computation replaces
    its own record; another model, setting or data gets a file of its own."""
    from nearid.io.fingerprint import of_json

    family = record.name.split(":")[0].split("(")[0] or "metric"
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in family)[:32]
    content = [record.inputs, record.settings, record.metric.get("fingerprint")]
    if record.metric.get("unanswered", "lose") != "lose":  # another rule: another entry, another record
        content.append(record.metric["unanswered"])
    key = of_json(content)[:12]
    return Path(out) / RECORDS_FOLDER / f"{slug}-{key}-{record.shard.name}.json"


def aside(path: Path) -> Path:
    """Where a record made on other data goes: ``OUT/records/stale/``, out of the merge's sight."""
    return path.parent / "stale" / path.name


def explain(record: Record, newest: Record) -> str:
    """Why ``record`` is not of ``newest``'s benchmark: its settings, or else the content of its data."""
    differences = record.differences(newest, SETTINGS)
    if differences:
        return f"another benchmark ({'; '.join(differences)})"
    data = newest.locations.get("data") or record.locations.get("data")
    return f"other data (the content of {data} changed: inputs {record.inputs[:12]} -> {newest.inputs[:12]})"


def record_of(whole: PlannedBench, metric: MetricInfo, shard, payload: dict, run: str, log: list[str]) -> Record:
    """A run's record of one metric: the whole benchmark's content key and settings, its share, its counts."""
    return Record(
        kind=KIND,
        shard=shard,
        inputs=whole.inputs,
        settings=whole.settings(),
        metric=metric.to_dict(),
        locations=whole.locations(),
        payload=payload,
        run=run,
        log=list(log),
    )


def build(out: Path, groups: list[Group], context: PlannedBench | None = None, notes: Sequence[str] = ()):
    """``results.json`` (merged per metric), tables and CSVs from complete groups of bench records; a
    ``results.json`` of this benchmark made on other data is first moved to ``results.stale.json``."""
    from nearid.eval.results import STALE_RESULTS, BenchResults, merge_bench_results, set_aside_other_data
    from nearid.report.tables import write_tables

    newest = max((group.newest for group in groups), key=lambda r: r.written)
    whole = _plan(out, newest, context)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    for note in notes:
        say(note)
    info = whole.info()
    moved = set_aside_other_data(Path(out) / "results.json", info)
    if moved is not None:
        say(
            f"results.json: its {len(moved.encoders)} entries ({', '.join(moved.encoders)}) were made on other data "
            f"(the content of {info.data} changed); moved aside to {STALE_RESULTS}"
        )

    results = BenchResults(info)
    for group in groups:
        metric = MetricInfo.from_dict(group.newest.metric)
        computed = sum(int(record.payload.get("computed", 0)) for record in group.records)
        if group.count > 1:
            what = "judgments" if metric.kind == JUDGE else "embeddings"
            say(
                f"[{metric.name}] merged {group.count} shards: unique images {len(whole.plan)}; "
                f"{what} computed by the shards: {computed}"
            )
        results.encoders[metric.name] = score_metric(whole, metric, computed, say)
    results.log = [*_run_logs(groups), *lines]
    merged = merge_bench_results(Path(out) / "results.json", results)
    write_tables(merged, out)
    return merged


def _plan(out: Path, newest: Record, context: PlannedBench | None) -> PlannedBench:
    """The whole benchmark of the records: the run's own plan when it is theirs, else planned again from
    the newest record's locations -- refused if the data's content changed since the records were made."""
    if context is not None and context.inputs == newest.inputs:
        return context
    whole = planned(config_of(newest.locations, out))
    if whole.inputs != newest.inputs:
        raise ShardError(
            f"{newest.locations.get('data')}: its content changed since the records in {out} were made "
            f"(inputs {newest.inputs[:12]} then, {whole.inputs[:12]} now); run the shards again, then merge"
        )
    return whole


def _run_logs(groups: list[Group]) -> list[str]:
    """Each run's log once (the records of one run share it), oldest run first."""
    records = sorted((r for group in groups for r in group.records), key=lambda r: r.written)
    logs = {record.run or str(record.path): record.log for record in records}
    return [line for log in logs.values() for line in log]


def read_records(out: str | os.PathLike) -> list[Record]:
    """Every bench record in ``out`` (any run, any share), as written."""
    from nearid.io.records import read

    return read(record_files(Path(out)))


def _results_lock(out: Path):
    from nearid.eval.results import results_lock

    return results_lock(out)


BENCH = register(
    RecordKind(
        name=KIND,
        command="nearid bench",
        files=record_files,
        path=record_path,
        aside=aside,
        build=build,
        explain=explain,
        lock=_results_lock,
    )
)
