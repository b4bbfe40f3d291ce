"""`nearid score`: every pairing rule, one embedding per unique image, thresholds, errors, atomic outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import nearid
from nearid.cli.app import main
from nearid.eval.metrics import Threshold
from nearid.eval.results import BenchInfo, BenchResults, Calibration, EncoderResult, NearIDResult, read_results
from nearid.io.errors import NearIDError
from nearid.score.compute import score_pairs
from nearid.score.plan import plan_pairs
from nearid.score.summary import summarise
from nearid.score.thresholds import resolve_threshold


def draw(path, seed: int, size=(40, 40)):
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    ImageDraw.Draw(image).ellipse((8, 8, 30, 30), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def tiny():
    return nearid.load_encoder("tiny", device="cpu")


def cos(encoder, a, b) -> float:
    vectors = nearid.embed(encoder, [a, b])
    return float(vectors[0] @ vectors[1])


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_paths_rule_matches_by_name_without_extension(tmp_path, tiny):
    for i, name in enumerate(["dog/1", "dog/2", "cat/1"]):
        draw(tmp_path / "refs" / f"{name}.png", i)
        draw(tmp_path / "gens" / f"{name}.jpg", 10 + i)
    plan = plan_pairs(
        tmp_path / "refs", tmp_path / "gens", pairing="paths"
    )  # subject folders, same names: auto refuses
    assert plan.rule == "paths" and len(plan.pairs) == 3
    result = score_pairs(tiny, plan)
    for pair, value in zip(plan.pairs, result.similarities):
        assert pair.reference.with_suffix("").name == pair.generated.with_suffix("").name
        assert value == pytest.approx(cos(tiny, pair.reference, pair.generated), abs=1e-5)
    assert {p.subject for p in plan.pairs} == {"dog", "cat"}


def test_subjects_rule_aggregates_mean_and_max(tmp_path, tiny, capsys):
    for s, subject in enumerate(("dog", "cat")):  # a seed per image, the same in every interpreter run
        for i in range(3):
            draw(tmp_path / "refs" / subject / f"ref{i}.png", 10 * s + i)
        for i in range(2):
            draw(tmp_path / "gens" / subject / f"sample{i}.png", 100 + 10 * s + i)
    out = tmp_path / "out" / "scores.csv"
    argv = [
        "score",
        "--refs",
        str(tmp_path / "refs"),
        "--gens",
        str(tmp_path / "gens"),
        "--model",
        "tiny",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "(subjects pairing)" in printed and "10 unique images embedded" in printed  # 6 refs + 4 gens, not 24
    pairs = rows(out)
    assert len(pairs) == 12
    per_generated = rows(tmp_path / "out" / "scores.csv.per_generated.csv")
    assert len(per_generated) == 4
    first = per_generated[0]
    values = [float(r["similarity"]) for r in pairs if r["generated"] == first["generated"]]
    assert int(first["n_references"]) == 3
    assert float(first["mean"]) == pytest.approx(np.mean(values), abs=1e-6)
    assert float(first["max"]) == pytest.approx(np.max(values), abs=1e-6)
    summary = json.loads((tmp_path / "out" / "scores.csv.summary.json").read_text())
    assert summary["n_pairs"] == 12 and set(summary["per_subject"]) == {"dog", "cat"}
    assert summary["similarity"]["mean"] == pytest.approx(np.mean([float(r["similarity"]) for r in pairs]), abs=1e-5)


def test_csv_rule_and_jsonl(tmp_path, tiny):
    a, b, c = (draw(tmp_path / "img" / f"{n}.png", i) for i, n in enumerate("abc"))
    (tmp_path / "pairs.csv").write_text("reference,generated,subject\nimg/a.png,img/b.png,x\nimg/a.png,img/c.png,x\n")
    out = tmp_path / "s.jsonl"
    assert (
        main(
            ["score", "--refs", str(tmp_path / "pairs.csv"), "--model", "tiny", "--out", str(out), "--format", "jsonl"]
        )
        == 0
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["generated"] for row in lines] == [str(b), str(c)]
    assert lines[1]["similarity"] == pytest.approx(cos(tiny, a, c), abs=1e-5)


def test_dreambench_layout_writes_dbpp_keys(tmp_path):
    for i, name in enumerate(["object_00_backpack-0", "object_00_backpack-1"]):
        draw(tmp_path / "samples" / "src_image" / "object" / f"{name}.jpg", i)
        draw(tmp_path / "samples" / "tgt_image" / "object" / f"{name}.png", 5 + i)
    out = tmp_path / "emu2.csv"
    assert main(["score", "--refs", str(tmp_path / "samples"), "--model", "tiny", "--out", str(out)]) == 0
    keys = json.loads((tmp_path / "emu2.csv.dbpp.json").read_text())
    assert set(keys) == {"object-object_00_backpack-0", "object-object_00_backpack-1"}
    tiny = nearid.load_encoder("tiny", device="cpu")
    for name in ["object_00_backpack-0", "object_00_backpack-1"]:
        expected = 100 * cos(
            tiny,
            tmp_path / "samples" / "src_image" / "object" / f"{name}.jpg",
            tmp_path / "samples" / "tgt_image" / "object" / f"{name}.png",
        )
        assert keys[f"object-{name}"] == pytest.approx(expected, abs=1e-3)  # 100 x the pair's cosine (6 decimals kept)
    assert keys["object-object_00_backpack-0"] != pytest.approx(keys["object-object_00_backpack-1"], abs=1e-2)
    summary = read_results(tmp_path / "emu2.csv.summary.json")
    assert (summary.pairing, summary.n_pairs, summary.pairs_file) == ("dreambench", 2, "emu2.csv")


def test_corrupt_generated_image_exit_2_and_no_output(tmp_path, capsys):
    for i in range(3):
        draw(tmp_path / "refs" / f"{i}.png", i)
        draw(tmp_path / "gens" / f"{i}.png", 9 + i)
    (tmp_path / "gens" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out" / "scores.csv"
    argv = [
        "score",
        "--refs",
        str(tmp_path / "refs"),
        "--gens",
        str(tmp_path / "gens"),
        "--model",
        "tiny",
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "gens/1.png" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert main([*argv, "--skip-errors"]) == 0
    assert len(rows(out)) == 2
    errors = rows(tmp_path / "out" / "scores.csv.errors.csv")
    assert [e["path"] for e in errors] == [str(tmp_path / "gens" / "1.png")] and "not an image file" in errors[0][
        "error"
    ]
    assert json.loads((tmp_path / "out" / "scores.csv.summary.json").read_text())["errors"] == 1
    assert not list((tmp_path / "out").glob("*.part"))


@pytest.mark.parametrize(
    "layout, message",
    [
        ("unmatched", r"gens/extra\.png: no reference with this name; fix the inputs or pass --skip-errors"),
        ("empty", r"gens: no images inside"),
        ("bad_mask", r"masks/gens/0\.png\|clean: mask is 20x10 but its image is 40x40"),  # the cleaned mask's key
    ],
)
def test_input_errors(tmp_path, capsys, layout, message):
    draw(tmp_path / "refs" / "0.png", 0)
    (tmp_path / "gens").mkdir()
    argv = [
        "score",
        "--refs",
        str(tmp_path / "refs"),
        "--gens",
        str(tmp_path / "gens"),
        "--model",
        "tiny",
        "--out",
        str(tmp_path / "o.csv"),
    ]
    if layout != "empty":
        draw(tmp_path / "gens" / "0.png", 1)
    if layout == "unmatched":
        draw(tmp_path / "gens" / "extra.png", 2)
    if layout == "bad_mask":
        (tmp_path / "masks" / "gens").mkdir(parents=True)
        Image.new("L", (20, 10), 255).save(tmp_path / "masks" / "gens" / "0.png")
        argv += ["--masks", str(tmp_path / "masks")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "o.csv").exists()


def test_bad_pairs_csv(tmp_path, capsys):
    (tmp_path / "p.csv").write_text("ref,gen\na.png,b.png\n")
    assert main(["score", "--refs", str(tmp_path / "p.csv"), "--model", "tiny"]) == 2
    assert "p.csv: a pairs CSV needs the columns reference,generated" in capsys.readouterr().err


def test_masks_are_applied(tmp_path, tiny):
    ref, gen = draw(tmp_path / "refs" / "0.png", 0), draw(tmp_path / "gens" / "0.png", 1)
    mask = np.zeros((40, 40), np.uint8)
    mask[8:30, 8:30] = 255
    (tmp_path / "m" / "refs").mkdir(parents=True)
    Image.fromarray(mask).save(tmp_path / "m" / "refs" / "0.png")
    result = score_pairs(
        tiny, plan_pairs(tmp_path / "refs", tmp_path / "gens"), masks=tmp_path / "m", mask_cleaning="none"
    )
    masked_ref = np.asarray(Image.open(ref)).copy()
    masked_ref[mask == 0] = 0
    vectors = nearid.embed(tiny, [masked_ref, gen])
    assert result.similarities[0] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)


def test_masks_are_cleaned_by_default(tmp_path, tiny):
    """A speck of noise far from the object survives a raw mask and is removed by the authors' cleaning."""
    from nearid.images.mask_cleaning import clean_mask

    ref, gen = draw(tmp_path / "refs" / "0.png", 0), draw(tmp_path / "gens" / "0.png", 1)
    mask = np.zeros((40, 40), np.uint8)
    mask[8:30, 8:30] = 255
    mask[35:37, 35:37] = 255  # a 2x2 speck: it lets a corner of background through
    (tmp_path / "m" / "refs").mkdir(parents=True)
    Image.fromarray(mask).save(tmp_path / "m" / "refs" / "0.png")
    plan = plan_pairs(tmp_path / "refs", tmp_path / "gens")
    raw = score_pairs(tiny, plan, masks=tmp_path / "m", mask_cleaning="none")
    cleaned = score_pairs(tiny, plan, masks=tmp_path / "m")
    cleaned_mask = np.asarray(clean_mask(tmp_path / "m" / "refs" / "0.png"))
    assert cleaned_mask[35:37, 35:37].max() == 0 and cleaned_mask[15, 15] == 255  # the speck is gone
    by_hand = np.asarray(Image.open(ref)).copy()
    by_hand[cleaned_mask == 0] = 0
    vectors = nearid.embed(tiny, [by_hand, gen])
    assert cleaned.similarities[0] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)
    assert abs(cleaned.similarities[0] - raw.similarities[0]) > 1e-4  # the speck changed the raw embedding
    summary = summarise(cleaned, None)
    assert (summary.mask_cleaning, summary.mask_dilate) == ("authors", 0)
    assert summary.masks == str(tmp_path / "m") and summarise(raw, None).mask_cleaning == "none"
    with pytest.raises(NearIDError, match="--mask-dilate 3 dilates the cleaned mask"):
        score_pairs(tiny, plan, masks=tmp_path / "m", mask_cleaning="none", mask_dilate=3)


