"""``nearid report``: one self-contained HTML page from a bench ``results.json`` or a score summary.

The report reads results files only and never embeds, so it can be re-made at any time from what
``nearid bench`` / ``nearid score`` wrote. The kind of the results file picks the page (``bench_page``,
``score_page``); both are built from ``kit``, which also holds the names this module gave before the
split (``CSS``, ``GALLERY``, ...), re-exported here so older imports keep working.
"""

from __future__ import annotations

import os
from pathlib import Path

from nearid.eval.results import BenchResults, ScoreSummary, read_results
from nearid.io.atomic import write_text_atomic
from nearid.report import bench_page, score_page
from nearid.report.kit import COLOURS, CSS, DPI, GALLERY, NUMBER, THUMB, document

__all__ = ["COLOURS", "CSS", "DPI", "GALLERY", "NUMBER", "PAGES", "THUMB", "write_report"]

#: The page module of each kind of results file: ``files_read(results)`` (what it reads beside the
#: file) and ``render(results, path) -> (title, body)``. Looked up when a report is written.
PAGES = {BenchResults: bench_page, ScoreSummary: score_page}


def write_report(results_path: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Write the report for ``results_path`` (default: ``report.html`` beside it) atomically; never over
    the results file or anything the page reads beside it."""
    from nearid.io.outputs import check_outputs

    path = Path(results_path)
    results = read_results(path, tuple(PAGES))
    page = PAGES[type(results)]
    out = Path(out_path) if out_path is not None else path.parent / "report.html"
    check_outputs([out], [path, *(path.parent / name for name in page.files_read(results) if name)])
    title, body = page.render(results, path)
    write_text_atomic(out, document(title, body, path.name))
    return out
