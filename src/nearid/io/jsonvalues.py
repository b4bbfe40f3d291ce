"""JSON that every parser reads: no bare ``NaN`` / ``Infinity`` tokens.

Python's ``json`` writes ``NaN`` for a float NaN, which is not JSON: ``jq``, JavaScript and strict
parsers reject the whole file. nearid's results say "no value" (an empty group's SSR, an all-NaN
judge's statistics) with NaN in memory, so every results and record file is written through
:func:`dumps`, which writes such a value as ``null``; readers turn ``null`` back into NaN with
:func:`number` where a number is expected (and still read files with ``NaN`` tokens, which
``json.loads`` accepts).
"""

from __future__ import annotations

import json
import math


def finite(value):
    """``value`` with every non-finite float (numpy's too) replaced by ``None``, recursively."""
    if isinstance(value, float):  # numpy.float64 is a float
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    if hasattr(value, "dtype") and getattr(value, "shape", None) == ():  # a numpy scalar
        return finite(value.item())
    return value


def dumps(value, **kwargs) -> str:
    """``json.dumps`` of ``value`` with NaN and infinities written as ``null`` (never a bare token)."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def number(value) -> float:
    """A JSON number as a float: ``null`` (written for NaN by :func:`dumps`) is NaN again."""
    return float("nan") if value is None else float(value)
