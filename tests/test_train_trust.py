"""Issue 21, acceptance for `nearid train --token-cache auto`: twice into one --out (the second refused
with one line), after the inputs changed (--overwrite: a fresh run's heads), and twice at the same time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from nearid.cli.app import main
from nearid.data.synth import SynthConfig, generate
from tests.test_repeated_runs_runs import TRAIN_ARGS, assert_same_heads, checkpoints, one_error_line


def _data(root, seed: int):
    config = SynthConfig(
        identities=16, size=32, seed=seed, val=2, test=6, mtg_train=0, mtg_test=0, workers=1, sources=("Part", "Shape")
    )
    generate(root, config, progress=False)
    return root


def _argv(data, out, *more):
    return [
        "train",
        "--data",
        str(data),
        *TRAIN_ARGS,
        "--max-steps",
        "4",
        "--token-cache",
        "auto",
        *more,
        "--out",
        str(out),
    ]


def test_train_auto_twice_and_after_the_inputs_changed(tmp_path, capsys):
    data, out = _data(tmp_path / "synth", 3), tmp_path / "run"
    assert main(_argv(data, out)) == 0
    before = checkpoints(out)
    capsys.readouterr()
    assert main(_argv(data, out)) == 2  # again into the same --out: refused, one line, nothing changed
    assert "--resume" in one_error_line(capsys.readouterr().err)
    assert_same_heads(checkpoints(out)["step-4"], before["step-4"])
    shutil.rmtree(data)
    _data(data, 4)  # the inputs changed at the same path
    assert main(_argv(data, out, "--overwrite")) == 0
    assert main(_argv(data, tmp_path / "fresh")) == 0
    got, fresh = checkpoints(out), checkpoints(tmp_path / "fresh")
    assert sorted(got) == sorted(fresh)
    for name in fresh:
        assert_same_heads(got[name], fresh[name])


@pytest.mark.slow
def test_train_auto_twice_at_the_same_time(tmp_path):
    """Two processes into one new --out at once: each finishes with a fresh run's heads, or is refused
    with one line (exit 2) leaving the other's run as a fresh run's."""
    data, out = _data(tmp_path / "synth", 3), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "nearid", *_argv(data, out)]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    for status, err in results:
        assert status == 0 or (status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err), err
    assert any(status == 0 for status, _ in results)
    assert main(_argv(data, tmp_path / "fresh")) == 0
    got, fresh = checkpoints(out), checkpoints(tmp_path / "fresh")
    assert sorted(got) == sorted(fresh)
    for name in fresh:
        assert_same_heads(got[name], fresh[name])


def test_a_second_train_into_an_out_being_written_is_refused_with_one_line(tmp_path, capsys):
    """Issue 21, `train` concurrently with itself: a run that starts while another run is writing the same
    --out is refused in one line before it touches the folder -- even with other settings,
    where both would otherwise pass the empty-folder check and write one folder together."""
    from nearid.io.locks import output_lock

    data, out = _data(tmp_path / "synth", 3), tmp_path / "run"
    with output_lock(out, "nearid train"):  # as a first run holds it from its check to its last checkpoint
        assert main(_argv(data, out, "--seed", "7")) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "another nearid train" in err and "--out" in err
    assert not out.exists()
    assert main(_argv(data, out)) == 0  # released: the run goes through


@pytest.mark.slow
def test_train_with_other_settings_at_the_same_time_is_one_run_or_refused(tmp_path):
    """Two processes with different seeds into one new --out: the folder ends as exactly one of the two
    fresh runs (never a mixture), and a refused run says so in one line."""
    data, out = _data(tmp_path / "synth", 3), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    seeds = ("7", "8")
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "nearid", *_argv(data, out, "--seed", seed)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in seeds
    ]
    results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    for status, err in results:
        assert status == 0 or (status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err), err
    finished = [seed for seed, (status, _) in zip(seeds, results) if status == 0]
    assert finished
    got = checkpoints(out)
    matches = []
    for seed in seeds:
        assert main(_argv(data, tmp_path / f"fresh-{seed}", "--seed", seed)) == 0
        fresh = checkpoints(tmp_path / f"fresh-{seed}")
        try:
            assert sorted(got) == sorted(fresh)
            for name in fresh:
                assert_same_heads(got[name], fresh[name])
            matches.append(seed)
        except AssertionError:
            pass
    assert len(matches) == 1 and matches[0] in finished, (matches, finished)
