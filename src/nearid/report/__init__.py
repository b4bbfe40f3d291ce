"""Rendering results files: HTML reports and comparison tables (no model, no re-embedding)."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "COLOURS": "nearid.report.kit",
    "CSS": "nearid.report.kit",
    "DPI": "nearid.report.kit",
    "GALLERY": "nearid.report.kit",
    "NUMBER": "nearid.report.kit",
    "THUMB": "nearid.report.kit",
    "write_report": "nearid.report.html",
    "write_tables": "nearid.report.tables",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
