"""The command line: one module per command family and the shared option groups; it parses and
prints, and the library does the work."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "add_judge_options": "nearid.cli.main",
    "build_parser": "nearid.cli.main",
    "cmd_bench": "nearid.cli.main",
    "cmd_compare": "nearid.cli.main",
    "cmd_dbpp": "nearid.cli.main",
    "cmd_demo": "nearid.cli.main",
    "cmd_distract": "nearid.cli.main",
    "cmd_embed": "nearid.cli.main",
    "cmd_encoders": "nearid.cli.main",
    "cmd_export": "nearid.cli.main",
    "cmd_mask": "nearid.cli.main",
    "cmd_merge": "nearid.cli.main",
    "cmd_metrics": "nearid.cli.main",
    "cmd_report": "nearid.cli.main",
    "cmd_score": "nearid.cli.main",
    "cmd_synth": "nearid.cli.main",
    "cmd_train": "nearid.cli.main",
    "judge_options": "nearid.cli.main",
    "main": "nearid.cli.main",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
