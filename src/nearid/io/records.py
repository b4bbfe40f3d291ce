"""Records and the one merge: a run writes what it computed from, by content; one merge builds the results.

CLIP_benchmark's rule. A run -- one process group, one shard, one machine, one encoder or judge into a
shared ``--out`` -- leaves a *record* (JSON, written atomically) rather than the result, saying:

* ``inputs``: a fingerprint of the content of the planned inputs (bench: every planned image key,
  which carries its data's content version, and the plan's layout; score: every pair's image content
  keys). Never a path string: the same data through a link, another relative spelling or another
  working directory has the same ``inputs``; data regenerated at the same path has others.
* ``settings``: the options that change results (split, sources, masks, ...; not where the inputs lie);
* ``metric``: the encoder or judge (spec, name and fingerprint: weights, preprocessing, a judge's rubric
  and readout);
* ``shard``: its share (:class:`Shard`; a run that is not split is shard 0 of 1);
* ``locations`` (where the inputs were found, so the merge can plan them again; never compared) and
  the ``payload`` its kind's builder needs (bench: the store and its share's counts; score: the
  similarities keyed by the pairs' image content keys).

:func:`merge` is the one path from records to results, for every kind: it reads the records of one
``--out``, checks that they agree (every record on the newest record's settings and inputs: see
below), groups them by content (inputs, settings, the metric's fingerprint), checks that each group is complete
(every shard of one count) and hands the groups to the kind's builder, which writes the outputs with
the same code a one-process run uses (bench: :mod:`nearid.bench.merge`; score: :mod:`nearid.score.shards`).
It runs at the end of every bench run (the run's records are added under the kind's lock, so runs into
one ``--out`` at once merge one after the other and keep each other's entries) and for ``nearid merge``
(bench shards, their judges and score shards alike).

**Records made on other data are moved aside; another benchmark is refused.** The newest record names
the data. Records made on other inputs (data regenerated at the same path, an image rewritten) are
moved out of the way when a merge goes ahead (``records/stale/``, ``<out>.stale.shard-I-of-S.json``),
and the entries built from them with them (``results.stale.json``), each said in the log: results of
two contents never sit in one table, nothing is deleted, and the run that follows a regeneration just
works. A merge that cannot go ahead (a shard of the newest data missing, e.g. because its record was
made before the data changed) is refused with one line naming what is stale, and moves nothing.
Records of other *settings* (another split, other sources, masks) are another benchmark, not a newer
version of this one: a run into such an ``--out`` is refused before it embeds anything (:func:`check`),
and ``nearid merge`` refuses such a record, naming it.

The kinds plug in from above: ``bench`` and ``score`` sit higher than ``io``, so each registers its
:class:`RecordKind` when its module is imported, and :func:`merge` imports those modules by name
(:data:`PLUGINS`) -- the late binding the package faces use (:mod:`nearid.io.lazy`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nearid.io.errors import NearIDError

#: where a folder ``--out`` (bench) keeps its records
RECORDS_FOLDER = "records"
SHARDS_FOLDER = RECORDS_FOLDER  # the old name: shards' records and one-process runs' records alike
#: version 2: content-keyed records (inputs, settings, metric, locations, payload); 1 held paths only
SCHEMA_VERSION = 2
#: the modules that register the record kinds (imported by name: they sit in layers above ``io``)
PLUGINS = ("nearid.bench.merge", "nearid.score.shards")


class ShardError(NearIDError):
    """A bad ``--num-shards`` / ``--shard-index``, or records that cannot be merged."""


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


#: a run that is not split: shard 0 of 1
WHOLE = Shard(1, 0)


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


def run_id() -> str:
    """A name for one run (machine, process, start time): the records of one run share its log."""
    return f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"


@dataclass
class Record:
    """What one run of one metric computed from (by content) and what the merge needs."""

    kind: str
    shard: Shard
    inputs: str
    settings: dict
    metric: dict  # spec, name, fingerprint (and what the kind's builder needs to open its store)
    locations: dict = field(default_factory=dict)
    payload: dict = field(default_factory=dict)
    run: str = ""
    log: list[str] = field(default_factory=list)
    written: int = 0  # time.time_ns() when written: the newest record decides
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.metric.get("name", ""))

    @property
    def content(self) -> tuple:
        """What makes two records shares of one computation."""
        from nearid.io.fingerprint import of_json

        return (self.kind, self.inputs, of_json(self.settings), self.metric.get("fingerprint"))

    def differences(self, newest: Record, names: Sequence[str]) -> list[str]:
        """``name: ours -> newest's`` for each of the settings ``names`` that differ: the start of every
        kind's explanation of why a record is not part of the newest computation."""
        return [
            f"{name}: {self.settings.get(name)!r} -> {newest.settings.get(name)!r}"
            for name in names
            if self.settings.get(name) != newest.settings.get(name)
        ]

    def to_dict(self) -> dict:
        values = {"kind": self.kind, "schema_version": SCHEMA_VERSION}
        if self.shard.count > 1:
            index, count = self.shard.index, self.shard.count
            values["partial"] = f"shard {index} of {count}: not a result; `nearid merge` finishes the run"
        values["shard"] = {"count": self.shard.count, "index": self.shard.index}
        for name in ("inputs", "settings", "metric", "locations", "payload", "run", "written", "log"):
            values[name] = getattr(self, name)
        return values

    @classmethod
    def from_dict(cls, values: dict, path: Path | None = None) -> Record:
        return cls(
            kind=str(values["kind"]),
            shard=Shard(int(values["shard"]["count"]), int(values["shard"]["index"])),
            inputs=str(values["inputs"]),
            settings=dict(values["settings"]),
            metric=dict(values["metric"]),
            locations=dict(values.get("locations", {})),
            payload=dict(values.get("payload", {})),
            run=str(values.get("run", "")),
            log=[str(line) for line in values.get("log", [])],
            written=int(values.get("written", 0)),
            path=path,
        )


