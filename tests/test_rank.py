"""`nearid rank` (best-of-N): rankings checked against similarities computed independently with
`nearid.embed` / `nearid.similarity`, the table, copies and links, and the output guarantees (nothing
over or inside an input, repeated runs byte for byte, only rank's own stale selections removed, a
user's file never deleted, one run at a time per --out)."""

from __future__ import annotations

import csv
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import nearid
from nearid.cli.app import main
from nearid.io.errors import NearIDError
from nearid.io.ownership import MARKER
from nearid.score.plan import Pair, PairPlan
from nearid.score.rank import RankConfig, rank_generations
from nearid.score.ranking import candidate_outputs, folder_of, plan_groups, rank_rows


def draw(path: Path, seed: int, size=(40, 40)) -> Path:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    box = tuple(int(v) for v in (*rng.integers(2, 12, 2), *rng.integers(26, 38, 2)))
    ImageDraw.Draw(image).ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def noisy_copy(source: Path, path: Path, amount: int, seed: int) -> Path:
    pixels = np.asarray(Image.open(source).convert("RGB")).astype(int)
    noise = np.random.default_rng(seed).integers(-amount, amount + 1, pixels.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def tiny():
    return nearid.load_encoder("tiny", device="cpu")


def similarities(encoder, reference: Path, generated: list[Path]) -> list[float]:
    """Cosine of each generated image to the reference, the ordinary way (independent of score/rank)."""
    vectors = nearid.embed(encoder, [reference, *generated])
    return [float(v) for v in nearid.similarity(vectors[:1], vectors[1:])[0]]


def expected_order(scores: dict[Path, float]) -> list[Path]:
    """Best first; ties (equal to 6 decimals) by absolute path."""
    return sorted(scores, key=lambda p: (-round(scores[p], 6), os.path.abspath(p)))


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def tree(folder: Path) -> dict[str, bytes | str]:
    """Every file below ``folder`` but the ownership marker: its bytes, or a link's target."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.name == MARKER:
            continue
        if path.is_symlink():
            found[name] = "-> " + os.readlink(path)
        elif path.is_file():
            found[name] = path.read_bytes()
    return found


@pytest.fixture
def subjects(tmp_path):
    """refs/<subject>/ref.png and gens/<subject>/: an exact copy, noisy copies and unrelated images."""
    refs, gens = tmp_path / "refs", tmp_path / "gens"
    for s, subject in enumerate(["cat", "dog"]):
        reference = draw(refs / subject / "ref.png", 100 + s)
        (gens / subject).mkdir(parents=True)
        (gens / subject / "e_copy.png").write_bytes(reference.read_bytes())
        noisy_copy(reference, gens / subject / "c_noisy.png", 12, s)
        noisy_copy(reference, gens / subject / "a_noisier.png", 60, s)
        draw(gens / subject / "b_other.png", 200 + s)
        draw(gens / subject / "d_other.png", 300 + s)
    return refs, gens


def test_subject_folders_ranked_as_independent_similarities_say(tmp_path, tiny, subjects):
    refs, gens = subjects
    out = tmp_path / "ranked"
    result = rank_generations(RankConfig(refs=refs, gens=gens, out=out, model="tiny", top=2), log=lambda _: None)
    rows = read_rows(out / "ranking.csv")
    assert [r["group"] for r in rows] == ["cat"] * 5 + ["dog"] * 5
    for subject in ("cat", "dog"):
        generated = sorted((gens / subject).iterdir())
        by_hand = dict(zip(generated, similarities(tiny, refs / subject / "ref.png", generated)))
        order = expected_order(by_hand)
        assert order[0].name == "e_copy.png" and by_hand[order[0]] == pytest.approx(1.0, abs=1e-5)
        mine = [r for r in rows if r["group"] == subject]
        assert [Path(r["generated"]) for r in mine] == [p.absolute() for p in order]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3, 4, 5]
        for r in mine:
            assert float(r["similarity"]) == pytest.approx(by_hand[Path(r["generated"])], abs=1e-5)
            assert r["reference"] == str((refs / subject / "ref.png").absolute()) and r["n_references"] == "1"
        assert [r["selected"] for r in mine] == ["1", "1", "0", "0", "0"]
        assert [r["output"] for r in mine[:2]] == [f"{subject}/01_{order[0].name}", f"{subject}/02_{order[1].name}"]
        for r in mine[:2]:
            copy = out / r["output"]
            assert not copy.is_symlink() and filecmp.cmp(copy, r["generated"], shallow=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(
        r["output"] for r in rows if r["output"]
    )
    assert len(result.selected) == 4 and result.empty_groups == []
    assert list(read_rows(out / "ranking.csv")[0]) == [
        "group",
        "generated",
        "reference",
        "n_references",
        "similarity",
        "rank",
        "selected",
        "output",
    ]


def test_a_subject_with_several_references_ranks_by_the_mean(tmp_path, tiny):
    refs, gens = tmp_path / "refs", tmp_path / "gens"
    references = [draw(refs / "toy" / f"r{i}.png", 10 + i) for i in range(2)]
    generated = [noisy_copy(references[0], gens / "toy" / "g0.png", 20, 0), draw(gens / "toy" / "g1.png", 50)]
    generated.append(noisy_copy(references[1], gens / "toy" / "g2.png", 20, 1))
    out = tmp_path / "out"
    assert main(["rank", "--refs", str(refs), "--gens", str(gens), "--model", "tiny", "--out", str(out)]) == 0
    per_ref = np.array([similarities(tiny, r, generated) for r in references])  # [refs, gens]
    means = dict(zip(generated, per_ref.mean(axis=0)))
    rows = read_rows(out / "ranking.csv")
    assert [Path(r["generated"]) for r in rows] == [p.absolute() for p in expected_order(means)]
    assert all(r["n_references"] == "2" and r["reference"] == "" for r in rows)
    for r in rows:
        assert float(r["similarity"]) == pytest.approx(means[Path(r["generated"])], abs=1e-5)
    assert [r["output"] for r in rows] == [f"toy/01_{Path(rows[0]['generated']).name}", "", ""]


def test_pairs_csv_groups_by_reference_links_and_verdicts(tmp_path, tiny, capsys):
    a, b = draw(tmp_path / "refs" / "a.png", 1), draw(tmp_path / "refs" / "b.png", 2)
    gens = [noisy_copy(a, tmp_path / "gens" / "x" / "0.png", 8, 0), draw(tmp_path / "gens" / "y" / "0.png", 3)]
    gens.append(noisy_copy(b, tmp_path / "gens" / "z.png", 8, 1))
    lines = ["reference,generated", "refs/a.png,gens/x/0.png", "refs/a.png,gens/y/0.png", "refs/a.png,gens/z.png"]
    lines += ["refs/b.png,gens/z.png", "refs/b.png,gens/y/0.png"]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "best"
    argv = ["rank", "--refs", str(tmp_path / "pairs.csv"), "--model", "tiny", "--out", str(out), "--top", "3"]
    assert main([*argv, "--link", "--threshold", "0.9"]) == 0
    assert "pairing: csv" in capsys.readouterr().out
    rows = read_rows(out / "ranking.csv")
    assert [r["group"] for r in rows] == ["refs/a"] * 3 + ["refs/b"] * 2
    for reference, group in ((a, "refs/a"), (b, "refs/b")):
        mine = [r for r in rows if r["group"] == group]
        listed = [Path(r["generated"]) for r in mine]
        by_hand = dict(zip(listed, similarities(tiny, reference, listed)))
        assert listed == expected_order(by_hand)
        assert [r["same"] for r in mine] == [str(int(by_hand[p] > 0.9)) for p in listed]
    # the same file name in two folders: the rank keeps the selected names apart
    outputs = [r["output"] for r in rows]
    assert outputs[:3] == [f"refs/a/0{k}_{Path(r['generated']).name}" for k, r in enumerate(rows[:3], start=1)]
    assert sorted(o[-6:] for o in outputs[:3]) == ["_0.png", "_0.png", "_z.png"] and outputs[3:] == [
        f"refs/b/0{k}_{Path(r['generated']).name}" for k, r in enumerate(rows[3:], start=1)
    ]
    for r in (r for r in rows if r["output"]):
        link = out / r["output"]
        assert link.is_symlink() and os.readlink(link) == r["generated"]
        assert link.read_bytes() == Path(r["generated"]).read_bytes()
    # links -> copies: the same names, now files
    assert main(argv) == 0
    assert all(not (out / r["output"]).is_symlink() for r in read_rows(out / "ranking.csv") if r["output"])


def test_ties_are_broken_by_path(tmp_path):
    refs = tmp_path / "refs"
    plan = PairPlan("paths", [], roots={"refs": refs, "gens": tmp_path / "gens"})
    generated = [tmp_path / "gens" / name for name in ("b.png", "a.png", "c.png", "d.png")]
    plan.pairs = [Pair(refs / "r.png", g) for g in generated]
    scores = np.array([0.5, 0.5, 0.50000004, np.nan])
    rows = rank_rows(plan, plan_groups(plan), scores, top=2)
    assert [(r.generated.name, r.rank, r.output) for r in rows] == [
        ("a.png", 1, "r/01_a.png"),  # 0.5 and 0.50000004 are equal to 6 decimals: by path
        ("b.png", 2, "r/02_b.png"),
        ("c.png", 3, None),
        ("d.png", None, None),  # not scored: listed last, unranked
    ]
    assert candidate_outputs(plan, plan_groups(plan), 2) == {f"r/0{k}_{g.name}" for k in (1, 2) for g in generated}


def test_group_folders_stay_inside_out():
    assert folder_of("../../etc") == "_./_./etc" and folder_of("a/../b/./c") == "a/_./b/c"
    assert folder_of(".hidden") == "_hidden" and folder_of("x:y*z") == "x_y_z" and folder_of("/") == "_"
    assert folder_of("dog/ref") == "dog/ref" and folder_of("a\\b") == "a/b"


@pytest.fixture
def no_model(monkeypatch):
    from nearid.judges import loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(loading, "load_metric", refuse)


@pytest.mark.parametrize(
    "case, message",
    [
        ("out_is_gens", r"lies inside the input folder|is also an input"),
        ("out_inside_refs", r"ranked: lies inside the input folder \S+refs"),
        ("inputs_inside_out", r"holds the input"),
        ("top_zero", r"argument --top: 0: give an integer of at least 1"),
        ("missing_gens", r"nosuch: no such folder"),
        ("all_empty", r"nothing to rank: no reference or subject has generated images"),
        ("user_folder", r"not made by nearid rank and not empty"),
    ],
)
def test_bad_invocations_are_one_line_before_any_model(tmp_path, capsys, no_model, subjects, case, message):
    import re

    refs, gens = subjects
    out = tmp_path / "ranked"
    argv = ["rank", "--refs", str(refs), "--gens", str(gens), "--model", "tiny", "--out", str(out)]
    if case == "out_is_gens":
        argv[-1] = str(gens)
    elif case == "out_inside_refs":
        argv[-1] = str(refs / "ranked")
    elif case == "inputs_inside_out":
        argv[-1] = str(tmp_path)
    elif case == "top_zero":
        argv += ["--top", "0"]
    elif case == "missing_gens":
        argv[argv.index("--gens") + 1] = str(tmp_path / "nosuch")
    elif case == "all_empty":
        for subject in ("cat", "dog"):
            for path in (gens / subject).iterdir():
                path.unlink()
    elif case == "user_folder":
        (out / "mine").mkdir(parents=True)
    before = tree(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert tree(tmp_path) == before


def test_an_empty_group_is_reported_not_fatal(tmp_path, capsys, subjects):
    refs, gens = subjects
    draw(refs / "owl" / "ref.png", 7)  # no gens/owl at all
    draw(refs / "emu" / "ref.png", 8)
    (gens / "emu").mkdir()  # gens/emu empty
    out = tmp_path / "ranked"
    result = rank_generations(RankConfig(refs=refs, gens=gens, out=out, model="tiny"), log=print)
    err = capsys.readouterr().err
    assert f"{refs / 'owl'}: no generated images" in err and f"{gens / 'emu'}: no generated images" in err
    assert sorted(result.empty_groups) == sorted([str(refs / "owl"), str(gens / "emu")])
    assert {r["group"] for r in read_rows(out / "ranking.csv")} == {"cat", "dog"}


def test_rank_config_refuses_what_means_nothing():
    for top in (0, -1, True, 1.5):
        with pytest.raises(NearIDError, match="--top"):
            RankConfig(refs="r", top=top)
    with pytest.raises(NearIDError, match="--calibration"):
        RankConfig(refs="r", calibration="c.json")


def test_repeated_runs_changed_inputs_and_a_users_files(tmp_path, subjects):
    refs, gens = subjects
    out = tmp_path / "ranked"
    config = RankConfig(refs=refs, gens=gens, out=out, model="tiny", top=2)
    quiet = {"log": lambda _: None, "warn": lambda _: None}
    rank_generations(config, **quiet)
    first = tree(out)
    rank_generations(config, **quiet)
    assert tree(out) == first  # byte for byte
    fresh = tmp_path / "fresh"
    rank_generations(RankConfig(refs=refs, gens=gens, out=fresh, model="tiny", top=2), **quiet)
    assert tree(fresh) == first

    (out / "notes.txt").write_text("mine")
    (out / "cat" / "keep.png").write_bytes(b"mine too")
    # a new best generation for cat: its old second place is no longer selected
    (gens / "cat" / "0_copy.png").write_bytes((refs / "cat" / "ref.png").read_bytes())
    result = rank_generations(config, **quiet)
    assert result.removed == ["cat/01_e_copy.png", "cat/02_c_noisy.png"]  # the copies tie: by path
    assert sorted(p.name for p in (out / "cat").iterdir()) == ["01_0_copy.png", "02_e_copy.png", "keep.png"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "cat" / "keep.png").read_bytes() == b"mine too"
    fresh2 = tmp_path / "fresh2"
    rank_generations(RankConfig(refs=refs, gens=gens, out=fresh2, model="tiny", top=2), **quiet)
    assert {k: v for k, v in tree(out).items() if k not in ("notes.txt", "cat/keep.png")} == tree(fresh2)

    # a user's file where a selection goes: refused, nothing changed
    (gens / "dog" / "0_copy.png").write_bytes((refs / "dog" / "ref.png").read_bytes())
    (out / "dog" / "01_0_copy.png").write_bytes(b"user's")
    before = tree(out)
    with pytest.raises(NearIDError, match=r"01_0_copy\.png: exists and nearid rank did not write it"):
        rank_generations(config, **quiet)
    assert tree(out) == before


RANK_PROCESS = """
import sys
from nearid.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_concurrent_runs_into_one_out(tmp_path, subjects):
    refs, gens = subjects
    out = tmp_path / "ranked"
    argv = ["rank", "--refs", str(refs), "--gens", str(gens), "--model", "tiny", "--out", str(out), "--top", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_PROCESS, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for _ in range(2)
    ]
    done = [(run.wait(timeout=300), run.stderr.read().decode()) for run in runs]
    assert any(code == 0 for code, _ in done), done
    for code, err in done:
        if code != 0:
            assert code == 2 and err.count("\n") == 1 and "another nearid rank is writing it now" in err, err
    fresh = tmp_path / "fresh"
    rank_generations(RankConfig(refs=refs, gens=gens, out=fresh, model="tiny", top=2), log=lambda _: None)
    assert tree(out) == tree(fresh)


@pytest.mark.slow
def test_rank_parse_path_is_light(tmp_path):
    from .test_cli_light import assert_light, run_nearid

    done, modules = run_nearid(tmp_path, "rank", "--help")
    assert done.returncode == 0 and "--top K" in done.stdout and "--link" in done.stdout
    assert_light(done, modules)
    done, modules = run_nearid(tmp_path, "rank", "--refs", str(tmp_path), "--top", "0")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--top" in done.stderr
    assert_light(done, modules)


def test_score_lists_an_empty_subject_folder_as_a_bad_input(tmp_path, subjects, capsys):
    """The subjects rule names an empty generated subject folder among the bad inputs (rank: an empty
    group), so `nearid score --skip-errors` scores the other subjects instead of stopping."""
    refs, gens = subjects
    draw(refs / "emu" / "ref.png", 8)
    (gens / "emu").mkdir()
    out = tmp_path / "s.csv"
    argv = ["score", "--refs", str(refs), "--gens", str(gens), "--model", "tiny", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"nearid score: error: {gens / 'emu'}: no generated images in this subject folder; fix the inputs or pass --skip-errors\n"
    )
    assert main([*argv, "--skip-errors"]) == 0
    assert {r["subject"] for r in read_rows(out)} == {"cat", "dog"}


def test_recorded_files_belong_to_one_command(tmp_path):
    from nearid.io.ownership import OutputFolderError, create_owned, record_files, recorded_files

    create_owned(tmp_path / "r", "rank")
    assert recorded_files(tmp_path / "r", "rank") == set()
    record_files(tmp_path / "r", "rank", ["b/1.png", "a.csv", "a.csv"])
    assert recorded_files(tmp_path / "r", "rank") == {"a.csv", "b/1.png"}
    assert recorded_files(tmp_path / "r", "synth") == set()  # another command's folder records none of its files
    create_owned(tmp_path / "s", "synth")
    with pytest.raises(OutputFolderError, match="not made by `nearid rank`"):
        record_files(tmp_path / "s", "rank", ["x"])
    with pytest.raises(OutputFolderError, match="not made by `nearid rank`"):
        record_files(tmp_path / "plain", "rank", ["x"])
