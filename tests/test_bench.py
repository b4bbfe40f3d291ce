"""`nearid bench` end to end on a small synthetic benchmark: counts, CSVs, resume, 2 processes; and the
pure evaluation under it (plan, tables) against directly computed cosines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nearid
from nearid.bench.run import BenchConfig, run_bench
from nearid.cli.app import main
from nearid.data import Identity, View, load_mtg, load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.eval.evaluate import fill_tables, image_key, plan_images
from nearid.eval.metrics import nearid_scores
from nearid.eval.results import BenchResults
from nearid.eval.simtables import read_mtg_csv, read_nearid_csv
from nearid.images.decode import ImageRef
from nearid.images.mask_cleaning import cleaned_mask_ref

SOURCES = ["Part", "Shape"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "synth"
    generate(
        root,
        SynthConfig(identities=24, size=48, seed=5, val=2, test=8, mtg_train=0, mtg_test=6, workers=1),
        progress=False,
    )
    return root


def config(data, out, **overrides):
    values = dict(encoders=["tiny", "histogram"], data=str(data), sources=SOURCES, out=str(out), mtg=str(data / "MTG"))
    values.update(overrides)
    return BenchConfig(**values)


def expected_unique_images(data, masks=False) -> int:
    bench = load_nearid(data, SOURCES, split="test")
    views = sum(len(i.view_slots) for i in bench)
    distractors = sum(1 for i in bench for s in SOURCES for j in i.view_slots if i.distractor(s, j) is not None)
    return views + distractors + 6 * 4  # MTG: 2 originals + 2 edited per sample


def expected_mtg(encoder, data, masks=False, clean=False) -> dict:
    """MTG figures computed here from directly embedded images, by the spec's formulas (spec 6.4). Under
    masks the object masks are used raw (binarised), as the authors use MTG's masks (spec 12.10), or
    cleaned with ``clean`` (``--mtg-mask-cleaning authors``)."""
    samples = list(load_mtg(data / "MTG", split="test"))
    sims = {name: [] for name in ("12", "11p", "12p", "22p", "21p")}
    for sample in samples:
        m = [sample.object_masks[k] if masks else None for k in (0, 1)]
        m = [cleaned_mask_ref(x) if clean else x for x in m]
        v1, v2, v1p, v2p = nearid.embed(encoder, [*sample.originals, *sample.edited], [m[0], m[1], m[0], m[1]]).double()
        for name, (a, b) in zip(sims, ((v1, v2), (v1, v1p), (v1, v2p), (v2, v2p), (v2, v1p))):
            sims[name].append(float(a @ b))
    s = {name: np.array(v) for name, v in sims.items()}
    o1, o2 = np.array([x.oracle(0) for x in samples]), np.array([x.oracle(1) for x in samples])
    margins = np.stack([s["12"] - s["11p"], s["12"] - s["22p"]], axis=1)
    r = [
        np.corrcoef(s["11p"], o1)[0, 1],
        np.corrcoef(s["22p"], o2)[0, 1],
        np.corrcoef(s["12p"], o2)[0, 1],
        np.corrcoef(s["21p"], o1)[0, 1],
    ]
    z = np.arctanh(np.clip(np.nan_to_num(r), -0.999, 0.999))
    return {
        "ssr": 100 * np.mean((margins > 0).all(axis=1)),
        "pa": 100 * np.mean(margins > 0),
        "n_samples": len(samples),
        "n_trials": 2 * len(samples),
        "m_o": np.tanh(z.mean()),
        "m_opair": np.tanh(z[:2].mean()),
        "correlations": r,
    }


def expected_nearid(encoder, data, source: str, masks: bool, cleaning: str = "authors") -> dict:
    """SSR / PA of one source, from images embedded here one identity at a time and the paper's margins
    written out as loops; under ``masks`` view j and the distractor in view j's background are both cut
    with view j's mask, cleaned as the authors clean it (or raw with ``cleaning="none"``)."""
    n_samples = all_win = trials = wins = mean_wins = 0
    for identity in load_nearid(data, [source], split="test"):
        slots = identity.view_slots
        masks_of = [identity.views[j].mask if masks else None for j in slots]
        if masks and cleaning == "authors":
            masks_of = [cleaned_mask_ref(m) for m in masks_of]
        views = dict(zip(slots, nearid.embed(encoder, [identity.views[j].image for j in slots], masks_of).double()))
        own = {}
        for j, mask in zip(slots, masks_of):
            distractor = identity.distractor(source, j)
            if distractor is not None:
                own[j] = float(views[j] @ nearid.embed(encoder, [distractor], [mask]).double()[0])
        margins = [
            float(views[a] @ views[b]) - own[anchor]
            for a in slots
            for b in slots
            if a < b
            for anchor in (a, b)
            if anchor in own
        ]
        if margins:
            n_samples += 1
            all_win += all(m > 0 for m in margins)
            trials += len(margins)
            wins += sum(m > 0 for m in margins)
            mean_wins += sum(margins) / len(margins) > 0
    return {
        "ssr": 100 * all_win / n_samples,
        "pa": 100 * wins / trials,
        "n_samples": n_samples,
        "n_trials": trials,
        "n_wins": wins,
        "n_all_win": all_win,
        "n_mean_win": mean_wins,
        "pa_published": 100 * (wins + mean_wins) / (trials + n_samples),
    }


