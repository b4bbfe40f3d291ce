"""The command line: :mod:`~nearid.cli.app` (the parser and ``main``), :mod:`~nearid.cli.options` (the
options several commands share, declared once, and the option values they build), and one module per
command family: ``embed`` (embed, compare, encoders), ``data`` (synth, distract, mask), ``bench``
(bench, metrics, dbpp, merge), ``score`` (score, report), ``rank``, ``explain``, ``train`` (train, export), ``demo``. It parses
and prints; the library does the work."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "add_judge_options": "nearid.cli.options",
    "build_parser": "nearid.cli.app",
    "cmd_bench": "nearid.cli.bench",
    "cmd_compare": "nearid.cli.embed",
    "cmd_dbpp": "nearid.cli.bench",
    "cmd_demo": "nearid.cli.demo",
    "cmd_distract": "nearid.cli.data",
    "cmd_embed": "nearid.cli.embed",
    "cmd_encoders": "nearid.cli.embed",
    "cmd_export": "nearid.cli.train",
    "cmd_mask": "nearid.cli.data",
    "cmd_merge": "nearid.cli.bench",
    "cmd_metrics": "nearid.cli.bench",
    "cmd_rank": "nearid.cli.rank",
    "cmd_report": "nearid.cli.score",
    "cmd_score": "nearid.cli.score",
    "cmd_synth": "nearid.cli.data",
    "cmd_train": "nearid.cli.train",
    "judge_options": "nearid.cli.options",
    "main": "nearid.cli.app",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
