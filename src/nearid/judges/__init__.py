"""Pair scorers that read two images at once: VLM judges (``vlm:<model>``).

:mod:`.prompt` (rubric and answer parsing, no torch), :mod:`.vlm` (loading and scoring),
:mod:`.loading` (``load_metric``: a spec -> an encoder or a judge); the tiny offline Qwen3-VL is
:mod:`nearid.tiny.judge`. Names resolve on first use, so importing the
package costs nothing.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "VLMJudge": ".vlm",
    "load_vlm_judge": ".vlm",
    "expected_scores": ".vlm",
    "parse_score": ".prompt",
    "RUBRIC": ".prompt",
    "save_tiny_judge": "nearid.tiny.judge",
    "load_metric": ".loading",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