def test_counts_tables_and_csvs(data, tmp_path):
    results = run_bench(config(data, tmp_path))
    unique = expected_unique_images(data)
    for name in ("tiny:0 (untrained)", "histogram:8"):
        result = results.encoders[name]
        assert result.unique_images == unique and result.embeddings_computed == unique
        assert set(result.nearid.per_source) == set(SOURCES)
        assert result.nearid.groups["all sources"].sources == SOURCES
    assert results.encoders["tiny:0 (untrained)"].untrained is True
    assert any(f"embeddings computed: {unique}" in line for line in results.log)
    for suffix in ("json", "md", "csv", "tex"):
        assert (tmp_path / f"results.{suffix}").is_file()
    assert "| tiny:0 (untrained) |" in (tmp_path / "results.md").read_text()
    assert BenchResults.from_json((tmp_path / "results.json").read_text()) == results
    # the CSVs re-score to the same numbers through an independent path (`nearid metrics`)
    histogram = results.encoders["histogram:8"]
    folder = next(p for p in (tmp_path / "sims").iterdir() if p.name.startswith("histogram"))
    for source in SOURCES:
        score = nearid_scores(*read_nearid_csv(folder / f"{source}_full.csv"))
        assert score == histogram.nearid.per_source[source]
    _sims, oracles = read_mtg_csv(folder / "mtg_full.csv")
    assert len(oracles[0]) == 6 and np.all((oracles[0] > 0) & (oracles[0] < 1))


@pytest.mark.parametrize(("masks", "clean"), [(False, False), (True, False), (True, True)])
def test_mtg_figures_equal_a_direct_computation(data, tmp_path, masks, clean):
    cleaning = {"mtg_mask_cleaning": "authors"} if clean else {}
    results = run_bench(
        config(data, tmp_path, encoders=["histogram"], sources=["Part"], mtg_split="test", masks=masks, **cleaning)
    )
    assert (results.benchmark.mtg_split, results.benchmark.mtg_samples) == ("test", 6)
    assert results.benchmark.mtg_mask_cleaning == (("authors" if clean else "none") if masks else None)
    mtg = results.encoders["histogram:8"].mtg
    expected = expected_mtg(nearid.load_encoder("histogram", device="cpu"), data, masks, clean)
    assert 0.05 < abs(expected["m_o"]) < 0.999 and expected["m_o"] != expected["m_opair"]  # can tell right from wrong
    np.testing.assert_allclose(mtg.correlations, expected.pop("correlations"), atol=1e-9)
    assert {k: mtg.as_dict()[k] for k in expected} == pytest.approx(expected, abs=1e-9)


def test_mtg_split_is_an_option(data, tmp_path, capsys):
    argv = [
        "bench",
        "--encoder",
        "histogram",
        "--data",
        str(data),
        "--sources",
        "Part",
        "--mtg",
        str(data / "MTG"),
        "--out",
        str(tmp_path),
    ]
    assert main([*argv, "--mtg-split", "train"]) == 2  # this MTG has no train split: the option reached the loader
    assert "MTG: has no split 'train' (it has test)" in capsys.readouterr().err


def test_rerun_resumes_from_the_store(data, tmp_path):
    first = run_bench(config(data, tmp_path, encoders=["histogram"]))
    again = run_bench(config(data, tmp_path, encoders=["histogram"]))
    result = again.encoders["histogram:8"]
    assert result.embeddings_computed == 0 and result.unique_images == expected_unique_images(data)
    assert result.nearid == first.encoders["histogram:8"].nearid


