"""``nearid score`` as one library call: :class:`ScoreConfig` holds every option of the command as values,
:func:`run_score` runs the whole command and returns a :class:`ScoreOutcome`.

The check order is the command's promise: everything that needs no model is checked first, so a
mistake costs seconds, not a model load and an embedding. The config checks its options when it is
built (the specs parse, none twice, threshold and calibration agree, the shard option); the run then
plans the pairs, attaches the masks, opens every image header, checks every output location and the
format, and warns about references that are their generated images; only then do the models load,
and one share of the pairs (a shard) or every pair is scored with every metric.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nearid.eval.results import ScoreSummary
from nearid.images.options import MaskOptions, ReadOptions
from nearid.io.errors import NearIDError
from nearid.io.records import Shard, shard_option
from nearid.models.options import LoadOptions
from nearid.score.checks import check_metric_specs, check_options
from nearid.score.compute import score_metrics
from nearid.score.console import Log, report_metrics, report_one
from nearid.score.inputs import check_plan, prepare, same_files
from nearid.score.plan import PairPlan, plan_pairs
from nearid.score.result import MultiScoreResult
from nearid.score.thresholds import resolve_thresholds
from nearid.score.write import output_files, output_format, write_metric_outputs


@dataclass(frozen=True)
class ScoreConfig:
    """Every option of ``nearid score``. ``refs`` / ``gens`` / ``pairing``: the pairs (rules in
    :mod:`nearid.score.plan`); ``out``: the per-pair file, side files beside it; ``models``: one spec
    per metric (a column each when several); ``masks``: a folder of ``refs/`` and ``gens/`` masks,
    treated as ``mask`` says; ``read`` / ``load``: how images are read and models loaded;
    ``threshold``: a number or ``"calibrated"`` (from ``calibration``); ``format``: csv or jsonl (default:
    from ``out``); ``skip_errors``: score the rest when inputs are bad; ``num_shards`` / ``shard_index``:
    this run is one share of the pairs (``nearid merge`` finishes it). Checked when built."""

    refs: str | os.PathLike
    gens: str | os.PathLike | None = None
    out: str | os.PathLike = "scores.csv"
    models: tuple[str, ...] = ("nearid",)
    pairing: str = "auto"
    masks: str | os.PathLike | None = None
    mask: MaskOptions = field(default_factory=MaskOptions)
    read: ReadOptions = field(default_factory=ReadOptions)
    load: LoadOptions = field(default_factory=LoadOptions)
    threshold: str | float | None = None
    calibration: str | os.PathLike | None = None
    format: str | None = None
    skip_errors: bool = False
    num_shards: int | None = None
    shard_index: int | None = None
    progress: bool | None = None  # embedding progress bars (None: when the output is a terminal)
    explain: int = 0  # identity maps of this many lowest-scoring pairs (<out>.explain.json; 0: none)

    def __post_init__(self):
        from nearid.images.mask_cleaning import evaluation_mask

        models = (self.models,) if isinstance(self.models, str) else tuple(self.models)
        object.__setattr__(self, "models", models)
        if not models:
            raise NearIDError("no --model given; give at least one metric to score with")
        check_metric_specs(list(models))
        check_options(
            threshold=self.threshold,
            calibration=self.calibration,
            batch_size=self.read.batch_size,
            n_models=len(models),
        )
        if self.shard is not None and len(models) > 1:
            raise NearIDError(
                "--num-shards: score one --model per sharded run (nearid merge writes one metric's outputs)"
            )
        evaluation_mask(None, self.mask.cleaning, self.mask.dilate)  # a dilation of masks left uncleaned
        if isinstance(self.explain, bool) or not isinstance(self.explain, int) or self.explain < 0:
            raise NearIDError(f"--explain {self.explain!r}: give a number of pairs (0: no maps)")
        if self.explain and self.shard is not None:
            raise NearIDError("--explain: maps are made by an unsharded run (score once more without --num-shards)")

    @property
    def shard(self) -> Shard | None:
        """This run's share of the pairs (``None``: all of them)."""
        return shard_option(self.num_shards, self.shard_index)

    def scoring_options(self) -> dict:
        """What :func:`~nearid.score.compute.score_metrics` and a shard's scoring take besides the plan."""
        return {
            "batch_size": self.read.batch_size,
            "skip_errors": self.skip_errors,
            "mask_cleaning": self.mask.cleaning,
            "mask_dilate": self.mask.dilate,
            "num_workers": self.read.num_workers,
            "fast_decode": self.read.fast_decode,
        }


