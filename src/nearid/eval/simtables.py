"""Similarity tables in the authors' CSV layout, so published tables can be re-scored and ours shared.

NearID-bench: ``sample_id, category, n_pos, n_neg, sim_01, sim_02, sim_12, cross_00 ... cross_22``
(``cross_ij`` = view i against the distractor in view j's background; empty cells where a view or
distractor is missing). MTG: ``sample_id, mtg_oracle_{1,2}, mtg_sim_{1_2,1_1p,1_2p,2_2p,2_1p},
mtg_margin_{1,2}, mtg_win_{1,2}, mtg_overall_win``.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from nearid.eval.metrics import DiscriminationScore, nearid_scores
from nearid.io.atomic import atomic_path
from nearid.io.errors import NearIDError

PAIR_COLUMNS = ("sim_01", "sim_02", "sim_12")
CROSS_COLUMNS = tuple(f"cross_{a}{b}" for a in range(3) for b in range(3))
MTG_SIM_COLUMNS = ("mtg_sim_1_2", "mtg_sim_1_1p", "mtg_sim_1_2p", "mtg_sim_2_2p", "mtg_sim_2_1p")


def _cell(value: float) -> str:
    """Empty for a missing value; ``-inf`` / ``inf`` for a judge's unanswered pair (a lost trial, read back so)."""
    if value is None or math.isnan(value):
        return ""
    return f"{value:.6f}" if math.isfinite(value) else str(value)


def write_nearid_csv(path: str | os.PathLike, table, categories: list[str] | None = None) -> None:
    """Write one :class:`~nearid.eval.evaluate.SimilarityTable` atomically."""
    header = ["sample_id", "category", "n_pos", "n_neg", *PAIR_COLUMNS, *CROSS_COLUMNS]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, sample_id in enumerate(table.ids):
            cross = table.cross[i]
            n_pos = _views_in_pairs(table.pair[i])  # every view of a >= 2-view identity is in a pair
            n_neg = int((~np.isnan(cross)).any(axis=0).sum())
            category = categories[i] if categories else ""
            writer.writerow(
                [sample_id, category, n_pos, n_neg, *map(_cell, table.pair[i]), *map(_cell, cross.reshape(-1))]
            )


def _views_in_pairs(pair_row: np.ndarray) -> int:
    present = set()
    for (a, b), value in zip(((0, 1), (0, 2), (1, 2)), pair_row):
        if not np.isnan(value):
            present |= {a, b}
    return len(present)


