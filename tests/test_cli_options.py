"""The command line's vocabulary: every option has help, one option name means one thing in every
command, old spellings still parse as their new names, the options build the library's option values,
and every ``nearid <command> --option`` that the source's strings mention exists on that command."""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import tokenize
from pathlib import Path

import pytest

from nearid.cli.app import build_parser, main
from nearid.cli.options import load_options, mask_options, read_options
from nearid.images.options import MaskOptions, OptionError, ReadOptions
from nearid.models.options import JudgeOptions, LoadOptions

SRC = Path(__file__).resolve().parents[1] / "src" / "nearid"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def options(parser: argparse.ArgumentParser, hidden: bool = False) -> list[argparse.Action]:
    """The parser's options (not positionals, not -h): the visible ones, or the hidden old spellings."""
    return [
        a
        for a in parser._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction) and (a.help == argparse.SUPPRESS) == hidden
    ]


def visible_names(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in options(parser) for name in action.option_strings} | {"-h", "--help"}


# ----------------------------------------------------------------------------- help


def test_every_option_of_every_command_has_help():
    commands = subcommands()
    missing = [
        f"nearid {name} {a.option_strings[0] if a.option_strings else a.dest}"
        for name, parser in commands.items()
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()
    ]
    assert missing == []
    assert len(commands) == 17 and sum(len(options(p)) for p in commands.values()) > 150


def test_a_hidden_option_is_an_old_spelling_named_in_its_new_options_help():
    found = {}
    for name, parser in subcommands().items():
        for alias in options(parser, hidden=True):
            (new,) = [a for a in options(parser) if a.dest == alias.dest]
            assert f"formerly {alias.option_strings[0]}" in new.help, (name, alias.option_strings)
            assert not re.search(rf"(?<![\w-]){alias.option_strings[0]}(?![\w-])", parser.format_usage())
            found[(name, alias.option_strings[0])] = new.option_strings[0]
    assert found == {
        ("bench", "--encoder"): "--model",
        ("bench", "--masks"): "--foreground",
        ("score", "--masks"): "--mask-folder",
        ("synth", "--format"): "--dataset-format",
        ("synth", "--workers"): "--num-workers",
        ("distract", "--model"): "--generator-model",
        ("distract", "--quality-encoder"): "--quality-model",
        ("mask", "--threshold"): "--detector-threshold",
    }


# ----------------------------------------------------------------------------- one name, one meaning


def _kind(action: argparse.Action) -> str:
    """What an option takes: a switch, one value (repeatable or not), or a list."""
    if action.nargs == 0:
        return "switch"
    return "one value" if action.nargs in (None, "?") else "values"


def test_an_option_name_means_one_thing_in_every_command():
    meaning: dict[str, set] = {}
    for parser in subcommands().values():
        for action in options(parser):
            for name in action.option_strings:
                meaning.setdefault(name, set()).add((action.dest, _kind(action), tuple(action.choices or ())))
    assert {name: m for name, m in meaning.items() if len(m) > 1} == {}
    assert not {"--workers", "--encoder", "--quality-encoder"} & set(meaning)
    assert meaning["--masks"] == {("masks", "values", ())}  # one mask file per image, nowhere a switch
    assert meaning["--num-workers"] == {("num_workers", "one value", ())}


@pytest.mark.parametrize(
    "option, commands",
    [
        ("--model", {"embed", "compare", "score", "rank", "bench", "explain"}),
        ("--backbone", {"train", "export"}),
        ("--num-workers", {"embed", "compare", "score", "rank", "bench", "train", "synth", "explain"}),
        ("--masks", {"embed", "compare", "explain"}),
        ("--format", {"score"}),
        ("--threshold", {"score", "rank", "explain"}),
        ("--device", {"embed", "compare", "score", "rank", "bench", "distract", "mask", "explain"}),
    ],
)
def test_the_vocabulary(option, commands):
    """``--model`` is the model a command embeds, scores or benchmarks; train and export start from a
    ``--backbone``; the other names each have the one meaning of the table in tests/test_cli_options.py."""
    assert {name for name, parser in subcommands().items() if option in visible_names(parser)} == commands


# the same command line with the new and the old spelling: (command, new, old, destination, value)
RENAMED = [
    (
        "bench --out b",
        ["--model", "tiny", "--model", "clip"],
        ["--encoder", "tiny", "--encoder", "clip"],
        "model",
        ["tiny", "clip"],
    ),
    (
        "bench --out b",
        ["--model", "tiny", "--encoder", "clip"],
        ["--encoder", "tiny", "--model", "clip"],
        "model",
        ["tiny", "clip"],
    ),
    ("bench --out b", ["--foreground"], ["--masks"], "masks", True),
    ("score --refs r", ["--mask-folder", "m"], ["--masks", "m"], "masks", "m"),
    ("synth out", ["--dataset-format", "parquet"], ["--format", "parquet"], "dataset_format", "parquet"),
    ("synth out", ["--num-workers", "3"], ["--workers", "3"], "num_workers", 3),
    ("distract", ["--generator-model", "g"], ["--model", "g"], "model", "g"),
    ("distract", ["--quality-model", "tiny"], ["--quality-encoder", "tiny"], "quality_encoder", "tiny"),
    ("mask x.png --out o", ["--detector-threshold", "0.3"], ["--threshold", "0.3"], "threshold", 0.3),
]


@pytest.mark.parametrize("base, new, old, dest, value", RENAMED)
def test_an_old_spelling_parses_as_its_new_name(base, new, old, dest, value):
    parser = build_parser()
    with_new, with_old = parser.parse_args([*base.split(), *new]), parser.parse_args([*base.split(), *old])
    assert getattr(with_new, dest) == value
    assert vars(with_new) == vars(with_old)


