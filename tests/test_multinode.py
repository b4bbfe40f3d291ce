"""More than one machine on accelerate (issue 14 item 6): two "machines" of one process each on the
loopback address (gloo on the CPU), started as a cluster would start them, with a shared --out, give
the results of a one-process run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from nearid.cli.app import main
from nearid.data.synth import SynthConfig, generate

# several processes or a fresh interpreter per test: `make test-fast` skips them
pytestmark = pytest.mark.slow

SOURCES = ["Instance", "Shape"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _csvs(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in (folder / "sims").rglob("*.csv")}


def test_two_machines_on_loopback_equal_one_process(tmp_path):
    generate(
        tmp_path / "data",
        SynthConfig(identities=16, size=48, seed=3, val=1, test=6, mtg_train=0, mtg_test=4, workers=1),
        progress=False,
    )
    bench = ["bench", "--encoder", "histogram", "--encoder", "tiny", "--data", str(tmp_path / "data")]
    bench += ["--sources", *SOURCES, "--mtg", str(tmp_path / "data" / "MTG")]
    assert main([*bench, "--out", str(tmp_path / "one")]) == 0

    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    cluster = ["--multi_gpu", "--num_machines", "2", "--num_processes", "2"]  # 2 machines x 1 process
    cluster += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())]
    ranks = [
        subprocess.Popen(
            # the same command on each machine but for its rank; one --out, shared by both
            [
                accelerate,
                "launch",
                *cluster,
                "--machine_rank",
                str(rank),
                "-m",
                "nearid",
                *bench,
                "--out",
                str(tmp_path / "two"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )
        for rank in (0, 1)
    ]
    try:
        outputs = [rank.communicate(timeout=300)[0] for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
    assert [rank.returncode for rank in ranks] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "processes: 2" in outputs[0] and "process 1: embedded" in outputs[1]

    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["benchmark"] == one["benchmark"]
    histogram = one["encoders"]["histogram:8"]
    assert histogram["nearid"]["groups"]["all sources"]["n_trials"] > 0
    assert two["encoders"]["histogram:8"] == histogram  # SSR, PA, MTG, calibration: every field
    tiny, other = one["encoders"]["tiny:0 (untrained)"], two["encoders"]["tiny:0 (untrained)"]
    assert other["nearid"] == tiny["nearid"]  # counts; the floats below round per batch composition
    assert other["calibration"] == pytest.approx(tiny["calibration"], abs=1e-6)
    assert other["mtg"].pop("correlations") == pytest.approx(tiny["mtg"].pop("correlations"), abs=1e-6)
    assert other["mtg"] == pytest.approx(tiny["mtg"], abs=1e-6)
    expected, got = _csvs(tmp_path / "one"), _csvs(tmp_path / "two")
    assert sorted(got) == sorted(expected)
    for name in expected:
        if name.startswith("sims/histogram"):
            assert got[name] == expected[name], name
