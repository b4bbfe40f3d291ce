"""The command line: thin commands over the library, one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from nearid.cli.app import main


def test_embed_to_npz_and_safetensors(rgb_images, tmp_path, capsys):
    paths = [str(p) for p in rgb_images]
    assert main(["embed", *paths, "--model", "tiny", "--out", str(tmp_path / "e.npz")]) == 0
    data = np.load(tmp_path / "e.npz")
    assert data["embeddings"].shape == (3, 64)
    assert list(data["paths"]) == paths
    np.testing.assert_allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, atol=1e-5)
    assert main(["embed", *paths, "--model", "tiny", "--out", str(tmp_path / "e.safetensors")]) == 0
    np.testing.assert_allclose(load_file(tmp_path / "e.safetensors")["embeddings"], data["embeddings"])
    assert "wrote 3 embeddings of width 64" in capsys.readouterr().out


def test_compare_prints_the_cosine_matrix(rgb_images, capsys):
    """Every printed cell against the cosines of nearid.embed's vectors, computed here with numpy in
    float64; names, column and row indices as laid out."""
    import nearid

    assert main(["compare", *map(str, rgb_images), "--model", "tiny", "--num-workers", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    vectors = nearid.embed(nearid.load_encoder("tiny", device="cpu"), rgb_images).numpy().astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = vectors @ vectors.T
    assert len(lines) == 2 + len(rgb_images)
    assert lines[0] == "cosine similarity [tiny:0 (untrained)]"
    assert lines[1] == " " * 8 + "".join(f"{i:>9d}" for i in range(3))
    printed = []
    for i, (line, path) in enumerate(zip(lines[2:], rgb_images)):
        assert line.startswith(f"{path.name:>8}") and line.endswith(f"   [{i}]")
        cells = line[8 : -len(f"   [{i}]")]
        assert len(cells) == 9 * 3  # three cells of width 9
        printed.append([float(cells[9 * j : 9 * (j + 1)]) for j in range(3)])
    # a cell is the value rounded to 4 decimals; float32 embedding vs float64 here differ far below that
    np.testing.assert_allclose(np.array(printed), expected, rtol=0, atol=5e-5 + 1e-6)
    assert np.allclose(np.diag(expected), 1.0) and not np.allclose(expected, 1.0)  # distinct images, unit diagonal


def test_encoders_lists_every_family(capsys):
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    for family in ("nearid[:Aleksandar/nearid-siglip2]", "siglip2-map", "siglip2-mean", "clip", "dinov2", "hf", "tiny"):
        assert family in out


def test_corrupt_image_is_one_line_exit_2_and_no_output(rgb_images, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "e.npz"
    assert main(["embed", str(rgb_images[0]), str(bad), "--model", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("nearid embed: error: ") and "broken.jpg" in err
    assert not out.exists() and not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "nosuch"], "unknown encoder 'nosuch'"),
        (["--masks", "a.png", "b.png"], "1 images but 2 masks: give one mask per image"),
        (["--out", "vectors.csv"], "vectors.csv: unknown embedding file format; use a .npz or .safetensors"),
    ],
)
def test_argument_errors_exit_2(rgb_images, tmp_path, capsys, argv, message):
    base = ["embed", str(rgb_images[0]), "--model", "tiny", "--out", str(tmp_path / "e.npz")]
    assert main(base + argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reports_what_the_bench_measured(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--identities",
        "30",
        "--test",
        "8",
        "--val",
        "2",
        "--standin-epochs",
        "1",
        "--train-epochs",
        "1",
        "--sources",
        "instance",
        "Part",
        "recolor",
        "--headline-sources",
        "Instance",
        "Recolor",
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    bench = json.loads((out / "bench" / "results.json").read_text())
    assert bench["benchmark"]["split"] == "test" and bench["benchmark"]["identities"] == 8
    assert bench["benchmark"]["sources"] == ["Instance", "Part", "Recolor"] == results["all_sources"]["sources"]
    by_spec = {r["spec"]: r["nearid"] for r in bench["encoders"].values()}
    baseline, trained = by_spec[f"siglip2-map:{out / 'backbone'}"], by_spec[f"nearid:{out / 'model'}"]
    assert results["headline_sources"] == ["Instance", "Recolor"]
    for name, scored in (("baseline", baseline), ("trained", trained)):
        # the headline pools Instance and Recolor as the bench would: identities for SSR, trials for PA
        parts = [scored["per_source"][s] for s in ("Instance", "Recolor")]
        ssr = 100 * sum(p["ssr"] / 100 * p["n_samples"] for p in parts) / sum(p["n_samples"] for p in parts)
        pa = 100 * sum(p["n_wins"] for p in parts) / sum(p["n_trials"] for p in parts)
        assert results[name] == {"ssr": pytest.approx(ssr), "pa": pytest.approx(pa)}
        every = scored["groups"]["all sources"]
        assert results["all_sources"][name] == {"ssr": pytest.approx(every["ssr"]), "pa": pytest.approx(every["pa"])}
    for key in ("ssr", "pa"):
        assert results["gain"][key] == pytest.approx(results["trained"][key] - results["baseline"][key])
    assert set(results["encoders"]) == set(by_spec) == set(results["per_source"])
    assert (out / "report.html").is_file() and (out / "bench" / "results.md").is_file()
    with Image.open(out / "explain.png") as picture:  # the demo ends with an identity map of the trained model
        assert picture.format == "PNG"
    assert (out / "model" / "config.json").is_file() and (out / "train" / "token_cache" / "manifest.json").is_file()
    printed = capsys.readouterr().out
    assert "NearID head vs frozen MAP head (baseline), Instance, Recolor" in printed and "5/5" in printed


def test_demo_refuses_a_headline_source_it_does_not_make(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path / "demo"), "--sources", "Part", "--headline-sources", "Instance"]
    assert main(argv) == 2
    assert "headline sources ['Instance'] must be among the demo's sources ['Part']" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_module_entry_point_and_offline_error():
    done = subprocess.run(
        [sys.executable, "-m", "nearid", "compare", "x.png", "--model", "clip"],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "", "HOME": "/tmp"},
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "nearid compare: error: model 'openai/clip-vit-large-patch14': the weights are not on this machine "
        "(HF_HUB_OFFLINE is set and it is not in the Hugging Face cache). Download them where there is network "
        "(`hf download openai/clip-vit-large-patch14 --local-dir DIR`), copy DIR here and pass the folder instead "
        "of the hub id."
    ]


def test_synth_command(tmp_path, capsys):
    argv = [
        "synth",
        str(tmp_path / "s"),
        "--identities",
        "8",
        "--size",
        "32",
        "--val",
        "1",
        "--test",
        "2",
        "--mtg-train",
        "0",
        "--mtg-test",
        "1",
        "--workers",
        "1",
        "--sources",
        "part",
        "SHAPE",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "wrote 8 identities" in out and "train/val/test 5/1/2" in out and "sources Part, Shape" in out
    assert main(argv) == 2
    assert "already exists and is not empty; choose another folder or pass --overwrite" in capsys.readouterr().err


DBPP = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambench_plus" / "ratings"


@pytest.mark.skipif(not DBPP.is_dir(), reason="the published DreamBench++ ratings are not beside this checkout")
def test_dbpp_reproduces_the_published_object_figures(capsys):
    assert main(["dbpp", "--ratings", str(DBPP), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"object", "live_subject_animal", "live_subject_human", "style", "all"}
    published = {
        "human": 0.648,
        "gpt": 0.597,
        "qwen3vl_30b": 0.549,
        "nearid": 0.545,
        "backbone": 0.515,
        "clipi": 0.493,
        "dino": 0.492,
        "backbone_maphead": 0.489,
        "vsm": 0.190,
    }
    assert {k: round(v, 3) for k, v in result["object"].items()} == published
    assert round(result["all"]["nearid"], 3) == 0.445


def test_dbpp_scores_need_a_name(tmp_path, capsys):
    assert main(["dbpp", "--ratings", str(tmp_path), "--scores", str(tmp_path)]) == 2
    assert "--scores needs --name" in capsys.readouterr().err
