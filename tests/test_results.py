"""The results schema: round trips, versions, and one-line errors for files it cannot read."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from nearid.eval.metrics import DiscriminationScore, MTGScore, Threshold
from nearid.eval.results import (
    SCHEMA_VERSION,
    BenchInfo,
    BenchResults,
    Calibration,
    EncoderResult,
    NearIDResult,
    ResultsError,
    ScoreSummary,
    SourceGroup,
    read_results,
)


def bench_results() -> BenchResults:
    a, b = DiscriminationScore(10, 4, 50, 31, 7), DiscriminationScore(8, 0, 30, 12, 2)
    nearid = NearIDResult({"A": a, "B": b}, {"all sources": SourceGroup(["A", "B"], a + b)})
    mtg = MTGScore(
        m_o=0.25,
        m_opair=0.5,
        correlations=(0.1, float("nan"), -0.2, 0.3),
        discrimination=DiscriminationScore(6, 1, 12, 5),
    )
    calibration = Calibration(Threshold(0.61, 80.0, 70.0, 90.0, 18, 36), split=None, split_file="splits/val.json")
    encoder = EncoderResult(
        "histogram",
        nearid,
        unique_images=90,
        embeddings_computed=12,
        sims_folder="sims/h",
        calibration=calibration,
        mtg=mtg,
    )
    info = BenchInfo(
        data="out/synth",
        sources=["A", "B"],
        condition="full",
        identities=10,
        split=None,
        split_file="splits/val.json",
        load_report="10 identities from 10 rows",
        mtg="out/synth/MTG",
        mtg_split="test",
        mtg_samples=6,
    )
    return BenchResults(info, {"histogram:8": encoder}, log=["one line"])


def test_bench_results_round_trip_and_layout(tmp_path):
    results = bench_results()
    path = results.write(tmp_path / "results.json")
    back = read_results(path)
    assert isinstance(back, BenchResults)
    assert back.to_json() == results.to_json()
    assert back.encoders["histogram:8"].nearid == results.encoders["histogram:8"].nearid
    raw = json.loads(path.read_text())
    assert (raw["schema_version"], raw["kind"]) == (SCHEMA_VERSION, "bench")
    assert (raw["benchmark"]["split"], raw["benchmark"]["split_file"]) == (None, "splits/val.json")
    group = raw["encoders"]["histogram:8"]["nearid"]["groups"]["all sources"]
    assert group == {
        "ssr": 100 * 4 / 18,
        "pa": 100 * 43 / 80,
        "pa_published": 100 * (43 + 9) / (80 + 18),
        "n_samples": 18,
        "n_all_win": 4,
        "n_trials": 80,
        "n_wins": 43,
        "n_mean_win": 9,
        "sources": ["A", "B"],
    }
    assert raw["encoders"]["histogram:8"]["calibration"]["value"] == 0.61
    assert raw["encoders"]["histogram:8"]["mtg"]["ssr"] == pytest.approx(100 / 6)
    assert math.isnan(back.encoders["histogram:8"].mtg.correlations[1])
    assert back.benchmark.split_label == "splits/val.json"


def test_score_summary_round_trip(tmp_path):
    summary = ScoreSummary(
        model="tiny",
        pairing="paths",
        n_pairs=2,
        unique_images_embedded=4,
        similarity={"mean": 0.5, "median": 0.5, "std": 0.1, "min": 0.4, "max": 0.6},
        per_subject={"dog": {"n": 2, "mean": 0.5, "median": 0.5}},
        pairs_file="s.csv",
    )
    path = summary.write(tmp_path / "s.summary.json")
    assert read_results(path) == summary
    assert read_results(path, (ScoreSummary,)) == summary
    with pytest.raises(ResultsError, match=r"holds score results; expected a `nearid bench` results\.json"):
        read_results(path, (BenchResults,))


@pytest.mark.parametrize(
    "content, why",
    [
        (None, "no such file"),
        ("{not json", "not readable as JSON"),
        ("[1, 2]", "not a nearid results file"),
        ('{"kind": "table"}', "not a nearid results file"),
        ('{"benchmark": {}, "encoders": {}}', "bench results of schema version 1, this nearid reads version 2"),
        ('{"kind": "score", "model": "x"}', "score results of schema version 1, this nearid reads version 2"),
        ('{"kind": "bench", "schema_version": 3}', "bench results of schema version 3"),
        (
            '{"kind": "bench", "schema_version": 2, "benchmark": {"data": "d"}, "encoders": {}}',
            "malformed bench results (missing field 'sources')",
        ),
        (
            (
                '{"kind": "bench", "schema_version": 2, "benchmark": {"data": "d", "sources": [], "condition": "full", '
                '"identities": 1}, "encoders": {"x": {"spec": "x", "nearid": {"per_source": {"A": {"n_samples": "many"}}}}}}'
            ),
            "malformed bench results",
        ),
        ('{"kind": "score", "schema_version": 2, "model": "x"}', "malformed score results"),
    ],
)
def test_unreadable_files_are_one_line_errors(tmp_path, content, why):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsError) as caught:
        read_results(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {why}"), message
    assert "\n" not in message


def test_reading_results_does_not_import_torch(tmp_path):
    """results, tables and metrics stay numpy-only (the package's own ``__init__`` is stood in for here:
    what it imports is another module's business)."""
    import nearid

    path = bench_results().write(tmp_path / "results.json")
    code = (
        "import sys, types; package = types.ModuleType('nearid'); "
        f"package.__path__ = [{nearid.__path__[0]!r}]; sys.modules['nearid'] = package; "
        "from nearid.eval.results import read_results; from nearid.report.tables import markdown; "
        "import nearid.eval.simtables, nearid.eval.evaluate; "
        f"print(markdown(read_results({str(path)!r}))); assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| histogram:8 | 22.2 | 53.8 |" in done.stdout and "(splits/val.json, 10 identities" in done.stdout
