"""A light command line: commands that need only numpy never import torch or transformers; Ctrl-C,
closed pipes and --version; the checks the CLI used to make, now in the library."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nearid.io.errors import NearIDError

from .test_dbpp import METHODS, METRIC, _human, _write

# a fresh interpreter per test: `make test-fast` skips them
pytestmark = pytest.mark.slow

HEAVY = ("torch", "transformers")

# `python -m nearid ARGS`, run through runpy so that an exit hook can list the modules the command
# imported: the list is written to $NEARID_MODULES_OUT when the interpreter exits, whatever the status.
PROBE = """
import atexit, os, runpy, sys

def _modules():
    with open(os.environ["NEARID_MODULES_OUT"], "w") as handle:
        handle.write("\\n".join(sorted(sys.modules)))

atexit.register(_modules)
sys.argv[0] = "nearid"
runpy.run_module("nearid", run_name="__main__", alter_sys=True)
"""


def run_nearid(tmp_path: Path, *argv: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``python -m nearid *argv`` in a fresh interpreter: (the finished process, modules it imported)."""
    modules = tmp_path / "modules.txt"
    env = {**os.environ, "NEARID_MODULES_OUT": str(modules)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=timeout
    )
    return done, set(modules.read_text().split()) if modules.exists() else set()


def assert_light(done: subprocess.CompletedProcess, modules: set[str]) -> None:
    assert modules, f"the exit hook did not run: {done.stderr}"
    assert "nearid.cli.app" in modules  # the probe saw the command, not an empty interpreter
    assert not {m for m in modules if m.split(".")[0] in HEAVY}, "imported " + ", ".join(
        sorted({m.split(".")[0] for m in modules if m.split(".")[0] in HEAVY})
    )


# ----------------------------------------------------------------------------- fixtures


def write_authors_csv(path: Path, n: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A NearID-bench table in the authors' layout; returns (pair [n, 3], own-background cross [n, 3])."""
    rng = np.random.default_rng(seed)
    pair, cross = rng.uniform(0.3, 0.9, (n, 3)), rng.uniform(0.3, 0.9, (n, 3, 3))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "sample_id",
                "category",
                "n_pos",
                "n_neg",
                "sim_01",
                "sim_02",
                "sim_12",
                *(f"cross_{a}{b}" for a in range(3) for b in range(3)),
            ]
        )
        for i in range(n):
            writer.writerow(
                [f"id{i}", "mug", 3, 3, *(f"{v:.6f}" for v in pair[i]), *(f"{v:.6f}" for v in cross[i].ravel())]
            )
    return pair.round(6), np.diagonal(cross, axis1=1, axis2=2).round(6)


def ssr_pa_by_hand(pair: np.ndarray, own: np.ndarray) -> tuple[float, float, int]:
    """The paper's SSR / PA written out: every view of a pair as anchor against the distractor in its
    own background; an identity succeeds when it wins every such trial."""
    wins, successes = 0, 0
    for i in range(len(pair)):
        won = [pair[i, k] > own[i, anchor] for k, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))) for anchor in (a, b)]
        wins += sum(won)
        successes += all(won)
    return 100 * successes / len(pair), 100 * wins / (6 * len(pair)), 6 * len(pair)


def pa_published_by_hand(pair: np.ndarray, own: np.ndarray) -> float:
    """PA as the paper's tables count it: one more trial per identity, won when its mean margin is > 0."""
    wins, mean_wins = 0, 0
    for i in range(len(pair)):
        margins = [
            pair[i, k] - own[i, anchor] for k, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))) for anchor in (a, b)
        ]
        wins += sum(m > 0 for m in margins)
        mean_wins += sum(margins) / len(margins) > 0
    return 100 * (wins + mean_wins) / (7 * len(pair))


@pytest.fixture
def ratings(tmp_path) -> Path:
    """test_dbpp's hand-made ratings folder: no live_subject items, so those categories are NaN."""
    root = tmp_path / "ratings"
    _human(root)
    for method in METHODS:
        _write(root / "data_full_rating" / f"{method}.json", METRIC[method])
    return root


