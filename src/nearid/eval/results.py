"""The one typed schema of every results file nearid writes: bench results, score summaries, the demo.

Six modules used to pass ``results.json`` around as an untyped dict and each guessed at its fields (was
``split`` a split name or a split file?). Here every file is a dataclass with ``to_dict`` / ``to_json``
and ``from_dict`` / :func:`read_results`; writers (bench, score, demo) write through it and readers
(tables, report, the threshold lookup) read through it. Every file carries ``kind`` and an integer
``schema_version``; reading a file of another version, another kind or a malformed one raises a
:class:`ResultsError` with one line naming the file.

The JSON layout stays what it was before the schema had a version (``benchmark``, ``encoders``, per
encoder ``nearid.per_source``, ``nearid.groups``, ``mtg``, ``calibration``), with ``split`` and
``split_file`` now separate fields. Scores are stored as their counts plus the derived percentages;
reading takes the counts (:class:`~nearid.eval.metrics.DiscriminationScore`), so pooling what was read is
exact. numpy only, through :mod:`nearid.eval.metrics`: reading results never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from nearid.eval.metrics import DiscriminationScore, MTGScore, Threshold
from nearid.io.atomic import write_text_atomic
from nearid.io.errors import NearIDError
from nearid.io.jsonvalues import dumps, number

#: Version of the layout below; bump it when a field changes meaning or goes away.
#: Version 1 is the unversioned layout before this module (``split`` held a name or a file).
SCHEMA_VERSION = 2


class ResultsError(NearIDError):
    """A results file that is missing, not JSON, of another schema version or kind, or malformed."""


# --------------------------------------------------------------------------------- nearid bench
@dataclass
class BenchInfo:
    """What was benchmarked: the run metadata at the top of a bench ``results.json``."""

    data: str
    sources: list[str]
    condition: str  # "full" or "foreground"
    identities: int
    split: str | None = "test"  # a value of the split column ("all": every row); None with a split file
    split_file: str | None = None  # a JSON file of row positions, when the rows came from one
    load_report: str = ""
    mtg: str | None = None
    mtg_split: str | None = None
    mtg_samples: int = 0
    mask_cleaning: str | None = None  # foreground only: "authors" (spec 12.2) or "none"; None for full images
    mask_dilate: int = 0
    views_without_mask: int = 0  # foreground only: views dropped with their distractors for want of a mask
    #: the content key of the planned inputs (:func:`nearid.bench.planning.plan_fingerprint`): what
    #: decides whether two runs measured the same data. ``None`` in files written before it was recorded.
    inputs: str | None = None
    #: how trials pair a view with a distractor when one is missing: "slot" or "authors" (nearid.eval.trials)
    trials: str = "slot"
    #: foreground only: view masks empty after cleaning (embedded all black, as the authors) / resized
    masks_emptied: int = 0
    masks_resized: int = 0
    #: foreground runs with MTG: MTG's object masks "none" (raw, the authors') or "authors" (cleaned)
    mtg_mask_cleaning: str | None = None

    @property
    def split_label(self) -> str:
        """How a person names the rows: the split file if there is one, else the split."""
        return self.split_file or str(self.split)

    #: What makes two runs the same benchmark, so their encoders may share one results.json.
    SAME_BENCHMARK: ClassVar[tuple[str, ...]] = (
        "data",
        "split",
        "split_file",
        "sources",
        "condition",
        "identities",
        "mtg",
        "mtg_split",
        "mtg_samples",
    )

    #: Where the inputs lie: compared as text only when a file has no content key (written before
    #: ``inputs``); with keys on both sides the content decides, so a link or another spelling of the
    #: same data is the same benchmark and data regenerated at the same path is not.
    LOCATIONS: ClassVar[tuple[str, ...]] = ("data", "split_file", "mtg")

    def differences(self, other: BenchInfo) -> list[str]:
        """``field: mine -> other's`` for each field of :data:`SAME_BENCHMARK` that differs; where the data
        lies only when one side has no content key (then the path is all there is to compare)."""
        by_content = self.inputs is not None and other.inputs is not None
        return [
            f"{name}: {getattr(self, name)!r} -> {getattr(other, name)!r}"
            for name in self.SAME_BENCHMARK
            if getattr(self, name) != getattr(other, name) and not (by_content and name in self.LOCATIONS)
        ]

    def same_data(self, other: BenchInfo) -> bool:
        """Whether both measured the same content (``True`` when one side has no content key to tell)."""
        return self.inputs is None or other.inputs is None or self.inputs == other.inputs

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, values: dict) -> BenchInfo:
        return cls(
            data=str(values["data"]),
            sources=[str(s) for s in values["sources"]],
            condition=str(values["condition"]),
            identities=int(values["identities"]),
            split=values.get("split"),
            split_file=values.get("split_file"),
            load_report=str(values.get("load_report", "")),
            mtg=values.get("mtg"),
            mtg_split=values.get("mtg_split"),
            mtg_samples=int(values.get("mtg_samples", 0)),
            mask_cleaning=values.get("mask_cleaning"),
            mask_dilate=int(values.get("mask_dilate", 0)),
            views_without_mask=int(values.get("views_without_mask", 0)),
            inputs=values.get("inputs"),
            trials=str(values.get("trials", "slot")),
            masks_emptied=int(values.get("masks_emptied", 0)),
            masks_resized=int(values.get("masks_resized", 0)),
            mtg_mask_cleaning=values.get("mtg_mask_cleaning"),
        )


@dataclass
class SourceGroup:
    """A pooled group of sources (the paper's source groups, or all sources run)."""

    sources: list[str]
    score: DiscriminationScore

    def to_dict(self) -> dict:
        return {**self.score.as_dict(), "sources": list(self.sources)}

    @classmethod
    def from_dict(cls, values: dict) -> SourceGroup:
        return cls(sources=[str(s) for s in values["sources"]], score=DiscriminationScore.from_dict(values))


@dataclass
class NearIDResult:
    """NearID-bench scores of one encoder: per source, and pooled per group of sources."""

    per_source: dict[str, DiscriminationScore]
    groups: dict[str, SourceGroup]

    def to_dict(self) -> dict:
        return {
            "per_source": {s: score.as_dict() for s, score in self.per_source.items()},
            "groups": {name: group.to_dict() for name, group in self.groups.items()},
        }

    @classmethod
    def from_dict(cls, values: dict) -> NearIDResult:
        return cls(
            per_source={str(s): DiscriminationScore.from_dict(v) for s, v in values["per_source"].items()},
            groups={str(g): SourceGroup.from_dict(v) for g, v in values["groups"].items()},
        )


@dataclass
class Calibration:
    """The same/different cut calibrated on the benchmarked rows, and which rows those were."""

    threshold: Threshold
    split: str | None = None
    split_file: str | None = None

    @property
    def split_label(self) -> str:
        return self.split_file or str(self.split)

    def to_dict(self) -> dict:
        return {**self.threshold.as_dict(), "split": self.split, "split_file": self.split_file}

    @classmethod
    def from_dict(cls, values: dict) -> Calibration:
        threshold = Threshold(
            value=number(values["value"]),
            balanced_accuracy=number(values["balanced_accuracy"]),
            true_positive_rate=number(values["true_positive_rate"]),
            true_negative_rate=number(values["true_negative_rate"]),
            n_positive=int(values["n_positive"]),
            n_negative=int(values["n_negative"]),
        )
        return cls(threshold, split=values.get("split"), split_file=values.get("split_file"))


@dataclass
class JudgmentCounts:
    """A pair scorer's judgments in one bench run (absent for encoders): the pairs the metrics read,
    how many were judged now (the rest came from the judgment store), how many got no answer (NaN:
    their trials count as lost, :attr:`~nearid.eval.metrics.DiscriminationScore.n_unanswered`), and how many pairs a full table would have taken."""

    pairs: int
    computed: int = 0
    no_answer: int = 0
    full_table: int = 0
    #: what the unanswered pairs did: "lose" (their trials lost) or "skip" (no trials; ``--judge-unanswered``)
    unanswered: str = "lose"

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, values: dict) -> JudgmentCounts:
        counts = {k: int(values.get(k, 0)) for k in ("pairs", "computed", "no_answer", "full_table")}
        return cls(**counts, unanswered=str(values.get("unanswered", "lose")))