def _read(path: Path, required: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    columns = table_columns(path)
    missing = [c for c in required if c not in columns]
    if missing:
        raise NearIDError(
            f"{path}: missing column '{missing[0]}'; expected the authors' layout ({', '.join(required)})"
        )
    with _open(path) as handle:
        try:
            rows = list(csv.DictReader(handle))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise _not_a_table(path, exc) from None
    if not rows:
        raise NearIDError(f"{path}: holds only a header, no rows; pass a table with at least one row")
    return rows, columns


def _open(path: Path):
    """A table as text: UTF-8, with or without the byte-order mark that Excel's "CSV UTF-8" writes."""
    if path.is_dir():
        raise NearIDError(f"{path}: is a folder; pass the CSV files in it (e.g. {path}/*.csv)")
    if not path.is_file():
        raise NearIDError(f"{path}: no such similarity table")
    return open(path, newline="", encoding="utf-8-sig")


def _not_a_table(path: Path, exc: Exception) -> NearIDError:
    why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"not a CSV table ({exc})"
    return NearIDError(f"{path}: {why}; pass a similarity table in CSV (what nearid bench writes in sims/)")


def table_columns(path: str | os.PathLike) -> list[str]:
    """The header of a CSV table; a binary file, a folder or a missing file is a one-line error."""
    path = Path(path)
    with _open(path) as handle:
        try:
            return next(csv.reader(handle), [])
        except (UnicodeDecodeError, csv.Error) as exc:
            raise _not_a_table(path, exc) from None


def _number(path: Path, line: int, column: str, text: str | None) -> float:
    if text is None or text.strip() == "" or text.strip().lower() == "nan":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise NearIDError(f"{path}: line {line}, column {column}: '{text}' is not a number") from None


#: What a NearID table must have: two views make a trial. The authors' tables have no third-view
#: columns (``sim_02``, ``sim_12``, ``cross_22``, ...) when no identity in them has three views.
NEARID_REQUIRED = ("sample_id", "sim_01", "cross_00", "cross_11")


def read_nearid_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(pair [N, 3], own-background cross [N, 3])`` from a table in the authors' layout; a column of a
    third view that the table does not have reads as missing (NaN)."""
    path = Path(path)
    own = tuple(f"cross_{v}{v}" for v in range(3))
    rows, columns = _read(path, NEARID_REQUIRED)

    def cell(n: int, row: dict, column: str) -> float:
        return _number(path, n + 2, column, row[column]) if column in columns else float("nan")

    pair = np.array([[cell(n, row, c) for c in PAIR_COLUMNS] for n, row in enumerate(rows)]).reshape(-1, 3)
    cross = np.array([[cell(n, row, c) for c in own] for n, row in enumerate(rows)]).reshape(-1, 3)
    return pair, cross


def score_nearid_csvs(paths) -> DiscriminationScore:
    """SSR / PA of one or more tables in the authors' layout, pooled (``nearid metrics``).

    Tables without a single valid trial (every similarity empty) are an error, not ``SSR nan``."""
    score = DiscriminationScore.pool(*(nearid_scores(*read_nearid_csv(path)) for path in paths))
    if not score.n_trials:
        raise NearIDError(
            f"{', '.join(map(str, paths))}: no valid trial (every view-pair or own-background "
            "similarity is empty); nothing to score"
        )
    return score


def is_mtg_table(path: str | os.PathLike) -> bool:
    """Whether a CSV has the MTG layout (``mtg_*.csv`` of ``nearid bench --mtg``) rather than NearID-bench's."""
    return all(column in table_columns(path) for column in MTG_SIM_COLUMNS)


def check_distinct_tables(paths: list[Path]) -> None:
    """Refuse a table given twice, by content (``T.csv ./T.csv``, a link, a copy): pooled twice, every
    trial would count double and SSR / PA would look surer than they are."""
    import hashlib

    seen: dict[str, Path] = {}
    for path in paths:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            continue  # a missing table is reported by the reader, with its own message
        if digest in seen:
            raise NearIDError(f"{path}: the same table as {seen[digest]} (same content); give each table once")
        seen[digest] = path


def score_tables(paths) -> tuple[str, object]:
    """``nearid metrics``: ``("nearid", DiscriminationScore)`` for NearID-bench tables (pooled), or
    ``("mtg", MTGScore)`` for MTG tables (samples concatenated: M-O / M-Opair are correlations over
    all of them, SSR / PA pool). Mixing the two layouts is an error: their scores do not combine."""
    from nearid.eval.metrics import mtg_scores

    paths = [Path(p) for p in paths]
    check_distinct_tables(paths)
    kinds = {path: is_mtg_table(path) for path in paths}
    if len(set(kinds.values())) > 1:
        mtg = [str(p) for p, k in kinds.items() if k]
        raise NearIDError(
            f"{', '.join(mtg)}: MTG table(s) mixed with NearID-bench tables; score each layout on its own"
        )
    if not kinds[paths[0]]:
        return "nearid", score_nearid_csvs(paths)
    tables = [read_mtg_csv(path) for path in paths]
    sims = {c: np.concatenate([t[0][c] for t in tables]) for c in MTG_SIM_COLUMNS}
    oracles = tuple(np.concatenate([t[1][k] for t in tables]) for k in (0, 1))
    score = mtg_scores(*(sims[c] for c in MTG_SIM_COLUMNS), *oracles)
    if not score.n_trials:
        raise NearIDError(
            f"{', '.join(map(str, paths))}: no valid MTG trial (every similarity is empty); nothing to score"
        )
    return "mtg", score


def write_mtg_csv(path: str | os.PathLike, sims: dict[str, np.ndarray], oracles: tuple[np.ndarray, np.ndarray]) -> None:
    """Write the MTG table: five similarities per sample, oracles, margins and wins."""
    margin_1 = sims["mtg_sim_1_2"] - sims["mtg_sim_1_1p"]
    margin_2 = sims["mtg_sim_1_2"] - sims["mtg_sim_2_2p"]
    header = [
        "sample_id",
        "mtg_oracle_1",
        "mtg_oracle_2",
        *MTG_SIM_COLUMNS,
        "mtg_margin_1",
        "mtg_margin_2",
        "mtg_win_1",
        "mtg_win_2",
        "mtg_overall_win",
    ]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(len(margin_1)):
            wins = [int(margin_1[i] > 0), int(margin_2[i] > 0)]
            writer.writerow(
                [
                    i,
                    _cell(oracles[0][i]),
                    _cell(oracles[1][i]),
                    *(_cell(sims[c][i]) for c in MTG_SIM_COLUMNS),
                    _cell(margin_1[i]),
                    _cell(margin_2[i]),
                    *wins,
                    int(all(wins)),
                ]
            )


def read_mtg_csv(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    path = Path(path)
    rows, _ = _read(path, ("sample_id", "mtg_oracle_1", "mtg_oracle_2", *MTG_SIM_COLUMNS))
    column = lambda c: np.array([_number(path, n + 2, c, row[c]) for n, row in enumerate(rows)])
    return {c: column(c) for c in MTG_SIM_COLUMNS}, (column("mtg_oracle_1"), column("mtg_oracle_2"))
