"""`nearid bench` end to end on a small synthetic benchmark: counts, CSVs, resume, 2 processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nearid.bench import BenchConfig, run_bench
from nearid.cli import main
from nearid.data import load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.metrics import nearid_scores
from nearid.simtables import read_mtg_csv, read_nearid_csv

SOURCES = ["Part", "Shape"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "synth"
    generate(root, SynthConfig(identities=24, size=48, seed=5, val=2, test=8, mtg_train=0, mtg_test=6, workers=1), progress=False)
    return root


def config(data, out, **overrides):
    values = dict(encoders=["tiny", "histogram"], data=str(data), sources=SOURCES, out=str(out), mtg=str(data / "MTG"))
    values.update(overrides)
    return BenchConfig(**values)


def expected_unique_images(data, masks=False) -> int:
    bench = load_nearid(data, SOURCES, split="test")
    views = sum(len(i.view_slots) for i in bench)
    distractors = sum(1 for i in bench for s in SOURCES for j in i.view_slots if i.distractor(s, j) is not None)
    return views + distractors + 6 * 4  # MTG: 2 originals + 2 edited per sample


def test_counts_tables_and_csvs(data, tmp_path):
    results = run_bench(config(data, tmp_path))
    unique = expected_unique_images(data)
    for name in ("tiny:0 (untrained)", "histogram:8"):
        result = results["encoders"][name]
        assert result["unique_images"] == unique and result["embeddings_computed"] == unique
        assert set(result["nearid"]["per_source"]) == set(SOURCES)
        assert result["nearid"]["groups"]["all sources"]["sources"] == SOURCES
        assert 0 <= result["mtg"]["pa"] <= 100 and -1 <= result["mtg"]["m_o"] <= 1
    assert results["encoders"]["tiny:0 (untrained)"]["untrained"] is True
    assert any(f"embeddings computed: {unique}" in line for line in results["log"])
    for suffix in ("json", "md", "csv", "tex"):
        assert (tmp_path / f"results.{suffix}").is_file()
    assert "| tiny:0 (untrained) |" in (tmp_path / "results.md").read_text()
    # the CSVs re-score to the same numbers through an independent path (`nearid metrics`)
    histogram = results["encoders"]["histogram:8"]
    folder = next(p for p in (tmp_path / "sims").iterdir() if p.name.startswith("histogram"))
    for source in SOURCES:
        score = nearid_scores(*read_nearid_csv(folder / f"{source}_full.csv"))
        assert score.as_dict() == pytest.approx(histogram["nearid"]["per_source"][source])
    sims, oracles = read_mtg_csv(folder / "mtg_full.csv")
    assert len(oracles[0]) == 6 and np.all((oracles[0] > 0) & (oracles[0] < 1))


def test_rerun_resumes_from_the_store(data, tmp_path):
    first = run_bench(config(data, tmp_path, encoders=["histogram"]))
    again = run_bench(config(data, tmp_path, encoders=["histogram"]))
    result = again["encoders"]["histogram:8"]
    assert result["embeddings_computed"] == 0 and result["unique_images"] == expected_unique_images(data)
    assert result["nearid"] == first["encoders"]["histogram:8"]["nearid"]


def test_masks_use_the_view_silhouette(data, tmp_path):
    results = run_bench(config(data, tmp_path, encoders=["histogram"], masks=True, mtg=None))
    assert results["benchmark"]["condition"] == "foreground"
    full = run_bench(config(data, tmp_path / "full", encoders=["histogram"], mtg=None))
    masked_pa = results["encoders"]["histogram:8"]["nearid"]["groups"]["all sources"]["pa"]
    full_pa = full["encoders"]["histogram:8"]["nearid"]["groups"]["all sources"]["pa"]
    assert masked_pa > full_pa  # the colour histogram is fooled by context, less so without it


def test_two_processes_give_the_same_numbers(data, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    argv = ["bench", "--encoder", "tiny", "--encoder", "histogram", "--data", str(data), "--sources", *SOURCES,
            "--mtg", str(data / "MTG")]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "nearid", *argv, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[:3000]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    for name, result in one["encoders"].items():
        other = two["encoders"][name]
        assert other["nearid"] == result["nearid"]
        correlations = other["mtg"].pop("correlations")
        assert correlations == pytest.approx(result["mtg"].pop("correlations"))
        assert other["mtg"] == pytest.approx(result["mtg"])
        assert other["embeddings_computed"] == result["unique_images"]
    assert "process 1: embedded" in done.stdout and "processes: 2" in done.stdout


def test_metrics_command_pools_csvs(data, tmp_path, capsys):
    run_bench(config(data, tmp_path, encoders=["histogram"], mtg=None))
    capsys.readouterr()
    folder = next((tmp_path / "sims").iterdir())
    paths = [str(folder / f"{s}_full.csv") for s in SOURCES]
    assert main(["metrics", *paths, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    pooled = json.loads((tmp_path / "results.json").read_text())["encoders"]["histogram:8"]["nearid"]["groups"]["all sources"]
    assert printed == {k: pytest.approx(pooled[k]) for k in ("ssr", "pa", "n_samples", "n_trials")}


def test_metrics_command_errors(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,sim_01,sim_02\n1,0.5,\n")
    assert main(["metrics", str(bad)]) == 2
    assert "bad.csv: missing column 'sim_12'" in capsys.readouterr().err
    bad.write_text("sample_id,sim_01,sim_02,sim_12,cross_00,cross_11,cross_22\n1,0.5,,,abc,0.1,\n")
    assert main(["metrics", str(bad)]) == 2
    assert "bad.csv: line 2, column cross_00: 'abc' is not a number" in capsys.readouterr().err


def test_authors_layout_by_hand(tmp_path, capsys):
    table = tmp_path / "sims.csv"
    table.write_text(
        "sample_id,n_pos,n_neg,sim_01,sim_02,sim_12,cross_00,cross_01,cross_10,cross_11,cross_22\n"
        "7,2,2,0.8,,,0.5,0.1,0.2,0.9,\n"  # delta(0->1)=0.3 win, delta(1->0)=-0.1 loss
        "9,3,3,0.9,0.8,0.7,0.1,,,0.2,0.3\n"  # all 6 win
    )
    assert main(["metrics", str(table), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ssr": 50.0, "pa": pytest.approx(700 / 8), "n_samples": 2, "n_trials": 8}
