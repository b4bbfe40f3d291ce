"""The ranking rules of ``nearid rank`` (best-of-N), as pure functions of a pair plan and its similarities.

A *group* is what a set of generations was made for, and what they are ranked within:

* the subject, for the ``subjects`` rule and for a pairs CSV with a ``subject`` column;
* otherwise the reference: its path relative to ``--refs`` (or to the pairs CSV's folder) without the
  extension (``dog/ref``); a reference outside that folder is named by its file name and a short hash
  of its absolute path.

A generation's score in its group is the **mean** similarity over the group's references it was paired
with (one reference: that similarity), as ``nearid score`` reports it per generated image
(``<out>.per_generated.csv``); pairs that could not be scored (``--skip-errors``) are left out of the
mean, and a generation with none left is listed unranked.

Within a group generations are ranked by score (rounded to :data:`DECIMALS` decimals, as written),
highest first; **ties are broken by the generated image's absolute path** (the lexically smaller path ranks first), so a ranking never depends on the order
files were listed in. The best ``top`` of each group are *selected* and named
``<group folder>/<rank>_<file name>`` inside ``--out``: the rank is zero-padded to the width of ``top``
(at least two digits: ``01_seed3.png``), so the files sort in rank order, and the name is unique in its
group (one generation per rank) and stable (the same inputs give the same names).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nearid.score.plan import Pair, PairingError, PairPlan

#: Decimals a score is rounded to, as ``ranking.csv`` writes it: scores equal to that many decimals tie.
DECIMALS = 6

#: Characters kept in a group's folder name; any other becomes ``_``.
_UNSAFE = re.compile(r"[^A-Za-z0-9._ +=,@-]")


@dataclass(frozen=True)
class RankedGeneration:
    """One generated image in its group: its score (mean over its references), its rank (``None``: not
    scored), its same/different verdict (``None``: no threshold or no score) and, when it is among the
    best ``top``, the path of its copy or link relative to ``--out``."""

    group: str
    generated: Path
    references: tuple[Path, ...]
    similarity: float
    rank: int | None
    same: int | None
    output: str | None

    @property
    def selected(self) -> bool:
        return self.output is not None


def group_of(pair: Pair, plan: PairPlan) -> str:
    """The group of ``pair`` (module docstring)."""
    if pair.subject and plan.rule in ("subjects", "csv"):
        return pair.subject
    root = plan.roots.get("refs")
    if root is not None and pair.reference.is_relative_to(root):
        return pair.reference.relative_to(root).with_suffix("").as_posix()
    digest = hashlib.sha256(os.path.abspath(pair.reference).encode()).hexdigest()[:8]
    return f"{pair.reference.stem}-{digest}"


def folder_of(group: str) -> str:
    """A group's folder in ``--out``: each ``/``-separated part with unsafe characters replaced by ``_``,
    never empty, ``.``, ``..`` or hidden (a subject typed in a pairs CSV cannot escape ``--out``)."""
    parts = []
    for part in group.replace("\\", "/").split("/"):
        part = _UNSAFE.sub("_", part).strip()
        if part in ("", "."):
            continue
        parts.append("_" + part[1:] if part.startswith(".") else part)
    return "/".join(parts) or "_"


def plan_groups(plan: PairPlan) -> dict[str, str]:
    """Every group of the plan -> its folder; two groups that would share a folder are refused (before
    any model loads) with one line naming both."""
    folders: dict[str, str] = {}
    owner: dict[str, str] = {}
    for pair in plan.pairs:
        group = group_of(pair, plan)
        if group in folders:
            continue
        folder = folder_of(group)
        if folder in owner:
            raise PairingError(
                f"groups '{owner[folder]}' and '{group}' would share the output folder '{folder}'; "
                "rename one of them (a subject name or a reference path)"
            )
        folders[group], owner[folder] = folder, group
    return folders


def rank_width(top: int) -> int:
    """Digits of a rank in a selected file's name: ``top``'s, at least two."""
    return max(2, len(str(top)))


def output_name(folder: str, rank: int, generated: Path, top: int) -> str:
    """``<folder>/<rank>_<file name>`` (module docstring)."""
    return f"{folder}/{rank:0{rank_width(top)}d}_{generated.name}"


def _members(plan: PairPlan) -> dict[tuple[str, Path], list[int]]:
    """(group, generated image) -> the indices of its pairs, in plan order."""
    members: dict[tuple[str, Path], list[int]] = defaultdict(list)
    for i, pair in enumerate(plan.pairs):
        members[(group_of(pair, plan), pair.generated)].append(i)
    return members


def candidate_outputs(plan: PairPlan, folders: dict[str, str], top: int) -> set[str]:
    """Every name a selection of this plan could take (any of a group's generations at any selected
    rank), so that the output folder is checked before a model loads, whatever the scores turn out."""
    generations: dict[str, list[Path]] = defaultdict(list)
    for group, generated in _members(plan):
        generations[group].append(generated)
    names = set()
    for group, found in generations.items():
        for rank in range(1, min(top, len(found)) + 1):
            names.update(output_name(folders[group], rank, generated, top) for generated in found)
    return names


def rank_rows(
    plan: PairPlan, folders: dict[str, str], similarities: np.ndarray, top: int, threshold: float | None = None
) -> list[RankedGeneration]:
    """Every generation of every group, ranked (module docstring): groups in name order, each group's
    ranked generations first (rank 1 first), then its unscored ones by path. ``threshold``: the cut of
    the same/different verdict (``similarity > threshold``), ``None`` for none."""
    similarities = np.asarray(similarities, dtype=np.float64)
    by_group: dict[str, list[tuple[float, str, Path, tuple[Path, ...]]]] = defaultdict(list)
    for (group, generated), indices in _members(plan).items():
        values = similarities[indices]
        values = values[np.isfinite(values)]
        score = round(float(np.mean(values)), DECIMALS) if len(values) else float("nan")
        references = tuple(dict.fromkeys(plan.pairs[i].reference for i in indices))
        by_group[group].append((score, os.path.abspath(generated), generated, references))
    rows = []
    for group in sorted(by_group):
        scored = sorted((g for g in by_group[group] if np.isfinite(g[0])), key=lambda g: (-g[0], g[1]))
        unscored = sorted((g for g in by_group[group] if not np.isfinite(g[0])), key=lambda g: g[1])
        for rank, (score, _, generated, references) in enumerate(scored, start=1):
            same = None if threshold is None else int(score > threshold)
            output = output_name(folders[group], rank, generated, top) if rank <= top else None
            rows.append(RankedGeneration(group, generated, references, score, rank, same, output))
        rows += [RankedGeneration(group, g, refs, score, None, None, None) for score, _, g, refs in unscored]
    return rows
