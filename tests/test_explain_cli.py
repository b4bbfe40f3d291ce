"""``nearid explain``: one pair -> one PNG, a folder pair or pairs CSV -> one PNG per pair in a folder;
what cannot be explained or would write over an input is refused with one line and exit 2."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nearid.cli.app import main


@pytest.fixture
def pair_folders(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "r").mkdir()
    (tmp_path / "g").mkdir()
    for name in ("a", "b"):
        cells = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        ref = np.asarray(Image.fromarray(cells).resize((120, 90), Image.Resampling.NEAREST)).copy()
        gen = ref.copy()
        gen[20:50, 30:70] = rng.integers(0, 255, (30, 40, 3))
        Image.fromarray(ref).save(tmp_path / "r" / f"{name}.png")
        Image.fromarray(gen).save(tmp_path / "g" / f"{name}.png")
    return tmp_path


def test_one_pair_writes_one_picture(pair_folders, capsys):
    out = pair_folders / "map.png"
    args = ["explain", str(pair_folders / "r/a.png"), str(pair_folders / "g/a.png"), "--model", "tiny"]
    assert main([*args, "--out", str(out), "--threshold", "0.5"]) == 0
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > picture.height > 100
    assert "wrote 1 picture" in capsys.readouterr().out


def test_folder_pair_and_csv_write_one_picture_per_pair(pair_folders):
    assert (
        main(
            [
                "explain",
                str(pair_folders / "r"),
                str(pair_folders / "g"),
                "--model",
                "tiny",
                "--out",
                str(pair_folders / "pics"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (pair_folders / "pics").glob("*.png")) == ["0000-a.png", "0001-b.png"]
    (pair_folders / "pairs.csv").write_text("reference,generated\nr/a.png,g/b.png\n")
    assert (
        main(["explain", str(pair_folders / "pairs.csv"), "--model", "tiny", "--out", str(pair_folders / "csv")]) == 0
    )
    assert [p.name for p in (pair_folders / "csv").glob("*.png")] == ["0000-b.png"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "histogram", "--out", "x.png"], "no patch tokens"),
        (["--model", "tiny", "--out", "{r}/a.png"], "also an input"),
        (["--model", "tiny", "--out", "x.jpg"], "give a .png"),
    ],
)
def test_refusals_are_one_line_exit_2(pair_folders, capsys, extra, message):
    extra = [e.replace("{r}", str(pair_folders / "r")) for e in extra]
    extra = [str(pair_folders / e) if e.startswith("x.") else e for e in extra]
    assert main(["explain", str(pair_folders / "r/a.png"), str(pair_folders / "g/a.png"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