def write_score_run(folder: Path) -> Path:
    """A `nearid score` summary with its pairs file and images, written without the library."""
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    rows = []
    for i, value in enumerate((0.91, 0.35, 0.62)):
        for side in ("ref", "gen"):
            Image.new("RGB", (24, 24), (40 * i, 200 - 50 * i, 90 if side == "ref" else 20)).save(
                folder / "images" / f"{side}{i}.png"
            )
        rows.append(
            {
                "reference": f"images/ref{i}.png",
                "generated": f"images/gen{i}.png",
                "subject": "dog",
                "similarity": value,
            }
        )
    with open(folder / "scores.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    values = np.array([r["similarity"] for r in rows])
    summary = {
        "kind": "score",
        "schema_version": 2,
        "model": "histogram:8",
        "pairing": "csv",
        "n_pairs": 3,
        "unique_images_embedded": 6,
        "similarity": {
            "mean": values.mean(),
            "median": float(np.median(values)),
            "std": values.std(),
            "min": values.min(),
            "max": values.max(),
        },
        "per_subject": {"dog": {"n": 3, "mean": values.mean(), "median": float(np.median(values))}},
        "threshold": None,
        "decisions": None,
        "pairs_file": "scores.csv",
        "errors": 0,
        "errors_file": None,
    }
    (folder / "run.summary.json").write_text(json.dumps(summary))
    return folder / "run.summary.json"


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> Path:
    """A small `nearid bench` results folder whose benchmark data still exists (the report opens it)."""
    from nearid.bench.run import BenchConfig, run_bench
    from nearid.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("light_bench")
    generate(
        root / "synth",
        SynthConfig(identities=10, size=40, seed=1, val=1, test=6, mtg_train=0, mtg_test=0, workers=1),
        progress=False,
    )
    run_bench(BenchConfig(encoders=["histogram"], data=str(root / "synth"), sources=["Part"], out=str(root / "bench")))
    return root / "bench" / "results.json"


# ----------------------------------------------------------------------------- no torch


def test_help_is_light(tmp_path):
    done, modules = run_nearid(tmp_path, "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: nearid") and "metrics" in done.stdout
    assert_light(done, modules)


def test_version(tmp_path):
    done, modules = run_nearid(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"nearid {importlib.metadata.version('nearid')}"
    assert_light(done, modules)


def test_metrics_on_50_rows_is_light_and_matches_a_hand_count(tmp_path):
    pair, own = write_authors_csv(tmp_path / "sims.csv", n=50)
    done, modules = run_nearid(tmp_path, "metrics", str(tmp_path / "sims.csv"), "--json")
    assert done.returncode == 0, done.stderr
    ssr, pa, trials = ssr_pa_by_hand(pair, own)
    assert json.loads(done.stdout) == {
        "ssr": pytest.approx(ssr),
        "pa": pytest.approx(pa),
        "n_samples": 50,
        "n_trials": trials,
        "pa_published": pytest.approx(pa_published_by_hand(pair, own)),
    }
    assert_light(done, modules)


def test_dbpp_is_light_and_its_json_is_strict(tmp_path, ratings):
    done, modules = run_nearid(tmp_path, "dbpp", "--ratings", str(ratings), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert result["live_subject_animal"] == {"full": None, "human": None}  # no items: NaN in Python, null in JSON
    assert result["object"]["human"] == pytest.approx(0.5)  # humans' r on the three object items, by hand
    assert_light(done, modules)


def test_score_report_is_light(tmp_path):
    summary = write_score_run(tmp_path / "run")
    done, modules = run_nearid(tmp_path, "report", str(summary))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "run" / "report.html").read_text()
    assert "histogram:8" in text and text.count('src="data:image/jpeg;base64,') == 6
    assert_light(done, modules)


def test_bench_report_opening_the_data_is_light(tmp_path, bench_run):
    out = tmp_path / "bench.html"
    done, modules = run_nearid(tmp_path, "report", str(bench_run), "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "Gallery unavailable" not in text and 'class="gallery"' in text  # the data was opened: thumbnails
    assert "nearid.data.nearid_bench" in modules  # ... through the data loaders
    assert_light(done, modules)


def test_library_face_is_lazy(tmp_path):
    probe = (
        "import sys, nearid, nearid.data.schema, nearid.data.records, nearid.training.samples, nearid.eval.metrics; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'datasets')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    import nearid

    assert set(nearid.__all__) <= set(dir(nearid))
    assert (
        nearid.embed.__module__ == "nearid.models.embedding"
        and nearid.NearIDModel.__module__ == "nearid.models.nearid_model"
    )
    import nearid.data
    import nearid.training

    assert nearid.data.load_nearid.__module__ == "nearid.data.nearid_bench"
    assert nearid.training.TokenCache.__module__ == "nearid.training.token_cache"
    for package in (nearid, nearid.data, nearid.training):
        for name in package.__all__:
            assert getattr(package, name) is not None
        with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
            package.nosuch  # noqa: B018


# ----------------------------------------------------------------------------- Ctrl-C, pipes


def _default_sigint() -> None:
    """In the child, before exec: SIGINT handled by default, as under a terminal. A shell starts
    background jobs (and CI may start the suite) with SIGINT ignored; Python then installs no
    KeyboardInterrupt handler, and a Ctrl-C test would wait for a signal that can never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _blocked_in_read(pid: int) -> bool:
    """Whether the main thread of ``pid`` sleeps in the kernel reading a pipe (Linux ``/proc``; elsewhere
    assumed once a moment has passed).

    Opening the FIFO is not enough: a signal that lands between the open and the ``read`` system call is
    taken by Python's handler, which sets a flag checked at the next bytecode -- and the ``read`` that
    follows then blocks with no signal left to interrupt it (CPython checks signals after an interrupted
    ``read``, not before one). A Ctrl-C test must press Ctrl-C where the user does: while it waits."""
    try:
        return "pipe_read" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        time.sleep(0.5)
        return True


def interrupt_while_reading(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """Run ``nearid *argv`` whose input is a FIFO; once the command has opened it and is blocked reading
    it (so it is past its start-up), send SIGINT as Ctrl-C does."""
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    argv = [str(fifo) if a == "FIFO" else a for a in argv]
    process = subprocess.Popen(
        [sys.executable, "-m", "nearid", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    writer = None
    while writer is None:  # a non-blocking open for writing succeeds only once a reader has the FIFO open
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the command never opened its input: {process.communicate()}")
            time.sleep(0.02)
    while not _blocked_in_read(process.pid):
        if process.poll() is not None or time.monotonic() > deadline:
            os.close(writer)
            process.kill()
            pytest.fail(f"the command never waited for its input: {process.communicate()}")
        time.sleep(0.02)
    try:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"no exit within 120 s of SIGINT: {process.communicate()}")
    finally:
        os.close(writer)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_ctrl_c_in_a_light_command_is_one_line_and_130(tmp_path):
    done = interrupt_while_reading(tmp_path, "report", "FIFO")
    assert (done.returncode, done.stderr) == (130, "nearid: interrupted\n")


def test_ctrl_c_after_torch_is_loaded_is_one_line_and_130(tmp_path):
    done = interrupt_while_reading(tmp_path, "train", "--config", "FIFO")
    assert (done.returncode, done.stderr) == (130, "nearid: interrupted\n")


def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path, rgb_images):
    """While `compare` imports torch and transformers (seconds): the issue's KeyboardInterrupt traceback."""
    # The interpreter says "ready" once Python's own SIGINT handler is in place, then runs `python -m nearid`;
    # torch's import takes seconds, so 0.3 s later the signal lands inside nearid's start-up, not before it.
    launcher = (
        "import runpy, sys; print('ready', flush=True); "
        "sys.argv = ['nearid', 'compare', sys.argv[1], '--model', 'tiny']; "
        "runpy.run_module('nearid', run_name='__main__', alter_sys=True)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, str(rgb_images[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=120)
    assert (process.returncode, err) == (130, "nearid: interrupted\n")


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_closed_pipe_ends_quietly_with_141(tmp_path, unbuffered):
    """Like `nearid metrics t.csv | head -0`: the reader is gone before the command writes, with
    stdout buffered (the default into a pipe) or not (PYTHONUNBUFFERED)."""
    write_authors_csv(tmp_path / "sims.csv", n=5)
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    process = subprocess.Popen(
        [sys.executable, "-m", "nearid", "metrics", str(tmp_path / "sims.csv")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert err == ""  # no traceback, no "Exception ignored ... BrokenPipeError" at exit


# ----------------------------------------------------------------------------- checks moved into the library


@pytest.mark.parametrize("batch_size", [0, -1])
def test_embed_refuses_a_batch_size_below_1(rgb_images, batch_size):
    import nearid

    with pytest.raises(NearIDError, match=f"batch_size {batch_size}: give a batch size of at least 1"):
        nearid.embed(nearid.load_encoder("tiny"), rgb_images, batch_size=batch_size)


def test_embed_refuses_a_mask_count_that_does_not_match(rgb_images):
    import nearid

    with pytest.raises(NearIDError, match="3 images but 2 masks: give one mask per image"):
        nearid.embed(nearid.load_encoder("tiny"), rgb_images, [None, None])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch-size", "0"], "--batch-size: 0: give an integer of at least 1"),
        (["--masks", "a.png", "b.png"], "1 images but 2 masks"),
        (["--out", "e.csv"], "e.csv: unknown embedding file format"),
    ],
)
def test_embed_command_checks_its_arguments_before_loading_a_model(rgb_images, tmp_path, capsys, extra, message):
    from nearid.cli.app import main

    # an encoder that cannot load: the argument error must come first
    argv = ["embed", str(rgb_images[0]), "--model", "nosuch", "--out", str(tmp_path / "e.npz"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nearid embed: error: ") and message in err and err.count("\n") == 1


def test_save_embeddings_round_trips_both_formats(tmp_path):
    from safetensors import safe_open

    from nearid.models.embedding import save_embeddings

    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    paths = ["a.png", "b.png", "c.png"]
    save_embeddings(tmp_path / "e.npz", vectors, paths, model="tiny")
    data = np.load(tmp_path / "e.npz")
    np.testing.assert_array_equal(data["embeddings"], vectors)
    assert list(data["paths"]) == paths
    save_embeddings(tmp_path / "e.safetensors", vectors, paths, model="tiny")
    with safe_open(tmp_path / "e.safetensors", "np") as handle:
        np.testing.assert_array_equal(handle.get_tensor("embeddings"), vectors)
        assert handle.metadata() == {"model": "tiny", "paths": json.dumps(paths)}
    with pytest.raises(NearIDError, match=r"e\.txt: unknown embedding file format"):
        save_embeddings(tmp_path / "e.txt", vectors, paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz", "e.safetensors"]


def test_alignment_json_turns_nan_into_null_and_drops_details():
    from nearid.eval.dbpp import alignment_json

    result = {"object": {"a": 0.5, "b": math.nan}, "all": {"a": 0.25, "b": math.nan}, "_details": {"x": 1}}
    assert alignment_json(result) == {"object": {"a": 0.5, "b": None}, "all": {"a": 0.25, "b": None}}


def test_train_config_names_a_missing_field(tmp_path):
    from nearid.training.trainer import TrainConfig

    with pytest.raises(NearIDError, match=r"^--data is required \(or give --config FILE\)$"):
        TrainConfig.from_options(None, out="run", lr=None)
    with pytest.raises(NearIDError, match=r"^--out is required"):
        TrainConfig.from_options(None, data="d", config=None, resume=False)  # non-field options are ignored
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps({"data": "d", "lr": 0.5}))
    with pytest.raises(NearIDError, match=r"^--out is required \(neither .*run.json nor the options set it\)$"):
        TrainConfig.from_options(config_file)
    config = TrainConfig.from_options(config_file, out="run", lr=None, epochs=2)
    assert (config.data, config.out, config.lr, config.epochs) == ("d", "run", 0.5, 2)


def test_train_command_reports_the_missing_field(capsys):
    from nearid.cli.app import main

    assert main(["train", "--out", "run"]) == 2
    assert capsys.readouterr().err == "nearid train: error: --data is required (or give --config FILE)\n"
