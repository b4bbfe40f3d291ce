"""``nearid train``'s settings: :class:`TrainConfig`, and the one table (:data:`RULES`) that checks them.

The recipe defaults are the paper's (spec 5.3): AdamW lr 1e-4, weight decay 1e-4, cosine schedule
with 100 warm-up steps, gradient clipping 1.0, global batch 128, 11 epochs, L_NearID (tau 0.07,
alpha 0.5), role-aware masking (0.5 / 0.2 / 0.6), MTG repeated 4x.

Every setting is checked before any data or model loads, whether it came from the command line, a
JSON config file or Python: a meaningless value (``--epochs 0``, ``"lr": "fast"``) is one line naming
the option or the file and setting. The checks are data, one :class:`Rule` per field (its type, its
range or choices, and the normaliser that gives the stored value), run by one loop
(:func:`check_settings`), so a new field cannot be added without saying what it accepts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nearid.io.errors import NearIDError


@dataclass
class TrainConfig:
    data: str
    out: str
    sources: list[str] = field(default_factory=lambda: ["Flux", "Flux_1024", "Qwen", "Qwen_1328"])
    mtg: str | None = None
    backbone: str = "google/siglip2-so400m-patch14-384"  # a SigLIP checkpoint, "tiny[:seed]" or "nearid:<dir>"
    loss: str = "nearid:1.0"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    epochs: int = 11
    batch_size: int = 128
    grad_clip: float = 1.0
    seed: int = 0
    mask_probs: tuple[float, float, float] = (0.5, 0.2, 0.6)
    flip_prob: float = 0.5
    mtg_repeat: int = 4
    save_steps: int = 100
    log_steps: int = 10
    mixed_precision: str = (
        "auto"  # auto: fp16 on CUDA (the authors' config, spec 12.3), "no" on the CPU; or no/fp16/bf16
    )
    jitter_prob: float = 0.0  # per-slot colour jitter probability (the authors' default 0; spec 12.5)
    affine_prob: float = 0.0  # per-slot translate + scale "disalignment" probability (default 0)
    split: str = "train"
    max_steps: int | None = None  # stop early (tests, smoke runs); the schedule still spans all epochs
    token_cache: str = "auto"  # auto: cache when it fits on the disk, else stream; on: cache or refuse; off: stream
    num_workers: int | str = "auto"  # processes decoding the trunk's inputs; auto: min(8, CPUs) on CUDA, 0 on CPU
    eval_steps: int = 0  # validate (SSR/PA on `val_split`, main process) every N steps; 0 = never
    val_split: str = "val"

    def __post_init__(self) -> None:
        try:
            check_settings(self.__dict__)
        except SettingError as exc:
            raise NearIDError(f"TrainConfig.{exc.name} {exc.why}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        """A JSON config file, with command-line overrides on top (``None`` overrides are ignored)."""
        return cls.from_options(path, **overrides)

    @classmethod
    def from_options(cls, config_file: str | os.PathLike | None = None, **overrides) -> TrainConfig:
        """A config from an optional JSON file and options on top (``None`` options are ignored).

        ``data`` and ``out`` have no default: when neither the file nor the options give one, the
        error names the missing field (as its command-line option) instead of a dataclass TypeError.
        Options that are not fields of the config (the command's other arguments) are ignored.
        A meaningless value (``--epochs 0``, ``"lr": "fast"``) is one line naming the option or the
        file and setting, before any model loads.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values = {}
        overrides = _legacy_cache_tokens(overrides, "--uncached")
        if config_file is not None:
            values = _read_config_file(config_file, names)
        options = {k: v for k, v in overrides.items() if k in names and v is not None}
        values.update(options)
        missing = [name for name in ("data", "out") if values.get(name) is None]
        if missing:
            where = (
                f"neither {config_file} nor the options set it" if config_file is not None else "or give --config FILE"
            )
            raise NearIDError(f"--{missing[0]} is required ({where})")
        try:
            check_settings(values)
        except SettingError as exc:
            where = f"--{exc.name.replace('_', '-')}" if exc.name in options else f"{config_file}: {exc.name!r}"
            raise NearIDError(f"{where} {exc.why}") from None
        return cls(**values)


def _read_config_file(config_file: str | os.PathLike, names: set[str]) -> dict:
    """The settings of a JSON config file (a legacy ``cache_tokens`` read as ``token_cache``); a file
    that is not a JSON object of known settings is one line naming it."""
    try:
        values = json.loads(Path(config_file).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise NearIDError(f"{config_file}: cannot read the training config ({exc})") from None
    if not isinstance(values, dict):
        raise NearIDError(f"{config_file}: a training config is a JSON object of settings")
    values = _legacy_cache_tokens(values, f"{config_file}: 'cache_tokens'")
    unknown = set(values) - names
    if unknown:
        raise NearIDError(f"{config_file}: unknown setting(s) {', '.join(sorted(unknown))}")
    return values


def _legacy_cache_tokens(values: dict, where: str) -> dict:
    """``cache_tokens`` (before ``token_cache``; every earlier run's config.json holds it) as
    ``token_cache``: ``false`` (``--uncached``) is ``off``; ``true`` was the default written into every
    config, whether chosen or not, so it is ``auto`` (which caches wherever the cache fits, as before).
    A value that is not a bool, or one that contradicts a ``token_cache`` beside it, is an error."""
    if values.get("cache_tokens") is None:
        return {k: v for k, v in values.items() if k != "cache_tokens"}
    values = dict(values)
    legacy = values.pop("cache_tokens")
    if not isinstance(legacy, bool):
        raise NearIDError(f"{where} must be true or false, not {legacy!r} (it is now token_cache: auto, on or off)")
    mode = "auto" if legacy else "off"
    if values.get("token_cache") not in (None, mode) and not (legacy and values["token_cache"] == "on"):
        raise NearIDError(f"{where} {legacy!r} contradicts token_cache {values['token_cache']!r}; keep one of them")
    values.setdefault("token_cache", None)
    if values["token_cache"] is None:
        values["token_cache"] = mode
    return values


# ------------------------------------------------------------------------------ the table of settings
class SettingError(Exception):
    """One setting's value is meaningless: ``name`` and ``why`` (``"must be ..., not ..."``); the caller
    words where it came from (an option, a config file, ``TrainConfig``)."""

    def __init__(self, name: str, why: str):
        super().__init__(f"{name} {why}")
        self.name, self.why = name, why


def _as_is(value):
    return value


def _anything(value) -> bool:
    return True


def _whole_as_int(value):
    """JSON writes an integer setting as ``2.0`` as readily as ``2``: a whole float reads as the int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    """A finite int or float (``True`` is no number, ``nan`` and ``inf`` no setting)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value)


@dataclass(frozen=True)
class Rule:
    """How one setting is checked: a value that is not ``None`` (or is, without ``none``) is first
    ``read`` (as a JSON file may write it), must then be of its type (``is_type``) and within its
    range or choices (``within``), and is stored as ``normalise`` makes it. ``each``: the rule of
    every element (after ``normalise``). A failed check is ``"must be <what>, not <the value read>"``."""

    what: str
    is_type: Callable[[object], bool] = _anything
    within: Callable[[object], bool] = _anything
    normalise: Callable[[object], object] = _as_is
    read: Callable[[object], object] = _as_is
    none: bool = False  # None is a value of this setting (and is stored as it is)
    each: Rule | None = None

    def check(self, name: str, value):
        """``value`` as stored, or :class:`SettingError` naming ``name``."""
        if value is None and self.none:
            return None
        value = self.read(value)
        if not (self.is_type(value) and self.within(value)):
            raise SettingError(name, f"must be {self.what}, not {value!r}")
        value = self.normalise(value)
        if self.each is not None:
            value = type(value)(self.each.check(name, element) for element in value)
        return value


def integer(low: int, *, none: bool = False) -> Rule:
    """An integer of at least ``low`` (``2.0`` reads as ``2``)."""
    return Rule(f"an integer >= {low}", _is_int, lambda v: v >= low, read=_whole_as_int, none=none)


def number(low: float, high: float | None = None, *, open_low: bool = False) -> Rule:
    """A finite number from ``low`` (excluded when ``open_low``) to ``high``, stored as a float (``1``
    for ``1.0``)."""
    bound = f"> {low:g}" if open_low else f">= {low:g}"
    what = f"a number {bound}" + (f" and <= {high:g}" if high is not None else "")

    def within(v) -> bool:
        return (v > low if open_low else v >= low) and (high is None or v <= high)

    return Rule(what, _is_real, within, normalise=float)


def choice(*options: str) -> Rule:
    """One of ``options``."""
    return Rule(f"one of {', '.join(options)}", within=lambda v: isinstance(v, str) and v in options)


TEXT = Rule("a non-empty text", _is_text)
PROBABILITY = number(0.0, 1.0)

#: Every field of :class:`TrainConfig` and what it accepts, in the fields' order. ``1`` is accepted for
#: a float and ``2.0`` for an int (JSON writes both), ``True`` for neither.
RULES: dict[str, Rule] = {
    "data": TEXT,
    "out": TEXT,
    "sources": Rule(
        "a non-empty list of source names",
        lambda v: isinstance(v, (list, tuple)),
        lambda v: bool(v) and all(_is_text(s) for s in v),
        normalise=list,
    ),
    "mtg": Rule("a dataset (a text) or null", _is_text, none=True),
    "backbone": TEXT,
    "loss": TEXT,
    "lr": number(0.0, open_low=True),
    "weight_decay": number(0.0),
    "warmup_steps": integer(0),
    "epochs": integer(1),
    "batch_size": integer(1),
    "grad_clip": number(0.0),
    "seed": integer(0),
    "mask_probs": Rule(
        "3 probabilities (anchor, positive, distractor)",
        lambda v: isinstance(v, (list, tuple)),
        lambda v: len(v) == 3,
        normalise=tuple,
        each=PROBABILITY,
    ),
    "flip_prob": PROBABILITY,
    "mtg_repeat": integer(0),
    "save_steps": integer(1),
    "log_steps": integer(1),
    "mixed_precision": choice("auto", "no", "fp16", "bf16"),
    "jitter_prob": PROBABILITY,
    "affine_prob": PROBABILITY,
    "split": TEXT,
    "max_steps": integer(1, none=True),  # None: every epoch
    "token_cache": choice("auto", "on", "off"),
    "num_workers": Rule(
        "auto or an integer >= 0",
        lambda v: v == "auto" or _is_int(v),
        lambda v: v == "auto" or v >= 0,
        read=_whole_as_int,
    ),
    "eval_steps": integer(0),
    "val_split": TEXT,
}


def check_settings(values: dict) -> None:
    """Check and normalise ``values`` (some or all of a TrainConfig's fields) in place by :data:`RULES`;
    the first meaningless one raises :class:`SettingError`."""
    for name, rule in RULES.items():
        if name in values:
            values[name] = rule.check(name, values[name])


__all__ = [
    "PROBABILITY",
    "RULES",
    "TEXT",
    "Rule",
    "SettingError",
    "TrainConfig",
    "check_settings",
    "choice",
    "integer",
    "number",
]
