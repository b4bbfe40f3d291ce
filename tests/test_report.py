"""`nearid report`: one self-contained HTML page from bench results or a score summary."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import stat
import statistics

import numpy as np
import pytest
from PIL import Image, ImageDraw

from nearid.bench.run import BenchConfig, run_bench
from nearid.data.synth import SynthConfig, generate
from nearid.eval.metrics import nearid_margins
from nearid.eval.results import ScoreSummary
from nearid.eval.simtables import read_nearid_csv
from nearid.io.errors import NearIDError
from nearid.report import score_page
from nearid.report.html import GALLERY, write_report
from nearid.report.score_page import MetricSummary, metric_summaries

SOURCES = ["Part", "Shape"]
ENCODER = "histogram:8"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A small benchmark run with MTG: (results folder, results dict)."""
    root = tmp_path_factory.mktemp("report")
    data = root / "synth"
    generate(
        data,
        SynthConfig(identities=16, size=48, seed=3, val=2, test=10, mtg_train=0, mtg_test=4, workers=1),
        progress=False,
    )
    results = run_bench(
        BenchConfig(
            encoders=["histogram"], data=str(data), sources=SOURCES, out=str(root / "bench"), mtg=str(data / "MTG")
        )
    )
    return root / "bench", results


@pytest.fixture(scope="module")
def bench_report(bench):
    folder, _ = bench
    return write_report(folder / "results.json")


