"""The output folder of ``nearid rank``: ``ranking.csv`` and the selected generations, updated in place.

People re-rank into the same ``--out`` after adding generations or changing a reference, and keep their
own notes beside the selections. So the folder is rank's (ownership marker ``.nearid-output.json``,
command ``rank``), and the marker records every file rank wrote (:func:`nearid.io.ownership.record_files`).
A run writes its selections and table, then deletes only the recorded files it no longer writes (and
group folders left empty by that): a file a user put there is never deleted, and a selection name that a
user's file already takes is refused before any model loads. The marker lists the files of the new run
and the old one *before* anything is written, so a run cut short leaves no file of rank's unrecorded.

A folder that exists but is not rank's (no marker, or another command's) is used only when empty.
Copies and links are made under a temporary name and renamed (``nearid.io.atomic``); the table is
written the same way.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from nearid.io.atomic import atomic_path, copy_atomic, link_atomic
from nearid.io.ownership import OutputFolderError, create_owned, owned_by, record_files, recorded_files
from nearid.score.ranking import DECIMALS, RankedGeneration

#: The command named in the folder's ownership marker.
COMMAND = "rank"

#: The per-generation table, at the top of ``--out``.
RANKING_CSV = "ranking.csv"


def check_out_folder(out: Path, names: set[str]) -> None:
    """Refuse (one line) an ``--out`` rank may not write ``names`` into: an existing folder that is not
    empty and not rank's, or a name (or a folder on its way) taken by a file rank did not write."""
    if not out.exists():
        return
    owner = owned_by(out)
    if owner is None and any(out.iterdir()):
        raise OutputFolderError(
            f"{out}: not made by nearid rank and not empty, so rank will not write into it; choose a new or empty --out"
        )
    if owner is not None and owner != COMMAND:
        raise OutputFolderError(
            f"{out}: made by `nearid {owner}`, not by `nearid rank`, so rank will not write into it; choose another --out"
        )
    ours = recorded_files(out, COMMAND)
    for name in sorted(names):
        target = out / name
        blocked = next((p for p in reversed(target.parents) if p.is_relative_to(out) and _is_file(p)), None)
        if blocked is not None:
            raise OutputFolderError(f"{blocked}: is a file where rank writes a folder; move it out of {out}")
        if os.path.lexists(target) and name not in ours:
            raise OutputFolderError(
                f"{target}: exists and nearid rank did not write it, so rank will not replace it; move it out of "
                f"{out} or choose another --out"
            )


def _is_file(path: Path) -> bool:
    return os.path.lexists(path) and not path.is_dir()


def write_selection(out: Path, rows: list[RankedGeneration], *, link: bool, verdicts: bool) -> list[str]:
    """Copy (or link) every selected generation to its name in ``out``, write the table, delete the
    files an earlier rank run wrote that this one does not; return the names removed."""
    if not out.exists() or owned_by(out) != COMMAND:
        create_owned(out, COMMAND)  # absent or empty (check_out_folder)
    before = recorded_files(out, COMMAND)
    now = {RANKING_CSV} | {row.output for row in rows if row.output is not None}
    record_files(out, COMMAND, sorted(before | now))
    put = link_atomic if link else copy_atomic
    for row in rows:
        if row.output is not None:
            put(row.generated, out / row.output)
    write_ranking_csv(out / RANKING_CSV, rows, verdicts=verdicts)
    removed = [name for name in sorted(before - now) if _remove(out, name)]
    record_files(out, COMMAND, sorted(now))
    return removed


def _remove(out: Path, name: str) -> bool:
    """Delete rank's recorded file ``name`` (a file or a link, never a folder, never outside ``out``) and
    the folders above it that this leaves empty."""
    target = out / name
    try:
        inside = target.parent.resolve().is_relative_to(out.resolve())
    except OSError:
        return False
    if not inside or ".." in Path(name).parts or not _is_file(target):
        return False
    target.unlink()
    for folder in target.parents:
        if folder == out or not folder.is_relative_to(out):
            break
        try:
            folder.rmdir()  # only when empty: a user's file keeps its folder
        except OSError:
            break
    return True


def ranking_header(verdicts: bool) -> list[str]:
    """The columns of ``ranking.csv``."""
    decision = ["same"] if verdicts else []
    return ["group", "generated", "reference", "n_references", "similarity", "rank", *decision, "selected", "output"]


def write_ranking_csv(path: Path, rows: list[RankedGeneration], *, verdicts: bool) -> None:
    """One row per generation (:func:`~nearid.score.ranking.rank_rows`' order): its group, absolute path,
    its reference (absolute; empty when it has several, ``n_references`` says how many), the score,
    rank (empty: not scored), verdict (``--threshold``: 1 same, 0 different), ``selected`` (1/0) and
    ``output``, the selected copy or link relative to ``--out``."""
    header = ranking_header(verdicts)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for row in rows:
            scored = row.rank is not None
            values = {
                "group": row.group,
                "generated": os.path.abspath(row.generated),
                "reference": os.path.abspath(row.references[0]) if len(row.references) == 1 else "",
                "n_references": len(row.references),
                "similarity": f"{row.similarity:.{DECIMALS}f}" if scored else "",
                "rank": row.rank if scored else "",
                "same": "" if row.same is None else row.same,
                "selected": int(row.selected),
                "output": row.output or "",
            }
            writer.writerow({name: values[name] for name in header})
