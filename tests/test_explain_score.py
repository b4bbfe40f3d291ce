"""``nearid score --explain K``: maps of the K lowest-scoring pairs beside the score outputs
(``<out>.explain.json``, named from the whole --out), shown by ``nearid report`` next to those pairs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from nearid.cli.app import main


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    for side in ("r", "g"):
        (tmp_path / side).mkdir()
    for index, size in enumerate((10, 20, 30, 40)):  # a larger replaced square, a lower score
        cells = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        ref = np.asarray(Image.fromarray(cells).resize((64, 48), Image.Resampling.NEAREST)).copy()
        gen = ref.copy()
        gen[:size, :size] = rng.integers(0, 255, (min(size, 48), size, 3))
        Image.fromarray(ref).save(tmp_path / "r" / f"p{index}.png")
        Image.fromarray(gen).save(tmp_path / "g" / f"p{index}.png")
    return tmp_path


def test_explain_k_stores_the_k_lowest_pairs_and_the_report_shows_them(folders):
    out = folders / "s.csv"
    args = ["score", "--refs", str(folders / "r"), "--gens", str(folders / "g"), "--model", "tiny"]
    assert main([*args, "--out", str(out), "--explain", "2"]) == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_pair = {(r["reference"], r["generated"]): float(r["similarity"]) for r in rows}
    stored = json.loads((folders / "s.csv.explain.json").read_text())
    assert stored["model"] == "tiny" and len(stored["pairs"]) == 2
    lowest = sorted(by_pair.values())[:2]
    got = sorted(entry["similarity"] for entry in stored["pairs"])
    np.testing.assert_allclose(got, lowest, atol=1e-5)
    for entry in stored["pairs"]:
        assert np.asarray(entry["generated_patches"]).shape == (8, 8)
        assert entry["generated_geometry"]["size"] == [48, 64]
    assert main(["report", str(folders / "s.csv.summary.json"), "--out", str(folders / "r.html")]) == 0
    page = (folders / "r.html").read_text()
    assert page.count("generated map") == 2 and page.count("reference map") == 2


def test_explain_is_refused_with_shards_and_off_by_default(folders, capsys):
    args = ["score", "--refs", str(folders / "r"), "--gens", str(folders / "g"), "--model", "tiny"]
    assert main([*args, "--out", str(folders / "a.csv")]) == 0
    assert not (folders / "a.csv.explain.json").exists()
    shard = ["--num-shards", "2", "--shard-index", "0", "--explain", "1"]
    assert main([*args, "--out", str(folders / "b.csv"), *shard]) == 2
    assert "--explain" in capsys.readouterr().err
