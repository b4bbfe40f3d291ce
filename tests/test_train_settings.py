"""``nearid train``'s settings table (:data:`nearid.training.config.RULES`): one rule per TrainConfig
field, checked by one loop, one line per meaningless value. One test per kind of rule: the type, the
range, the choices and the normaliser; the expected lines are written out by hand."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from nearid.io.errors import NearIDError
from nearid.training.config import RULES, Rule, SettingError, TrainConfig, check_settings


def refusal(**settings) -> str:
    """The one line ``TrainConfig`` refuses ``settings`` with."""
    with pytest.raises(NearIDError) as raised:
        TrainConfig(data="d", out="o", **settings)
    return str(raised.value)


def test_every_field_has_one_rule_in_the_fields_order():
    assert list(RULES) == [f.name for f in dataclasses.fields(TrainConfig)]
    # the defaults pass their own rules unchanged
    defaults = dataclasses.asdict(TrainConfig(data="d", out="o"))
    checked = dict(defaults)
    check_settings(checked)
    assert checked == defaults


def test_type_rules():
    assert refusal(epochs="8") == "TrainConfig.epochs must be an integer >= 1, not '8'"
    assert refusal(batch_size=True) == "TrainConfig.batch_size must be an integer >= 1, not True"
    assert refusal(epochs=1.5) == "TrainConfig.epochs must be an integer >= 1, not 1.5"
    assert refusal(lr="fast") == "TrainConfig.lr must be a number > 0, not 'fast'"
    assert refusal(grad_clip=False) == "TrainConfig.grad_clip must be a number >= 0, not False"
    assert refusal(backbone=3) == "TrainConfig.backbone must be a non-empty text, not 3"
    assert refusal(mtg=["MTG"]) == "TrainConfig.mtg must be a dataset (a text) or null, not ['MTG']"
    assert refusal(sources="Part") == "TrainConfig.sources must be a non-empty list of source names, not 'Part'"
    assert refusal(mask_probs=0.5) == (
        "TrainConfig.mask_probs must be 3 probabilities (anchor, positive, distractor), not 0.5"
    )
    assert refusal(mask_probs=[0.5, "0.2", 0.6]) == "TrainConfig.mask_probs must be a number >= 0 and <= 1, not '0.2'"
    assert refusal(num_workers=True) == "TrainConfig.num_workers must be auto or an integer >= 0, not True"
    assert refusal(max_steps="all") == "TrainConfig.max_steps must be an integer >= 1, not 'all'"


def test_range_rules():
    assert refusal(epochs=0) == "TrainConfig.epochs must be an integer >= 1, not 0"
    assert refusal(warmup_steps=-1) == "TrainConfig.warmup_steps must be an integer >= 0, not -1"
    assert refusal(max_steps=0) == "TrainConfig.max_steps must be an integer >= 1, not 0"
    assert refusal(lr=0) == "TrainConfig.lr must be a number > 0, not 0"  # open at 0: the value as given
    assert refusal(lr=math.nan) == "TrainConfig.lr must be a number > 0, not nan"
    assert refusal(weight_decay=-1e-4) == "TrainConfig.weight_decay must be a number >= 0, not -0.0001"
    assert refusal(weight_decay=math.inf) == "TrainConfig.weight_decay must be a number >= 0, not inf"
    assert refusal(flip_prob=1.5) == "TrainConfig.flip_prob must be a number >= 0 and <= 1, not 1.5"
    assert refusal(jitter_prob=2) == "TrainConfig.jitter_prob must be a number >= 0 and <= 1, not 2"
    assert refusal(affine_prob=-0.1) == "TrainConfig.affine_prob must be a number >= 0 and <= 1, not -0.1"
    assert refusal(mask_probs=[0.5, 2.0, 0.1]) == "TrainConfig.mask_probs must be a number >= 0 and <= 1, not 2.0"
    assert refusal(mask_probs=[0.5, 0.2]) == (
        "TrainConfig.mask_probs must be 3 probabilities (anchor, positive, distractor), not [0.5, 0.2]"
    )
    assert refusal(num_workers=-1.0) == "TrainConfig.num_workers must be auto or an integer >= 0, not -1"
    assert refusal(sources=[]) == "TrainConfig.sources must be a non-empty list of source names, not []"
    assert refusal(sources=["Part", ""]) == (
        "TrainConfig.sources must be a non-empty list of source names, not ['Part', '']"
    )
    assert refusal(split="") == "TrainConfig.split must be a non-empty text, not ''"
    assert refusal(mtg="") == "TrainConfig.mtg must be a dataset (a text) or null, not ''"
    # the bounds themselves are in range
    edge = TrainConfig(data="d", out="o", warmup_steps=0, weight_decay=0, flip_prob=1, mask_probs=[0, 1, 0])
    assert (edge.warmup_steps, edge.weight_decay, edge.flip_prob, edge.mask_probs) == (0, 0.0, 1.0, (0.0, 1.0, 0.0))


def test_choice_rules():
    assert refusal(token_cache="maybe") == "TrainConfig.token_cache must be one of auto, on, off, not 'maybe'"
    assert refusal(token_cache=None) == "TrainConfig.token_cache must be one of auto, on, off, not None"
    assert (
        refusal(mixed_precision="fp8") == "TrainConfig.mixed_precision must be one of auto, no, fp16, bf16, not 'fp8'"
    )
    assert refusal(num_workers="many") == "TrainConfig.num_workers must be auto or an integer >= 0, not 'many'"
    for setting, options in (
        ("token_cache", ("auto", "on", "off")),
        ("mixed_precision", ("auto", "no", "fp16", "bf16")),
    ):
        for option in options:
            assert getattr(TrainConfig(data="d", out="o", **{setting: option}), setting) == option
    assert TrainConfig(data="d", out="o", num_workers="auto").num_workers == "auto"


def test_normalisers():
    """JSON writes ``1`` for a float setting and ``2.0`` for an int one: both are read as meant and stored
    as the field's type; lists and tuples become the field's kind of sequence; None stays where it means
    something (no MTG, every epoch)."""
    config = TrainConfig(
        data="d",
        out="o",
        lr=1,
        weight_decay=0,
        epochs=2.0,
        num_workers=3.0,
        mask_probs=[0.5, 0, 1],
        sources=("A", "B"),
        mtg=None,
        max_steps=None,
    )
    assert config.lr == 1.0 and type(config.lr) is float and type(config.weight_decay) is float
    assert config.epochs == 2 and type(config.epochs) is int
    assert config.num_workers == 3 and type(config.num_workers) is int
    assert config.mask_probs == (0.5, 0.0, 1.0) and all(type(p) is float for p in config.mask_probs)
    assert config.sources == ["A", "B"] and config.mtg is None and config.max_steps is None
    # a dict of some settings is normalised in place; the others are left alone
    values = {"seed": 7.0, "flip_prob": 0, "anything else": "as it is"}
    check_settings(values)
    assert values == {"seed": 7, "flip_prob": 0.0, "anything else": "as it is"} and type(values["seed"]) is int


def test_a_rule_checks_each_element_after_normalising():
    pair = Rule(
        "2 texts",
        lambda v: isinstance(v, list),
        lambda v: len(v) == 2,
        normalise=tuple,
        each=Rule("a text", lambda v: isinstance(v, str)),
    )
    assert pair.check("pair", ["a", "b"]) == ("a", "b")
    with pytest.raises(SettingError) as raised:
        pair.check("pair", ["a", 2])
    assert (raised.value.name, raised.value.why) == ("pair", "must be a text, not 2")


def test_where_a_value_came_from_is_named(tmp_path):
    """The same rule's line names the command-line option, the config file's setting or TrainConfig."""
    with pytest.raises(NearIDError, match=r"^--batch-size must be an integer >= 1, not 0$"):
        TrainConfig.from_options(None, data="d", out="o", batch_size=0)
    (tmp_path / "c.json").write_text(json.dumps({"data": "d", "out": "o", "batch_size": "8"}))
    with pytest.raises(NearIDError) as raised:
        TrainConfig.from_options(tmp_path / "c.json")
    assert str(raised.value) == f"{tmp_path / 'c.json'}: 'batch_size' must be an integer >= 1, not '8'"
    assert TrainConfig.from_options(tmp_path / "c.json", batch_size=4).batch_size == 4  # the option on top
