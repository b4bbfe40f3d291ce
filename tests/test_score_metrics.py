"""Several metrics in one `nearid score` run (a column each, a summary each, correlations, decisions),
pair scorers in `nearid score`, and the report of such a run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import scipy.stats

import nearid
from nearid.cli.app import main
from nearid.eval.metrics import Threshold
from nearid.eval.results import BenchInfo, BenchResults, Calibration, EncoderResult, NearIDResult, ScoreSummary
from nearid.eval.torchmetrics import identity_similarity
from nearid.judges import loading as judge_loading
from nearid.models import specs
from nearid.models.pair_scorers import EncoderPairScorer
from nearid.score.compute import score_metrics
from nearid.score.plan import plan_pairs

from .test_score import draw, rows

MODELS = ["tiny", "tiny:1", "histogram"]


@pytest.fixture
def subjects(tmp_path):
    for s, subject in enumerate(("dog", "cat")):
        for i in range(2):
            draw(tmp_path / "refs" / subject / f"ref{i}.png", 10 * s + i)
        for i in range(3):
            draw(tmp_path / "gens" / subject / f"sample{i}.png", 100 + 10 * s + i)
    return tmp_path


def cosines(encoder, plan) -> np.ndarray:
    """Per pair the cosine of the two images' embeddings, each image embedded by ``nearid.embed`` and
    compared in float64 numpy: independent of score's unique-input plan and its pair loop."""
    images = sorted({image for pair in plan.pairs for image in (pair.reference, pair.generated)})
    vectors = dict(zip(images, np.asarray(nearid.embed(encoder, images), dtype=np.float64)))
    return np.array(
        [
            vectors[p.reference]
            @ vectors[p.generated]
            / (np.linalg.norm(vectors[p.reference]) * np.linalg.norm(vectors[p.generated]))
            for p in plan.pairs
        ]
    )


def _argv(root, out, *models, extra=()):
    argv = ["score", "--refs", str(root / "refs"), "--gens", str(root / "gens"), "--out", str(out)]
    for model in models:
        argv += ["--model", model]
    return [*argv, "--device", "cpu", *extra]


class CountingJudge:
    """A pair scorer (the cosine of an encoder) that records its calls; ``nan_every`` leaves answers out."""

    def __init__(self, encoder, nan_every=0):
        self.inner = EncoderPairScorer(encoder)
        self.name, self.fingerprint = "judge", "j" * 64
        self.calls, self.nan_every = [], nan_every

    def score_pairs(self, pairs, masks=None):
        self.calls.append([(str(a), str(b)) for a, b in pairs])
        scores = self.inner.score_pairs(pairs, masks)
        if self.nan_every:
            scores[:: self.nan_every] = np.nan
        return scores


@pytest.fixture
def judge(monkeypatch):
    made, kw = [], {}
    real_load, real_parse = judge_loading.load_metric, specs.parse_encoder_spec

    def load(spec, **options):
        if spec == "judge":
            made.append(CountingJudge(nearid.load_encoder("tiny", device="cpu"), **kw))
            return made[-1]
        return real_load(spec, **options)

    # "judge" parses as a spec of its own (not tiny:0, which the same run may score too: one metric twice)
    monkeypatch.setattr(specs, "parse_encoder_spec", lambda s: real_parse("tiny:987" if s == "judge" else s))
    monkeypatch.setattr(judge_loading, "load_metric", load)
    return made, kw


