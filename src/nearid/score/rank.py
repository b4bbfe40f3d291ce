"""``nearid rank`` (best-of-N) as one library call: :func:`rank_generations` with a :class:`RankConfig`.

Generate N images per reference or subject, keep the ones that kept the object: the generations of
each group are ranked by identity similarity (rules in :mod:`nearid.score.ranking`), the table is
written to ``OUT/ranking.csv`` and the best ``top`` of each group are copied (or linked) into ``OUT``
(:mod:`nearid.score.selection`).

It is ``nearid score`` with another output: the same pairing rules (``score.plan``), masks and
planning pass (``score.inputs``), scoring (``score.compute``), thresholds (``score.thresholds``) and
output checks (``nearid.io.outputs``), in the same order: everything that needs no model is checked
first, so a mistake costs seconds. A group with no generations (a reference or subject folder without
generated images) is reported and skipped; a run with nothing to rank at all is refused. One run at a
time writes into an ``--out`` (``nearid.io.locks``): a second one is refused at once with one line.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nearid.images.options import MaskOptions, ReadOptions
from nearid.io.errors import NearIDError
from nearid.models.options import LoadOptions
from nearid.score.command import ScoreConfig
from nearid.score.console import Log
from nearid.score.plan import PairPlan
from nearid.score.ranking import RankedGeneration
from nearid.score.selection import RANKING_CSV


@dataclass(frozen=True)
class RankConfig:
    """Every option of ``nearid rank``. ``refs`` / ``gens`` / ``pairing`` / ``masks`` / ``mask`` /
    ``read`` / ``load`` / ``threshold`` / ``calibration`` / ``skip_errors``: as in
    :class:`~nearid.score.command.ScoreConfig`; ``model``: the one metric ranked by; ``out``: the output
    folder; ``top``: generations kept per group; ``link``: symbolic links instead of copies. Checked
    when built."""

    refs: str | os.PathLike
    gens: str | os.PathLike | None = None
    out: str | os.PathLike = "ranked"
    model: str = "nearid"
    top: int = 1
    link: bool = False
    pairing: str = "auto"
    masks: str | os.PathLike | None = None
    mask: MaskOptions = field(default_factory=MaskOptions)
    read: ReadOptions = field(default_factory=ReadOptions)
    load: LoadOptions = field(default_factory=LoadOptions)
    threshold: str | float | None = None
    calibration: str | os.PathLike | None = None
    skip_errors: bool = False
    progress: bool | None = None

    def __post_init__(self):
        if isinstance(self.top, bool) or not isinstance(self.top, int) or self.top < 1:
            raise NearIDError(f"--top {self.top!r}: give how many generations to keep per group, at least 1")
        if not isinstance(self.model, str):
            raise NearIDError(f"--model {self.model!r}: rank takes one model spec")
        _ = self.score  # the options score shares, checked as score checks them

    @property
    def score(self) -> ScoreConfig:
        """The ``nearid score`` options of this run (its checks, its scoring options)."""
        return ScoreConfig(
            refs=self.refs,
            gens=self.gens,
            out=Path(self.out) / RANKING_CSV,
            models=(self.model,),
            pairing=self.pairing,
            masks=self.masks,
            mask=self.mask,
            read=self.read,
            load=self.load,
            threshold=self.threshold,
            calibration=self.calibration,
            skip_errors=self.skip_errors,
            progress=self.progress,
        )


@dataclass
class RankResult:
    """What a run did: its plan, every generation ranked (``rows``), the groups that had none
    (``empty_groups``: the reference or subject folder), the threshold used, the files it wrote and the
    files of an earlier run it removed (relative to ``out``)."""

    plan: PairPlan
    model: str
    rows: list[RankedGeneration]
    empty_groups: list[str]
    threshold: dict | None
    out: Path
    removed: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def table(self) -> Path:
        return self.out / RANKING_CSV

    @property
    def selected(self) -> list[RankedGeneration]:
        return [row for row in self.rows if row.selected]

    def groups(self) -> dict[str, list[RankedGeneration]]:
        """Group -> its generations, best first."""
        found: dict[str, list[RankedGeneration]] = {}
        for row in self.rows:
            found.setdefault(row.group, []).append(row)
        return found


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def rank_generations(config: RankConfig, *, log: Log = print, warn: Log = _to_stderr) -> RankResult:
    """Run ``nearid rank`` (module docstring); ``log`` gets the lines the command prints, ``warn`` its
    warnings. A :class:`~nearid.io.errors.NearIDError` names the first problem found, before any model
    loads when no model is needed to find it."""
    from nearid.io.locks import output_lock
    from nearid.score.ranking import candidate_outputs, plan_groups
    from nearid.score.selection import check_out_folder

    score = config.score
    out = Path(config.out)
    plan, empty = _plan(config)
    folders = plan_groups(plan)
    names = {RANKING_CSV} | candidate_outputs(plan, folders, config.top)
    _check_outputs(config, plan, out, names)
    log(f"pairing: {plan.rule} ({plan.how}), {len(folders)} groups, {len(plan.pairs)} pairs")
    check_out_folder(out, names)  # before the lock file is made beside it
    for group in empty:
        warn(f"nearid rank: warning: {group}: no generated images, nothing to rank")
    with output_lock(out, "nearid rank"):
        check_out_folder(out, names)  # again: another run may have written it meanwhile
        result = _rank(config, score, plan, folders, out, empty)
    chosen = "links" if config.link else "copies"
    log(f"ranked {len(result.rows)} generations in {len(result.groups())} groups by {config.model}")
    log(f"selected {len(result.selected)} (top {config.top} per group) as {chosen} in {out}; table {result.table}")
    if result.removed:
        log(f"removed {len(result.removed)} selections of an earlier run that this one does not keep")
    return result


def _plan(config: RankConfig) -> tuple[PairPlan, list[str]]:
    """The pairs planned and prepared (masks, image headers), and the groups with no generated image,
    which are reported instead of counted as bad inputs."""
    from nearid.score.inputs import prepare
    from nearid.score.plan import plan_pairs

    plan = prepare(plan_pairs(config.refs, config.gens, config.pairing), config.masks)
    empty = list(dict.fromkeys(plan.empty))
    reported = set(empty)
    plan.unmatched = [(path, why) for path, why in plan.unmatched if path not in reported]
    return plan, empty


def _check_outputs(config: RankConfig, plan: PairPlan, out: Path, names: set[str]) -> None:
    """No output is an input or inside one, no input lies inside ``--out`` (rank deletes its stale files
    there), and the plan's inputs are good (or skipped with ``--skip-errors``)."""
    from nearid.io.outputs import check_outputs
    from nearid.score.inputs import check_plan

    reads = [config.refs, config.gens, config.masks, config.calibration, *plan.inputs()]
    check_outputs([], reads, replaced=[out])  # the folder first: its refusal names it, not a file in it
    # a link an earlier `rank --link` made resolves to its input, but rank replaces the link (rename),
    # never writes through it; check_out_folder refuses a link that is not rank's
    check_outputs([out / name for name in sorted(names) if not (out / name).is_symlink()], reads)
    if not plan.pairs and not plan.unmatched:
        raise NearIDError("nothing to rank: no reference or subject has generated images")
    check_plan(plan, config.skip_errors)


def _rank(config: RankConfig, score: ScoreConfig, plan, folders, out: Path, empty: list[str]) -> RankResult:
    """Load the model, score every pair, rank, write the folder."""
    from nearid.judges.loading import load_metric
    from nearid.score.compute import score_metrics
    from nearid.score.ranking import rank_rows
    from nearid.score.selection import write_selection
    from nearid.score.thresholds import resolve_threshold

    metric = load_metric(config.model, options=config.load)
    threshold = resolve_threshold(config.threshold, metric, config.calibration, spec=config.model)
    scored = score_metrics([(config.model, metric)], plan, progress=config.progress, **score.scoring_options())
    cut = None if threshold is None else threshold["value"]
    rows = rank_rows(plan, folders, scored.metrics[0].similarities, config.top, cut)
    removed = write_selection(out, rows, link=config.link, verdicts=threshold is not None)
    return RankResult(plan, config.model, rows, empty, threshold, out, removed, scored.failures)