@dataclass
class EncoderResult:
    """Everything ``nearid bench`` measured for one encoder."""

    spec: str
    nearid: NearIDResult
    #: the encoder's content fingerprint (:attr:`nearid.models.encoders.Encoder.fingerprint`): what a
    #: calibrated threshold is looked up by. ``None`` in files written before it was recorded.
    fingerprint: str | None = None
    untrained: bool = False
    unique_images: int = 0
    embeddings_computed: int = 0
    sims_folder: str = ""
    calibration: Calibration | None = None
    mtg: MTGScore | None = None
    #: a pair scorer's judgment counts (optional field, version 2: absent for encoders and older files)
    judgments: JudgmentCounts | None = None

    def to_dict(self) -> dict:
        out = {
            "spec": self.spec,
            "fingerprint": self.fingerprint,
            "untrained": self.untrained,
            "unique_images": self.unique_images,
            "embeddings_computed": self.embeddings_computed,
            "sims_folder": self.sims_folder,
            "nearid": self.nearid.to_dict(),
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
        }
        if self.mtg is not None:
            out["mtg"] = self.mtg.as_dict()
        if self.judgments is not None:
            out["judgments"] = self.judgments.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict) -> EncoderResult:
        calibration, mtg, judgments = values.get("calibration"), values.get("mtg"), values.get("judgments")
        fingerprint = values.get("fingerprint")
        return cls(
            spec=str(values["spec"]),
            nearid=NearIDResult.from_dict(values["nearid"]),
            fingerprint=str(fingerprint) if fingerprint is not None else None,
            untrained=bool(values.get("untrained", False)),
            unique_images=int(values.get("unique_images", 0)),
            embeddings_computed=int(values.get("embeddings_computed", 0)),
            sims_folder=str(values.get("sims_folder", "")),
            calibration=Calibration.from_dict(calibration) if calibration is not None else None,
            mtg=MTGScore.from_dict(mtg) if mtg is not None else None,
            judgments=JudgmentCounts.from_dict(judgments) if judgments is not None else None,
        )