def test_three_models_write_three_columns_a_summary_each_and_their_correlations(subjects, capsys):
    out = subjects / "out" / "s.csv"
    assert main(_argv(subjects, out, *MODELS)) == 0
    written = rows(out)
    assert len(written) == 12  # 6 generated x 2 references of their subject
    assert list(written[0]) == ["reference", "generated", "subject", *(f"similarity:{m}" for m in MODELS)]
    plan = plan_pairs(subjects / "refs", subjects / "gens")
    summary = json.loads((subjects / "out" / "s.csv.summary.json").read_text())
    assert list(summary["metrics"]) == MODELS
    columns = {}
    for model in MODELS:  # each column is the cosine of that model's embeddings of the pair's images
        alone = cosines(nearid.load_encoder(model, device="cpu"), plan)
        column = np.array([float(r[f"similarity:{model}"]) for r in written])
        np.testing.assert_allclose(column, alone, atol=2e-6)
        section = summary["metrics"][model]
        assert section["n_pairs"] == 12 and section["kind"] == "encoder"
        assert section["unique_images_embedded"] == 10  # 4 references + 6 generated, each once
        assert section["similarity"]["mean"] == pytest.approx(alone.mean(), abs=1e-6)
        assert set(section["per_subject"]) == {"dog", "cat"}
        columns[model] = column
    # the top level is the first metric's, so a one-model reader still finds its numbers
    assert (
        summary["model"] == "tiny:0 (untrained)" and summary["similarity"] == summary["metrics"]["tiny"]["similarity"]
    )
    assert len(summary["correlations"]) == 3
    pair = summary["correlations"]["tiny | histogram"]
    assert pair["n"] == 12
    assert pair["pearson"] == pytest.approx(scipy.stats.pearsonr(columns["tiny"], columns["histogram"])[0], abs=1e-5)
    assert pair["spearman"] == pytest.approx(
        scipy.stats.spearmanr(columns["tiny"], columns["histogram"]).statistic, abs=1e-5
    )
    printed = capsys.readouterr().out
    assert "tiny vs histogram: Pearson" in printed
    per_generated = rows(subjects / "out" / "s.csv.per_generated.csv")
    assert len(per_generated) == 6
    first = per_generated[0]
    of_first = [r for r in written if r["generated"] == first["generated"]]
    for model in MODELS:
        values = [float(r[f"similarity:{model}"]) for r in of_first]
        assert int(first[f"n_references:{model}"]) == 2
        assert float(first[f"mean:{model}"]) == pytest.approx(np.mean(values), abs=1e-6)
        assert float(first[f"max:{model}"]) == pytest.approx(np.max(values), abs=1e-6)
    # the torchmetrics metric gives each column's mean
    gens = [r["generated"] for r in written]
    refs = [r["reference"] for r in written]
    for model in MODELS:
        value = identity_similarity(nearid.load_encoder(model, device="cpu"), gens, refs)
        assert float(value) == pytest.approx(summary["metrics"][model]["similarity"]["mean"], abs=1e-6)


def test_each_unique_image_is_embedded_once_per_encoder(subjects, monkeypatch):
    encoders = [nearid.load_encoder(m, device="cpu") for m in ("tiny", "histogram")]
    seen = {e.name: [] for e in encoders}
    for encoder in encoders:
        original = encoder.preprocess
        monkeypatch.setattr(
            encoder,
            "preprocess",
            lambda images, masks=None, _o=original, _s=seen[encoder.name]: (
                _s.extend(map(str, images)),
                _o(images, masks),
            )[1],
        )
    result = score_metrics(
        [("tiny", encoders[0]), ("histogram", encoders[1])], plan_pairs(subjects / "refs", subjects / "gens")
    )
    for values in seen.values():
        assert len(values) == len(set(values)) == 10
    assert result.unique_images == 10 and all(np.isfinite(m.similarities).all() for m in result.metrics)


def test_one_model_keeps_its_layout(subjects):
    out = subjects / "one.csv"
    assert main(_argv(subjects, out, "tiny")) == 0
    assert list(rows(out)[0]) == ["reference", "generated", "subject", "similarity"]
    summary = json.loads((subjects / "one.csv.summary.json").read_text())
    assert not {"metrics", "correlations", "no_answer"} & set(summary)
    assert ScoreSummary.from_json((subjects / "one.csv.summary.json").read_text()).metrics is None


def test_option_errors(subjects, capsys):
    out = subjects / "s.csv"
    assert main(_argv(subjects, out, "tiny", "tiny")) == 2
    assert "--model tiny is given twice" in capsys.readouterr().err
    assert main(_argv(subjects, out, "tiny", "histogram", extra=["--threshold", "0.5"])) == 2
    assert "one number cannot cut 2 metrics" in capsys.readouterr().err
    assert main(_argv(subjects, out, "tiny", "nope")) == 2  # a bad second spec fails before any model loads
    assert "unknown encoder 'nope'" in capsys.readouterr().err
    assert not out.exists()


