"""Issue 12 items 15-17 (non-score commands): every bad invocation is one stderr line and exit 2,
found before the heavy work, never a traceback, and leaves no output behind; messages name the
actual cause; what users have (a folder of images, a folder benchmark, bench's MTG tables) is accepted.

The table runs each invocation through ``main([...])`` with a fresh empty working directory (outputs
are relative to it) and checks that neither it nor the shared input folder changed. The closed-pipe
cases run ``python -m nearid`` in a subprocess, since only a real pipe shows them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nearid.cli.app import main

from .conftest import save_processor, small_siglip_config


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``folder`` with its size and modification time: what "nothing changed" means."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Inputs shared by all cases: synthetic data, a run folder, models, images, bad files."""
    import torch
    from safetensors.torch import save_file
    from transformers import SiglipVisionModel

    from nearid.data.synth import SynthConfig, generate
    from nearid.tiny.model import build_tiny_model

    root = tmp_path_factory.mktemp("world")
    generate(
        root / "synth",
        SynthConfig(
            identities=8, size=32, seed=1, val=1, test=3, mtg_train=0, mtg_test=3, workers=1, sources=("Part",)
        ),
        progress=False,
    )
    # a run folder as nearid train leaves it (head-only checkpoint of the tiny model, width 64)
    step = root / "run" / "checkpoints" / "step-2"
    step.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in build_tiny_model(0).head.state_dict().items()}, str(step / "head.safetensors")
    )
    torch.save({"step": 2}, step / "state.pt")
    (root / "run" / "config.json").write_text(json.dumps({"backbone": "tiny", "data": "x", "out": "run"}))
    # a SigLIP checkpoint of another width (48), and the same weights without their config.json
    SiglipVisionModel(small_siglip_config(hidden_size=48, vision_use_head=True)).save_pretrained(root / "sig48")
    save_processor(root / "sig48", 32)
    (root / "noconf").mkdir()
    (root / "noconf" / "model.safetensors").write_bytes((root / "sig48" / "model.safetensors").read_bytes())
    (root / "imgs").mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        Image.new("RGB", (40, 40), colour).save(root / "imgs" / f"{i}.png")
    (root / "empty").mkdir()
    (root / "afile").write_text("not a folder")
    for name, text in {
        "empty": "[]",
        "object": '{"a": 1}',
        "notjson": "nope",
        "float": "[1.5]",
        "bool": "[true]",
        "outside": "[999]",
        "twice": "[0, 0]",
        "nested": "[[0]]",
        "indices_empty": '{"indices": []}',
    }.items():
        (root / f"split_{name}.json").write_text(text)
    (root / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (root / "nul.csv").write_text("sample_id,sim_01\x00\n1,2\n")
    header = "sample_id,category,n_pos,n_neg,sim_01,sim_02,sim_12," + ",".join(
        f"cross_{a}{b}" for a in range(3) for b in range(3)
    )
    (root / "header_only.csv").write_text(header + "\n")
    (root / "all_empty.csv").write_text(header + "\n1,,2,2" + "," * 12 + "\n")
    (root / "mtg.csv").write_text(
        "sample_id,mtg_oracle_1,mtg_oracle_2,mtg_sim_1_2,mtg_sim_1_1p,mtg_sim_1_2p,mtg_sim_2_2p,mtg_sim_2_1p\n"
        "0,0.1,0.2,0.9,0.5,0.4,0.6,0.3\n1,0.3,0.1,0.8,0.7,0.2,0.9,0.4\n"
    )
    (root / "nearid.csv").write_text(header + "\n1,,2,2,0.9,,,0.5,,,,0.4" + ",,," + "\n")
    # a folder benchmark (nearid.data.folder layout) with one source, "flux"
    for k in range(3):
        for view in (1, 2):
            for sub in ("", "distractors/flux/"):
                path = root / "folderbench" / f"obj{k}" / sub / f"view{view}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (32, 32), (40 * k + 20 * view, 90 if sub else 10, 30)).save(path)
    return root


# (case id, argv with {w} = the inputs folder, substring the one error line must contain)
BAD = [
    # --batch-size 0 / -1 on every command that has one
    (
        "embed-batch-0",
        "embed {w}/imgs/0.png --model tiny --out e.npz --batch-size 0",
        "--batch-size: 0: give an integer of at least 1",
    ),
    ("embed-batch-neg", "embed {w}/imgs/0.png --model tiny --out e.npz --batch-size -1", "at least 1"),
    ("embed-batch-text", "embed {w}/imgs/0.png --model tiny --out e.npz --batch-size abc", "'abc' is not an integer"),
    ("compare-batch-0", "compare {w}/imgs/0.png {w}/imgs/1.png --model tiny --batch-size 0", "at least 1"),
    ("score-batch-0", "score --refs {w}/imgs --gens {w}/imgs --model tiny --batch-size 0 --out s.csv", "at least 1"),
    ("bench-batch-0", "bench --encoder tiny --data {w}/synth --sources Part --out b --batch-size 0", "at least 1"),
    ("bench-batch-neg", "bench --encoder tiny --data {w}/synth --sources Part --out b --batch-size -1", "at least 1"),
    ("train-batch-0", "train --data {w}/synth --sources Part --out r --backbone tiny --batch-size 0", "at least 1"),
    ("train-batch-neg", "train --data {w}/synth --sources Part --out r --backbone tiny --batch-size -1", "at least 1"),
    # encoder / backbone spec arguments
    (
        "embed-histogram-0",
        "embed {w}/imgs/0.png --model histogram:0 --out e.npz",
        "histogram:0: histogram takes a number of bins per channel from 1 to 64",
    ),
    ("embed-histogram-big", "embed {w}/imgs/0.png --model histogram:65 --out e.npz", "from 1 to 64"),
    ("compare-histogram-neg", "compare {w}/imgs/0.png {w}/imgs/1.png --model histogram:-2", "from 1 to 64"),
    (
        "bench-second-encoder-bad",
        "bench --encoder tiny --encoder histogram:0 --data {w}/synth --sources Part --out b",
        "histogram:0",
    ),
    (
        "bench-tiny-abc",
        "bench --encoder tiny:abc --data {w}/synth --sources Part --out b",
        "tiny encoder takes an integer seed, got 'abc'",
    ),
    ("embed-tiny-abc", "embed {w}/imgs/0.png --model tiny:abc --out e.npz", "integer seed"),
    ("train-tiny-abc", "train --data {w}/synth --sources Part --out r --backbone tiny:abc", "integer seed"),
    ("export-tiny-abc", "export {w}/run/checkpoints/step-2 m --backbone tiny:abc", "integer seed"),
    # bench --out
    (
        "bench-out-file",
        "bench --encoder tiny --data {w}/synth --sources Part --out {w}/afile",
        "is a file, but a folder is written here",
    ),
    (
        "bench-out-below-file",
        "bench --encoder tiny --data {w}/synth --sources Part --out {w}/afile/sub",
        "is a file, so nothing can be created inside it",
    ),
    # split files
    (
        "split-empty",
        "bench --encoder tiny --data {w}/synth --sources Part --out b --split-file {w}/split_empty.json",
        "lists no rows",
    ),
    (
        "split-indices-empty",
        "bench --encoder tiny --data {w}/synth --sources Part --out b --split-file {w}/split_indices_empty.json",
        "lists no rows",
    ),
    (
        "split-object",
        "bench --encoder tiny --data {w}/synth --sources Part --out b --split-file {w}/split_object.json",
        "a split file is a JSON list",
    ),
    (
        "split-notjson",
        "bench --encoder tiny --data {w}/synth --sources Part --out b --split-file {w}/split_notjson.json",
        "cannot read the split file",
    ),
    (
        "split-float",
        "bench --encoder tiny --data {w}/synth --sources Part --out b --split-file {w}/split_float.json",
        "a split file is a JSON list",
    ),
    (
        "split-bool",
        "bench --encoder tiny --data {w}/synth --sources Part --out b --split-file {w}/split_bool.json",
        "a split file is a JSON list",
    ),
    (
        "split-nested",
        "bench --encoder tiny --data {w}/synth --sources Part --out b --split-file {w}/split_nested.json",
        "a split file is a JSON list",
    ),
    (
        "split-outside",
        "bench --encoder tiny --data {w}/synth --sources Part --out b --split-file {w}/split_outside.json",
        "row 999 is outside",
    ),
    (
        "split-twice",
        "bench --encoder tiny --data {w}/synth --sources Part --out b --split-file {w}/split_twice.json",
        "appears more than once",
    ),
    (
        "split-missing",
        "bench --encoder tiny --data {w}/synth --sources Part --out b --split-file {w}/nosuch.json",
        "cannot read the split file",
    ),
    (
        "bench-split-without-identities",
        "bench --encoder tiny --data {w}/folderbench --out b --split val",
        "no identity with 2 or more views in split 'val'",
    ),
    # synth sizes and counts
    ("synth-size-0", "synth sy --size 0", "--size: 0: give an integer of at least 1"),
    ("synth-size-neg", "synth sy --size -5", "at least 1"),
    ("synth-size-tiny", "synth sy --size 8 --identities 12 --workers 1", "--size 8: give a number from 16 to 4096"),
    ("synth-size-huge", "synth sy --size 100000 --identities 12 --workers 1", "from 16 to 4096"),
    ("synth-identities-0", "synth sy --identities 0", "at least 1"),
    ("synth-identities-text", "synth sy --identities many", "'many' is not an integer"),
    ("synth-identities-too-few", "synth sy --identities 2 --size 32 --workers 1", "leaves no training rows"),
    ("synth-workers-0", "synth sy --identities 12 --workers 0", "at least 1"),
    ("synth-mtg-neg", "synth sy --identities 12 --mtg-train -1", "at least 0"),
    ("synth-val-neg", "synth sy --identities 12 --val -1", "at least 0"),
    ("synth-test-0", "synth sy --identities 12 --test 0", "at least 1"),
    (
        "synth-unknown-source",
        "synth sy --identities 12 --size 32 --workers 1 --sources Fluxx",
        "unknown synthetic source 'Fluxx'",
    ),
    # export
    (
        "export-other-width",
        "export {w}/run/checkpoints/step-2 m --backbone {w}/sig48",
        "its head does not fit backbone",
    ),
    (
        "export-run-folder",
        "export {w}/run m",
        "is a run folder; pass one checkpoint in it, e.g. the newest: {w}/run/checkpoints/step-2",
    ),
    ("export-checkpoints-folder", "export {w}/run/checkpoints m", "the newest: {w}/run/checkpoints/step-2"),
    ("export-missing", "export {w}/nosuch m", "no such checkpoint folder"),
    ("export-model-folder", "export {w}/sig48 m", "is a model folder, not a training checkpoint"),
    ("export-out-file", "export {w}/run/checkpoints/step-2 {w}/afile", "is a file, but a folder is written here"),
    # folders that are not models
    (
        "weights-without-config",
        "embed {w}/imgs/0.png --model siglip2-map:{w}/noconf --out e.npz",
        "has weights (model.safetensors) but no config.json",
    ),
    (
        "weights-without-config-nearid",
        "embed {w}/imgs/0.png --model nearid:{w}/noconf --out e.npz",
        "but no config.json",
    ),
    (
        "train-backbone-without-config",
        "train --data {w}/synth --sources Part --out r --backbone {w}/noconf",
        "but no config.json",
    ),
    (
        "run-folder-as-model",
        "embed {w}/imgs/0.png --model nearid:{w}/run --out e.npz",
        "is a training run folder, not a model; export a checkpoint first",
    ),
    (
        "checkpoint-as-model",
        "bench --encoder nearid:{w}/run/checkpoints/step-2 --data {w}/synth --sources Part --out b",
        "is a head-only training checkpoint",
    ),
    (
        "image-folder-as-model",
        "embed {w}/imgs/0.png --model nearid:{w}/imgs --out e.npz",
        "is not a model folder (no config.json, no weights)",
    ),
    # nearid metrics inputs
    ("metrics-binary", "metrics {w}/binary.csv", "not UTF-8 text"),
    ("metrics-image", "metrics {w}/imgs/0.png", "not UTF-8 text"),
    ("metrics-nul", "metrics {w}/nul.csv", "missing column"),
    ("metrics-folder", "metrics {w}/imgs", "is a folder; pass the CSV files in it"),
    ("metrics-missing", "metrics {w}/nosuch.csv", "no such similarity table"),
    ("metrics-header-only", "metrics {w}/header_only.csv", "holds only a header, no rows"),
    ("metrics-all-empty", "metrics {w}/all_empty.csv", "no valid trial"),
    ("metrics-mixed-layouts", "metrics {w}/nearid.csv {w}/mtg.csv", "MTG table(s) mixed with NearID-bench tables"),
    # train arguments
    (
        "train-lr-nan",
        "train --data {w}/synth --sources Part --out r --backbone tiny --lr nan",
        "--lr: nan: give a finite number",
    ),
    ("train-lr-inf", "train --data {w}/synth --sources Part --out r --backbone tiny --lr inf", "finite"),
    ("train-lr-neg", "train --data {w}/synth --sources Part --out r --backbone tiny --lr -1", "greater than 0"),
    (
        "train-lr-text",
        "train --data {w}/synth --sources Part --out r --backbone tiny --lr fast",
        "'fast' is not a number",
    ),
    (
        "train-save-steps-0",
        "train --data {w}/synth --sources Part --out r --backbone tiny --save-steps 0",
        "at least 1",
    ),
    ("train-log-steps-0", "train --data {w}/synth --sources Part --out r --backbone tiny --log-steps 0", "at least 1"),
    ("train-max-steps-0", "train --data {w}/synth --sources Part --out r --backbone tiny --max-steps 0", "at least 1"),
    (
        "train-warmup-neg",
        "train --data {w}/synth --sources Part --out r --backbone tiny --warmup-steps -1",
        "at least 0",
    ),
    ("train-eval-neg", "train --data {w}/synth --sources Part --out r --backbone tiny --eval-steps -1", "at least 0"),
    (
        "train-default-sources-on-synth",
        "train --data {w}/synth --out r --backbone tiny",
        "the sources there are Part: pass --sources Part",
    ),
    # bench data
    ("bench-no-sources", "bench --encoder tiny --data {w}/synth --out b", "--sources is required for {w}/synth"),
    (
        "bench-folder-unknown-source",
        "bench --encoder tiny --data {w}/folderbench --sources sd --out b",
        "no distractor source 'sd'",
    ),
    (
        "bench-folder-split-file",
        "bench --encoder tiny --data {w}/folderbench --out b --split-file {w}/split_twice.json",
        "is a folder benchmark",
    ),
    # embed / compare inputs
    ("embed-empty-folder", "embed {w}/empty --model tiny --out e.npz", "a folder with no images in it"),
    (
        "embed-masks-folder",
        "embed {w}/imgs --masks {w}/imgs --model tiny --out e.npz",
        "is a folder; pass --masks as mask files",
    ),
    ("missing-argument", "bench --encoder tiny --data {w}/synth", "the following arguments are required: --out"),
]


@pytest.mark.parametrize("case, argv, message", BAD, ids=[case for case, _, _ in BAD])
def test_bad_invocation_is_one_line_exit_2_and_writes_nothing(
    world, tmp_path, monkeypatch, capsys, case, argv, message
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _tree(world)
    status = main(argv.format(w=world).split())
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("nearid"), lines[0]
    assert message.format(w=world) in lines[0], lines[0]
    assert "hf download" not in lines[0]
    assert list(work.iterdir()) == [], "an output was created"
    assert _tree(world) == before, "an input changed"


@pytest.mark.slow
def test_bad_invocation_through_python_m(world, tmp_path):
    """The same through the real entry point: one line, exit 2."""
    done = subprocess.run(
        [sys.executable, "-m", "nearid", "embed", str(world / "imgs"), "--model", "histogram:0", "--out", "e.npz"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "histogram:0" in done.stderr
    assert list(tmp_path.iterdir()) == []


def _closed_pipe(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m nearid ARGS | head -c 1``: read one byte, close the pipe, let it finish."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nearid", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.read(1)
    process.stdout.close()
    err = process.stderr.read().decode()
    process.wait(timeout=300)
    return subprocess.CompletedProcess(args, process.returncode, "", err)


def test_dbpp_json_into_a_closed_pipe(tmp_path):
    from .test_dbpp import METHODS, METRIC, _human, _write

    root = tmp_path / "ratings"
    _human(root)
    for method in METHODS:
        _write(root / "data_full_rating" / f"{method}.json", METRIC[method])
    done = _closed_pipe(["dbpp", "--ratings", str(root), "--json"], tmp_path)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode in (0, 141)  # 0 when the one line fitted into the pipe before it closed


@pytest.mark.slow
def test_train_into_a_closed_pipe(world, tmp_path):
    done = _closed_pipe(
        [
            "train",
            "--data",
            str(world / "synth"),
            "--sources",
            "Part",
            "--out",
            str(tmp_path / "r"),
            "--backbone",
            "tiny",
            "--batch-size",
            "2",
            "--epochs",
            "2",
            "--log-steps",
            "1",
        ],
        tmp_path,
    )
    assert done.returncode == 141 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


# ------------------------------------------------------------------------------ item 17: accept what users have
def test_embed_a_folder_equals_embedding_its_files(world, tmp_path):
    from nearid.images.decode import list_images

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["b.png", "a.jpg", "sub/c.png"]):
        Image.new("RGB", (24, 24), (60 * i, 200 - 50 * i, 90)).save(folder / name)
    (folder / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / "notes.txt").write_text("not an image")
    assert main(["embed", str(folder), "--model", "histogram", "--out", str(tmp_path / "f.npz")]) == 0
    files = [str(p) for p in list_images(folder)]
    assert [Path(p).name for p in files] == ["a.jpg", "b.png", "c.png"]
    assert main(["embed", *files, "--model", "histogram", "--out", str(tmp_path / "g.npz")]) == 0
    f, g = np.load(tmp_path / "f.npz"), np.load(tmp_path / "g.npz")
    assert list(f["paths"]) == files and np.array_equal(f["embeddings"], g["embeddings"])


def test_bench_on_a_folder_benchmark_equals_the_python_api(world, tmp_path, capsys):
    from nearid.data import load_folder
    from nearid.eval.evaluate import pooled_scores, similarity_tables
    from nearid.models.encoders import load_encoder

    out = tmp_path / "b"
    assert main(["bench", "--encoder", "histogram", "--data", str(world / "folderbench"), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    bench = load_folder(world / "folderbench")  # every source, split "test" (the meta.json default)
    expected = pooled_scores(similarity_tables(load_encoder("histogram"), bench, ["flux"], progress=False)[0])
    got = results["encoders"]["histogram:8"]["nearid"]["per_source"]["flux"]
    assert results["benchmark"]["identities"] == len(bench) == 3 and results["benchmark"]["sources"] == ["flux"]
    assert got == expected.as_dict() and expected.n_trials == 6


def test_metrics_scores_bench_mtg_tables_as_bench_did(world, tmp_path, capsys):
    out = tmp_path / "b"
    assert (
        main(
            [
                "bench",
                "--encoder",
                "histogram",
                "--data",
                str(world / "synth"),
                "--sources",
                "Part",
                "--mtg",
                str(world / "synth" / "MTG"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    mtg = json.loads((out / "results.json").read_text())["encoders"]["histogram:8"]["mtg"]
    table = next(out.glob("sims/*/mtg_full.csv"))
    capsys.readouterr()
    assert main(["metrics", str(table), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_samples"] == mtg["n_samples"] == 3 and printed["n_trials"] == mtg["n_trials"]
    assert printed["ssr"] == mtg["ssr"] and printed["pa"] == mtg["pa"]
    # M-O / M-Opair from the CSV's 6-decimal cells (not bench's float64), computed independently:
    # Fisher-z mean of the four similarity-oracle Pearson correlations, clipped at 0.999, undefined = 0
    import csv

    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    col = lambda name: np.array([float(r[name]) for r in rows])

    def r(x, y):
        return 0.0 if np.ptp(x) == 0 or np.ptp(y) == 0 else float(np.corrcoef(x, y)[0, 1])

    o1, o2 = col("mtg_oracle_1"), col("mtg_oracle_2")
    rs = [
        r(col("mtg_sim_1_1p"), o1),
        r(col("mtg_sim_2_2p"), o2),
        r(col("mtg_sim_1_2p"), o2),
        r(col("mtg_sim_2_1p"), o1),
    ]
    z = lambda values: float(np.tanh(np.mean(np.arctanh(np.clip(values, -0.999, 0.999)))))
    assert printed["m_o"] == pytest.approx(z(rs), abs=1e-9) and printed["m_opair"] == pytest.approx(z(rs[:2]), abs=1e-9)


def test_metrics_mtg_by_hand(world, capsys):
    """Two samples: margins s12 - s11p = 0.4, 0.1 and s12 - s22p = 0.3, -0.1 -> 3 of 4 trials win, 1 of 2 samples."""
    assert main(["metrics", str(world / "mtg.csv"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_trials"] == 4 and printed["pa"] == 75.0 and printed["ssr"] == 50.0
    # two samples: every correlation is +1 or -1 (r(s11p, o1) = r([.5,.7],[.1,.3]) = 1, r(s22p, o2) = r([.6,.9],[.2,.1]) = -1)
    assert printed["m_opair"] == pytest.approx(0.0, abs=1e-12)
