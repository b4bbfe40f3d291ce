"""`nearid bench --preset`: the paper's tables as a documented config, published values beside ours,
explicit options on top, and a fast one-line failure offline."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import tomllib

from nearid.bench.presets import (
    PRESETS,
    compared_encoders,
    comparison_csv,
    comparison_rows,
    hub_ids,
    protocol_differences,
    published_values,
    resolve,
)
from nearid.cli.app import main
from nearid.data.synth import SynthConfig, generate
from nearid.eval.results import read_results
from nearid.tiny.model import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("preset") / "synth"
    generate(
        root,
        SynthConfig(identities=16, size=48, seed=7, val=2, test=6, mtg_train=0, mtg_test=4, workers=1),
        progress=False,
    )
    return root


def test_presets_are_the_papers_tables():
    table1, table7 = PRESETS["table1"].values(), PRESETS["table7"].values()
    assert table1["encoders"] == ["nearid", "siglip2-map", "clip", "dinov2"]
    assert table1["sources"] == ["Flux", "Flux_1024", "Qwen", "Qwen_1328", "PowerPaint", "SDXL", "SDXL_1024"]
    assert (table1["data"], table1["split"], table1["masks"]) == ("Aleksandar/NearID", "test", False)
    assert (table1["mtg"], table1["mtg_split"]) == ("abdo-eldesokey/mtg-dataset", "test")
    assert {**table1, "masks": True} == table7 and table7["mask_cleaning"] == "authors"
    # the authors' trial formation and MTG's raw masks (spec 12.10), so ours and the published are one procedure
    assert table1["trials"] == table7["trials"] == "authors" and table7["mtg_mask_cleaning"] == "none"


def test_explicit_options_override_the_preset():
    values = resolve("table1", {"sources": ["Part"], "encoders": None, "masks": None, "mtg": "here/MTG"})
    assert values["sources"] == ["Part"] and values["mtg"] == "here/MTG"
    assert values["encoders"] == ["nearid", "siglip2-map", "clip", "dinov2"] and values["masks"] is False


def test_hub_ids_in_the_order_the_run_opens_them():
    ids = hub_ids(PRESETS["table1"].values())
    assert ids[0] == ("dataset", "Aleksandar/NearID") and ids[1] == ("dataset", "Aleksandar/NearID-Flux")
    assert ids[8] == ("dataset", "abdo-eldesokey/mtg-dataset")
    assert ids[9:] == [
        ("model", "Aleksandar/nearid-siglip2"),
        ("model", "google/siglip2-so400m-patch14-384"),
        ("model", "openai/clip-vit-large-patch14"),
        ("model", "facebook/dinov2-large"),
    ]
    overridden = resolve("table1", {"data": "/local/NearID", "mtg": "/local/MTG", "encoders": ["histogram", "tiny"]})
    assert hub_ids(overridden) == []  # local folders and model-free encoders need no hub


def test_published_values_are_one_package_data_file_with_sources():
    values = published_values()
    nearid = values["tables"]["table1"]["rows"]["nearid"]
    assert (nearid["ssr"], nearid["pa"], nearid["mtg_m_o"], nearid["mtg_ssr"]) == (99.17, 99.71, 0.465, 35.0)
    assert values["tables"]["table7"]["rows"]["clip"]["ssr"] == 51.3
    for table in values["tables"].values():
        assert set(table["rows"]) == {"nearid", "siglip2-map", "clip", "dinov2"}
        assert all(row["source"].startswith("NearID paper, Table") for row in table["rows"].values())
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "published/*.json" in package_data["nearid.bench"]


def test_offline_the_preset_fails_fast_with_the_download_fix(tmp_path, capsys, monkeypatch):
    import nearid.bench.run

    monkeypatch.setattr(nearid.bench.run, "run_bench", lambda *a, **k: pytest.fail("the run started"))
    assert main(["bench", "--preset", "table1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "dataset 'Aleksandar/NearID' is not in the Hugging Face cache" in err
    assert "`hf download Aleksandar/NearID --repo-type dataset`" in err
    assert not (tmp_path / "out").exists()  # nothing loaded, nothing embedded, nothing written
    # local data, hub models: the first missing model is named
    assert (
        main(
            [
                "bench",
                "--preset",
                "table1",
                "--data",
                str(tmp_path),
                "--mtg",
                str(tmp_path),
                "--sources",
                "A=" + str(tmp_path),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "model 'Aleksandar/nearid-siglip2' is not in the Hugging Face cache" in capsys.readouterr().err


def test_without_a_preset_the_required_options_are_named(tmp_path, capsys):
    assert main(["bench", "--data", "d", "--sources", "A", "--out", str(tmp_path)]) == 2
    assert "--model is required (or --preset table1 / table7)" in capsys.readouterr().err


def test_preset_machinery_on_synthetic_data(data, tmp_path, capsys):
    """Table 1's run with a small override (local synthetic data, one source, a tiny NearID checkpoint and
    the histogram): the tables and the comparison with the published values come out."""
    model = tmp_path / "tiny-nearid"
    build_tiny_model(0).save_pretrained(model)
    out = tmp_path / "out"
    argv = [
        "bench",
        "--preset",
        "table1",
        "--data",
        str(data),
        "--sources",
        "Part",
        "--mtg",
        str(data / "MTG"),
        "--encoder",
        f"nearid:{model}",
        "--encoder",
        "histogram",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    # issue 21.9: another data, sources and model are not the published protocol: the run's numbers,
    # and one line saying why there is no comparison (there was an "ours - published" table before)
    assert "| PA (as published) |" not in printed and "ours - published" not in printed
    (why,) = [line for line in printed.splitlines() if line.startswith("no comparison with the published")]
    assert "data:" in why and "sources:" in why and f"nearid:{model}" in why, why
    assert "| encoder | SSR |" in printed  # the run's own table
    assert not (out / "table1.md").exists() and not (out / "table1.csv").exists()
    results = read_results(out / "results.json")
    assert results.benchmark.sources == ["Part"] and results.benchmark.mtg_split == "test"
    assert results.benchmark.split == "test" and results.benchmark.condition == "full"
    rows = comparison_rows(results, PRESETS["table1"])
    nearid = {r["metric"]: r for r in rows if r["encoder"] == f"nearid:{model}"}
    score = results.encoders[f"nearid:{model}"].nearid.groups["all sources"].score
    assert nearid["SSR"]["ours"] == score.ssr and nearid["SSR"]["published"] == 99.17
    assert nearid["SSR"]["difference"] == pytest.approx(score.ssr - 99.17)
    assert (
        nearid["PA (as published)"]["ours"] == score.pa_published and nearid["PA (as published)"]["published"] == 99.71
    )
    assert nearid["PA (definition)"]["ours"] == score.pa
    assert nearid["MTG M-O"]["ours"] == results.encoders[f"nearid:{model}"].mtg.m_o
    assert nearid["MTG M-O"]["published"] == 0.465
    histogram = [r for r in rows if r["encoder"] == "histogram:8"]
    assert len(histogram) == 7 and all(math.isnan(r["published"]) for r in histogram)  # not in the paper
    with open(out / "x.csv", "w") as handle:  # the library still writes the comparison when asked
        handle.write(comparison_csv(results, PRESETS["table1"]))
    with open(out / "x.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 14 and written[0]["published"] == "99.17"


def test_only_the_published_protocol_is_compared():
    """Issue 21.9: the differences from a preset's protocol, by hand: none for the preset as it is."""
    preset = PRESETS["table1"]
    assert protocol_differences(preset, preset.values()) == []
    assert protocol_differences(preset, {**preset.values(), "split_file": None, "mask_dilate": 0}) == []
    changed = {**preset.values(), "split": "val", "encoders": ["nearid", "nearid:./mine"]}
    found = protocol_differences(preset, changed)
    assert found == ["split: val instead of test"], found  # an extra model is left out of the comparison, not the run
    assert compared_encoders(preset, changed["encoders"]) == ["nearid"]
    assert protocol_differences(preset, {**preset.values(), "sources": ["Flux"]}) == [
        "sources: Flux instead of " + " ".join(preset.sources)
    ]
    assert protocol_differences(preset, {**preset.values(), "fast_decode": True}) == [
        "fast_decode: True instead of False"
    ]