def test_calibrated_decisions_for_the_metrics_that_have_one(subjects, capsys):
    tiny = nearid.load_encoder("tiny", device="cpu")
    calibration = Calibration(Threshold(0.5, 90.0, 85.0, 95.0, 10, 20), split="val")
    entry = EncoderResult("tiny", NearIDResult({}, {}), fingerprint=tiny.fingerprint, calibration=calibration)
    info = BenchInfo(data="d", sources=[], condition="full", identities=0, split="val")
    BenchResults(info, {"tiny:0 (untrained)": entry}).write(subjects / "results.json")
    out = subjects / "s.csv"
    extra = ["--threshold", "calibrated", "--calibration", str(subjects / "results.json")]
    assert main(_argv(subjects, out, "tiny", "histogram", extra=extra)) == 0
    captured = capsys.readouterr()
    assert "no decision for this metric" in captured.err and "has no calibration for 'histogram:8'" in captured.err
    written = rows(out)
    assert "same:tiny" in written[0] and "same:histogram" not in written[0]
    assert [r["same:tiny"] for r in written] == [str(int(float(r["similarity:tiny"]) > 0.5)) for r in written]
    summary = json.loads((subjects / "s.csv.summary.json").read_text())
    same = sum(int(r["same:tiny"]) for r in written)
    assert summary["metrics"]["tiny"]["decisions"] == {"same": same, "different": 12 - same}
    assert summary["metrics"]["histogram"]["decisions"] is None
    # none of the metrics calibrated there: the error stands
    assert main(_argv(subjects, out, "histogram", "tiny:1", extra=extra)) == 2


def test_a_pair_scorer_in_score(subjects, judge, capsys):
    made, kw = judge
    out = subjects / "j.csv"
    assert main(_argv(subjects, out, "tiny", "judge")) == 0
    written = rows(out)
    np.testing.assert_allclose(
        [float(r["similarity:judge"]) for r in written], [float(r["similarity:tiny"]) for r in written], atol=1e-6
    )
    calls = made[-1].calls
    assert sorted(len(c) for c in calls) == [6, 6]  # one call per subject, only the listed pairs
    assert sorted(p for c in calls for p in c) == sorted((r["reference"], r["generated"]) for r in written)
    summary = json.loads((subjects / "j.csv.summary.json").read_text())
    assert summary["metrics"]["judge"]["kind"] == "pair scorer"
    assert summary["metrics"]["judge"]["unique_images_embedded"] == 0
    assert summary["correlations"]["tiny | judge"]["pearson"] == pytest.approx(1.0, abs=1e-6)
    # one judge alone: the one-model layout; its non-answers are counted
    kw["nan_every"] = 4
    out = subjects / "alone.csv"
    assert main(_argv(subjects, out, "judge")) == 0
    assert list(rows(out)[0]) == ["reference", "generated", "subject", "similarity"]
    assert len(rows(out)) == 12 - 2 * 2  # every 4th of each subject's 6 pairs got no answer
    summary = json.loads((subjects / "alone.csv.summary.json").read_text())
    assert summary["no_answer"] == 4 and summary["n_pairs"] == 8


def test_report_shows_the_metrics_side_by_side(subjects, judge):
    from nearid.report.html import write_report

    _, kw = judge
    kw["nan_every"] = 5
    out = subjects / "s.csv"
    assert main(_argv(subjects, out, "tiny", "histogram", "judge")) == 0
    html = write_report(subjects / "s.csv.summary.json").read_text()
    assert "<h2>Metrics side by side</h2>" in html and "<h2>Correlation between metrics</h2>" in html
    summary = json.loads((subjects / "s.csv.summary.json").read_text())
    for name in ("tiny", "histogram", "judge"):
        assert f"<td>{name}</td>" in html
        assert f"{summary['metrics'][name]['similarity']['mean']:.4f}" in html
    r = summary["correlations"]["tiny | histogram"]
    assert f"{r['pearson']:.3f}" in html and f"{r['spearman']:.3f}" in html
    assert "data:image/png;base64," in html  # the histograms