def test_defaults_are_unchanged_by_the_old_spellings():
    parser = build_parser()
    bench = parser.parse_args(["bench", "--out", "b"])
    assert (bench.model, bench.masks, bench.mask_cleaning, bench.mask_dilate) == (None, None, None, 0)
    score = parser.parse_args(["score", "--refs", "r"])
    assert (score.model, score.masks, score.mask_cleaning, score.num_workers) == (None, None, "authors", "auto")
    synth = parser.parse_args(["synth", "out"])
    from nearid.data.synth import SynthConfig

    assert (synth.dataset_format, synth.num_workers) == ("arrow", SynthConfig().workers)
    assert not hasattr(synth, "workers") and not hasattr(synth, "format")


def test_bench_takes_model(tmp_path, capsys):
    """``nearid bench --model X`` (the message of an uncalibrated score asks for it) runs, and gives what
    the old ``--encoder X`` gives."""
    from nearid.data.synth import SynthConfig, generate

    data = tmp_path / "synth"
    generate(data, SynthConfig(identities=6, size=32, seed=1, val=1, test=3, mtg_train=0, mtg_test=0, workers=1))
    base = ["bench", "--data", str(data), "--sources", "Part", "--num-workers", "0"]
    assert main([*base, "--model", "histogram:4", "--out", str(tmp_path / "new")]) == 0
    assert main([*base, "--encoder", "histogram:4", "--out", str(tmp_path / "old")]) == 0
    new, old = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("new", "old"))
    assert list(new["encoders"]) == ["histogram:4"]
    assert new["encoders"]["histogram:4"]["nearid"] == old["encoders"]["histogram:4"]["nearid"]
    assert new["encoders"]["histogram:4"]["nearid"]["per_source"]["Part"]["n_samples"] == 3


# ----------------------------------------------------------------------------- option values


def test_the_options_build_the_library_option_values():
    parser = build_parser()
    reading = ["--batch-size", "4", "--num-workers", "0", "--fast-decode"]
    loading = ["--device", "cpu", "--dtype", "float32", "--allow-pickle"]
    args = parser.parse_args(["embed", "a.png", "--out", "e.npz", *reading, *loading])
    assert read_options(args) == ReadOptions(batch_size=4, num_workers=0, fast_decode=True)
    assert read_options(args).as_kwargs() == {"batch_size": 4, "num_workers": 0, "fast_decode": True}
    assert load_options(args) == LoadOptions(device="cpu", dtype="float32", allow_pickle=True, judge=JudgeOptions())
    args = parser.parse_args(["score", "--refs", "r", "--mask-folder", "m", "--mask-cleaning", "none"])
    assert mask_options(args) == MaskOptions(cleaning="none", dilate=0)
    assert read_options(args) == ReadOptions(batch_size=32, num_workers="auto", fast_decode=False)
    args = parser.parse_args(["score", "--refs", "r", "--judge-readout", "expected", "--prompt-file", "p.txt"])
    assert load_options(args) == LoadOptions(judge=JudgeOptions(prompt_file="p.txt", readout="expected"))
    args = parser.parse_args(["bench", "--out", "b", "--foreground", "--mask-dilate", "5"])
    assert mask_options(args) == MaskOptions(cleaning="authors", dilate=5)  # no --mask-cleaning: the default
    with pytest.raises(OptionError, match="mask dilation 2: must be 0"):
        mask_options(parser.parse_args(["bench", "--out", "b", "--mask-dilate", "2"]))


def test_a_negative_mask_dilation_is_an_argument_error(capsys):
    assert main(["score", "--refs", "r", "--mask-dilate", "-1"]) == 2
    assert "argument --mask-dilate: -1: give an integer of at least 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- options the source mentions

#: ``nearid <command>`` and the command-line tokens after it on the same line, up to quoting or punctuation
MENTION = re.compile(r"\bnearid ([a-z]+)((?:[ \t]+[^\s`'\"(),;]+)*)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def mentions(text: str) -> list[tuple[str, str]]:
    """``(command, option)`` for each option named after ``nearid <command>`` in ``text``."""
    return [(m.group(1), option) for m in MENTION.finditer(text) for option in OPTION.findall(m.group(2))]


def source_mentions() -> dict[tuple[str, str], list[str]]:
    """Every ``nearid <command> ... --option`` in the strings (messages, help, docstrings) and comments
    of src/nearid, with where."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        strings = [
            (node.value, node.lineno)
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
        comments = [
            (token.string, token.start[0])
            for token in tokenize.generate_tokens(io.StringIO(text).readline)
            if token.type == tokenize.COMMENT
        ]
        for value, line in strings + comments:
            for mention in mentions(value):
                found.setdefault(mention, []).append(f"{path.relative_to(SRC)}:{line}")
    return found


def test_the_mention_finder():
    text = "run `nearid bench --model NAME` or nearid score --refs a --gens b, not nearid train --nope; see --x"
    assert mentions(text) == [("bench", "--model"), ("score", "--refs"), ("score", "--gens"), ("train", "--nope")]
    assert mentions("nearid bench ... --num-shards S --shard-index I") == [
        ("bench", "--num-shards"),
        ("bench", "--shard-index"),
    ]


def test_every_option_the_source_mentions_exists_on_its_command():
    commands = subcommands()
    found = source_mentions()
    wrong = {
        f"nearid {command} {option}": places
        for (command, option), places in found.items()
        if command not in commands or option not in visible_names(commands[command])
    }
    assert wrong == {}
    # the finder sees the messages this test was written for (it would pass vacuously otherwise)
    assert {
        ("bench", "--model"),
        ("score", "--mask-folder"),
        ("bench", "--num-shards"),
        ("train", "--backbone"),
    } <= set(found)
