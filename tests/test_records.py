"""Runs write content-keyed records; one merge turns them into results (CLIP_benchmark's rule).

A bench run (one process group, one shard, one encoder or judge into a shared ``--out``) and a score
shard write a record that names its inputs by content; ``nearid.io.records.merge`` is the one path
from records to ``results.json`` / tables / score outputs: at the end of every bench run, for runs
into one ``--out`` at the same time, and for ``nearid merge``. Decisions go by content: other data is
never shown beside the old results, the same data under another spelling merges."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from nearid.cli.app import main
from nearid.data.synth import SynthConfig, generate

SOURCES = ["Part", "Shape"]


def _generate(root: Path, seed: int) -> Path:
    generate(
        root,
        SynthConfig(identities=12, size=32, seed=seed, val=1, test=5, mtg_train=0, mtg_test=0, workers=1),
        progress=False,
    )
    return root


def _bench(data, out, *encoders: str, more=()) -> list[str]:
    argv = ["bench", "--data", str(data), "--sources", *SOURCES, "--device", "cpu", "--out", str(out)]
    for encoder in encoders:
        argv += ["--encoder", encoder]
    return [*argv, *more]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _encoders(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["encoders"]


# ------------------------------------------------------------------------------------ (a) other data
def test_results_of_regenerated_data_never_sit_beside_the_old_ones(tmp_path, capsys):
    """Encoder A into OUT, the data regenerated at the same path (another seed), encoder B into OUT:
    results.json holds B alone (A's old numbers are moved to results.stale.json, its record to
    records/stale/, and the log says so), as a fresh --out would; `nearid merge` afterwards keeps it so."""
    data, out = _generate(tmp_path / "synth", seed=1), tmp_path / "out"
    assert main(_bench(data, out, "histogram")) == 0
    before = _encoders(out)
    shutil.rmtree(data)
    _generate(data, seed=2)
    capsys.readouterr()
    assert main(_bench(data, out, "tiny")) == 0
    printed = capsys.readouterr().out
    assert list(_encoders(out)) == ["tiny:0 (untrained)"]
    stale = json.loads((out / "results.stale.json").read_text())["encoders"]
    assert stale == before  # the old numbers, kept aside
    assert "moved aside to results.stale.json" in printed and "made on other data" in printed
    log = json.loads((out / "results.json").read_text())["log"]
    assert any("moved aside" in line and "histogram" in line for line in log)
    assert [p.name.split("-")[0] for p in (out / "records" / "stale").iterdir()] == ["histogram"]
    assert main(_bench(data, tmp_path / "fresh", "tiny")) == 0
    assert (
        _encoders(out)["tiny:0 (untrained)"]["nearid"] == _encoders(tmp_path / "fresh")["tiny:0 (untrained)"]["nearid"]
    )
    assert main(["merge", str(out)]) == 0
    assert list(_encoders(out)) == ["tiny:0 (untrained)"]
    assert main(_bench(data, out, "histogram")) == 0  # A again, on the new data: beside B, both new
    assert list(_encoders(out)) == ["tiny:0 (untrained)", "histogram:8"]
    assert _encoders(out)["histogram:8"]["embeddings_computed"] > 0


def test_shards_of_regenerated_data_are_not_merged(tmp_path, capsys):
    """Shard 0 on the old data, shard 1 on the regenerated data: `nearid merge` refuses, naming the
    record made on other data, and writes nothing."""
    data, out = _generate(tmp_path / "synth", seed=1), tmp_path / "out"
    assert main(_bench(data, out, "histogram", more=["--num-shards", "2", "--shard-index", "0"])) == 0
    shutil.rmtree(data)
    _generate(data, seed=2)
    assert main(_bench(data, out, "histogram", more=["--num-shards", "2", "--shard-index", "1"])) == 0
    capsys.readouterr()
    assert main(["merge", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "shard-0-of-2.json" in line and "other data" in line, line
    assert not (out / "results.json").exists()


# ------------------------------------------------------------------------------------ (b) same data
def test_the_same_data_through_a_link_or_a_relative_path_merges(tmp_path, monkeypatch):
    data = _generate(tmp_path / "data" / "synth", seed=3)
    link = tmp_path / "alias"  # another name: the data's keys must not depend on the spelling
    link.symlink_to(data, target_is_directory=True)
    out = tmp_path / "out"
    assert main(_bench(data, out, "histogram")) == 0
    first = _encoders(out)["histogram:8"]
    assert main(_bench(link, out, "tiny")) == 0
    assert set(_encoders(out)) == {"histogram:8", "tiny:0 (untrained)"}
    assert main(_bench(link, out, "histogram")) == 0
    again = _encoders(out)["histogram:8"]
    assert again["embeddings_computed"] == 0 and again["nearid"] == first["nearid"]  # the same images
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(_bench("../data/synth", "../out", "histogram", "tiny")) == 0
    encoders = _encoders(out)
    assert set(encoders) == {"histogram:8", "tiny:0 (untrained)"}
    assert all(entry["embeddings_computed"] == 0 for entry in encoders.values())


# ------------------------------------------------------------------------------------ (c) score shards
def _draw(path: Path, seed: int) -> None:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (40, 40), tuple(int(v) for v in rng.integers(0, 255, 3)))
    ImageDraw.Draw(image).ellipse((8, 8, 30, 30), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def images(tmp_path):
    for s, subject in enumerate(("dog", "cat")):
        for i in range(2):
            _draw(tmp_path / "refs" / subject / f"ref{i}.png", 10 * s + i)
            _draw(tmp_path / "gens" / subject / f"sample{i}.png", 100 + 10 * s + i)
    return tmp_path


def _score(refs, gens, out, *more) -> list[str]:
    return ["score", "--refs", str(refs), "--gens", str(gens), "--model", "histogram", "--out", str(out), *more]


def test_score_shards_refuse_an_image_changed_between_them(images, monkeypatch, capsys):
    monkeypatch.chdir(images)
    assert main(_score("refs", "gens", "s/scores.csv", "--num-shards", "2", "--shard-index", "0")) == 0
    changed = images / "refs" / "cat" / "ref1.png"
    _draw(changed, 999)
    os.utime(changed, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert main(_score("refs", "gens", "s/scores.csv", "--num-shards", "2", "--shard-index", "1")) == 0
    capsys.readouterr()
    assert main(["merge", "s/scores.csv"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "cat/ref1.png" in line and "changed" in line, line
    assert not (images / "s" / "scores.csv").exists()

    # every shard run again on the images as they are now: merged; then one changes after the shards ran
    assert main(_score("refs", "gens", "s/scores.csv", "--num-shards", "2", "--shard-index", "0")) == 0
    assert main(["merge", "s/scores.csv"]) == 0
    _draw(images / "gens" / "dog" / "sample0.png", 555)
    os.utime(images / "gens" / "dog" / "sample0.png", ns=(time.time_ns() + 2 * 10**9,) * 2)
    capsys.readouterr()
    assert main(["merge", "s/scores.csv"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "dog/sample0.png" in line and "changed" in line, line


def test_score_shards_from_other_directories_with_relative_paths_merge(images, monkeypatch, capsys):
    """Each shard from its own working directory, the inputs and --out spelled relative to it: the merge
    matches them by content and writes what a one-process run writes, byte for byte."""
    monkeypatch.chdir(images)
    assert main(_score("refs", "gens", "one/scores.csv")) == 0
    (images / "deep" / "er").mkdir(parents=True)
    spellings = [
        (images, "refs", "gens", "three/scores.csv"),
        (images / "deep", "../refs", "../gens", "../three/scores.csv"),
    ]
    spellings.append((images / "deep" / "er", str(images / "refs"), "../../gens", "../../three/scores.csv"))
    for index, (cwd, refs, gens, out) in enumerate(spellings):
        monkeypatch.chdir(cwd)
        assert main(_score(refs, gens, out, "--num-shards", "3", "--shard-index", str(index))) == 0
    monkeypatch.chdir(images)
    capsys.readouterr()
    assert main(["merge", "three/scores.csv"]) == 0
    assert "merged 8 pairs" in capsys.readouterr().out
    one = {p.name: p.read_bytes() for p in (images / "one").iterdir()}
    three = {p.name: p.read_bytes() for p in (images / "three").iterdir() if ".shard-" not in p.name}
    assert sorted(one) == sorted(three)
    for name in one:
        assert three[name] == one[name], name


# ------------------------------------------------------------------------------------ (d) judges
class _Judge:
    """A pair scorer (the cosine of ``tiny:<seed>``) that counts the pairs it is asked."""

    asked: ClassVar[list] = []

    def __init__(self, seed: str):
        import nearid
        from nearid.models.pair_scorers import EncoderPairScorer

        self.inner = EncoderPairScorer(nearid.load_encoder(f"tiny:{seed}", device="cpu"))
        self.name = f"judge(tiny:{seed})"
        self.fingerprint = nearid.io.fingerprint.of_json({"records test judge": self.inner.fingerprint})

    def score_pairs(self, pairs, masks=None):
        _Judge.asked += [(a.cache_key, b.cache_key) for a, b in pairs]
        return self.inner.score_pairs(pairs, masks)


@pytest.fixture
def judge(monkeypatch):
    from nearid.judges import loading
    from nearid.models import specs

    real_load, real_parse = loading.load_metric, specs.parse_encoder_spec
    _Judge.asked = []

    def parse(spec):
        return real_parse("tiny:" + spec.split(":", 1)[1]) if str(spec).startswith("judge:") else real_parse(spec)

    def load(spec, *args, **kwargs):
        if str(spec).startswith("judge:"):
            return _Judge(spec.split(":", 1)[1])
        return real_load(spec, *args, **kwargs)

    monkeypatch.setattr(specs, "parse_encoder_spec", parse)
    monkeypatch.setattr(loading, "load_metric", load)
    return _Judge


def test_nearid_merge_finishes_a_sharded_bench_with_a_judge(tmp_path, judge, capsys, monkeypatch):
    """Two shards of an encoder and a judge, then `nearid merge`: results.json holds the judge's entry
    too, equal to a one-process run's, and the merge asks the judge nothing (no model is loaded)."""
    data = _generate(tmp_path / "synth", seed=4)
    for index in (0, 1):
        argv = _bench(data, tmp_path / "sharded", "judge:2", "histogram")
        assert main([*argv, "--num-shards", "2", "--shard-index", str(index)]) == 0
    asked = list(judge.asked)
    assert asked and not (tmp_path / "sharded" / "results.json").exists()
    judge.asked = []
    import nearid.judges.loading as loading

    loader = loading.load_metric  # the judge fixture's
    monkeypatch.setattr(loading, "load_metric", lambda *a, **k: pytest.fail("the merge loaded a model"))
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "sharded")]) == 0
    assert judge.asked == []
    merged = _encoders(tmp_path / "sharded")
    assert set(merged) == {"judge(tiny:2)", "histogram:8"}
    monkeypatch.setattr(loading, "load_metric", loader)
    assert main(_bench(data, tmp_path / "one", "judge:2", "histogram")) == 0
    one = _encoders(tmp_path / "one")
    assert len(judge.asked) == len(asked) == one["judge(tiny:2)"]["judgments"]["pairs"]
    entry = merged["judge(tiny:2)"]
    assert entry["judgments"] == {**one["judge(tiny:2)"]["judgments"]}  # pairs, computed (by the shards), ...
    assert entry["nearid"] == one["judge(tiny:2)"]["nearid"]
    assert entry["calibration"] == pytest.approx(one["judge(tiny:2)"]["calibration"])
    assert merged["histogram:8"] == one["histogram:8"]


