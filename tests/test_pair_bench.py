"""Pair scorers (a VLM judge) in `nearid bench`: only the pairs the metrics read are asked, judgments are
kept in a content-keyed store (a repeated run asks nothing, an interrupted one resumes), and the pair path
on an encoder gives the encoder's own results."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nearid
from nearid.bench.judgments import JudgmentStore, pair_key
from nearid.bench.run import BenchConfig, run_bench
from nearid.cli.app import main
from nearid.data.synth import SynthConfig, generate
from nearid.eval.evaluate import (
    ImagePlan,
    fill_tables,
    fill_tables_from_judgments,
    mtg_similarities,
    mtg_similarities_from_judgments,
    plan_images,
    plan_judged_pairs,
    score_tables,
)
from nearid.eval.metrics import nearid_scores
from nearid.eval.results import BenchResults
from nearid.eval.simtables import read_nearid_csv
from nearid.images.decode import ImageRef
from nearid.judges import loading as judge_loading
from nearid.models import specs
from nearid.models.pair_scorers import EncoderPairScorer

SOURCES = ["Part", "Shape"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairbench") / "synth"
    generate(
        root,
        SynthConfig(identities=20, size=40, seed=11, val=2, test=6, mtg_train=0, mtg_test=4, workers=1),
        progress=False,
    )
    return root


class CountingScorer:
    """A pair scorer over an encoder that records every pair it is asked (by image keys) and every call."""

    def __init__(self, encoder, *, quantise: bool = False, fail_after: int | None = None, nan_every: int = 0):
        self.inner = EncoderPairScorer(encoder)
        self.name = f"judge({encoder.name})"
        self.fingerprint = nearid.io.fingerprint.of_json({"test judge": self.inner.fingerprint, "q": quantise})
        self.asked: list[tuple[str, str]] = []
        self.calls: list[int] = []
        self.quantise, self.fail_after, self.nan_every = quantise, fail_after, nan_every

    def score_pairs(self, pairs, masks=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # an interrupted run
        self.calls.append(len(pairs))
        self.asked += [(a.cache_key, b.cache_key) for a, b in pairs]
        scores = self.inner.score_pairs(pairs, masks)
        if self.quantise:  # a judge's 0-10 integer scale: many ties
            scores = np.round(scores * 10) / 10
        if self.nan_every:
            scores[:: self.nan_every] = np.nan
        return scores


@pytest.fixture
def judge(monkeypatch):
    """``load_metric`` answers ``judge:<tiny seed>`` (a spec registered for this test) with a CountingScorer."""
    made = []
    real_load, real_parse = judge_loading.load_metric, specs.parse_encoder_spec
    options = {}

    def parse(spec):
        return real_parse("tiny:" + spec.split(":", 1)[1]) if str(spec).startswith("judge:") else real_parse(spec)

    def load(spec, load_options=None, **kw):  # bench passes a LoadOptions (its judge part: a judge's options)
        if str(spec).startswith("judge:"):
            given = load_options.judge.as_kwargs() if load_options is not None else kw.get("judge_options")
            options["judge_options"] = given
            encoder = nearid.load_encoder("tiny:" + spec.split(":", 1)[1], device="cpu")
            made.append(CountingScorer(encoder, **made_kw))
            return made[-1]
        return real_load(spec, load_options, **kw)

    made_kw: dict = {}
    monkeypatch.setattr(specs, "parse_encoder_spec", parse)
    monkeypatch.setattr(judge_loading, "load_metric", load)
    return made, made_kw, options


def config(data, out, **overrides):
    values = dict(encoders=["tiny"], data=str(data), sources=SOURCES, out=str(out), mtg=str(data / "MTG"))
    values.update(overrides)
    return BenchConfig(**values)


# ------------------------------------------------------------------------------------ pure planning
def _plan_from_matrix(n_identities=5, sources=("A", "B"), seed=0):
    """An ImagePlan with random unit vectors, some views and distractors missing, and two MTG samples."""
    rng = np.random.default_rng(seed)
    plan = ImagePlan()
    ref = lambda key: ImageRef(key, lambda: b"")
    views, dists = [], {s: [] for s in sources}
    for i in range(n_identities):
        plan.ids.append(i)
        plan.categories.append("c")
        row = [plan.add(ref(f"v{i}-{j}"), None) if not (i == 1 and j == 2) else -1 for j in range(3)]
        views.append(row)
        for s in sources:
            dists[s].append(
                [plan.add(ref(f"{s}{i}-{j}"), None) if row[j] >= 0 and (i, j) != (2, 0) else -1 for j in range(3)]
            )
    plan.views = np.array(views)
    plan.distractors = {s: np.array(r) for s, r in dists.items()}
    plan.mtg = np.array([[plan.add(ref(f"m{m}-{k}"), None) for k in range(4)] for m in range(2)])
    matrix = rng.normal(size=(len(plan), 8))
    return plan, matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_judged_pairs_are_exactly_the_cells_the_metrics_read():
    plan, matrix = _plan_from_matrix()
    pairs = plan_judged_pairs(plan)
    # identity 1 has 2 views (1 pair, 2 own-background distractors per source), identity 2 misses
    # the distractor of view 0 in both sources, the others have 3 + 3 per source; MTG 5 per sample
    assert len(pairs) == 3 * (3 + 6) + (1 + 4) + (3 + 4) + 2 * 5
    assert pairs.full_table == 3 * (3 + 2 * 9) + (1 + 2 * 4) + (3 + 2 * 6) + 2 * 5
    assert len(pairs.groups) == 5 + 2 and sorted(np.concatenate(pairs.groups)) == list(range(len(pairs)))
    scores = np.einsum("pd,pd->p", matrix[pairs.rows[:, 0]], matrix[pairs.rows[:, 1]])
    judged, full = fill_tables_from_judgments(plan, pairs, scores), fill_tables(plan, matrix)
    for source in full:
        np.testing.assert_allclose(judged[source].pair, full[source].pair, atol=1e-12)
        np.testing.assert_allclose(judged[source].own_background, full[source].own_background, atol=1e-12)
        off = ~np.eye(3, dtype=bool)
        assert np.isnan(judged[source].cross[:, off]).all()  # never asked
        assert np.isfinite(full[source].cross[:, off]).any()
    assert score_tables(judged) == score_tables(full)  # the metrics read no cell that was not asked
    # ... and whatever stands in the cells not asked changes nothing
    for table in full.values():
        table.cross[:, ~np.eye(3, dtype=bool)] = 5.0
    assert score_tables(judged) == score_tables(full)
    for name, values in mtg_similarities(plan, matrix).items():
        np.testing.assert_allclose(mtg_similarities_from_judgments(plan, pairs, scores)[name], values, atol=1e-12)


def test_a_tie_loses():
    plan, _ = _plan_from_matrix()
    pairs = plan_judged_pairs(plan)
    scores = np.full(len(pairs), 0.7)  # a judge that answers 7 to everything
    result = score_tables(fill_tables_from_judgments(plan, pairs, scores))
    score = result.groups["all sources"].score
    assert score.n_trials > 0 and (score.n_wins, score.n_all_win, score.n_mean_win) == (0, 0, 0)


def test_judgment_store_round_trip_and_refuses_another_scorer(tmp_path):
    store = JudgmentStore(tmp_path / "j", "judge", "a" * 64)
    store.add([pair_key("x", "y"), pair_key("y", "x")], [0.5, np.nan], writer="0")
    store.add([], [])  # nothing: no shard
    again = JudgmentStore(tmp_path / "j", "judge (another spelling)", "a" * 64)
    assert again.keys() == {"x || y", "y || x"}
    loaded = again.load()
    assert loaded["x || y"] == 0.5 and np.isnan(loaded["y || x"])
    assert len(list((tmp_path / "j").glob("shard-*"))) == 1
    with pytest.raises(nearid.NearIDError, match="another scorer"):
        JudgmentStore(tmp_path / "j", "judge", "b" * 64)


# ------------------------------------------------------------------------------------ nearid bench
def test_encoder_pair_scorer_gives_the_encoders_results(data, tmp_path, judge):
    made, _, _ = judge
    results = run_bench(config(data, tmp_path, encoders=["tiny:3", "judge:3"]))
    encoder, judged = results.encoders["tiny:3 (untrained)"], results.encoders["judge(tiny:3 (untrained))"]
    assert judged.nearid == encoder.nearid  # every count of every source and group
    assert judged.mtg.discrimination == encoder.mtg.discrimination
    np.testing.assert_allclose(judged.mtg.correlations, encoder.mtg.correlations, atol=1e-6)
    assert judged.calibration.threshold.balanced_accuracy == pytest.approx(
        encoder.calibration.threshold.balanced_accuracy
    )
    # only the pairs the metrics read were asked, each once, all pairs of an identity in one call
    bench = nearid.data.load_nearid(data, SOURCES, split="test")
    plan = plan_images(bench, SOURCES, mtg=nearid.data.load_mtg(data / "MTG", split="test"))
    pairs = plan_judged_pairs(plan)
    scorer = made[0]
    assert len(scorer.asked) == len(set(scorer.asked)) == len(pairs) == judged.judgments.pairs
    assert judged.judgments.computed == len(pairs) and judged.judgments.no_answer == 0
    assert judged.judgments.full_table > len(pairs)
    assert len(scorer.calls) == len(bench) + 4  # one call per identity, one per MTG sample
    assert set(scorer.asked) == {(plan.keys[a], plan.keys[b]) for a, b in pairs.rows}
    assert any(f"pairs the metrics read: {len(pairs)} (a full table would take" in line for line in results.log)
    # the same outputs as an encoder's: CSVs, tables, a readable results file
    folder = tmp_path / judged.sims_folder
    assert (folder / "Part_full.csv").is_file() and (folder / "mtg_full.csv").is_file()
    assert BenchResults.from_json((tmp_path / "results.json").read_text()) == results


def test_a_repeated_run_asks_nothing_and_an_interrupted_one_resumes(data, tmp_path, judge, monkeypatch):
    import nearid.bench.run as bench_module

    made, made_kw, _ = judge
    monkeypatch.setattr(bench_module, "JUDGE_CHUNK", 10_000)  # no flush but the one on the way out
    made_kw.update(quantise=True, fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        run_bench(config(data, tmp_path, encoders=["judge:2"], mtg=None))
    first = made[-1].asked
    assert first
    made_kw.update(fail_after=None)
    resumed = run_bench(config(data, tmp_path, encoders=["judge:2"], mtg=None)).encoders["judge(tiny:2 (untrained))"]
    second = made[-1].asked
    stored = set(JudgmentStore(next((tmp_path / "judgments").iterdir()), "x", made[-1].fingerprint).keys())
    assert {pair_key(*pair) for pair in first} <= stored  # what the interrupted run judged was kept ...
    assert not set(first) & set(second)  # ... and not asked again
    assert len(first) + len(second) == resumed.judgments.pairs and len(second) == resumed.judgments.computed
    again = run_bench(config(data, tmp_path, encoders=["judge:2"], mtg=None)).encoders["judge(tiny:2 (untrained))"]
    assert made[-1].asked == [] and again.judgments.computed == 0
    assert again.nearid == resumed.nearid
    fresh = run_bench(config(data, tmp_path / "fresh", encoders=["judge:2"], mtg=None))
    assert fresh.encoders["judge(tiny:2 (untrained))"].nearid == resumed.nearid  # resuming changed nothing


def test_no_answers_are_counted_and_their_trials_are_lost(data, tmp_path, judge):
    _, made_kw, _ = judge
    made_kw.update(nan_every=5)
    results = run_bench(config(data, tmp_path, encoders=["judge:1", "tiny:1"], mtg=None))
    judged, encoder = results.encoders["judge(tiny:1 (untrained))"], results.encoders["tiny:1 (untrained)"]
    assert judged.judgments.no_answer > 0
    assert any(f"no answer (NaN) for {judged.judgments.no_answer} of" in line for line in results.log)
    group = "all sources"  # unanswered trials are trials, lost (issue 21.7)
    assert judged.nearid.groups[group].score.n_trials == encoder.nearid.groups[group].score.n_trials
    assert judged.nearid.groups[group].score.n_unanswered > 0
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["encoders"]["judge(tiny:1 (untrained))"]["judgments"]["no_answer"] == judged.judgments.no_answer
    assert "judgments" not in written["encoders"]["tiny:1 (untrained)"]  # encoders' entries keep their layout


def test_cli_bench_with_a_judge_and_an_encoder_in_one_results_file(data, tmp_path, judge, capsys):
    made, _, options = judge
    argv = ["bench", "--encoder", "judge:4", "--encoder", "tiny", "--data", str(data), "--sources", *SOURCES]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    written = json.loads((tmp_path / "results.json").read_text())
    assert set(written["encoders"]) == {"judge(tiny:4 (untrained))", "tiny:0 (untrained)"}
    for entry in written["encoders"].values():
        assert {"ssr", "pa"} <= set(entry["nearid"]["groups"]["all sources"])
    assert options["judge_options"] == {
        "prompt_file": None,
        "readout": "generate",
        "max_new_tokens": 512,
        "judge_batch_size": 8,
        "parser": "authors",
        "pixels": "fast",
    }
    assert main(argv) == 0  # again: the judge is asked nothing new
    assert made[-1].asked == [] and "judged now: 0" in capsys.readouterr().out


def test_report_of_a_bench_with_a_judge(data, tmp_path, judge):
    from nearid.report.html import write_report

    _, made_kw, _ = judge
    made_kw.update(quantise=True)
    results = run_bench(config(data, tmp_path, encoders=["judge:5", "tiny:5"]))
    judged = results.encoders["judge(tiny:5 (untrained))"]
    for source in SOURCES:  # the judge's CSVs (empty off-diagonal cells) re-score to its numbers
        table = read_nearid_csv(tmp_path / judged.sims_folder / f"{source}_full.csv")
        assert nearid_scores(*table) == judged.nearid.per_source[source]
    html = write_report(tmp_path / "results.json").read_text()
    assert "judge(tiny:5 (untrained))" in html and "tiny:5" in html
    counts = judged.judgments
    assert "<h3>Pair scorers (judges)</h3>" in html
    assert f"<td>{counts.pairs}</td><td>{counts.full_table}</td><td>{counts.computed}</td><td>0</td>" in html
    assert 'class="note"' not in html  # every sims table was read back


@pytest.mark.slow
def test_two_processes_split_the_identities_and_give_the_same_numbers(data, tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    script = Path(__file__).with_name("pair_bench_torchrun.py")
    argv = ["bench", "--encoder", "judge:6", "--data", str(data), "--sources", *SOURCES, "--mtg", str(data / "MTG")]
    runs = {}
    for name, launcher in (("one", [sys.executable]), ("two", [torchrun, "--standalone", "--nproc_per_node", "2"])):
        done = subprocess.run(
            [*launcher, str(script), *argv, "--out", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=300,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(script.parent.parent / "src"), os.environ.get("PYTHONPATH", "")]),
            },
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())["encoders"]["judge(tiny:6 (untrained))"]
    assert runs["two"]["nearid"] == runs["one"]["nearid"]
    assert runs["two"]["mtg"]["n_wins"] == runs["one"]["mtg"]["n_wins"]
    asked = [json.loads((tmp_path / "two" / f"asked-{rank}.json").read_text()) for rank in (0, 1)]
    assert asked[0] and asked[1]  # both processes judged ...
    assert not {tuple(p) for p in asked[0]} & {tuple(p) for p in asked[1]}  # ... other pairs
    assert len(asked[0]) + len(asked[1]) == runs["two"]["judgments"]["pairs"] == runs["two"]["judgments"]["computed"]


def test_a_judges_shards_fill_its_store_and_an_unsharded_run_finishes(data, tmp_path, judge, capsys):
    """A pair scorer under --num-shards judges only its share of the identities, writes no results,
    and says how to finish; the un-sharded run then asks exactly the pairs no shard asked and gives
    a one-process run's numbers."""
    made, _, _ = judge
    run_bench(config(data, tmp_path, encoders=["judge:2"], mtg=None, num_shards=2, shard_index=0))
    share = set(made[-1].asked)
    assert share and not (tmp_path / "results.json").exists()
    assert "judgments stored" in capsys.readouterr().out
    finished = run_bench(config(data, tmp_path, encoders=["judge:2"], mtg=None))
    rest = set(made[-1].asked)
    entry = finished.encoders["judge(tiny:2 (untrained))"]
    assert rest and not share & rest and len(share) + len(rest) == entry.judgments.pairs
    fresh = run_bench(config(data, tmp_path / "fresh", encoders=["judge:2"], mtg=None))
    assert fresh.encoders["judge(tiny:2 (untrained))"].nearid == entry.nearid


def test_score_refuses_to_shard_a_pair_scorer(tmp_path, judge, capsys):
    """`nearid merge` writes an encoder's score shards only: a judge under --num-shards is refused with
    one line naming it, and nothing is written."""
    from PIL import Image

    for side in ("refs", "gens"):
        (tmp_path / side).mkdir()
        Image.new("RGB", (24, 24), (200, 30, 30)).save(tmp_path / side / "a.png")
    out = tmp_path / "scores.csv"
    argv = ["score", "--refs", str(tmp_path / "refs"), "--gens", str(tmp_path / "gens"), "--model", "judge:1"]
    assert main([*argv, "--out", str(out), "--num-shards", "2", "--shard-index", "0"]) == 2
    err = capsys.readouterr().err
    assert "--num-shards: judge:1 is a pair scorer; shards split encoders' scoring only" in err
    assert err.count("\n") == 1 and not list(tmp_path.glob("scores.csv*"))
