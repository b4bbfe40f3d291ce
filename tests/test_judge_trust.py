"""Issue 21 (trust, third round), judges' results: unanswered trials, rubrics, NaN in results files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from nearid.bench.run import run_bench
from nearid.eval.results import BenchResults, read_results
from tests.test_pair_bench import SOURCES, config, data, judge  # noqa: F401  (fixtures)


def _strict(text: str):
    """JSON as jq / JavaScript read it: a bare NaN / Infinity token is an error."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_results_of_an_all_nan_judge_are_strict_json_and_report_quietly(data, tmp_path, judge, capsys):  # noqa: F811
    """Issue 21.25: results.json held bare NaN tokens and `nearid report` printed numpy RuntimeWarnings."""
    from nearid.cli.app import main

    _, made_kw, _ = judge
    made_kw.update(nan_every=1)  # a judge that answers nothing
    run_bench(config(data, tmp_path, encoders=["judge:2", "tiny:2"]))
    text = (tmp_path / "results.json").read_text()
    values = _strict(text)  # raised "not JSON: NaN" before
    judged = values["encoders"]["judge(tiny:2 (untrained))"]
    assert judged["judgments"]["no_answer"] == judged["judgments"]["pairs"] > 0
    again = read_results(tmp_path / "results.json", (BenchResults,))  # null is read back
    assert again.to_json() == text
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert main(["report", str(tmp_path / "results.json"), "--out", str(tmp_path / "report.html")]) == 0
    assert "RuntimeWarning" not in capsys.readouterr().err


def _affected_trials(plan, pairs, unanswered):
    """[N, 3, 2] True where a trial reads a judged pair that got no answer (by hand, from the plan)."""
    import numpy as np

    from nearid.eval.metrics import VIEW_PAIRS

    lost = {tuple(pairs.rows[p]) for p in np.flatnonzero(unanswered)}
    out = np.zeros((len(plan.views), 3, 2), dtype=bool)
    for _source, dist in list(plan.distractors.items())[:1]:
        for i, views in enumerate(plan.views):
            for k, (a, b) in enumerate(VIEW_PAIRS):
                for d, v in enumerate((a, b)):
                    out[i, k, d] = (views[a], views[b]) in lost or (views[v], dist[i][v]) in lost
    return out


def test_an_unanswered_trial_is_lost_by_default():
    """Issue 21.7: a judge's NaN answer dropped its trials, so not answering a hard pair cost nothing."""
    import numpy as np

    from nearid.eval.evaluate import fill_tables, fill_tables_from_judgments, plan_judged_pairs
    from nearid.eval.metrics import discrimination, nearid_margins
    from tests.test_pair_bench import _plan_from_matrix

    plan, matrix = _plan_from_matrix(n_identities=6, sources=("A",), seed=3)
    pairs = plan_judged_pairs(plan)
    scores = np.array([matrix[a] @ matrix[b] for a, b in pairs.rows])
    unanswered = np.zeros(len(scores), dtype=bool)
    unanswered[::3] = True
    scores[unanswered] = np.nan
    # by hand: the encoder's margins, with every trial that reads an unanswered pair set to a loss
    table = fill_tables(plan, matrix)["A"]
    margins = nearid_margins(table.pair, table.own_background)
    affected = _affected_trials(plan, pairs, unanswered) & ~np.isnan(margins)
    assert affected.any()
    judged = fill_tables_from_judgments(plan, pairs, scores)["A"].scores()
    expected = discrimination(np.where(affected, -1.0, margins))
    assert (judged.n_trials, judged.n_wins, judged.n_samples, judged.n_all_win) == (
        expected.n_trials,
        expected.n_wins,
        expected.n_samples,
        expected.n_all_win,
    )
    assert judged.n_unanswered == int(affected.sum())
    # the published protocol's rule (NaN-aware: unanswered trials are no trials), only when asked for
    skipped = fill_tables_from_judgments(plan, pairs, scores, unanswered="skip")["A"].scores()
    by_hand = discrimination(np.where(affected, np.nan, margins))
    assert (skipped.n_trials, skipped.n_wins, skipped.n_unanswered) == (by_hand.n_trials, by_hand.n_wins, 0)