@dataclass(frozen=True)
class Group:
    """The records of one computation (same inputs, settings and metric), one per shard, in shard order."""

    records: list[Record]

    @property
    def newest(self) -> Record:
        return max(self.records, key=lambda r: r.written)

    @property
    def count(self) -> int:
        return self.records[0].shard.count


@dataclass(frozen=True)
class RecordKind:
    """How one kind of run keeps its records and builds its outputs from them."""

    name: str
    command: str  # the command that writes the records, for messages ("nearid bench")
    files: Callable[[Path], list[Path]]  # the record files of an --out
    path: Callable[[Path, Record], Path]  # where a record of an --out goes
    aside: Callable[[Path], Path]  # where a record made on other data is moved (out of ``files``' sight)
    #: the outputs from complete groups: ``build(out, groups, context, notes)`` (``notes``: lines to log)
    build: Callable[[Path, list[Group], object, list[str]], object]
    explain: Callable[[Record, Record], str]  # "another benchmark (split: ...)": why two records differ
    lock: Callable[[Path], contextlib.AbstractContextManager] = lambda out: contextlib.nullcontext()


KINDS: dict[str, RecordKind] = {}


def register(kind: RecordKind) -> RecordKind:
    """Make ``kind`` known to :func:`merge` (its module calls this when imported)."""
    KINDS[kind.name] = kind
    return kind


def kinds() -> dict[str, RecordKind]:
    """Every record kind: the modules in :data:`PLUGINS` register theirs when imported."""
    for module in PLUGINS:
        importlib.import_module(module)
    return KINDS


def write(out: str | os.PathLike, record: Record) -> Path:
    """Write ``record`` atomically where its kind keeps the records of ``out``; returns the file."""
    from nearid.io.atomic import write_text_atomic
    from nearid.io.jsonvalues import dumps

    record.written = record.written or time.time_ns()
    record.path = kinds()[record.kind].path(Path(out), record)
    write_text_atomic(record.path, dumps(record.to_dict(), indent=1) + "\n")
    return record.path


