"""``--token-cache auto|on|off`` (the disk estimate and the decision) and the streaming path (inputs
prefetched by worker processes while the trunk runs, empty slots skipped, Ctrl-C leaves nothing behind)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nearid.cli.app import main
from nearid.data import load_mtg, load_nearid
from nearid.io.errors import NearIDError
from nearid.models.nearid_model import NearIDModel
from nearid.training import TrainingSet
from nearid.training.cache_policy import KEEP_BYTES, plan, room
from nearid.training.trainer import TrainConfig, train

from .training_run import ARGS, config, head_of, training_data

TINY_INPUT_BYTES = 64 * 64 * 2  # the tiny trunk: (64 px / 8)^2 = 64 tokens x hidden 64, float16


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return training_data(tmp_path_factory.mktemp("stream") / "synth")


def first_steps(data, steps: int, mtg: bool = False):
    """The samples of the first ``steps`` steps (batch 8, epoch after epoch), built as the trainer builds them."""
    bench = load_nearid(data, ["Part", "Shape"], split="train")
    training_set = TrainingSet(bench, ["Part", "Shape"], load_mtg(data / "MTG", split="train") if mtg else None)
    batches = [(epoch, batch) for epoch in range(steps) for batch in training_set.batches(epoch, 8)][:steps]
    return [training_set.samples(epoch, batch) for epoch, batch in batches]


def cacheable_keys(data, stop: int, start: int = 0) -> set[str]:
    """The distinct inputs of steps ``start .. stop - 1`` (no jitter: every one is cacheable)."""
    steps = first_steps(data, stop)[start:]
    return {s.key for samples in steps for item in samples for s in item.slots if s is not None}


# ------------------------------------------------------------------------------ the decision, by hand
def test_the_margin_keeps_ten_percent_and_a_gib_free(tmp_path, monkeypatch):
    """One input of 1 x X tokens (2X bytes) + its index (one keys file and one .npy header: 2 blocks
    of 4 KiB): with 10 GiB free, 8 GiB are usable, so X = 4 GiB - 4 KiB fits exactly and one more
    token value does not."""
    monkeypatch.setenv("NEARID_FREE_BYTES", str(10 * 2**30))
    assert room(10 * 2**30) == 9 * 2**30 - KEEP_BYTES == 8 * 2**30
    hidden = 4 * 2**30 - 4096
    fits = plan("auto", keys=["a"], n_tokens=1, hidden=hidden, folder=tmp_path)
    assert fits.cache and fits.needed == 8 * 2**30 and fits.token_bytes == 2 * hidden and fits.index_bytes == 8192
    assert not plan("auto", keys=["a"], n_tokens=1, hidden=hidden + 1, folder=tmp_path).cache
    with pytest.raises(NearIDError, match=r"^--token-cache on: the cache needs 8.6 GB for 1 inputs \(1 x 4294963201 "):
        plan("on", keys=["a"], n_tokens=1, hidden=hidden + 1, folder=tmp_path)
    # inputs already in the cache are not counted again; nothing left to write always fits
    assert plan("auto", keys=["a"], already={"a"}, n_tokens=1, hidden=hidden + 1, folder=tmp_path).cache
    monkeypatch.setenv("NEARID_FREE_BYTES", "0")
    done = plan("on", keys=["a", "b"], already={"a", "b"}, n_tokens=1, hidden=1, folder=tmp_path)
    assert done.cache and done.inputs == 0 and done.cached == 2
    assert not plan("off", keys=["a"], n_tokens=1, hidden=1, folder=tmp_path).cache


def test_free_space_is_measured_at_the_nearest_existing_folder(tmp_path, monkeypatch):
    import shutil

    from nearid.training.cache_policy import free_bytes

    monkeypatch.delenv("NEARID_FREE_BYTES", raising=False)
    measured = free_bytes(tmp_path / "not" / "made" / "yet")
    assert abs(measured - shutil.disk_usage(tmp_path).free) < 64 * 2**20  # the same disk (others write to it)
    monkeypatch.setenv("NEARID_FREE_BYTES", "lots")
    with pytest.raises(NearIDError, match="NEARID_FREE_BYTES='lots': must be a whole number of bytes >= 0"):
        free_bytes(tmp_path)


# ------------------------------------------------------------------------------ nearid train decides
def test_auto_streams_on_a_small_disk_and_says_why(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NEARID_FREE_BYTES", str(2**30))  # 1 GiB free: nothing is usable after the margin
    argv = ["train", "--data", str(data), *ARGS, "--max-steps", "2", "--out", str(tmp_path / "s")]
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("token cache")]
    n = len(cacheable_keys(data, 2))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"token cache auto: {n:,} inputs to cache = ")
    assert "1.1 GB free at" in lines[0] and "keeping 10% + 1 GiB free" in lines[0]
    assert lines[0].endswith("-> streaming (the trunk runs on every step's inputs): the cache would not fit")
    assert not (tmp_path / "s" / "token_cache").exists()
    assert json.loads((tmp_path / "s" / "inputs.json").read_text())["trunk"] is None
    # resumed with room to spare, the run keeps streaming: its tokens' precision does not change mid-run
    monkeypatch.setenv("NEARID_FREE_BYTES", str(10**13))
    argv[argv.index("--max-steps") + 1] = "4"
    assert main([*argv, "--resume"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("token cache"))
    assert line.endswith(
        "-> streaming (the trunk runs on every step's inputs): the run being resumed streamed (inputs.json)"
    )
    assert not (tmp_path / "s" / "token_cache").exists() and (tmp_path / "s" / "checkpoints" / "step-4").is_dir()


def test_on_refuses_before_the_model_loads_with_the_estimate(data, tmp_path, capsys, monkeypatch):
    def no_model(*_, **__):
        raise AssertionError("the model must not load before the refusal")

    monkeypatch.setattr("nearid.models.backbones.load_backbone", no_model)
    monkeypatch.setenv("NEARID_FREE_BYTES", str(2**30))
    argv = [
        "train",
        "--data",
        str(data),
        *ARGS,
        "--max-steps",
        "3",
        "--token-cache",
        "on",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    n = len(cacheable_keys(data, 3))
    tokens = n * TINY_INPUT_BYTES
    index = 2 * 4096 * -(-n // 32)  # one keys file and one .npy header per shard of 32, one block each
    assert len(err) == 1 and err[0].startswith(
        f"nearid train: error: --token-cache on: the cache needs {(tokens + index) / 1e6:,.1f} MB for {n:,} inputs "
        "(64 x 64 float16 each) but "
    )
    assert "has 1.1 GB free, 0.0 MB usable after keeping 10% + 1 GiB free" in err[0]
    assert not (tmp_path / "o").exists()  # refused before the run folder was made


def test_auto_caches_when_it_fits(data, tmp_path, capsys, monkeypatch):
    from nearid.models.backbones import load_backbone
    from nearid.training.token_cache import TokenCache

    monkeypatch.setenv("NEARID_FREE_BYTES", str(10**13))
    train(config(data, tmp_path / "c", mtg=None, max_steps=3, save_steps=3))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("token cache"))
    assert line.endswith("-> caching: it fits"), line
    keys = TokenCache.for_model(tmp_path / "c" / "token_cache", *load_backbone("tiny")).keys()
    assert keys == cacheable_keys(data, 3)  # the inputs of the steps the run takes, each once
    assert json.loads((tmp_path / "c" / "inputs.json").read_text())["trunk"] is not None
    # a longer run into the same cache counts only what is missing
    train(config(data, tmp_path / "c", mtg=None, max_steps=8, save_steps=8), resume=True)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("token cache"))
    later, before = cacheable_keys(data, 8, start=3), cacheable_keys(data, 3)
    assert 0 < len(later & before) < len(later)
    assert f"token cache auto: {len(later - before):,} inputs to cache ({len(later & before):,} already cached)" in line


# ------------------------------------------------------------------------------ the streaming path
@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_training_equals_cached(data, tmp_path, workers):
    """Streaming (inputs prefetched by 0 or 2 worker processes) feeds the head the same tokens as the
    cache for the same slots, so ``--token-cache auto`` trains the same head on a full disk as on an
    empty one (issue 21.5: the cache held float16 tokens and streaming fed float32 ones; after 7 steps the
    heads differed by 0.016). No monkeypatch: the real cached and streamed runs give the same head, bit
    for bit (every token the head sees is rounded to float16, cached or fresh)."""
    cached = train(config(data, tmp_path / "c", max_steps=5, save_steps=5, token_cache="on"))
    streamed = train(config(data, tmp_path / "s", max_steps=5, save_steps=5, token_cache="off", num_workers=workers))
    assert not (tmp_path / "s" / "token_cache").exists()
    assert streamed["loss"] == cached["loss"]  # bit for bit
    for name, tensor in head_of(tmp_path / "c").items():
        torch.testing.assert_close(head_of(tmp_path / "s")[name], tensor, rtol=0, atol=0)


def test_the_trunk_never_runs_on_empty_slots(data, tmp_path, monkeypatch):
    """MTG samples fill 4 of their 6 slots and 2-view identities 4: the trunk sees exactly the filled
    slots of each step, one batch per step, whoever decoded them."""
    seen = []
    encode_tokens = NearIDModel.encode_tokens

    def counting(self, pixels):
        seen.append(len(pixels))
        return encode_tokens(self, pixels)

    monkeypatch.setattr(NearIDModel, "encode_tokens", counting)
    train(config(data, tmp_path / "e", epochs=1, token_cache="off", num_workers=2))
    steps = first_steps(data, 8, mtg=True)  # 60 items (28 identities + 4 x 8 MTG) in batches of 8: one epoch
    filled = [sum(slot is not None for item in samples for slot in item.slots) for samples in steps]
    assert seen == filled and sum(filled) < 6 * sum(len(samples) for samples in steps)


def test_workers_with_jitter_equal_the_in_process_run(data, tmp_path):
    """A cached run with colour jitter runs the trunk on its augmented slots: prefetched by workers or
    built in the process, the head is the same."""
    one = train(config(data, tmp_path / "a", max_steps=3, save_steps=3, jitter_prob=0.5, num_workers=0))
    two = train(config(data, tmp_path / "b", max_steps=3, save_steps=3, jitter_prob=0.5, num_workers=2))
    assert one["loss"] == two["loss"]
    for name, tensor in head_of(tmp_path / "a").items():
        assert torch.equal(head_of(tmp_path / "b")[name], tensor)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_ctrl_c_while_streaming_leaves_no_worker_and_no_partial_file(data, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "nearid", "train", "--data", str(data), *ARGS, "--epochs", "50"]
    argv += ["--token-cache", "off", "--num-workers", "2", "--save-steps", "1", "--out", str(out)]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while len(workers) < 2 or not (out / "checkpoints" / "step-2").exists():
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
            workers |= _children(process.pid)
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and err.strip().endswith("nearid: interrupted"), err[-2000:]
    time.sleep(0.5)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)]
    assert not alive, f"worker processes left running: {alive}"
    left = [str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".part")]
    assert not left, f"temporary files left behind: {left}; {err[-3000:]}"


def test_an_interrupt_just_after_the_temporary_file_is_made_leaves_nothing(tmp_path, monkeypatch):
    """Found by the Ctrl-C test under load: a KeyboardInterrupt arriving while ``atomic_path`` makes its
    temporary file (inside ``mkstemp``, or just after it) left ``.NAME.xxxxxxxx.part`` behind. Here the
    interrupt lands right after the file exists, on the close of its descriptor."""
    from nearid.io import atomic as io

    real_close = os.close

    def interrupted(fd):
        real_close(fd)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(io.os, "close", interrupted)
        with io.atomic_path(tmp_path / "out.bin"):
            pass
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


# ------------------------------------------------------------------------------ settings
def test_settings_and_the_legacy_cache_tokens(data, tmp_path, capsys):
    base = {"data": str(data), "out": str(tmp_path / "run"), "backbone": "tiny"}
    for legacy, mode in ((False, "off"), (True, "auto")):
        (tmp_path / "c.json").write_text(json.dumps({**base, "cache_tokens": legacy}))
        assert TrainConfig.from_options(tmp_path / "c.json").token_cache == mode
    assert TrainConfig.from_options(tmp_path / "c.json", token_cache="on").token_cache == "on"
    (tmp_path / "c.json").write_text(json.dumps({**base, "cache_tokens": False, "token_cache": "on"}))
    with pytest.raises(NearIDError, match="'cache_tokens' False contradicts token_cache 'on'"):
        TrainConfig.from_options(tmp_path / "c.json")
    for setting, value in (
        ("token_cache", "maybe"),
        ("num_workers", -1),
        ("num_workers", "many"),
        ("num_workers", True),
    ):
        (tmp_path / "c.json").write_text(json.dumps({**base, setting: value}))
        assert main(["train", "--config", str(tmp_path / "c.json")]) == 2
        line = capsys.readouterr().err.strip()
        assert f"'{setting}' must be" in line and "c.json" in line, line
    assert TrainConfig(**base, num_workers=3.0).num_workers == 3
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "x"), "--num-workers", "-1"]) == 2
    assert "argument --num-workers: -1: give an integer of at least 0" in capsys.readouterr().err


def test_num_workers_auto():
    from nearid.images.pipeline import available_cpus
    from nearid.training.prefetch import default_workers

    assert default_workers(cuda=False) == 0
    assert default_workers(cuda=True) == min(8, available_cpus())  # the embedding pipeline's rule, one place


def test_a_fill_by_workers_stores_the_tokens_of_the_in_process_fill(data, tmp_path):
    """The cache fill decodes in worker processes (pixels cast there to the trunk's dtype): every input's
    tokens are those of the thread-prefetched fill, bit for bit, under a float32 and a bfloat16 trunk."""
    from nearid.images.processors import preprocessor
    from nearid.models.backbones import load_backbone
    from nearid.training.token_cache import TokenCache, fill
    from nearid.training.trainer import half_trunk

    slots = [s for samples in first_steps(data, 2, mtg=True) for item in samples for s in item.slots if s is not None]
    keys = sorted({s.key for s in slots})
    for precision in ("no", "bf16"):
        model, processor = load_backbone("tiny")
        half_trunk(model, precision)
        caches = {}
        for workers in (0, 2):
            cache = TokenCache.for_model(tmp_path / f"{precision}-{workers}", model, processor)
            assert fill(cache, model, slots, preprocessor(processor), batch_size=5, num_workers=workers) == len(keys)
            caches[workers] = cache.load(keys)
        assert torch.equal(caches[0], caches[2])
