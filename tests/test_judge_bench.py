"""Issue 16's acceptance, end to end with the real judge code: ``nearid bench --encoder vlm:<tiny Qwen3-VL>
--encoder tiny`` writes both metrics in one results.json, a repeated run asks the judge nothing, and the
judge's tables hold exactly its ``score_pairs`` answers (the tiny judge's random weights make the numbers
meaningless; the path is what is tested). The ``expected`` readout keeps the run to one forward pass per call."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nearid.cli.app import main
from nearid.data.synth import SynthConfig, generate
from nearid.eval.metrics import nearid_scores
from nearid.eval.simtables import read_nearid_csv
from nearid.tiny.judge import save_tiny_judge

SOURCES = ["Part"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("judgebench") / "synth"
    generate(
        root,
        SynthConfig(identities=8, size=40, seed=5, val=1, test=3, mtg_train=0, mtg_test=0, workers=1),
        progress=False,
    )
    return root


def test_bench_with_a_vlm_judge_and_an_encoder(data, tmp_path, capsys):
    judge = save_tiny_judge(tmp_path / "judge", seed=0)
    out = tmp_path / "out"
    argv = ["bench", "--encoder", f"vlm:{judge}", "--encoder", "tiny", "--data", str(data), "--sources", *SOURCES]
    argv += ["--out", str(out), "--device", "cpu", "--judge-readout", "expected", "--judge-batch-size", "4"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    written = json.loads((out / "results.json").read_text())
    names = set(written["encoders"])
    assert len(names) == 2 and "tiny:0 (untrained)" in names
    (judge_name,) = names - {"tiny:0 (untrained)"}
    entry = written["encoders"][judge_name]
    counts = entry["judgments"]
    assert counts["computed"] == counts["pairs"] > 0 and counts["pairs"] < counts["full_table"]
    assert "s per pair" in first
    # the judge's table: scores in [0, 1] where asked, blank (NaN) elsewhere; the results are those of the table
    pair, cross = read_nearid_csv(out / entry["sims_folder"] / "Part_full.csv")
    asked = np.concatenate([pair[np.isfinite(pair)], cross[np.isfinite(cross)]])
    assert asked.size and (asked >= 0).all() and (asked <= 1).all()
    recomputed, reported = nearid_scores(pair, cross), entry["nearid"]["per_source"]["Part"]
    assert (recomputed.n_trials, recomputed.n_wins) == (reported["n_trials"], reported["n_wins"])
    assert recomputed.pa == pytest.approx(reported["pa"]) and recomputed.ssr == pytest.approx(reported["ssr"])
    # again: nothing new is asked, the file is the same
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "judged now: 0" in again
    rewritten = json.loads((out / "results.json").read_text())
    assert rewritten["encoders"][judge_name]["nearid"] == entry["nearid"]
    assert rewritten["encoders"][judge_name]["judgments"]["computed"] == 0


def _judge_bench_argv(judge, data, out) -> list[str]:
    """The bench of a VLM judge (one forward pass per call) and an encoder on ``data`` into ``out``."""
    argv = ["bench", "--encoder", f"vlm:{judge}", "--encoder", "tiny", "--data", str(data), "--sources", *SOURCES]
    return [*argv, "--out", str(out), "--device", "cpu", "--judge-readout", "expected", "--judge-batch-size", "4"]


def _assert_equals_fresh(out, fresh_out) -> None:
    """``out``'s results and every metric's tables equal ``fresh_out``'s (how many pairs or images each run
    computed aside; a judge was asked the same pairs)."""
    got = json.loads((out / "results.json").read_text())["encoders"]
    fresh = json.loads((fresh_out / "results.json").read_text())["encoders"]
    assert set(got) == set(fresh)
    for name in fresh:
        assert _without_counts(got[name]) == _without_counts(fresh[name]), name
        if "judgments" in fresh[name]:
            assert got[name]["judgments"]["pairs"] == fresh[name]["judgments"]["pairs"]
        pair, cross = read_nearid_csv(out / fresh[name]["sims_folder"] / "Part_full.csv")
        fresh_pair, fresh_cross = read_nearid_csv(fresh_out / fresh[name]["sims_folder"] / "Part_full.csv")
        np.testing.assert_array_equal(pair, fresh_pair)
        np.testing.assert_array_equal(cross, fresh_cross)


def _without_counts(entry: dict) -> dict:
    """An entry less what says how this run reached its numbers (how many pairs or images it computed)."""
    return {k: v for k, v in entry.items() if k not in {"judgments", "embeddings_computed"}}


@pytest.mark.slow
def test_bench_with_a_judge_concurrently_with_itself_equals_a_fresh_out(data, tmp_path):
    """Issue 21, acceptance for `bench` (judges) concurrently with itself: two processes run the same bench
    (a VLM judge and an encoder) into one --out at once. Each finishes or is refused in one line; the
    results equal a fresh --out's, and the judge's table holds one answer per asked pair (the store is not
    left with a half-written block or a pair judged twice into two different values)."""
    import os
    import subprocess
    import sys

    judge = save_tiny_judge(tmp_path / "judge", seed=0)

    def argv(out):
        return _judge_bench_argv(judge, data, out)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "both"
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "nearid", *argv(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    for status, err in results:
        lines = [line for line in err.strip().splitlines() if "%|" not in line]  # progress bars aside
        assert status == 0 or (status == 2 and len(lines) == 1 and "Traceback" not in err), err[-3000:]
    assert any(status == 0 for status, _ in results)
    assert main(argv(tmp_path / "fresh")) == 0
    _assert_equals_fresh(out, tmp_path / "fresh")


@pytest.mark.slow
def test_bench_with_a_judge_after_the_data_changed_equals_a_fresh_out(tmp_path):
    """Issue 21, acceptance for `bench` (judges) after its inputs changed: the same bench (a VLM judge and
    an encoder) into one --out, the data regenerated at the same path, the bench again: the numbers and
    the judge's tables equal a fresh --out's (the judge's stored answers were for other pixels)."""
    import shutil

    judge = save_tiny_judge(tmp_path / "judge", seed=0)
    data = tmp_path / "synth"

    def regenerate(seed):
        shutil.rmtree(data, ignore_errors=True)
        config = SynthConfig(identities=8, size=40, seed=seed, val=1, test=3, mtg_train=0, mtg_test=0, workers=1)
        generate(data, config, progress=False)

    def argv(out):
        return _judge_bench_argv(judge, data, out)

    regenerate(5)
    out = tmp_path / "out"
    assert main(argv(out)) == 0
    regenerate(6)
    assert main(argv(out)) == 0
    assert main(argv(tmp_path / "fresh")) == 0
    _assert_equals_fresh(out, tmp_path / "fresh")