# ------------------------------------------------------------------------------------ (e) one merge path
SPY = """
import sys
import nearid.io.records as records
real = records.merge
def spy(*args, **kwargs):
    with open(sys.argv[1], "a") as handle:
        handle.write("merge\\n")
    return real(*args, **kwargs)
records.merge = spy
from nearid.cli.app import main
sys.exit(main(sys.argv[2:]))
"""


def test_every_merge_goes_through_the_one_merge_core(tmp_path, monkeypatch):
    """The end of a one-process bench run, runs into one --out at the same time, and `nearid merge`
    (of bench shards and of score shards) all call ``nearid.io.records.merge``."""
    import nearid.io.records as records

    calls = []
    real = records.merge

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "merge", spy)
    data = _generate(tmp_path / "synth", seed=5)
    assert main(_bench(data, tmp_path / "one", "histogram")) == 0
    assert [Path(c) for c in calls] == [tmp_path / "one"]

    markers = [tmp_path / f"spy-{encoder}" for encoder in ("tiny", "histogram")]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", SPY, str(marker), *_bench(data, tmp_path / "both", encoder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
                ),
            },
        )
        for marker, encoder in zip(markers, ("tiny", "histogram"))
    ]
    for run in runs:
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, output[-3000:]
    assert [m.read_text() for m in markers] == ["merge\n", "merge\n"]
    assert set(_encoders(tmp_path / "both")) == {"tiny:0 (untrained)", "histogram:8"}

    calls.clear()
    for index in (0, 1):
        assert (
            main(
                _bench(data, tmp_path / "sharded", "histogram", more=["--num-shards", "2", "--shard-index", str(index)])
            )
            == 0
        )
    assert calls == []  # a shard writes its record and merges nothing
    assert main(["merge", str(tmp_path / "sharded")]) == 0
    assert [Path(c) for c in calls] == [tmp_path / "sharded"]
    assert (
        _encoders(tmp_path / "sharded")["histogram:8"]["nearid"] == _encoders(tmp_path / "one")["histogram:8"]["nearid"]
    )

    calls.clear()
    for s, subject in enumerate(("dog", "cat")):
        _draw(tmp_path / "refs" / subject / "a.png", s)
        _draw(tmp_path / "gens" / subject / "b.png", 10 + s)
    scores = tmp_path / "scores.csv"
    for index in (0, 1):
        argv = _score(tmp_path / "refs", tmp_path / "gens", scores, "--num-shards", "2", "--shard-index", str(index))
        assert main(argv) == 0
    assert calls == [] and not scores.exists()
    assert main(["merge", str(scores)]) == 0
    assert [Path(c) for c in calls] == [scores] and scores.is_file()