def test_masks_use_the_view_silhouette(data, tmp_path):
    cleaned = run_bench(config(data, tmp_path, encoders=["histogram"], masks=True, mtg=None))
    assert cleaned.benchmark.condition == "foreground"
    assert (cleaned.benchmark.mask_cleaning, cleaned.benchmark.mask_dilate) == ("authors", 0)  # the default
    results = run_bench(
        config(data, tmp_path / "raw", encoders=["histogram"], masks=True, mtg=None, mask_cleaning="none")
    )
    assert results.benchmark.mask_cleaning == "none"
    full = run_bench(config(data, tmp_path / "full", encoders=["histogram"], mtg=None))
    assert full.benchmark.mask_cleaning is None
    encoder = nearid.load_encoder("histogram", device="cpu")
    for run, masks, cleaning in ((cleaned, True, "authors"), (results, True, "none"), (full, False, "none")):
        for source in SOURCES:
            score = run.encoders["histogram:8"].nearid.per_source[source]
            assert score.as_dict() == pytest.approx(expected_nearid(encoder, data, source, masks, cleaning))
    masked_pa = results.encoders["histogram:8"].nearid.groups["all sources"].score.pa
    full_pa = full.encoders["histogram:8"].nearid.groups["all sources"].score.pa
    assert masked_pa > full_pa  # the colour histogram is fooled by context, less so without it


def _ref(key: str) -> ImageRef:
    return ImageRef(key, lambda: b"")


def test_fill_tables_against_direct_cosines():
    """Every cell from one lookup per (image, mask); a missing middle view, a missing distractor and
    masks must not move any distractor onto another view's background."""

    def identity(i, slots, missing=()):
        views = tuple(View(_ref(f"v{i}{j}"), _ref(f"m{i}{j}")) if j in slots else None for j in range(3))
        distractors = {
            s: tuple(_ref(f"{s}{i}{j}") if j in slots and (s, j) not in missing else None for j in range(3))
            for s in ("A", "B")
        }
        return Identity(id=i, row=i, views=views, distractors=distractors, category="c")

    bench = [identity(0, (0, 1, 2)), identity(1, (0, 2), missing={("B", 2)}), identity(2, (1, 2), missing={("A", 1)})]
    for masks in (False, True):
        plan = plan_images(bench, ["A", "B"], masks=masks, mask_cleaning="none")
        assert (
            len(plan) == len(set(plan.keys)) == 7 + 2 * 7 - 2
        )  # 7 views; per source one distractor per view, 2 missing
        rng = np.random.default_rng(1)
        matrix = rng.normal(size=(len(plan), 5))
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        vector = {key: matrix[r] for r, key in enumerate(plan.keys)}
        tables = fill_tables(plan, matrix)
        for i, ident in enumerate(bench):

            def view(j, ident=ident, masks=masks, vector=vector):
                return vector[image_key(ident.views[j].image, ident.views[j].mask if masks else None)]

            for k, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))):
                present = ident.views[a] is not None and ident.views[b] is not None
                expected = float(view(a) @ view(b)) if present else np.nan
                assert tables["A"].pair[i, k] == pytest.approx(expected, abs=1e-12, nan_ok=True)
            for source in ("A", "B"):
                for a in range(3):
                    for b in range(3):
                        n_b = ident.distractor(source, b)
                        if ident.views[a] is None or n_b is None:
                            assert np.isnan(tables[source].cross[i, a, b])
                            continue
                        n_b = vector[image_key(n_b, ident.views[b].mask if masks else None)]  # view b's silhouette
                        assert tables[source].cross[i, a, b] == pytest.approx(float(view(a) @ n_b), abs=1e-12)
        assert tables["B"].ids == [0, 1, 2]


