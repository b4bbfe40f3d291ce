"""``nearid.eval.torchmetrics``: values by hand, one process vs two (gloo), and equality with ``nearid score``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("torchmetrics")

import nearid
from nearid.eval.metrics import DiscriminationScore, nearid_scores
from nearid.eval.torchmetrics import (
    IdentitySimilarity,
    NearIDBenchScore,
    identity_similarity,
    nearid_bench_score,
    pair_similarities,
)
from nearid.io.errors import NearIDError
from nearid.models.encoders import load_encoder


def _image(seed: int, size=(40, 32)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = np.full((size[1], size[0], 3), rng.integers(0, 256, 3), dtype=np.uint8)
    array[6:20, 5:22] = rng.integers(0, 256, (14, 17, 3), dtype=np.uint8)
    return array


@pytest.fixture
def folders(tmp_path):
    """refs/ and gens/ with the same five names (``--pairing paths``), plus a second reference each."""
    for name in ("refs", "gens", "refs2"):
        (tmp_path / name).mkdir()
    for i in range(5):
        Image.fromarray(_image(i)).save(tmp_path / "refs" / f"s{i}.png")
        Image.fromarray(_image(100 + i)).save(tmp_path / "gens" / f"s{i}.png")
        Image.fromarray(_image(200 + i)).save(tmp_path / "refs2" / f"s{i}.png")
    return tmp_path


@pytest.fixture(scope="module")
def tiny():
    return load_encoder("tiny", device="cpu", dtype="float32")


def _paths(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def _uint8(paths) -> torch.Tensor:
    return torch.stack(
        [torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1) for p in paths]
    )


def test_values_by_hand_with_one_and_several_references(folders, tiny):
    refs, refs2, gens = _paths(folders / "refs"), _paths(folders / "refs2"), _paths(folders / "gens")
    e_gen, e_ref, e_ref2 = (nearid.embed(tiny, p).double() for p in (gens, refs, refs2))
    one = (e_gen * e_ref).sum(-1)
    two = torch.stack([one, (e_gen * e_ref2).sum(-1)], dim=1)
    torch.testing.assert_close(pair_similarities(tiny, gens, refs), one)
    several = [[a, b] for a, b in zip(refs, refs2)]
    torch.testing.assert_close(pair_similarities(tiny, gens, several, "mean"), two.mean(1))
    torch.testing.assert_close(pair_similarities(tiny, gens, several, "max"), two.max(1).values)
    assert not torch.allclose(two.mean(1), two.max(1).values)
    # a [B, K, 3, H, W] tensor is K references per generated image
    stacked = torch.stack([_uint8(refs), _uint8(refs2)], dim=1)
    torch.testing.assert_close(pair_similarities(tiny, _uint8(gens), stacked, "max"), two.max(1).values)
    torch.testing.assert_close(identity_similarity(tiny, gens, several), two.mean(1).mean())


def test_tensors_pil_and_files_give_the_same_value(folders, tiny):
    refs, gens = _paths(folders / "refs"), _paths(folders / "gens")
    from_files = identity_similarity(tiny, gens, refs)
    as_uint8 = identity_similarity(tiny, _uint8(gens), _uint8(refs))
    as_float = identity_similarity(tiny, _uint8(gens).float() / 255, _uint8(refs).float() / 255)
    as_pil = identity_similarity(tiny, [Image.open(p) for p in gens], [Image.open(p) for p in refs])
    assert float(from_files) == float(as_uint8) == float(as_float) == float(as_pil)


def test_metric_accumulates_over_updates(folders, tiny):
    refs, gens = _paths(folders / "refs"), _paths(folders / "gens")
    metric = IdentitySimilarity(tiny)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(metric.compute())
    metric.update(gens[:2], refs[:2])
    metric.update(_uint8(gens[2:]), _uint8(refs[2:]))
    torch.testing.assert_close(metric.compute(), pair_similarities(tiny, gens, refs).mean())
    assert int(metric.count) == 5
    metric.reset()
    assert int(metric.count) == 0


def test_bad_inputs_are_one_line_errors(folders, tiny):
    refs, gens = _paths(folders / "refs"), _paths(folders / "gens")
    with pytest.raises(NearIDError, match="5 generated images but references for 4"):
        identity_similarity(tiny, gens, refs[:4])
    with pytest.raises(NearIDError, match="reduction 'median'"):
        IdentitySimilarity(tiny, reduction="median")
    with pytest.raises(NearIDError, match=r"must be \[B, 3, H, W\]"):
        identity_similarity(tiny, torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(NearIDError, match="empty list of references"):
        identity_similarity(tiny, gens[:1], [[]])


def _tables(seed: int = 0, n: int = 40):
    rng = np.random.default_rng(seed)
    pair_sims = rng.uniform(0.3, 0.9, (n, 3))
    own = rng.uniform(0.3, 0.9, (n, 3))
    pair_sims[::4, 1:] = np.nan  # 2-view identities
    own[::4, 2] = np.nan
    own[3, :] = pair_sims[3, :]  # ties lose
    return pair_sims, own


def test_bench_score_counts_equal_metrics_module():
    pair_sims, own = _tables()
    expected = nearid_scores(pair_sims, own)
    assert (
        0 < expected.n_all_win < expected.n_samples and expected.n_trials == 40 * 6 - 10 * 4
    )  # own[::4, 2] only hides already-missing trials
    metric = NearIDBenchScore()
    metric.update(pair_sims[:13], own[:13])
    metric.update(torch.from_numpy(pair_sims[13:]), torch.from_numpy(own[13:]))
    assert metric.score() == expected
    result = metric.compute()
    assert float(result["ssr"]) == pytest.approx(expected.ssr) and float(result["pa"]) == pytest.approx(expected.pa)
    assert float(result["pa_published"]) == pytest.approx(expected.pa_published)
    assert float(nearid_bench_score(pair_sims, own)["pa"]) == pytest.approx(expected.pa)
    assert metric.score() == DiscriminationScore.pool(
        nearid_scores(pair_sims[:13], own[:13]), nearid_scores(pair_sims[13:], own[13:])
    )
    with pytest.raises(NearIDError, match=r"must both be \[N, 3\]"):
        metric.update(pair_sims[:, :2], own[:, :2])


@pytest.mark.slow
def test_two_processes_equal_one(folders, tiny, tmp_path):
    refs, refs2, gens = _paths(folders / "refs"), _paths(folders / "refs2"), _paths(folders / "gens")
    references = [[str(a), str(b)] for a, b in zip(refs, refs2)]
    (tmp_path / "inputs.json").write_text(
        json.dumps({"generated": [str(g) for g in gens], "references": references, "split": 2})
    )
    pair_sims, own = _tables(1, 31)
    np.savez(tmp_path / "tables.npz", pair_sims=pair_sims, own_background=own, split=9)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    done = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            str(Path(__file__).parent / "torchmetrics_torchrun.py"),
            str(tmp_path),
            str(tmp_path / "out.json"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    two = json.loads((tmp_path / "out.json").read_text())
    assert two["world_size"] == 2
    for reduction in ("mean", "max"):
        one = IdentitySimilarity(tiny, reduction)
        one.update(gens, references)
        assert two[f"similarity_{reduction}"] == pytest.approx(float(one.compute()), abs=1e-12)
    expected = nearid_scores(pair_sims, own)
    assert two["bench"] == pytest.approx(
        {"ssr": expected.ssr, "pa": expected.pa, "pa_published": expected.pa_published}
    )


def test_equals_nearid_score_mean(folders, tiny, tmp_path):
    out = tmp_path / "scores.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nearid",
            "score",
            "--refs",
            str(folders / "refs"),
            "--gens",
            str(folders / "gens"),
            "--pairing",
            "paths",
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.with_name("scores.csv.summary.json").read_text())
    metric = IdentitySimilarity(tiny)
    metric.update(_uint8(_paths(folders / "gens")), _uint8(_paths(folders / "refs")))
    assert float(metric.compute()) == pytest.approx(summary["similarity"]["mean"], abs=1e-7)
    assert summary["n_pairs"] == int(metric.count) == 5


def test_float_images_outside_0_1_or_nan_are_refused(folders, tiny):
    """Issue 21.6: ``img.float()`` (0..255 as float) clipped to white and scored ~1.0 silently; NaN too."""
    refs, gens = _uint8(_paths(folders / "refs")), _uint8(_paths(folders / "gens"))
    with pytest.raises(NearIDError, match=r"outside \[0, 1\].*divide by 255"):
        identity_similarity(tiny, gens.float(), refs)
    with pytest.raises(NearIDError, match=r"outside \[0, 1\]"):
        identity_similarity(tiny, gens.float() / 255 * 2 - 1, refs)  # [-1, 1] normalised: ambiguous
    nan = gens.float() / 255
    nan[2, 0, 3, 3] = float("nan")
    with pytest.raises(NearIDError, match="NaN"):
        IdentitySimilarity(tiny).update(nan, refs)
    # float rounding just past the ends is unambiguous: clamped, the same value as the exact image
    exact = gens.float() / 255
    nudged = exact.clone()
    nudged[exact == 1] += 1e-6
    nudged[exact == 0] -= 1e-6
    assert float(identity_similarity(tiny, nudged, refs)) == float(identity_similarity(tiny, exact, refs))