def test_thresholds(tmp_path, capsys):
    for i in range(2):
        draw(tmp_path / "refs" / f"{i}.png", i)
        draw(tmp_path / "gens" / f"{i}.png", i)  # identical: similarity 1
    from types import SimpleNamespace

    from nearid.models.encoders import load_encoder

    tiny = load_encoder("tiny", device="cpu")  # the threshold is looked up by the encoder's fingerprint
    calibration = Calibration(Threshold(0.5, 90.0, 85.0, 95.0, 10, 20), split="val")
    encoder = EncoderResult("tiny", NearIDResult({}, {}), fingerprint=tiny.fingerprint, calibration=calibration)
    info = BenchInfo(data="d", sources=[], condition="full", identities=0, split="val")
    BenchResults(info, {"tiny:0 (untrained)": encoder}).write(tmp_path / "results.json")
    model = lambda name, fingerprint=None: SimpleNamespace(name=name, fingerprint=fingerprint)
    base = [
        "score",
        "--refs",
        str(tmp_path / "refs"),
        "--gens",
        str(tmp_path / "gens"),
        "--model",
        "tiny",
        "--out",
        str(tmp_path / "s.csv"),
    ]
    assert main([*base, "--threshold", "calibrated", "--calibration", str(tmp_path / "results.json")]) == 0
    assert "threshold 0.5000 (calibrated on val (results.json)): same 2, different 0" in capsys.readouterr().out
    assert [r["same"] for r in rows(tmp_path / "s.csv")] == ["1", "1"]
    assert main([*base, "--threshold", "calibrated"]) == 2
    assert "--threshold calibrated needs --calibration FILE" in capsys.readouterr().err
    with pytest.raises(NearIDError, match="has no calibration for 'clip:x'"):
        resolve_threshold("calibrated", model("clip:x", "f" * 64), tmp_path / "results.json")
    assert (
        resolve_threshold("calibrated", model("any spelling", tiny.fingerprint), tmp_path / "results.json")[
            "balanced_accuracy"
        ]
        == 90.0
    )
    with pytest.raises(NearIDError, match="'tiny:0 \\(untrained\\)' was calibrated with other weights"):
        resolve_threshold("calibrated", model("tiny:0 (untrained)", "f" * 64), tmp_path / "results.json")
    encoder.fingerprint = None  # a results file from before fingerprints were recorded
    BenchResults(info, {"tiny:0 (untrained)": encoder}).write(tmp_path / "older.json")
    with pytest.raises(NearIDError, match=r"older\.json: records no model fingerprints"):
        resolve_threshold("calibrated", tiny, tmp_path / "older.json")
    (tmp_path / "value.json").write_text('{"value": 0.3}')
    assert resolve_threshold("calibrated", tiny, tmp_path / "value.json") == {"value": 0.3, "source": "value.json"}
    (tmp_path / "old.json").write_text('{"benchmark": {}, "encoders": {}}')  # unversioned: before the schema
    with pytest.raises(NearIDError, match=r"old\.json: bench results of schema version 1, this nearid reads version 2"):
        resolve_threshold("calibrated", tiny, tmp_path / "old.json")
    assert resolve_threshold("0.25", tiny, None) == {"value": 0.25, "source": "given"}