@pytest.mark.slow
def test_two_processes_give_the_same_numbers(data, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    argv = [
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
    ]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "nearid", *argv, "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[:3000]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    for name, result in one["encoders"].items():
        other = two["encoders"][name]
        assert other["nearid"] == result["nearid"]
        correlations = other["mtg"].pop("correlations")
        assert correlations == pytest.approx(result["mtg"].pop("correlations"))
        assert other["mtg"] == pytest.approx(result["mtg"])
        assert other["embeddings_computed"] == result["unique_images"]
    assert "process 1: embedded" in done.stdout and "processes: 2" in done.stdout


def test_metrics_command_pools_csvs(data, tmp_path, capsys):
    run_bench(config(data, tmp_path, encoders=["histogram"], mtg=None))
    capsys.readouterr()
    folder = next((tmp_path / "sims").iterdir())
    paths = [str(folder / f"{s}_full.csv") for s in SOURCES]
    assert main(["metrics", *paths, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    pooled = json.loads((tmp_path / "results.json").read_text())["encoders"]["histogram:8"]["nearid"]["groups"][
        "all sources"
    ]
    assert printed == {k: pytest.approx(pooled[k]) for k in ("ssr", "pa", "pa_published", "n_samples", "n_trials")}


def test_metrics_command_errors(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,sim_01,sim_02\n1,0.5,\n")
    assert main(["metrics", str(bad)]) == 2
    assert "bad.csv: missing column 'cross_00'" in capsys.readouterr().err
    bad.write_text("sample_id,sim_01,sim_02,sim_12,cross_00,cross_11,cross_22\n1,0.5,,,abc,0.1,\n")
    assert main(["metrics", str(bad)]) == 2
    assert "bad.csv: line 2, column cross_00: 'abc' is not a number" in capsys.readouterr().err


def test_authors_layout_by_hand(tmp_path, capsys):
    table = tmp_path / "sims.csv"
    table.write_text(
        "sample_id,n_pos,n_neg,sim_01,sim_02,sim_12,cross_00,cross_01,cross_10,cross_11,cross_22\n"
        "7,2,2,0.8,,,0.5,0.1,0.2,0.9,\n"  # delta(0->1)=0.3 win, delta(1->0)=-0.1 loss
        "9,3,3,0.9,0.8,0.7,0.1,,,0.2,0.3\n"  # all 6 win
    )
    assert main(["metrics", str(table), "--json"]) == 0
    # identity 7: margins +0.3, -0.1 (mean > 0); identity 9: all 6 win -> published (7 + 2) / (8 + 2)
    assert json.loads(capsys.readouterr().out) == {
        "ssr": 50.0,
        "pa": pytest.approx(700 / 8),
        "n_samples": 2,
        "n_trials": 8,
        "pa_published": pytest.approx(90.0),
    }


def test_authors_two_view_table_without_third_view_columns(tmp_path, capsys):
    """The authors' CSVs of 2-view identities have no sim_02 / sim_12 / cross_*2 columns at all."""
    table = tmp_path / "sims.csv"
    table.write_text(
        "sample_id,category,n_pos,n_neg,sim_01,cross_00,cross_01,cross_10,cross_11\n"
        "3,cup,2,2,0.5,0.25,0.9,0.9,0.875\n"  # margins +0.25, -0.375: one win, mean < 0
        "4,mug,2,2,0.75,0.5,0.1,0.1,0.25\n"  # margins +0.25, +0.5: two wins, mean > 0
    )
    assert main(["metrics", str(table), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ssr": 50.0,
        "pa": 75.0,
        "n_samples": 2,
        "n_trials": 4,
        "pa_published": pytest.approx(100 * 4 / 6),
    }


# ------------------------------------------------------------------ masks: the authors' rules (spec 12.2)
def _identity_with_masks(i, masked=(0, 1, 2)):
    views = tuple(View(_ref(f"v{i}{j}"), _ref(f"m{i}{j}") if j in masked else None) for j in range(3))
    distractors = {"A": tuple(_ref(f"A{i}{j}") for j in range(3))}
    return Identity(id=i, row=i, views=views, distractors=distractors, category="c")


def test_plan_drops_a_view_without_a_mask_with_its_distractors():
    bench = [_identity_with_masks(0), _identity_with_masks(1, masked=(0, 2))]
    plan = plan_images(bench, ["A"], masks=True, mask_cleaning="none")
    assert plan.views_without_mask == 1
    assert plan.views[1, 1] == -1 and plan.distractors["A"][1, 1] == -1  # view 1 and its distractor are gone
    assert (plan.views[1, [0, 2]] >= 0).all() and (plan.distractors["A"][1, [0, 2]] >= 0).all()
    assert len(plan) == 6 + 4 and "v11" not in " ".join(plan.keys) and "A11" not in " ".join(plan.keys)
    # 3 views -> 6 trials; with view 1 dropped: 2 trials (pair 0-2 both ways), as the authors count
    tables = fill_tables(plan, np.eye(len(plan)))
    assert np.isfinite(tables["A"].pair[1]).sum() == 1 and np.isfinite(tables["A"].own_background[1]).sum() == 2
    assert tables["A"].scores().n_trials == 6 + 2
    full = plan_images(bench, ["A"], masks=False)
    assert full.views_without_mask == 0 and (full.views >= 0).all()  # without --masks nothing is dropped


def test_plan_keys_of_cleaned_and_raw_masks_differ():
    bench = [_identity_with_masks(0)]
    raw = plan_images(bench, ["A"], masks=True, mask_cleaning="none")
    cleaned = plan_images(bench, ["A"], masks=True)
    dilated = plan_images(bench, ["A"], masks=True, mask_dilate=3)
    assert raw.keys == [image_key(ref, _ref(f"m0{j}")) for j in range(3) for ref in (_ref(f"v0{j}"), _ref(f"A0{j}"))]
    assert cleaned.keys == [k + "|clean" for k in raw.keys]
    assert dilated.keys == [k + "|clean,dilate=3" for k in raw.keys]
    assert not set(raw.keys) & set(cleaned.keys) and not set(cleaned.keys) & set(dilated.keys)
    with pytest.raises(nearid.NearIDError, match="not an odd number"):
        plan_images(bench, ["A"], masks=True, mask_dilate=2)


def test_bench_drops_a_view_whose_mask_is_missing(data, tmp_path):
    """On the synthetic bench with one view's mask removed: that view and its distractors are left out
    under --masks, counted in the load report and results.json; the full-image run keeps them."""
    import datasets

    copy = tmp_path / "data"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns("NearID"))
    positives = datasets.load_from_disk(str(data / "NearID"))
    test_rows = [r for r, s in enumerate(positives["train"]["split"]) if s == "test"]
    target = next(r for r in test_rows if positives["train"][r]["images3"] is not None)  # a 3-view identity
    positives["train"] = positives["train"].map(
        lambda row, idx: {"masks2": None if idx == target else row["masks2"]}, with_indices=True
    )
    positives.save_to_disk(str(copy / "NearID"))
    bench = load_nearid(copy, ["Part"], split="test", masks=True)
    assert bench.report.views_without_mask == 1
    assert "dropped 1 views without a mask, with their distractors" in bench.report.summary()
    identity = next(i for i in bench if i.row == target)
    assert identity.view_slots == [0, 2] and identity.distractor("Part", 1) is None
    assert load_nearid(copy, ["Part"], split="test").report.views_without_mask == 0
    results = run_bench(
        config(
            copy, tmp_path / "out", encoders=["histogram"], sources=["Part"], masks=True, mtg=None, mask_cleaning="none"
        )
    )
    assert results.benchmark.views_without_mask == 1
    assert "dropped 1 views without a mask" in results.benchmark.load_report
    full = run_bench(config(copy, tmp_path / "full", encoders=["histogram"], sources=["Part"], mtg=None))
    masked_trials = results.encoders["histogram:8"].nearid.per_source["Part"].n_trials
    full_trials = full.encoders["histogram:8"].nearid.per_source["Part"].n_trials
    assert full_trials - masked_trials == 6 - 2  # that identity: 6 trials with 3 views, 2 with 2
    raw = json.loads((tmp_path / "out" / "results.json").read_text())["benchmark"]
    assert (raw["views_without_mask"], raw["mask_cleaning"]) == (1, "none")


def test_trials_are_recorded_and_equal_where_nothing_is_missing(data, tmp_path):
    """``--trials authors`` is written to results.json; on data with every view and distractor present
    the compacted lists are the slots, so the plan, its content key and the numbers are the same."""
    slot = run_bench(config(data, tmp_path / "slot", encoders=["histogram"], sources=["Part"], mtg=None))
    authors = run_bench(
        config(data, tmp_path / "authors", encoders=["histogram"], sources=["Part"], mtg=None, trials="authors")
    )
    assert (slot.benchmark.trials, authors.benchmark.trials) == ("slot", "authors")
    assert authors.benchmark.inputs == slot.benchmark.inputs
    assert authors.encoders["histogram:8"].nearid == slot.encoders["histogram:8"].nearid
    assert BenchResults.from_json((tmp_path / "authors" / "results.json").read_text()).benchmark.trials == "authors"