def assert_self_contained(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    assert "url(" not in text and "@import" not in text
    references = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", text)
    assert references and all(ref.startswith("data:") for ref in references), references[:3]


def worst_margins_from_csvs(folder, results, n: int) -> list[float]:
    """Per identity its most negative directed margin over all sources, the ``n`` lowest first."""
    sims = folder / results.encoders[ENCODER].sims_folder
    worst = {}
    for source in SOURCES:
        path = sims / f"{source}_full.csv"
        with open(path, newline="") as handle:
            ids = [row["sample_id"] for row in csv.DictReader(handle)]
        for sample_id, margins in zip(ids, nearid_margins(*read_nearid_csv(path))):
            worst[sample_id] = min(worst.get(sample_id, np.inf), np.nanmin(margins))
    return sorted(worst.values())[:n]


def test_bench_report_is_one_self_contained_file(bench, bench_report):
    folder, _ = bench
    assert bench_report == folder / "report.html" and bench_report.is_file()
    text = bench_report.read_text()
    assert_self_contained(text)
    assert text.count('src="data:image/png;base64,') == 4  # similarities, margins, per-source bars, MTG
    assert not list(folder.glob(".report.html.*"))  # no temporary file left behind


def test_metrics_table_shows_the_results_numbers(bench, bench_report, tmp_path):
    folder, results = bench
    result = results.encoders[ENCODER]
    pooled, mtg = result.nearid.groups["all sources"].score, result.mtg
    expected = [f"{pooled.ssr:.1f}", f"{pooled.pa:.1f}", f"{pooled.pa_published:.1f}"]
    expected += [f"{getattr(result.nearid.per_source[s], m):.1f}" for s in SOURCES for m in ("ssr", "pa")]
    expected += [f"{mtg.m_o:.3f}", f"{mtg.m_opair:.3f}", f"{mtg.ssr:.1f}", f"{mtg.pa:.1f}"]
    text = bench_report.read_text()
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", text) if r.startswith(f"<td>{ENCODER}"))
    assert re.findall(r"<td>(.*?)</td>", row)[1:] == expected
    assert 'class="badge">untrained' not in text
    # an untrained encoder is marked
    marked = json.loads((folder / "results.json").read_text())
    marked["encoders"][ENCODER]["untrained"] = True
    (folder / "untrained.json").write_text(json.dumps(marked))
    assert 'class="badge">untrained' in write_report(folder / "untrained.json", tmp_path / "u.html").read_text()


def test_gallery_shows_the_worst_margins_from_the_csvs(bench, bench_report):
    folder, results = bench
    text = bench_report.read_text()
    shown = [float(m) for m in re.findall(r'class="card" data-margin="([^"]+)"', text)]
    assert len(shown) == GALLERY
    identities = re.findall(r"<b>identity (\w+)</b>", text)
    assert len(identities) == GALLERY == len(set(identities))  # each identity once, by its worst trial
    assert shown == pytest.approx(worst_margins_from_csvs(folder, results, GALLERY), abs=1e-9)
    assert text.count('src="data:image/jpeg;base64,') == 3 * GALLERY  # anchor, positive, distractor
    assert "image unavailable" not in text and "Gallery unavailable" not in text


def test_report_without_the_data_still_renders(bench, tmp_path):
    folder, results = bench
    moved = tmp_path / "synth"
    shutil.copytree(results.benchmark.data, moved)
    changed = json.loads((folder / "results.json").read_text())
    changed["benchmark"]["data"] = str(moved)
    (folder / "moved.json").write_text(json.dumps(changed))
    shutil.rmtree(moved)
    text = write_report(folder / "moved.json", tmp_path / "report.html").read_text()
    assert_self_contained(text)
    assert "Gallery unavailable" in text and str(moved) in text
    assert 'class="card"' not in text and "data:image/jpeg" not in text
    first = worst_margins_from_csvs(folder, results, 1)[0]
    assert f"<td>{first:.4f}</td>" in text  # the failures are still listed, as numbers


@pytest.mark.parametrize(
    "content, why",
    [
        (None, "no such file; expected a `nearid bench` results.json or a `nearid score` summary"),
        ("{not json", "not readable as JSON"),
        ("[1, 2]", "not a nearid results file; expected a `nearid bench` results.json or a `nearid score` summary"),
        ('{"kind": "bench"}', "bench results of schema version 1, this nearid reads version 2"),
        ('{"kind": "demo", "schema_version": 2}', "holds demo results; expected a `nearid bench` results.json or a"),
    ],
)
def test_bad_results_file_is_a_one_line_error(tmp_path, content, why):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(NearIDError) as caught:
        write_report(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {why}") and "\n" not in message
    assert not (tmp_path / "report.html").exists()


# ------------------------------------------------------------------------------------ score summaries
def make_score_run(folder, threshold: float | None = 0.7):
    """Six pairs of PIL-drawn images over two subjects, a pairs CSV and its summary."""
    (folder / "images").mkdir(parents=True)
    similarities = [0.91, 0.42, 0.77, 0.65, 0.88, 0.30]
    rows = []
    for i, similarity in enumerate(similarities):
        for kind, colour in (("ref", (200, 40, 40)), ("gen", (40, 40, 200))):
            image = Image.new("RGB", (64, 48), (240, 240, 240))
            ImageDraw.Draw(image).ellipse((8 + 4 * i, 8, 40 + 4 * i, 40), fill=colour)
            image.save(folder / "images" / f"{kind}{i}.png")
        reference = f"images/ref{i}.png" if i % 2 else str(folder / "images" / f"ref{i}.png")  # relative or absolute
        row = {
            "reference": reference,
            "generated": f"images/gen{i}.png",
            "subject": "dog" if i < 3 else "cat",
            "similarity": f"{similarity:.6f}",
        }
        if threshold is not None:
            row["same"] = int(similarity > threshold)
        rows.append(row)
    with open(folder / "scores.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    values = np.array(similarities)
    summary = {
        "model": "histogram:8",
        "pairing": "csv",
        "n_pairs": len(rows),
        "unique_images_embedded": 12,
        "similarity": {
            "mean": values.mean(),
            "median": float(np.median(values)),
            "std": values.std(),
            "min": values.min(),
            "max": values.max(),
        },
        "per_subject": {
            "dog": {"n": 3, "mean": float(values[:3].mean()), "median": float(np.median(values[:3]))},
            "cat": {"n": 3, "mean": float(values[3:].mean()), "median": float(np.median(values[3:]))},
        },
        "threshold": None if threshold is None else {"value": threshold, "source": "calibrated: results.json"},
        "decisions": None
        if threshold is None
        else {"same": int((values > threshold).sum()), "different": int((values <= threshold).sum())},
        "pairs_file": "scores.csv",
        "errors": 0,
        "errors_file": None,
    }
    return ScoreSummary(**summary).write(folder / "run.summary.json"), similarities


def test_score_report(tmp_path):
    summary, similarities = make_score_run(tmp_path)
    out = write_report(summary)
    assert out == tmp_path / "report.html"
    text = out.read_text()
    assert_self_contained(text)
    assert "histogram:8" in text and "0.7000 (calibrated: results.json)" in text and "3 same, 3 different" in text
    assert text.count('src="data:image/png;base64,') == 1  # the histogram
    subjects = re.findall(r"<tr><td>(dog|cat)</td>", text)
    assert subjects == ["cat", "dog"]  # lowest mean first
    shown = [float(v) for v in re.findall(r'class="card">.*?<b>([0-9.]+)</b>', text)]
    assert shown == sorted(similarities)[:GALLERY]
    assert text.count('src="data:image/jpeg;base64,') == 2 * len(similarities)
    assert "different</span>" in text and "image unavailable" not in text


def test_score_report_without_threshold_and_with_missing_images(tmp_path):
    summary, similarities = make_score_run(tmp_path, threshold=None)
    (tmp_path / "images" / "gen5.png").unlink()
    text = write_report(summary, tmp_path / "out" / "page.html").read_text()
    assert_self_contained(text)
    assert "threshold" not in text.lower()
    assert text.count("image unavailable") == 1  # the lowest pair lost its generated image; the page did not fail
    assert len(re.findall(r'class="card"', text)) == len(similarities)


def test_report_command(bench, tmp_path, capsys):
    from nearid.cli.app import main

    folder, _ = bench
    out = tmp_path / "page.html"
    before = os.umask(0o027)  # not the usual 022, so the mode below is the umask's and not a default
    try:
        assert main(["report", str(folder / "results.json"), "--out", str(out)]) == 0
        (tmp_path / "opened.txt").open("w").close()
    finally:
        os.umask(before)
    assert f"wrote {out}" in capsys.readouterr().out
    assert_self_contained(out.read_text())
    # shareable as any file the user makes there (not the temporary file's private 0600), within the umask
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "opened.txt").stat().st_mode) == 0o640
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


def test_bench_run_on_a_split_file_keeps_its_gallery(bench, tmp_path):
    """``split`` and ``split_file`` are separate fields: the report reopens the rows of a split file
    (it used to guess from one field which of the two it held)."""
    _, results = bench
    data = results.benchmark.data
    split_file = f"{data}/splits/test.json"
    run = run_bench(
        BenchConfig(
            encoders=["histogram"],
            data=data,
            sources=SOURCES,
            out=str(tmp_path / "bench"),
            split="all",
            split_file=split_file,
        )
    )
    assert (run.benchmark.split, run.benchmark.split_file) == (None, split_file)
    assert run.encoders[ENCODER].calibration.split_file == split_file
    assert run.encoders[ENCODER].nearid == results.encoders[ENCODER].nearid  # the same rows as --split test
    text = write_report(tmp_path / "bench" / "results.json").read_text()
    assert f"<dt>split file</dt><dd>{split_file}</dd>" in text
    assert "Gallery unavailable" not in text and text.count('class="card"') == GALLERY


def test_score_report_of_a_jsonl_run_beside_a_csv_run(tmp_path):
    """`--out s.csv` and `--out s.jsonl` in one folder: each summary names its own pairs file, and the
    report reads either format (a JSONL similarity of exactly 0 and `same` 0 are kept)."""
    from PIL import Image

    from nearid.cli.app import main

    for side in ("refs", "gens"):
        (tmp_path / side).mkdir()
        for i in range(2):
            Image.new("RGB", (24, 24), (90 * i, 30, 200 if side == "refs" else 10)).save(tmp_path / side / f"{i}.png")
    for name in ("s.csv", "s.jsonl"):
        assert (
            main(
                [
                    "score",
                    "--refs",
                    str(tmp_path / "refs"),
                    "--gens",
                    str(tmp_path / "gens"),
                    "--model",
                    "tiny",
                    "--threshold",
                    "2",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
    for name in ("s.csv", "s.jsonl"):
        out = tmp_path / f"{name}.html"
        assert main(["report", str(tmp_path / f"{name}.summary.json"), "--out", str(out)]) == 0
        page = out.read_text()
        assert (
            "Gallery unavailable" not in page and page.count("data:image/jpeg") == 4 and page.count(">different<") == 2
        )


# ------------------------------------------------------------------------------------ one score page
#: A second metric over make_score_run's six pairs; "" is a pair it has no answer for (a judge's NaN).
SECOND = ["0.500000", "0.900000", "", "0.100000", "0.600000", "0.200000"]


def make_two_metric_run(folder):
    """make_score_run's pairs scored by two metrics, in the several-metric layout: a ``similarity:<m>``
    column each, ``same:a`` for the calibrated one, and a ``metrics`` section each in the summary."""
    one, similarities = make_score_run(folder)
    with open(folder / "scores.csv", newline="") as handle:
        pairs = list(csv.DictReader(handle))
    rows = [
        {
            "reference": p["reference"],
            "generated": p["generated"],
            "subject": p["subject"],
            "similarity:a": p["similarity"],
            "similarity:b": b,
            "same:a": p["same"],
        }
        for p, b in zip(pairs, SECOND)
    ]
    with open(folder / "two.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    b = np.array([float(v) for v in SECOND if v])
    first = ScoreSummary.from_json(one.read_text())
    sections = {
        "a": {
            "name": "a",
            "kind": "encoder",
            "column": "similarity:a",
            "n_pairs": 6,
            "unique_images_embedded": 12,
            "no_answer": 0,
            "similarity": first.similarity,
            "per_subject": first.per_subject,
            "threshold": first.threshold,
            "decisions": first.decisions,
        },
        "b": {
            "name": "b",
            "kind": "pair scorer",
            "column": "similarity:b",
            "n_pairs": 5,
            "unique_images_embedded": 0,
            "no_answer": 1,
            "similarity": {
                "mean": b.mean(),
                "median": float(np.median(b)),
                "std": b.std(),
                "min": b.min(),
                "max": b.max(),
            },
            "per_subject": {"dog": {"n": 2, "mean": 0.7, "median": 0.7}, "cat": {"n": 3, "mean": 0.3, "median": 0.2}},
            "threshold": None,
            "decisions": None,
        },
    }
    summary = ScoreSummary(
        **{**first.to_dict(), "model": "a", "pairs_file": "two.csv"},
        metrics=sections,
        correlations={"a | b": {"a": "a", "b": "b", "n": 5, "pearson": 0.123456, "spearman": -0.5}},
    )
    return summary.write(folder / "two.summary.json"), one, similarities


def table_row(text: str, label: str) -> list[str]:
    """The cells after the first of the table row whose first cell is ``label``."""
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", text) if r.startswith(f"<td>{label}</td>"))
    return re.findall(r"<td[^>]*>(.*?)</td>", row)[1:]


def test_metric_summaries_read_both_layouts(tmp_path):
    several, one, _ = make_two_metric_run(tmp_path)
    single = ScoreSummary.from_json(one.read_text())
    assert metric_summaries(single) == [
        MetricSummary(
            "histogram:8",
            "similarity",
            "same",
            6,
            single.similarity,
            single.per_subject,
            {"value": 0.7, "source": "calibrated: results.json"},
            {"same": 3, "different": 3},
        )
    ]
    a, b = metric_summaries(ScoreSummary.from_json(several.read_text()))
    assert (a.name, a.column, a.same_column, a.kind, a.no_answer) == ("a", "similarity:a", "same:a", "encoder", 0)
    assert (b.name, b.column, b.n_pairs, b.kind, b.no_answer, b.threshold) == (
        "b",
        "similarity:b",
        5,
        "pair scorer",
        1,
        None,
    )
    assert a.similarity == single.similarity and a.per_subject == single.per_subject


def test_one_and_several_metrics_go_through_one_page(tmp_path, monkeypatch):
    several, one, similarities = make_two_metric_run(tmp_path)
    rendered, render = [], score_page.render

    def spy(summary, path):
        rendered.append([m.name for m in metric_summaries(summary)])
        return render(summary, path)

    monkeypatch.setattr(score_page, "render", spy)
    single_page = write_report(one, tmp_path / "one.html").read_text()
    several_page = write_report(several, tmp_path / "two.html").read_text()
    assert rendered == [["histogram:8"], ["a", "b"]]
    for text in (single_page, several_page):
        assert_self_contained(text)
        assert text.count('src="data:image/png;base64,') == 1  # one figure, a histogram panel per metric
        shown = [float(v) for v in re.findall(r'class="card">.*?<b>([0-9.]+)</b>', text)]
        assert shown == sorted(similarities)[:GALLERY]  # the gallery follows the first metric
        assert text.count('src="data:image/jpeg;base64,') == 2 * len(similarities)
        assert "3 same, 3 different" in text and text.count(">different</span>") == 3
    assert "<h2>Metrics side by side</h2>" in several_page and "<h2>Similarity</h2>" in single_page
    b = np.array([float(v) for v in SECOND if v])
    expected = [f"{v:.4f}" for v in (b.mean(), np.median(b), b.std(), b.min(), b.max())]
    assert table_row(several_page, "b") == ["pair scorer", "5", "1", *expected, "no calibration for this metric", "–"]
    assert table_row(several_page, "a")[3] == f"{statistics.mean(similarities):.4f}"
    assert "<td>0.123</td><td>-0.500</td>" in several_page  # the correlation, as the summary gives it
    # each card lists every metric's score; the pair b did not answer shows a dash
    assert "a 0.4200 · b 0.9000" in several_page and "a 0.7700 · b –" in several_page
    assert "a 0.4200" not in single_page and "<h2>Correlation between metrics</h2>" not in single_page
    # per subject: b's own figures beside a's, cat (the lower mean of a) first
    assert table_row(several_page, "cat") == ["3", "0.6100", "0.6500", "3", "0.3000", "0.2000"]


def test_a_one_metric_page_shows_its_similarity_statistics_and_gallery(tmp_path):
    summary, similarities = make_score_run(tmp_path)
    text = write_report(summary).read_text()
    statistics_by_hand = [
        statistics.mean(similarities),
        statistics.median(similarities),
        statistics.pstdev(similarities),
        min(similarities),
        max(similarities),
    ]
    assert table_row(text, "histogram:8") == [
        "6",
        *(f"{v:.4f}" for v in statistics_by_hand),
        "0.7000 (calibrated: results.json)",
        "3 same, 3 different",
    ]
    cards = re.findall(r'<figure class="card">(.*?)</figure>', text)
    assert len(cards) == min(GALLERY, len(similarities))
    lowest = sorted(range(len(similarities)), key=similarities.__getitem__)[:GALLERY]
    for card, i in zip(cards, lowest):
        assert f"<b>{similarities[i]:.4f}</b>" in card and f"gen{i}.png" in card
        assert card.count("data:image/jpeg;base64,") == 2  # reference and generated
        verdict = "same" if similarities[i] > 0.7 else '<span class="neg">different</span>'
        assert f"</b> · {verdict} · " in card
