"""Every setting of ``nearid distract`` checked before anything is read or any model loads.

A distract run loads a multi-gigabyte pipeline and then spends minutes per identity, so a value that
cannot mean anything must stop the run at once with one line naming the option, never as a diffusers
``ValueError`` after the load (``--strength 2``), a silent Python slice (``--limit -3`` = all rows but
the last three), an empty dataset (``--limit 0``) or a NaN that quietly passes every comparison
(``--change-threshold nan`` keeps everything; ``--guidance nan`` generates noise). The library call
(:func:`nearid.distract.distract`) runs the same check, so a script gets the same refusal as the CLI.
"""

from __future__ import annotations

import math

from nearid.io.errors import NearIDError


class DistractSettingError(NearIDError):
    """A ``nearid distract`` option whose value cannot mean anything."""


def _finite(option: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DistractSettingError(f"{option} {value!r}: give a number") from None
    if not math.isfinite(number):
        raise DistractSettingError(f"{option} {value}: give a finite number")
    return number


def _integer(option: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise DistractSettingError(f"{option} {value}: give an integer of at least {least}")


def check_settings(config) -> None:
    """Raise :class:`DistractSettingError` naming the first meaningless value of ``config``
    (a :class:`nearid.distract.DistractConfig`); ``None`` means "the generator's default"."""
    if config.strength is not None:
        strength = _finite("--strength", config.strength)
        if not 0 < strength <= 1:
            raise DistractSettingError(
                f"--strength {config.strength}: give a number in (0, 1] (how far the masked region is re-noised)"
            )
    for option, value in (("--guidance", config.guidance), ("--true-cfg", config.true_cfg)):
        if value is not None and _finite(option, value) < 0:
            raise DistractSettingError(f"{option} {value}: give a number of at least 0")
    threshold = _finite("--change-threshold", config.change_threshold)
    if threshold < 0:
        raise DistractSettingError(f"--change-threshold {config.change_threshold}: give a mean pixel change >= 0")
    if config.steps is not None:
        _integer("--steps", config.steps, 1)
    if config.resolution is not None:
        _integer("--resolution", config.resolution, 16)
    if config.limit is not None:
        _integer("--limit", config.limit, 1)
    _integer("--dilate", config.dilate, 0)
    _integer("--feather", config.feather, 0)
    _integer("--contact-rows", config.contact_rows, 0)
    low, high = (_finite("--band", v) for v in config.band)
    if not 0 <= low <= high <= 1:
        raise DistractSettingError(f"--band {low} {high}: need 0 <= low <= high <= 1")
    if config.feather > config.dilate and config.paste_back:
        raise DistractSettingError(
            f"--feather {config.feather} is wider than --dilate {config.dilate}: the blend would mix the original "
            "object's edge into the distractor; use --feather <= --dilate"
        )
