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
