"""The module ``nearid score`` lived in before it was split (``nearid.score.run``): every name it had
resolves, on first use, through the package face (:mod:`nearid.score`), which names the module that
holds it now, so code importing from here keeps working with one name map to keep. New code imports
from the package (``from nearid.score import run_score``).
"""

from __future__ import annotations

import importlib


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    value = getattr(importlib.import_module("nearid.score"), name)  # AttributeError for unknown names
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return dir(importlib.import_module("nearid.score"))