class _Document:
    """``kind``, ``schema_version``, JSON text and atomic writing, shared by every results file."""

    KIND: ClassVar[str]

    def to_dict(self) -> dict:  # pragma: no cover - every document defines it
        raise NotImplementedError

    def to_json(self) -> str:
        return dumps({"schema_version": SCHEMA_VERSION, "kind": self.KIND, **self.to_dict()}, indent=2) + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        write_text_atomic(path, self.to_json())
        return Path(path)

    @classmethod
    def from_json(cls, text: str, path: str | os.PathLike = "<results>"):
        """Parse ``text`` as this kind of document; any problem is a one-line :class:`ResultsError`."""
        return _parse(text, Path(path), (cls,))


@dataclass
class BenchResults(_Document):
    """What ``nearid bench`` writes to ``results.json``: the run and one entry per encoder."""

    KIND: ClassVar[str] = "bench"
    benchmark: BenchInfo
    encoders: dict[str, EncoderResult] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "benchmark": self.benchmark.to_dict(),
            "encoders": {name: result.to_dict() for name, result in self.encoders.items()},
            "log": list(self.log),
        }

    @classmethod
    def from_dict(cls, values: dict) -> BenchResults:
        return cls(
            benchmark=BenchInfo.from_dict(values["benchmark"]),
            encoders={str(n): EncoderResult.from_dict(r) for n, r in values["encoders"].items()},
            log=[str(line) for line in values.get("log", [])],
        )

    def merged(self, run: BenchResults) -> BenchResults:
        """These results with ``run``'s encoders added or replaced, under ``run``'s benchmark (the same one:
        see :func:`merge_bench_results`)."""
        return BenchResults(run.benchmark, {**self.encoders, **run.encoders}, [*self.log, *run.log])


#: where bench results made on other data go when the newer data's results take ``results.json``'s place
STALE_RESULTS = "results.stale.json"