def test_each_unique_image_is_embedded_once(tmp_path, tiny, monkeypatch):
    draw(tmp_path / "r" / "ref.png", 0)
    (tmp_path / "p.csv").write_text("reference,generated\n" + "".join(f"r/ref.png,g/{i}.png\n" for i in range(5)))
    for i in range(5):
        draw(tmp_path / "g" / f"{i}.png", i + 1)
    seen = []
    original = tiny.preprocess

    def counting(images, masks=None):
        seen.extend(map(str, images))
        return original(images, masks)

    monkeypatch.setattr(tiny, "preprocess", counting)
    result = score_pairs(tiny, plan_pairs(tmp_path / "p.csv"))
    assert result.embedded == 6 and len(seen) == 6 and len(set(seen)) == 6
    assert torch.isfinite(torch.as_tensor(result.similarities)).all()


def test_skip_errors_with_every_pair_bad_names_the_inputs(tmp_path, capsys):
    (tmp_path / "refs").mkdir()
    draw(tmp_path / "refs" / "0.png", 0)
    (tmp_path / "gens").mkdir()
    (tmp_path / "gens" / "0.png").write_bytes(b"not an image")
    argv = [
        "score",
        "--refs",
        str(tmp_path / "refs"),
        "--gens",
        str(tmp_path / "gens"),
        "--model",
        "tiny",
        "--out",
        str(tmp_path / "o.csv"),
        "--skip-errors",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no pairs to score: every pair has a bad input" in err and "gens/0.png: not an image file" in err


def test_header_checks_find_every_bad_image_before_the_model(tmp_path, monkeypatch):
    from nearid.score import inputs

    for i in range(3):
        draw(tmp_path / "refs" / f"{i}.png", i)
        (tmp_path / "gens").mkdir(exist_ok=True)
        (tmp_path / "gens" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    plan = inputs.prepare(plan_pairs(tmp_path / "refs", tmp_path / "gens"))
    assert sorted(p for p, _ in plan.unmatched) == [str(tmp_path / "gens" / f"{i}.png") for i in range(3)]
    with pytest.raises(NearIDError, match=r"^3 bad inputs: .*gens/0\.png: not an image file.*gens/2\.png"):
        inputs.check_plan(plan)
    with pytest.raises(NearIDError, match="prepared with masks None"):
        inputs.prepare(plan, tmp_path / "m")


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if any model is loaded."""
    from nearid.judges import loading
    from nearid.models import encoders

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(loading, "load_metric", refuse)
    monkeypatch.setattr(encoders, "load_encoder", refuse)


@pytest.mark.parametrize(
    "case, message",
    [
        ("out_is_input", r"pairs\.csv: is also an input of this command"),
        ("misspelt_masks", r"^--mask-folder \S+/maskz: no such folder; give the folder holding refs/ and gens/ masks$"),
    ],
)
def test_run_score_checks_the_inputs_before_any_model_loads(tmp_path, capsys, no_model, case, message):
    import re

    from nearid.score import ScoreConfig, run_score

    for i in range(2):
        draw(tmp_path / "refs" / f"{i}.png", i)
        draw(tmp_path / "gens" / f"{i}.png", 5 + i)
    (tmp_path / "masks" / "refs").mkdir(parents=True)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("reference,generated\nrefs/0.png,gens/0.png\n")
    config = {
        "out_is_input": ScoreConfig(refs=pairs, out=pairs, models=("tiny",)),
        "misspelt_masks": ScoreConfig(
            refs=tmp_path / "refs", gens=tmp_path / "gens", masks=tmp_path / "maskz", out=tmp_path / "o.csv"
        ),
    }[case]
    logged = []
    with pytest.raises(NearIDError) as raised:
        run_score(config, log=logged.append, warn=logged.append)
    assert "\n" not in str(raised.value) and re.search(message, str(raised.value)), raised.value
    assert logged == [] and pairs.read_text() == "reference,generated\nrefs/0.png,gens/0.png\n"
    assert not (tmp_path / "o.csv").exists()
    argv = ["score", "--refs", str(config.refs), "--out", str(config.out), "--model", "tiny"]
    argv += ["--gens", str(config.gens), "--masks", str(config.masks)] if config.gens else []
    assert main(argv) == 2  # the command is the same call: the same line, still no model
    err = capsys.readouterr().err
    assert err == f"nearid score: error: {raised.value}\n"


def test_score_config_refuses_what_means_nothing_when_built():
    from nearid.images.options import MaskOptions
    from nearid.score import ScoreConfig

    with pytest.raises(NearIDError, match="--model tiny is given twice"):
        ScoreConfig(refs="r", models=("tiny", "tiny"))
    with pytest.raises(NearIDError, match="one number cannot cut 2 metrics"):
        ScoreConfig(refs="r", models=("tiny", "histogram"), threshold="0.5")
    with pytest.raises(NearIDError, match="score one --model per sharded run"):
        ScoreConfig(refs="r", models=("tiny", "histogram"), num_shards=2, shard_index=0)
    with pytest.raises(NearIDError, match="--shard-index 2: out of range for --num-shards 2"):
        ScoreConfig(refs="r", models="tiny", num_shards=2, shard_index=2)
    with pytest.raises(NearIDError, match="--mask-dilate 3 dilates the cleaned mask"):
        ScoreConfig(refs="r", models="tiny", mask=MaskOptions("none", 3))
    config = ScoreConfig(refs="r", models="tiny", num_shards=2, shard_index=1)
    assert config.models == ("tiny",) and (config.shard.count, config.shard.index) == (2, 1)
