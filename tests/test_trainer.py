"""The trainer: it learns, resumes exactly after SIGKILL, matches across 2 processes, and exports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nearid.cli import main
from nearid.data.synth import SynthConfig, generate
from nearid.model import NearIDModel
from nearid.training.trainer import TrainConfig, train

ARGS = ["--sources", "Part", "Shape", "--backbone", "tiny", "--batch-size", "8", "--warmup-steps", "2", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "synth"
    generate(root, SynthConfig(identities=40, size=48, seed=2, val=4, test=8, mtg_train=8, mtg_test=2, workers=1), progress=False)
    return root


def config(data, out, **overrides):
    values = dict(data=str(data), out=str(out), sources=["Part", "Shape"], mtg=str(data / "MTG"), backbone="tiny",
                  batch_size=8, epochs=2, warmup_steps=2, lr=1e-3, save_steps=4, log_steps=100)
    values.update(overrides)
    return TrainConfig(**values)


def head_of(run: Path) -> dict:
    latest = max((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return load_file(latest / "head.safetensors")


def test_training_lowers_the_loss_and_touches_only_the_head(data, tmp_path):
    first = train(config(data, tmp_path / "a", epochs=1, max_steps=1))
    result = train(config(data, tmp_path / "b", epochs=3))
    assert result["step"] == 3 * 8 and result["loss"] < first["loss"]
    from nearid.model import build_tiny_model

    initial = build_tiny_model(0).head.state_dict()
    trained = head_of(tmp_path / "b")
    assert set(trained) == set(initial)  # head-only checkpoints: no trunk, no second head copy
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_resume_after_sigkill_equals_an_uninterrupted_run(data, tmp_path):
    reference = train(config(data, tmp_path / "ref", epochs=12, save_steps=2))
    argv = [sys.executable, "-m", "nearid", "train", "--data", str(data), "--mtg", str(data / "MTG"), *ARGS,
            "--epochs", "12", "--save-steps", "2", "--out", str(tmp_path / "run")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).parent)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "checkpoints" / "step-6" / "state.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(int(p.name.split("-")[1]) for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert killed_at < 12 * 8, "the kill must land mid-run"
    resumed = train(config(data, tmp_path / "run", epochs=12, save_steps=2), resume=True)
    assert resumed["step"] == reference["step"]
    for name, tensor in head_of(tmp_path / "ref").items():
        torch.testing.assert_close(head_of(tmp_path / "run")[name], tensor, rtol=0, atol=1e-6)


def test_two_processes_match_one(data, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    one = train(config(data, tmp_path / "one", max_steps=4, mtg=None))
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "nearid", "train", "--data", str(data), *ARGS,
         "--epochs", "2", "--max-steps", "4", "--save-steps", "4", "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "on 2 process(es)" in done.stdout
    loss = float(done.stdout.split("loss ")[-1].split(",")[0])
    assert loss == pytest.approx(one["loss"], rel=1e-4)
    for name, tensor in head_of(tmp_path / "one").items():
        torch.testing.assert_close(head_of(tmp_path / "two")[name], tensor, rtol=1e-4, atol=1e-5)


def test_export_loads_with_from_pretrained(data, tmp_path, capsys):
    train(config(data, tmp_path / "run", epochs=1))
    checkpoint = max((tmp_path / "run" / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    assert main(["export", str(checkpoint), str(tmp_path / "model")]) == 0
    model = NearIDModel.from_pretrained(tmp_path / "model")
    for name, tensor in load_file(checkpoint / "head.safetensors").items():
        torch.testing.assert_close(model.head.state_dict()[name], tensor)
    assert (tmp_path / "model" / "preprocessor_config.json").is_file()
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "x")]) == 2  # (x inside the input would be refused)
    assert "no run config.json two levels up; pass --backbone" in capsys.readouterr().err


def test_uncached_training_equals_cached(data, tmp_path):
    cached = train(config(data, tmp_path / "c", max_steps=3, flip_prob=0.0))
    fresh = train(config(data, tmp_path / "f", max_steps=3, flip_prob=0.0, cache_tokens=False))
    assert fresh["loss"] == pytest.approx(cached["loss"], rel=1e-2)  # fp16 cache vs fp32 tokens
    assert not (tmp_path / "f" / "token_cache").exists()


def test_validation_is_logged(data, tmp_path):
    import json

    train(config(data, tmp_path / "v", max_steps=2, eval_steps=2))
    lines = [json.loads(line) for line in (tmp_path / "v" / "validation.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 2 and 0 <= lines[0]["pa"] <= 100 and lines[0]["n_samples"] == 4 * 2  # 4 val identities x 2 sources, pooled


def test_a_runs_config_file_repeats_it_with_overrides(data, tmp_path, capsys):
    import json

    first = train(config(data, tmp_path / "a", max_steps=2))
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    saved["out"] = str(tmp_path / "b")
    (tmp_path / "b.json").write_text(json.dumps(saved))
    assert main(["train", "--config", str(tmp_path / "b.json"), "--max-steps", "3"]) == 0
    again = json.loads((tmp_path / "b" / "config.json").read_text())
    assert again == {**saved, "max_steps": 3}  # the file, with the command line on top
    assert first["step"] == 2 and (tmp_path / "b" / "checkpoints" / "step-3").is_dir()
    (tmp_path / "bad.json").write_text(json.dumps({**saved, "learning_rate": 1}))
    assert main(["train", "--config", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: unknown setting(s) learning_rate" in capsys.readouterr().err


def test_command_line_reaches_every_setting_it_names(data, tmp_path):
    import json

    argv = ["train", "--data", str(data), *ARGS, "--epochs", "1", "--max-steps", "1", "--eval-steps", "1",
            "--val-split", "test", "--uncached", "--out", str(tmp_path / "u")]
    assert main(argv) == 0
    resolved = json.loads((tmp_path / "u" / "config.json").read_text())
    assert resolved["eval_steps"] == 1 and resolved["val_split"] == "test" and resolved["cache_tokens"] is False
    assert resolved["lr"] == 1e-3 and resolved["batch_size"] == 8 and resolved["sources"] == ["Part", "Shape"]
    assert not (tmp_path / "u" / "token_cache").exists()
    logged = json.loads((tmp_path / "u" / "validation.jsonl").read_text())
    assert logged["n_samples"] == 8 * 2  # the 8 test identities x 2 sources, not the 4 val ones
    assert main(["train", "--data", str(data), *ARGS, "--max-steps", "1", "--out", str(tmp_path / "c")]) == 0
    defaults = json.loads((tmp_path / "c" / "config.json").read_text())
    assert defaults["cache_tokens"] is True and defaults["eval_steps"] == 0  # absent options keep the defaults