class BenchMismatchError(ResultsError):
    """``--out`` holds bench results of another benchmark (data, split, sources, condition, MTG)."""


def check_mergeable(path: str | os.PathLike, benchmark: BenchInfo) -> BenchResults | None:
    """The bench results in ``path`` if this run's may be merged into them (``None``: no file yet).

    A file of another benchmark, or one this nearid cannot read, is refused with one line: results of
    two benchmarks in one file would look comparable and are not. The same benchmark made on other data
    (its content key differs) is returned: the merge moves it aside (:func:`set_aside_other_data`).
    ``nearid bench`` calls this before it embeds anything and again, under the lock, when it merges.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        existing = read_results(path, (BenchResults,))
    except ResultsError as exc:
        raise ResultsError(f"{exc}; or use another --out (this run's results would be merged into it)") from None
    differences = existing.benchmark.differences(benchmark)
    if differences:
        raise BenchMismatchError(
            f"{path}: holds results of another benchmark ({'; '.join(differences)}); use another --out for this one"
        )
    return existing


@contextlib.contextmanager
def results_lock(folder: str | os.PathLike, timeout: float = 600):
    """An exclusive lock on ``folder``'s results (a ``.results.lock`` file beside them), so runs writing
    into one ``--out`` at the same time merge one after the other and none loses another's encoders."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(folder / ".results.lock", timeout=timeout):
            yield
    except Timeout:
        raise ResultsError(
            f"{folder}: another nearid bench has held the results lock for {timeout:.0f} s; "
            f"wait for it, or delete {folder / '.results.lock'} if no run is writing there"
        ) from None


def set_aside_other_data(path: str | os.PathLike, benchmark: BenchInfo) -> BenchResults | None:
    """Move the bench results in ``path`` to :data:`STALE_RESULTS` beside it when they are of this
    benchmark but were made on other data (its content changed since); returns them (``None``: nothing
    moved). Call it under :func:`results_lock`."""
    path = Path(path)
    existing = check_mergeable(path, benchmark)
    if existing is None or existing.benchmark.same_data(benchmark):
        return None
    os.replace(path, path.with_name(STALE_RESULTS))
    return existing


def merge_bench_results(path: str | os.PathLike, run: BenchResults) -> BenchResults:
    """Write ``run`` into ``path`` merged per encoder with what is there; returns what was written.

    The last step of the one bench merge (:func:`nearid.io.records.merge` -> :func:`nearid.bench.merge.build`),
    which calls it under :func:`results_lock` of ``path``'s folder: it reads, checks
    (:func:`check_mergeable`), merges (the entries built now replace their earlier ones, others stay)
    and writes atomically.
    """
    existing = check_mergeable(path, run.benchmark)
    if existing is not None and not existing.benchmark.same_data(run.benchmark):
        raise BenchMismatchError(
            f"{path}: holds results made on other data (the content of {run.benchmark.data} changed); "
            "set them aside first (set_aside_other_data) or use another --out"
        )
    merged = existing.merged(run) if existing is not None else run
    merged.write(path)
    return merged