def test_summary_with_metrics_round_trips_and_old_summaries_read():
    summary = ScoreSummary("m", "paths", 1, 2, {"mean": 0.5}, metrics={"a": {"n_pairs": 1}}, correlations={})
    again = ScoreSummary.from_json(summary.to_json())
    assert again == summary
    old = json.loads(summary.to_json())
    for key in ("metrics", "correlations"):
        old.pop(key, None)
    assert ScoreSummary.from_json(json.dumps(old)).metrics is None


def _csv_header(path):
    with open(path, newline="") as handle:
        return next(csv.reader(handle))


def test_dreambench_writes_one_dbpp_file_per_metric(tmp_path):
    names = ["object_00_backpack-0", "object_00_backpack-1"]
    for i, name in enumerate(names):
        draw(tmp_path / "samples" / "src_image" / "object" / f"{name}.jpg", i)
        draw(tmp_path / "samples" / "tgt_image" / "object" / f"{name}.png", 5 + i)
    out = tmp_path / "emu2.csv"
    argv = [
        "score",
        "--refs",
        str(tmp_path / "samples"),
        "--model",
        "tiny",
        "--model",
        "histogram:4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    written = rows(out)
    assert [r["key"] for r in written] == [f"object-{n}" for n in names]
    for spec, file in (("tiny", "emu2.csv.tiny.dbpp.json"), ("histogram:4", "emu2.csv.histogram_4.dbpp.json")):
        scores = json.loads((tmp_path / file).read_text())
        assert scores == {r["key"]: pytest.approx(100 * float(r[f"similarity:{spec}"]), abs=1e-6) for r in written}
    assert not (tmp_path / "emu2.csv.dbpp.json").exists()
    assert _csv_header(out)[:4] == ["reference", "generated", "subject", "key"]


def _written(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    "models, extra",
    [
        (("tiny",), ("--threshold", "0.25")),  # the one-model layout, with decisions
        (("tiny", "histogram"), ()),  # a column, a summary section and a mean / max per metric
    ],
)
def test_run_score_writes_what_the_command_writes(subjects, capsys, models, extra):
    from nearid.score import ScoreConfig, run_score

    (subjects / "cli").mkdir()
    (subjects / "lib").mkdir()
    assert main(_argv(subjects, subjects / "cli" / "s.csv", *models, extra=extra)) == 0
    printed = capsys.readouterr()
    config = ScoreConfig(
        refs=subjects / "refs",
        gens=subjects / "gens",
        out=subjects / "lib" / "s.csv",
        models=models,
        threshold=extra[1] if extra else None,
    )
    logged, warned = [], []
    outcome = run_score(config, log=logged.append, warn=warned.append)
    cli, lib = _written(subjects / "cli"), _written(subjects / "lib")
    expected = ["s.csv", "s.csv.per_generated.csv", "s.csv.summary.json"]
    assert sorted(cli) == sorted(lib) == expected and cli == lib  # byte for byte
    assert "\n".join(logged).replace("/lib/", "/cli/") + "\n" == printed.out
    assert warned == [] and printed.err == ""
    assert outcome.scored_any and outcome.record is None
    assert [m.spec for m in outcome.result.metrics] == list(models)
    assert outcome.summary == ScoreSummary.from_json((subjects / "lib" / "s.csv.summary.json").read_text())
    first = np.array(
        [float(r["similarity" if len(models) == 1 else "similarity:tiny"]) for r in rows(subjects / "lib" / "s.csv")]
    )
    np.testing.assert_allclose(first, cosines(nearid.load_encoder("tiny", device="cpu"), outcome.plan), atol=2e-6)


def test_a_judge_that_answers_nothing_is_exit_2(subjects, judge, capsys):
    _, kw = judge
    kw["nan_every"] = 1
    out = subjects / "none.csv"
    assert main(_argv(subjects, out, "judge")) == 2
    assert capsys.readouterr().err == "nearid score: error: no pair could be scored; see the errors file\n"
    assert out.read_text() == "reference,generated,similarity\n"  # the one-model layout's empty output
    assert json.loads((subjects / "none.csv.summary.json").read_text())["no_answer"] == 12