def read(paths: Sequence[Path]) -> list[Record]:
    """The records in ``paths``; a file that is not a record of this nearid is a one-line :class:`ShardError`."""
    found = []
    for path in paths:
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
            if values.get("schema_version") != SCHEMA_VERSION or "inputs" not in values:
                raise ValueError("not a record of this nearid")
            found.append(Record.from_dict(values, Path(path)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ShardError(
                f"{path}: not readable as a shard record ({exc}); delete it and run that shard again"
            ) from None
    return found


def check(out: str | os.PathLike, record: Record) -> list[Record]:
    """Before any work: refuse a run whose ``record`` (inputs and settings: its metric may be left empty)
    is of another benchmark than the records already in ``out``; returns the records made on other data,
    which its merge will move aside."""
    kind = kinds()[record.kind]
    return _agree(kind, Path(out), read(kind.files(Path(out))), [record])


def merge(out: str | os.PathLike, new: Sequence[Record] = (), *, context=None):
    """The one merge: the outputs of ``out`` from its records, by the kind's builder; returns what it built.

    ``new``: records of a run that has just finished; under the kind's lock they are checked against the
    records already there, written, and only their metrics are built (the others' entries stay as the
    results file holds them). Without ``new`` (``nearid merge``) every metric is built, from the newest
    complete group of its records. Records made on other data than the newest record's are moved aside
    once the merge can go ahead. ``context``: what the run already planned, handed to the builder
    (which plans again from the records when it does not match)."""
    out = Path(out)
    kind = _kind_of(out, new)
    with kind.lock(out):
        for record in new:  # the newest: stamped before they are compared, written once the merge can go ahead
            record.written = time.time_ns()
        found = read(kind.files(out))
        if not found and not new:
            raise _nothing_to_merge(out)
        stale = _agree(kind, out, found, new)
        rewritten = {kind.path(out, record) for record in new}
        aside = {id(record) for record in stale}
        records = [r for r in found if id(r) not in aside and r.path not in rewritten] + list(new)
        ordered = sorted(records, key=lambda r: r.written)
        names = list(dict.fromkeys(r.name for r in (new or ordered)))
        groups = [_group(kind, out, records, name, stale) for name in names]
        notes = [_set_aside(kind, record, ordered[-1]) for record in stale]
        for record in new:
            write(out, record)
        return kind.build(out, groups, context, notes)


def _kind_of(out: Path, new: Sequence[Record]) -> RecordKind:
    known = kinds()
    if new:
        return known[new[0].kind]
    for kind in known.values():
        if kind.files(out):
            return kind
    raise _nothing_to_merge(out)


def _nothing_to_merge(out: Path) -> ShardError:
    return ShardError(
        f"{out}: no shards to merge (a bench --out folder with {RECORDS_FOLDER}/, or a score --out with "
        f"{out.name}.shard-I-of-S.json beside it); run the shards first with --num-shards S --shard-index I"
    )


def _agree(kind: RecordKind, out: Path, found: list[Record], new: Sequence[Record]) -> list[Record]:
    """Every record on the newest record's settings (``new`` ones are the newest), else a one-line refusal;
    returns the records made on other inputs (stale: the newest record names the data)."""
    newest = new[-1] if new else max(found, key=lambda r: r.written)
    for record in found:
        if record.settings == newest.settings:
            continue
        if new:
            raise ShardError(f"{out}: holds results of {kind.explain(record, newest)}; use another --out for this one")
        raise ShardError(
            f"{record.path}: a record of {kind.explain(record, newest)} than the newest one "
            f"({newest.path.name}); run that shard again like the others, or delete it, then merge"
        )
    return [record for record in found if record.inputs != newest.inputs]


def _set_aside(kind: RecordKind, record: Record, newest: Record) -> str:
    """Move a record made on other data out of the merge's sight; the line that says so."""
    target = kind.aside(record.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(record.path, target)
    return f"{record.path.name}: made on {kind.explain(record, newest)}; moved aside to {target}"


def _group(kind: RecordKind, out: Path, records: list[Record], name: str, stale: Sequence[Record] = ()) -> Group:
    """The newest computation of metric ``name``, complete: every shard of its count, the latest of each."""
    mine = [r for r in records if r.name == name]
    newest = max(mine, key=lambda r: r.written)
    count = newest.shard.count
    same = sorted((r for r in mine if r.content == newest.content and r.shard.count == count), key=lambda r: r.written)
    by_index = {r.shard.index: r for r in same}
    missing = [i for i in range(count) if i not in by_index]
    if not missing:
        return Group([by_index[i] for i in range(count)])
    other = [r for r in mine if r.shard.count == count and r.shard.index in missing]
    if other:
        theirs, ours = other[0].metric.get("fingerprint"), newest.metric.get("fingerprint")
        raise ShardError(
            f"{other[0].path}: other encoders than shard {newest.shard.index} of {count} ({name}: fingerprint "
            f"{str(theirs)[:12]} vs {str(ours)[:12]}); run every shard with the same model and options, then merge"
        )
    counts = sorted({r.shard.count for r in mine if r.content == newest.content})
    if len(counts) > 1:
        raise ShardError(
            f"{out}: holds shards of runs split {' and '.join(map(str, counts))} ways ({name}); delete the "
            "records of the run you do not want (...-shard-I-of-S.json) and merge again"
        )
    old = [r for r in stale if r.name == name and r.shard == Shard(count, missing[0])]
    why = f": {old[0].path.name} was made on {kind.explain(old[0], newest)}" if old else ""
    raise ShardError(
        f"{out}: shard {missing[0]} of {count} is missing ({name}){why}; run `{kind.command}` with the same "
        f"options and --num-shards {count} --shard-index {missing[0]}, then merge"
    )
