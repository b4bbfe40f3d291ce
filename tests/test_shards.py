"""Rendezvous-free shards (issue 14 item 6): `nearid bench --num-shards S --shard-index I` on each share,
then `nearid merge OUT`, gives exactly the one-process run (results, tables, sims CSVs); bad shard
options and unmergeable shards are one-line errors."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

from nearid.bench.shards import Shard, select_plan, shard_option
from nearid.cli.app import main
from nearid.data import load_mtg, load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.eval.evaluate import plan_images
from nearid.eval.metrics import DiscriminationScore

SOURCES = ["Instance", "Shape"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards") / "synth"
    generate(
        root,
        SynthConfig(identities=24, size=48, seed=7, val=2, test=9, mtg_train=0, mtg_test=5, workers=1),
        progress=False,
    )
    return root


def _argv(data, out, *extra):
    return [
        "bench",
        "--encoder",
        "tiny",
        "--encoder",
        "histogram",
        "--data",
        str(data),
        "--sources",
        *SOURCES,
        "--mtg",
        str(data / "MTG"),
        "--masks",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """A one-process run, and the same benchmark as 2 shards (not merged yet)."""
    root = tmp_path_factory.mktemp("runs")
    assert main(_argv(data, root / "one")) == 0
    for index in (0, 1):
        assert main(_argv(data, root / "sharded", "--num-shards", "2", "--shard-index", str(index))) == 0
    return root


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix == ".csv" and p.parts[-3] == "sims"  # results.json: field by field (log aside)
    }


def test_shards_then_merge_equal_one_process(runs, data, tmp_path, capsys):
    """Against a fresh one-process run: the histogram (whose vectors do not depend on the batch an image
    is in) equal in every field and CSV byte; the tiny model's counts equal and its float figures
    within 1e-6 (its CPU matmuls round differently in batches of another composition). Against an
    un-sharded run over the same store (the same vectors): every file equal, byte for byte."""
    sharded = tmp_path / "sharded"
    shutil.copytree(runs / "sharded", sharded)
    assert not (sharded / "results.json").exists()  # a share never writes a result
    records = [json.loads(path.read_text()) for path in (sharded / "records").glob("*-shard-*-of-2.json")]
    records = {(r["metric"]["name"], r["shard"]["index"]): r for r in records}  # one per encoder and shard
    assert len(records) == 4 and records[("histogram:8", 0)]["partial"].startswith("shard 0 of 2: not a result")
    capsys.readouterr()
    assert main(["merge", str(sharded)]) == 0
    assert "merged 2 shards" in capsys.readouterr().out
    one = json.loads((runs / "one" / "results.json").read_text())
    merged = json.loads((sharded / "results.json").read_text())
    assert merged["benchmark"] == one["benchmark"]
    histogram, tiny = one["encoders"]["histogram:8"], one["encoders"]["tiny:0 (untrained)"]
    assert (
        0
        < histogram["nearid"]["groups"]["all sources"]["n_wins"]
        < histogram["nearid"]["groups"]["all sources"]["n_trials"]
    )
    assert "mtg" in histogram and histogram["calibration"]
    assert merged["encoders"]["histogram:8"] == histogram  # SSR, PA, MTG correlations, calibration, counts
    got, tiny = copy.deepcopy(merged["encoders"]["tiny:0 (untrained)"]), copy.deepcopy(tiny)
    assert got["nearid"] == tiny["nearid"] and got["unique_images"] == got["embeddings_computed"] == 80
    assert got["calibration"] == pytest.approx(tiny["calibration"], abs=1e-6)
    assert got["mtg"].pop("correlations") == pytest.approx(tiny["mtg"].pop("correlations"), abs=1e-6)
    assert got["mtg"] == pytest.approx(tiny["mtg"], abs=1e-6)
    for name, result in one["encoders"].items():  # the shards' partial counts add up: the split is by identity
        for source in SOURCES:
            parts = [
                DiscriminationScore.from_dict(records[(name, i)]["payload"]["partial_nearid"]["per_source"][source])
                for i in (0, 1)
            ]
            assert DiscriminationScore.pool(*parts).as_dict() == result["nearid"]["per_source"][source]
    expected, files = _files(runs / "one"), _files(sharded)
    assert sorted(expected) == sorted(files)
    histogram_csvs = [name for name in expected if name.startswith("sims/histogram")]
    assert len(histogram_csvs) == 3  # two sources and MTG
    for name in histogram_csvs:
        assert files[name] == expected[name], name

    # an un-sharded run over the same store finds every image there and writes the very same files
    again = tmp_path / "again"
    shutil.copytree(runs / "sharded", again)
    assert main(_argv(data, again)) == 0
    final = json.loads((again / "results.json").read_text())
    for name, result in merged["encoders"].items():
        assert final["encoders"][name]["embeddings_computed"] == 0  # every image was in the store
        assert {**final["encoders"][name], "embeddings_computed": 80} == result
    assert _files(again) == files


def _merge_error(folder, capsys) -> str:
    capsys.readouterr()
    assert main(["merge", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not (folder / "results.json").exists(), err
    return err


def test_a_missing_or_foreign_shard_is_refused(runs, tmp_path, capsys):
    folder = tmp_path / "sharded"
    shutil.copytree(runs / "sharded", folder)
    (record,) = (folder / "records").glob("tiny-*-shard-1-of-2.json")  # the tiny encoder's shard 1
    saved = record.read_text()
    record.unlink()
    assert "shard 1 of 2 is missing" in _merge_error(folder, capsys)
    assert "--num-shards 2 --shard-index 1" in _merge_error(folder, capsys)

    values = json.loads(saved)
    values["settings"]["mask_dilate"] = 3
    record.write_text(json.dumps(values))
    assert f"{record.name}: a record of another benchmark (mask_dilate: 3 -> 0)" in _merge_error(folder, capsys)

    values = json.loads(saved)
    values["metric"]["fingerprint"] = "0" * 64
    record.write_text(json.dumps(values))
    assert "shard-0-of-2.json: other encoders than shard 1 of 2" in _merge_error(folder, capsys)

    record.write_text(saved)
    values = json.loads(saved)
    values["shard"], values["written"] = {"count": 3, "index": 0}, values["written"] + 1  # a newer run, split 3 ways
    record.with_name(record.name.replace("shard-1-of-2", "shard-0-of-3")).write_text(json.dumps(values))
    assert "split 2 and 3 ways" in _merge_error(folder, capsys)

    assert "no shards to merge" in _merge_error(tmp_path / "nothing", capsys)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--num-shards", "2", "--shard-index", "2"], "--shard-index 2: out of range for --num-shards 2 (0 to 1)"),
        (["--shard-index", "0"], "--shard-index needs --num-shards"),
        (["--num-shards", "3"], "--num-shards needs --shard-index"),
        (["--num-shards", "0", "--shard-index", "0"], "--num-shards: "),
    ],
)
def test_bad_shard_options_fail_before_any_model_loads(data, tmp_path, capsys, options, message):
    argv = _argv(data, tmp_path / "out", *options)
    argv[argv.index("tiny")] = "nearid:/no/such/model"  # loading it would be another error
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_shares_tile_and_select_plan_is_the_plan_of_the_subset(data):
    bench = load_nearid(data, SOURCES, split="test", masks=True)
    mtg = load_mtg(data / "MTG", split="test")
    plan = plan_images(bench, SOURCES, masks=True, mtg=mtg)
    for count in (1, 2, 3, 9, 12):
        spans = [Shard(count, i).span(len(bench)) for i in range(count)]
        assert [i for span in spans for i in span] == list(range(len(bench)))
    identities, samples = [2, 3, 4], [1, 2]
    part = select_plan(plan, identities, samples)
    direct = plan_images([bench[i] for i in identities], SOURCES, masks=True, mtg=[mtg[m] for m in samples])
    assert part.keys == direct.keys and part.ids == direct.ids and part.categories == direct.categories
    np.testing.assert_array_equal(part.views, direct.views)
    np.testing.assert_array_equal(part.mtg, direct.mtg)
    for source in SOURCES:
        np.testing.assert_array_equal(part.distractors[source], direct.distractors[source])
    assert shard_option(None, None) is None and shard_option(4, 3) == Shard(4, 3)


# ------------------------------------------------------------------------------------------ nearid score
def _draw(path, seed: int):
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (40, 40), tuple(int(v) for v in rng.integers(0, 255, 3)))
    ImageDraw.Draw(image).ellipse((8, 8, 30, 30), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def test_score_shards_then_merge_equal_one_process(tmp_path, monkeypatch, capsys):
    """Subjects pairing (18 pairs, one unreadable generated image skipped), 3 shards by pair, merged
    from another working directory: every output file equals the one-process run's, byte for byte."""
    for s, subject in enumerate(("dog", "cat")):
        for i in range(3):
            _draw(tmp_path / "refs" / subject / f"ref{i}.png", 10 * s + i)
            _draw(tmp_path / "gens" / subject / f"sample{i}.png", 100 + 10 * s + i)
    (tmp_path / "gens" / "cat" / "sample9.png").write_bytes(b"not an image")
    monkeypatch.chdir(tmp_path)  # relative inputs, as a user types them
    argv = ["score", "--refs", "refs", "--gens", "gens", "--model", "histogram", "--threshold", "0.5"]
    argv.append("--skip-errors")
    assert main([*argv, "--out", "one/scores.csv"]) == 0
    for index in range(3):
        assert main([*argv, "--out", "three/scores.csv", "--num-shards", "3", "--shard-index", str(index)]) == 0
    assert not (tmp_path / "three" / "scores.csv").exists()  # a share never writes the outputs
    monkeypatch.chdir(tmp_path / "three")
    capsys.readouterr()
    assert main(["merge", "scores.csv"]) == 0
    assert "merged 18 pairs" in capsys.readouterr().out
    one = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir()}
    three = {p.name: p.read_bytes() for p in (tmp_path / "three").iterdir() if ".shard-" not in p.name}
    assert sorted(one) == sorted(three) and "scores.csv.errors.csv" in one and "scores.csv.per_generated.csv" in one
    for name in one:
        assert three[name] == one[name], name
    summary = json.loads(one["scores.csv.summary.json"])
    assert summary["n_pairs"] == 18 and summary["errors"] == 1 and summary["unique_images_embedded"] == 12

    (tmp_path / "three" / "scores.csv.shard-2-of-3.json").unlink()
    capsys.readouterr()
    assert main(["merge", "scores.csv"]) == 2
    err = capsys.readouterr().err
    assert "shard 2 of 3 is missing" in err and "--num-shards 3 --shard-index 2" in err and err.count("\n") == 1


def test_score_shard_index_out_of_range_fails_before_anything_is_read(tmp_path, capsys):
    argv = ["score", "--refs", str(tmp_path / "no-refs"), "--gens", str(tmp_path / "no-gens")]
    assert main([*argv, "--model", "nearid:/no/such/model", "--num-shards", "2", "--shard-index", "5"]) == 2
    err = capsys.readouterr().err
    assert "--shard-index 5: out of range for --num-shards 2 (0 to 1)" in err and err.count("\n") == 1, err


def test_score_shards_take_one_model(tmp_path, capsys):
    """A sharded score run writes one metric's partial record: several --model are refused by name,
    before the images are read or a model loads."""
    argv = ["score", "--refs", str(tmp_path / "no-refs"), "--gens", str(tmp_path / "no-gens")]
    argv += ["--model", "histogram", "--model", "nearid:/no/such/model", "--num-shards", "2", "--shard-index", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--num-shards: score one --model per sharded run" in err and err.count("\n") == 1, err