@dataclass
class ScoreOutcome:
    """What a run did: its plan, and either every pair's ``result`` and its ``summary`` (as written) or,
    for a shard, the ``record`` it wrote for ``nearid merge``."""

    plan: PairPlan
    result: MultiScoreResult | None = None
    summary: ScoreSummary | None = None
    record: Path | None = None

    @property
    def scored_any(self) -> bool:
        """False when no pair could be scored (the command's exit status 2); a shard defers to the merge."""
        return self.record is not None or (self.result is not None and self.result.scored_any)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def run_score(config: ScoreConfig, *, log: Log = print, warn: Log = _to_stderr) -> ScoreOutcome:
    """Run ``nearid score`` in its check order (module docstring); ``log`` gets the lines the command
    prints, ``warn`` its warnings (standard error). A :class:`~nearid.io.errors.NearIDError` names the
    first problem found, before any model is loaded when no model is needed to find it."""
    from nearid.models.pair_scorers import is_pair_scorer

    plan, fmt = _prepare(config, log, warn)
    metrics = _load_metrics(config)
    shard = config.shard
    if shard is not None and is_pair_scorer(metrics[0][1]):
        raise NearIDError(f"--num-shards: {config.models[0]} is a pair scorer; shards split encoders' scoring only")
    thresholds, problems = resolve_thresholds(config.threshold, metrics, config.calibration)  # by fingerprint
    if shard is not None:  # one share of the pairs; `nearid merge OUT` writes the outputs
        record = _score_shard(config, plan, shard, metrics[0][1], thresholds[config.models[0]], fmt, log)
        return ScoreOutcome(plan, record=record)
    for problem in problems:
        warn(f"nearid score: warning: no decision for this metric: {problem}")
    result = score_metrics(metrics, plan, progress=config.progress, **config.scoring_options())
    summary = write_metric_outputs(result, config.out, thresholds=thresholds, fmt=fmt)
    if config.explain:
        from nearid.score.explain import write_score_explanations

        options = config.scoring_options()
        write_score_explanations(
            metrics,
            result,
            config.out,
            config.explain,
            mask_cleaning=options["mask_cleaning"],
            mask_dilate=options["mask_dilate"],
            batch_size=config.read.batch_size,
            log=log,
        )
    if result.several or result.metrics[0].kind == "pair scorer":
        report_metrics(result, summary, dict(metrics), config.out, log)
    else:
        report_one(result, summary, config.out, log)
    return ScoreOutcome(plan, result, summary)


def _prepare(config: ScoreConfig, log: Log, warn: Log) -> tuple[PairPlan, str]:
    """The pairs planned and checked (masks, image headers), the outputs and their format checked."""
    from nearid.io.outputs import check_outputs

    plan = prepare(plan_pairs(config.refs, config.gens, config.pairing), config.masks)
    reads = [config.refs, config.gens, config.masks, config.calibration, *plan.inputs()]
    outputs = output_files(config.out, plan.rule, list(config.models))
    if config.explain:
        from nearid.score.explain import explain_out

        outputs.append(explain_out(config.out))
    check_outputs(outputs, reads)
    fmt = output_format(config.out, config.format)
    check_plan(plan, config.skip_errors)
    log(f"pairing: {plan.rule} ({plan.how}), {len(plan.pairs)} pairs")
    if same := same_files(plan):
        warn(
            f"nearid score: warning: references and generated images are the same {same} files "
            f"({same} of {len(plan.pairs)} pairs score 1); check --refs and --gens"
        )
    return plan, fmt


def _load_metrics(config: ScoreConfig) -> list[tuple[str, object]]:
    from nearid.judges.loading import load_metric

    return [(spec, load_metric(spec, options=config.load)) for spec in config.models]


def _score_shard(config: ScoreConfig, plan: PairPlan, shard: Shard, encoder, threshold, fmt: str, log: Log) -> Path:
    """Score this shard's share with one encoder and write its record; the settings recorded are those
    that make the shards one run (checked equal by the merge)."""
    from nearid.score.shards import run_score_shard

    options = config.scoring_options()
    settings = {"refs": _text(config.refs), "gens": _text(config.gens), "pairing": config.pairing}
    settings.update(masks=_text(config.masks), format=fmt, threshold=threshold)
    settings.update({k: v for k, v in options.items() if k != "num_workers"})
    path = run_score_shard(encoder, plan, shard, out=config.out, settings=settings, **options)
    log(f"{shard.name}: partial record {path}; when every shard is done: nearid merge {config.out}")
    return path


def _text(path: str | os.PathLike | None) -> str | None:
    """A path as the shard record keeps it (JSON text), as given."""
    return None if path is None else os.fspath(path)