# --------------------------------------------------------------------------------- nearid score
@dataclass
class ScoreSummary(_Document):
    """What ``nearid score`` writes to ``<out>.summary.json``."""

    KIND: ClassVar[str] = "score"
    model: str
    pairing: str
    n_pairs: int
    unique_images_embedded: int
    similarity: dict | None  # mean, median, std, min, max over the scored pairs (None: no pair scored)
    per_subject: dict[str, dict] = field(default_factory=dict)  # subject -> n, mean, median
    threshold: dict | None = None  # value, source (and balanced_accuracy when calibrated)
    decisions: dict | None = None  # same, different
    errors: int = 0
    pairs_file: str | None = None
    errors_file: str | None = None
    per_generated_file: str | None = None
    pairing_how: str = "given"  # "given" (--pairing) or "chosen automatically: <why>"
    masks: str | None = None  # score's --mask-folder (absolute), when images were cut with masks
    masked_images: int = 0  # unique images embedded with a mask
    mask_cleaning: str | None = None  # with masks: "authors" (spec 12.2) or "none"
    mask_dilate: int = 0
    #: Optional fields (version 2; written only when set, so a one-model summary keeps its layout):
    no_answer: int = 0  # a pair scorer's pairs without an answer (NaN)
    #: several metrics in one run: metric name -> {spec, kind, column, n_pairs, similarity, per_subject,
    #: threshold, decisions, no_answer, unique_images_embedded}; the top-level fields are the first metric's
    metrics: dict[str, dict] | None = None
    #: several metrics: "<a> | <b>" -> {a, b, n, pearson, spearman} over the pairs both scored
    correlations: dict[str, dict] | None = None

    OPTIONAL: ClassVar[dict] = {"no_answer": 0, "metrics": None, "correlations": None}

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not (k in self.OPTIONAL and v == self.OPTIONAL[k])}

    @classmethod
    def from_dict(cls, values: dict) -> ScoreSummary:
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - names - {"kind", "schema_version"})
        if unknown:
            raise ValueError(f"unknown field '{unknown[0]}'")
        summary = cls(**{k: v for k, v in values.items() if k in names})
        if summary.similarity is not None and not isinstance(summary.similarity, dict):
            raise TypeError("'similarity' is not an object")
        for name in ("metrics", "correlations"):
            if getattr(summary, name) is not None and not isinstance(getattr(summary, name), dict):
                raise TypeError(f"'{name}' is not an object")
        return summary


# --------------------------------------------------------------------------------- make demo
@dataclass
class DemoSummary(_Document):
    """What ``make demo`` writes to ``runs/demo/results.json``: SSR / PA (percent) of the frozen MAP head
    (``baseline``) and the trained NearID head (``trained``) on the headline sources, the same over all
    sources, every encoder, per source, and the setup."""

    KIND: ClassVar[str] = "demo"
    baseline: dict
    trained: dict
    gain: dict
    headline_sources: list[str]
    all_sources: dict
    encoders: dict[str, dict]
    encoders_all_sources: dict[str, dict]
    per_source: dict[str, dict]
    setup: dict
    seconds: float
    outputs: dict

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, values: dict) -> DemoSummary:
        return cls(**{k: values[k] for k in cls.__dataclass_fields__})


DOCUMENTS = (BenchResults, ScoreSummary, DemoSummary)


def read_results(path: str | os.PathLike, kinds: tuple[type, ...] = DOCUMENTS):
    """The document in ``path``, one of ``kinds``; a one-line :class:`ResultsError` naming the file otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file; {_expected(kinds)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not readable ({_line(exc)}); {_expected(kinds)}") from None
    return _parse(text, path, kinds)


def _parse(text: str, path: Path, kinds: tuple[type, ...]):
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise ResultsError(f"{path}: not readable as JSON ({_line(exc)}); {_expected(kinds)}") from None
    by_kind = {cls.KIND: cls for cls in DOCUMENTS}
    kind = values.get("kind") if isinstance(values, dict) else None
    if isinstance(values, dict) and kind is None and "encoders" in values and "benchmark" in values:
        kind = "bench"  # version 1 bench results had no kind
    if kind not in by_kind:
        raise ResultsError(f"{path}: not a nearid results file; {_expected(kinds)}")
    version = values.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: {kind} results of schema version {version}, this nearid reads version "
            f"{SCHEMA_VERSION}; re-make the file with this nearid (`nearid {kind}`)"
        )
    cls = by_kind[kind]
    if cls not in kinds:
        raise ResultsError(f"{path}: holds {kind} results; {_expected(kinds)}")
    try:
        return cls.from_dict({k: v for k, v in values.items() if k not in ("kind", "schema_version")})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else _line(exc)
        raise ResultsError(
            f"{path}: malformed {kind} results ({what}); re-make the file with `nearid {kind}`"
        ) from None


def _expected(kinds: tuple[type, ...]) -> str:
    names = {
        BenchResults: "a `nearid bench` results.json",
        ScoreSummary: "a `nearid score` summary",
        DemoSummary: "a `make demo` results.json",
    }
    return "expected " + " or ".join(names[k] for k in kinds)


def _line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__