def test_unanswered_trials_are_reported_beside_ssr_pa(data, tmp_path, judge, capsys):  # noqa: F811
    """Issue 21.7: the count of unanswered trials is in results tables and in `nearid metrics`."""
    from nearid.cli.app import main

    _, made_kw, _ = judge
    made_kw.update(nan_every=5)
    results = run_bench(config(data, tmp_path, encoders=["judge:1", "tiny:1"], mtg=None))
    judged, encoder = results.encoders["judge(tiny:1 (untrained))"], results.encoders["tiny:1 (untrained)"]
    group = "all sources"
    lost = judged.nearid.groups[group].score
    assert lost.n_trials == encoder.nearid.groups[group].score.n_trials and lost.n_unanswered > 0
    header = (tmp_path / "results.md").read_text().splitlines()[2]
    assert "unanswered" in header, header
    capsys.readouterr()
    csv = tmp_path / judged.sims_folder / f"{SOURCES[0]}_full.csv"
    assert main(["metrics", str(csv)]) == 0
    per_source = judged.nearid.per_source[SOURCES[0]]
    assert f"{per_source.n_unanswered} unanswered" in capsys.readouterr().out
    assert main(["metrics", "--json", str(csv)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["n_unanswered"], printed["pa"]) == (per_source.n_unanswered, pytest.approx(per_source.pa))


def _synth(root, seed: int):
    from nearid.data.synth import SynthConfig, generate

    generate(root, SynthConfig(identities=20, size=40, seed=seed, val=2, test=6, mtg_train=0, mtg_test=0, workers=1))


def test_merge_of_a_judges_shards_writes_the_judge(data, tmp_path, judge, capsys):  # noqa: F811
    """Issue 21.15: `nearid merge` on a sharded bench with a judge left the judge out of results.json."""
    from nearid.cli.app import main

    out = tmp_path / "sharded"
    for index in (0, 1):
        run_bench(config(data, out, encoders=["judge:2", "tiny:2"], mtg=None, num_shards=2, shard_index=index))
    assert main(["merge", str(out)]) == 0
    merged = read_results(out / "results.json", (BenchResults,))
    fresh = run_bench(config(data, tmp_path / "fresh", encoders=["judge:2", "tiny:2"], mtg=None))
    assert set(merged.encoders) == set(fresh.encoders) == {"judge(tiny:2 (untrained))", "tiny:2 (untrained)"}
    for name in fresh.encoders:
        assert merged.encoders[name].nearid == fresh.encoders[name].nearid, name


def test_bench_merge_after_the_data_changed_says_so(tmp_path, judge, capsys):  # noqa: F811
    """Issue 21.21: `merge` after the data was regenerated blamed the shards ("a shard did not finish")."""
    from nearid.cli.app import main

    data_root, out = tmp_path / "synth", tmp_path / "sharded"
    _synth(data_root, 11)
    for index in (0, 1):
        run_bench(config(data_root, out, encoders=["judge:2", "tiny:2"], mtg=None, num_shards=2, shard_index=index))
    import shutil

    shutil.rmtree(data_root)
    _synth(data_root, 12)  # the data regenerated at the same path
    capsys.readouterr()
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert "synth: its content changed since the records" in err and "run the shards again" in err, err
    assert "did not finish" not in err and err.count("\n") == 1


def test_bench_results_never_mix_data_contents(tmp_path, capsys):
    """Issue 21.3: data regenerated at the same path, a second encoder into the same --out: the first
    encoder's numbers on the old data must not sit beside the second's; the same data through a link is
    the same benchmark."""
    import shutil

    data_root, out = tmp_path / "synth", tmp_path / "out"
    _synth(data_root, 11)
    run_bench(config(data_root, out, encoders=["tiny:1"], mtg=None))
    link = tmp_path / "link"
    link.symlink_to(data_root)
    both = run_bench(config(link, out, encoders=["histogram"], mtg=None))  # the same data: accepted, kept
    assert set(both.encoders) == {"tiny:1 (untrained)", "histogram:8"}
    shutil.rmtree(data_root)
    _synth(data_root, 12)
    run_bench(config(data_root, out, encoders=["histogram"], mtg=None))
    now = read_results(out / "results.json", (BenchResults,))
    assert set(now.encoders) == {"histogram:8"}  # tiny:1 was on the old data: moved aside
    stale = read_results(out / "results.stale.json", (BenchResults,))
    assert "tiny:1 (untrained)" in stale.encoders
    fresh = run_bench(config(data_root, tmp_path / "fresh", encoders=["histogram"], mtg=None))
    assert now.encoders["histogram:8"].nearid == fresh.encoders["histogram:8"].nearid
    assert now.encoders["histogram:8"].calibration == fresh.encoders["histogram:8"].calibration


def test_two_rubrics_are_two_results(tmp_path, capsys):
    """Issue 21.8: two --prompt-file rubrics for one judge wrote one results.json entry (`vlm:X@expected`),
    the second replacing the first. The rubric is part of what a judge's result is: an entry each."""
    import hashlib

    from nearid.cli.app import main
    from nearid.tiny.judge import save_tiny_judge

    data_root = tmp_path / "synth"
    from nearid.data.synth import SynthConfig, generate

    generate(data_root, SynthConfig(identities=8, size=40, seed=5, val=1, test=3, mtg_train=0, mtg_test=0, workers=1))
    vlm = save_tiny_judge(tmp_path / "judge", seed=0)
    out = tmp_path / "out"
    argv = ["bench", "--model", f"vlm:{vlm}", "--data", str(data_root), "--sources", "Part", "--out", str(out)]
    argv += ["--device", "cpu", "--judge-readout", "expected", "--judge-batch-size", "4"]
    rubrics = {}
    for name, text in (("a.txt", "Same object? Answer JSON with score 0-10."), ("b.txt", "Same thing? JSON score.")):
        (tmp_path / name).write_text(text)
        rubrics[name] = text
        assert main([*argv, "--prompt-file", str(tmp_path / name)]) == 0
    assert main(argv) == 0  # the built-in rubric keeps its plain name
    written = read_results(out / "results.json", (BenchResults,))
    base = f"vlm:{vlm}@expected"
    expected = {base} | {f"{base}#{hashlib.sha256(t.encode()).hexdigest()[:8]}" for t in rubrics.values()}
    assert set(written.encoders) == expected, set(written.encoders)
    folders = {entry.sims_folder for entry in written.encoders.values()}
    assert len(folders) == 3


def test_bench_with_a_judge_twice_and_after_a_change_equals_a_fresh_out(tmp_path, judge, capsys):  # noqa: F811
    """Issue 21, acceptance for `bench` with a judge: twice into one --out, then after the data was
    regenerated: the judge's and the encoder's entries equal a fresh --out's each time."""
    import shutil

    data_root, out = tmp_path / "synth", tmp_path / "out"
    _synth(data_root, 11)
    encoders = ["judge:3", "tiny:3"]
    first = run_bench(config(data_root, out, encoders=encoders, mtg=None))
    again = run_bench(config(data_root, out, encoders=encoders, mtg=None))
    for name, entry in first.encoders.items():
        assert again.encoders[name].nearid == entry.nearid and again.encoders[name].calibration == entry.calibration
    shutil.rmtree(data_root)
    _synth(data_root, 12)
    changed = run_bench(config(data_root, out, encoders=encoders, mtg=None))
    fresh = run_bench(config(data_root, tmp_path / "fresh", encoders=encoders, mtg=None))
    written = read_results(out / "results.json", (BenchResults,))
    assert set(written.encoders) == set(fresh.encoders)
    for name, entry in fresh.encoders.items():
        assert changed.encoders[name].nearid == written.encoders[name].nearid == entry.nearid, name
        assert written.encoders[name].calibration == entry.calibration


def test_the_published_rule_for_unanswered_pairs_is_an_explicit_option_with_its_own_entry(
    data,  # noqa: F811
    tmp_path,
    judge,  # noqa: F811
    capsys,
):
    """Issue 21.7's last clause: the published protocol's rule (an unanswered pair is no trial, spec 12.7)
    is behind `--judge-unanswered skip`, never the default. Both rules into one --out give two entries, each
    equal to the metrics of its rule computed from the judge's own table; `nearid merge` keeps both."""
    from nearid.cli.app import main
    from nearid.eval.metrics import nearid_scores
    from nearid.eval.simtables import read_nearid_csv

    _, made_kw, _ = judge
    made_kw.update(nan_every=5)
    lose = run_bench(config(data, tmp_path, encoders=["judge:1"], mtg=None))
    skip = run_bench(config(data, tmp_path, encoders=["judge:1"], mtg=None, judge_unanswered="skip"))
    name = "judge(tiny:1 (untrained))"
    assert list(skip.encoders) == [name, f"{name} [unanswered skipped]"]
    lost, skipped = skip.encoders[name], skip.encoders[f"{name} [unanswered skipped]"]
    assert lost.nearid == lose.encoders[name].nearid  # the first entry stays as it was
    assert (lost.judgments.unanswered, skipped.judgments.unanswered) == ("lose", "skip")
    assert skipped.judgments.no_answer == lost.judgments.no_answer > 0
    # by hand from the lose rule's table: unanswered cells are -inf (true pair) / +inf (distractor); the
    # skip rule's trials are exactly the finite ones
    pair, cross = read_nearid_csv(tmp_path / lost.sims_folder / f"{SOURCES[0]}_full.csv")
    reference = nearid_scores(np.where(np.isinf(pair), np.nan, pair), np.where(np.isinf(cross), np.nan, cross))
    ours = skipped.nearid.per_source[SOURCES[0]]
    assert (ours.n_trials, ours.n_wins, ours.n_unanswered) == (reference.n_trials, reference.n_wins, 0)
    assert ours.n_trials < lost.nearid.per_source[SOURCES[0]].n_trials
    assert main(["merge", str(tmp_path)]) == 0
    merged = read_results(tmp_path / "results.json", (BenchResults,))
    assert merged.encoders[f"{name} [unanswered skipped]"].nearid == skipped.nearid
    assert merged.encoders[name].nearid == lost.nearid
    from nearid.io.errors import NearIDError

    with pytest.raises(NearIDError, match="--judge-unanswered 'maybe': use one of lose, skip"):
        run_bench(config(data, tmp_path / "other", encoders=["judge:1"], mtg=None, judge_unanswered="maybe"))
