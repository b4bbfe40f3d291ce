"""Issue 12, "Trust across repeated runs" (items 3-5): runs into the same ``--out`` never mix.

* ``nearid train`` into a folder that holds a run is refused unless ``--resume`` (continue) or
  ``--overwrite`` (remove what the earlier run made, then start as in a new folder); ``--overwrite``
  removes only a folder carrying nearid's marker.
* ``--resume`` refuses settings that differ from the run's ``config.json`` (naming each), except those
  that cannot change the head: logging / checkpoint / validation cadence, and ``--max-steps``.
* Meaningless settings (``--epochs 0``, ``--batch-size 0``, ``"lr": "fast"``) are one line before any model loads.
* ``nearid bench`` merges ``results.json`` per encoder under a file lock: a second encoder, run after or
  at the same time, keeps the first; a different benchmark into the same folder is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nearid.bench.run import BenchConfig, run_bench
from nearid.cli.app import main
from nearid.data.synth import SynthConfig, generate
from nearid.eval.results import BenchResults, read_results
from nearid.io.errors import NearIDError
from nearid.io.ownership import MARKER
from nearid.training.trainer import TrainConfig, train

TRAIN_ARGS = [
    "--sources",
    "Part",
    "--backbone",
    "tiny",
    "--batch-size",
    "4",
    "--warmup-steps",
    "1",
    "--lr",
    "1e-3",
    "--save-steps",
    "2",
    "--log-steps",
    "100",
]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "synth"
    generate(
        root,
        SynthConfig(
            identities=16, size=32, seed=3, val=2, test=6, mtg_train=0, mtg_test=3, workers=1, sources=("Part", "Shape")
        ),
        progress=False,
    )
    return root


def train_config(data, out, **overrides) -> TrainConfig:
    values = dict(
        data=str(data),
        out=str(out),
        sources=["Part"],
        backbone="tiny",
        batch_size=4,
        epochs=2,
        warmup_steps=1,
        lr=1e-3,
        save_steps=2,
        log_steps=100,
    )
    values.update(overrides)
    return TrainConfig(**values)


def checkpoints(run: Path) -> dict[str, dict]:
    return {p.name: load_file(p / "head.safetensors") for p in sorted((run / "checkpoints").glob("step-*"))}


def assert_same_heads(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ------------------------------------------------------------------------------ train: --out holds a run
def test_second_train_without_resume_is_refused(data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), *TRAIN_ARGS, "--epochs", "2", "--max-steps", "2", "--out", str(out)]
    assert main(argv) == 0
    before = checkpoints(out)
    assert (out / MARKER).is_file()  # the run folder is nearid's, so --overwrite may delete it later
    capsys.readouterr()
    assert main([*argv[:-2], "--lr", "0.5", "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "--resume" in line and "--overwrite" in line
    after = checkpoints(out)
    assert_same_heads(after["step-2"], before["step-2"])
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3  # config.json still describes the run


def test_overwrite_gives_the_checkpoints_of_a_fresh_run(data, tmp_path):
    out = tmp_path / "run"
    train(train_config(data, out, max_steps=6))  # step-2, step-4, step-6 of the first run
    second = dict(lr=3e-3, seed=1, max_steps=4)
    result = train(train_config(data, out, **second), overwrite=True)
    fresh = train(train_config(data, tmp_path / "fresh", **second))
    assert result["step"] == fresh["step"] == 4 and result["checkpoint"].endswith("step-4")
    got, expected = checkpoints(out), checkpoints(tmp_path / "fresh")
    assert sorted(got) == sorted(expected) == ["step-2", "step-4"]  # the first run's step-6 is gone
    for name in expected:
        assert_same_heads(got[name], expected[name])
    assert json.loads((out / "config.json").read_text())["lr"] == 3e-3
    assert (out / MARKER).is_file()


def test_overwrite_deletes_no_folder_nearid_did_not_make(data, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    argv = ["train", "--data", str(data), *TRAIN_ARGS, "--max-steps", "1", "--out", str(out)]
    assert main([*argv, "--overwrite"]) == 2
    assert "not made by nearid" in one_error_line(capsys.readouterr().err)
    assert main(argv) == 2  # nor does a plain run write into it
    assert str(out) in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_resume_and_overwrite_together_are_refused(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nearid.models.backbones.load_backbone", _no_model)
    argv = ["train", "--data", str(data), *TRAIN_ARGS, "--out", str(tmp_path / "run"), "--resume", "--overwrite"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--resume" in line and "--overwrite" in line


def test_a_fresh_train_into_an_empty_folder_is_allowed(data, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert train(train_config(data, out, max_steps=1))["step"] == 1
    assert (out / MARKER).is_file()


# ------------------------------------------------------------------------------ train: --resume settings
def test_resume_with_changed_settings_is_refused_naming_each(data, tmp_path, capsys):
    out = tmp_path / "run"
    train(train_config(data, out, max_steps=2))
    saved = (out / "config.json").read_text()
    argv = ["train", "--data", str(data), *TRAIN_ARGS, "--max-steps", "4", "--out", str(out), "--resume"]
    lr_at = argv.index("--lr") + 1
    changed = [*argv[:lr_at], "0.5", *argv[lr_at + 1 :]]
    assert main(changed) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "lr" in line and "0.5" in line and "batch_size" not in line
    batch_at = argv.index("--batch-size") + 1
    assert main([*changed[:batch_at], "8", *changed[batch_at + 1 :]]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "lr" in line and "batch_size" in line
    assert (out / "config.json").read_text() == saved  # never rewritten by a refused resume
    assert sorted(checkpoints(out)) == ["step-2"]


def test_resume_with_a_larger_max_steps_continues_the_same_run(data, tmp_path):
    out = tmp_path / "run"
    train(train_config(data, out, max_steps=2))
    resumed = train(train_config(data, out, max_steps=4, log_steps=1, save_steps=1), resume=True)
    fresh = train(train_config(data, tmp_path / "fresh", max_steps=4))
    assert resumed["step"] == fresh["step"] == 4
    assert_same_heads(checkpoints(out)["step-4"], checkpoints(tmp_path / "fresh")["step-4"])
    assert json.loads((out / "config.json").read_text())["max_steps"] == 4  # records how far the run went


def test_resume_of_a_folder_without_a_run_starts_one(data, tmp_path):
    assert train(train_config(data, tmp_path / "new", max_steps=1), resume=True)["step"] == 1
    assert (tmp_path / "new" / MARKER).is_file()


def test_resume_of_a_run_made_before_markers(data, tmp_path, capsys):
    """A run folder written by an earlier nearid has no marker: it may be resumed (nothing is deleted), not
    overwritten, and a plain run into it is refused."""
    out = tmp_path / "run"
    train(train_config(data, out, max_steps=2))
    (out / MARKER).unlink()
    assert train(train_config(data, out, max_steps=3), resume=True)["step"] == 3
    with pytest.raises(NearIDError, match="not made by nearid"):
        train(train_config(data, out, max_steps=3), overwrite=True)
    with pytest.raises(NearIDError, match="--resume"):
        train(train_config(data, out, max_steps=3))
    assert (out / "checkpoints" / "step-3").is_dir()


# ------------------------------------------------------------------------------ train: meaningless settings
def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the settings were checked")


@pytest.mark.parametrize(
    "option, value",
    [
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--batch-size", "-1"),
        ("--lr", "0"),
        ("--lr", "-1e-4"),
        ("--lr", "nan"),
        ("--save-steps", "0"),
        ("--max-steps", "0"),
        ("--warmup-steps", "-1"),
        ("--log-steps", "0"),
    ],
)
def test_meaningless_settings_are_one_line_before_a_model_loads(data, tmp_path, capsys, monkeypatch, option, value):
    monkeypatch.setattr("nearid.models.backbones.load_backbone", _no_model)
    argv = ["train", "--data", str(data), *TRAIN_ARGS, "--out", str(tmp_path / "run"), f"{option}={value}"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    # the option's type refuses it (argparse) or TrainConfig does (a config file's value): either names it
    assert line.startswith("nearid train: error: ") and (
        f"{option} must be" in line or f"argument {option}: " in line
    ), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "setting, value",
    [
        ("lr", "fast"),
        ("epochs", 1.5),
        ("batch_size", "8"),
        ("epochs", True),
        ("sources", "Part"),
        ("mask_probs", [0.5, 2.0, 0.1]),
        ("flip_prob", -0.1),
        ("mixed_precision", "fp8"),
        ("cache_tokens", "yes"),
    ],
)
def test_meaningless_values_in_a_config_file(data, tmp_path, capsys, monkeypatch, setting, value):
    monkeypatch.setattr("nearid.models.backbones.load_backbone", _no_model)
    config = {"data": str(data), "out": str(tmp_path / "run"), "sources": ["Part"], "backbone": "tiny", setting: value}
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert main(["train", "--config", str(tmp_path / "c.json")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert setting in line and "c.json" in line
    assert not (tmp_path / "run").exists()


def test_a_config_file_number_may_be_written_as_an_integer(data, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"data": str(data), "out": "o", "lr": 1, "weight_decay": 0}))
    config = TrainConfig.from_options(tmp_path / "c.json")
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.weight_decay == 0.0


# ------------------------------------------------------------------------------ bench: results.json merged per encoder
def bench_argv(data, out, encoder: str, *more: str) -> list[str]:
    return [
        "bench",
        "--encoder",
        encoder,
        "--data",
        str(data),
        "--sources",
        "Part",
        "Shape",
        "--mtg",
        str(data / "MTG"),
        "--device",
        "cpu",
        "--out",
        str(out),
        *more,
    ]


def bench_config(data, out, encoders, **overrides) -> BenchConfig:
    values = dict(
        encoders=encoders, data=str(data), sources=["Part", "Shape"], out=str(out), mtg=str(data / "MTG"), device="cpu"
    )
    values.update(overrides)
    return BenchConfig(**values)


def test_two_encoders_one_after_the_other_are_both_kept(data, tmp_path):
    run_bench(bench_config(data, tmp_path / "both", ["tiny"]))
    merged = run_bench(bench_config(data, tmp_path / "both", ["histogram"]))
    on_disk = read_results(tmp_path / "both" / "results.json", (BenchResults,))
    assert on_disk == merged and list(on_disk.encoders) == ["tiny:0 (untrained)", "histogram:8"]
    for spec, name in (("tiny", "tiny:0 (untrained)"), ("histogram", "histogram:8")):
        alone = run_bench(bench_config(data, tmp_path / spec, [spec])).encoders[name]
        got = on_disk.encoders[name]
        assert got.nearid == alone.nearid and got.calibration == alone.calibration and got.mtg == alone.mtg
    for suffix in ("md", "csv", "tex"):  # the tables are rendered from the merged results
        text = (tmp_path / "both" / f"results.{suffix}").read_text()
        assert "tiny:0" in text and "histogram:8" in text, suffix
    assert any("[histogram:8]" in line for line in on_disk.log) and any("[tiny:0" in line for line in on_disk.log)


def test_rerunning_an_encoder_replaces_only_its_entry(data, tmp_path):
    run_bench(bench_config(data, tmp_path, ["tiny", "histogram"]))
    again = run_bench(bench_config(data, tmp_path, ["histogram"]))
    assert list(again.encoders) == ["tiny:0 (untrained)", "histogram:8"]
    assert again.encoders["histogram:8"].embeddings_computed == 0  # this run's entry, from the store


@pytest.mark.slow
def test_two_encoders_at_the_same_time_are_both_kept(data, tmp_path):
    out = tmp_path / "both"
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "nearid", *bench_argv(data, out, encoder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(__file__).parent,
        )
        for encoder in ("tiny", "histogram")
    ]
    for run in runs:
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, output[-3000:]
    results = read_results(out / "results.json", (BenchResults,))
    assert set(results.encoders) == {"tiny:0 (untrained)", "histogram:8"}
    alone = run_bench(bench_config(data, tmp_path / "alone", ["tiny", "histogram"]))
    for name, result in alone.encoders.items():
        assert results.encoders[name].nearid == result.nearid and results.encoders[name].mtg == result.mtg
    table = (out / "results.md").read_text()
    assert "tiny:0" in table and "histogram:8" in table


@pytest.mark.parametrize("more, field", [(["--split", "val"], "split"), (["--masks"], "condition")])
def test_another_benchmark_into_the_same_out_is_refused_before_embedding(
    data, tmp_path, capsys, monkeypatch, more, field
):
    assert main(bench_argv(data, tmp_path, "histogram")) == 0
    saved = (tmp_path / "results.json").read_text()
    capsys.readouterr()
    monkeypatch.setattr("nearid.models.encoders.load_encoder", _no_model)
    assert main(bench_argv(data, tmp_path, "tiny", *more)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert field in line and "another --out" in line
    assert (tmp_path / "results.json").read_text() == saved


def test_other_sources_into_the_same_out_are_refused(data, tmp_path):
    run_bench(bench_config(data, tmp_path, ["histogram"]))
    with pytest.raises(NearIDError, match="sources"):
        run_bench(bench_config(data, tmp_path, ["histogram"], sources=["Part"]))


# ------------------------------------------------------------------------------ the merge itself (no model)
def _results(data: str, **encoders: int) -> BenchResults:
    from nearid.eval.metrics import DiscriminationScore
    from nearid.eval.results import BenchInfo, EncoderResult, NearIDResult, SourceGroup

    def result(wins: int) -> EncoderResult:
        score = DiscriminationScore(n_samples=4, n_all_win=wins // 2, n_trials=8, n_wins=wins)
        return EncoderResult(spec="x", nearid=NearIDResult({"A": score}, {"all sources": SourceGroup(["A"], score)}))

    info = BenchInfo(data=data, sources=["A"], condition="full", identities=4)
    return BenchResults(info, {name: result(wins) for name, wins in encoders.items()}, log=[f"run {sorted(encoders)}"])


def test_merge_adds_new_encoders_replaces_rerun_ones_and_keeps_the_rest(tmp_path):
    from nearid.eval.results import merge_bench_results

    path = tmp_path / "results.json"
    merge_bench_results(path, _results("d", a=1, b=2))
    merged = merge_bench_results(path, _results("d", b=7, c=3))
    assert read_results(path, (BenchResults,)) == merged
    assert list(merged.encoders) == ["a", "b", "c"]
    assert [merged.encoders[n].nearid.per_source["A"].n_wins for n in "abc"] == [1, 7, 3]
    assert merged.log == ["run ['a', 'b']", "run ['b', 'c']"]
    with pytest.raises(NearIDError, match=r"data: 'd' -> 'e'.*another --out"):
        merge_bench_results(path, _results("e", d=1))
    assert read_results(path, (BenchResults,)) == merged
    (tmp_path / "old.json").write_text(json.dumps({"benchmark": {}, "encoders": {}}))  # schema version 1
    with pytest.raises(NearIDError, match="another --out"):
        merge_bench_results(tmp_path / "old.json", _results("d", a=1))


def test_merges_at_the_same_time_wait_for_the_lock(tmp_path, monkeypatch):
    """Two writers that both read before either writes would lose one's encoders; the lock serialises
    read-merge-write (each writer here is slowed down between its read and its write)."""
    import threading
    import time

    import nearid.eval.results as results
    from nearid.eval.results import merge_bench_results, results_lock

    read = results.read_results

    def slow_read(*args, **kwargs):
        found = read(*args, **kwargs)
        time.sleep(0.3)
        return found

    monkeypatch.setattr(results, "read_results", slow_read)
    merge_bench_results(tmp_path / "results.json", _results("d", first=1))

    def writer(name: str) -> None:
        with results_lock(tmp_path):
            merge_bench_results(tmp_path / "results.json", _results("d", **{name: 2}))

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(read(tmp_path / "results.json").encoders) == {"first", "a", "b"}
