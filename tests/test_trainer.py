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

from nearid.cli.app import main
from nearid.data import load_mtg, load_nearid
from nearid.images.processors import preprocessor
from nearid.models.backbones import load_backbone
from nearid.models.nearid_model import NearIDModel
from nearid.tiny.model import build_tiny_model
from nearid.training import SampleRecipe, TrainingSet, pixel_values
from nearid.training.batches import step_loss
from nearid.training.losses import CombinedLoss
from nearid.training.trainer import train

from .training_run import ARGS, config, head_of, training_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return training_data(tmp_path_factory.mktemp("train") / "synth")


def fixed_batch(data, sources=("Part", "Shape"), size=8):
    """The first ``size`` samples of epoch 0 of the training split, as the trainer builds them."""
    bench = load_nearid(data, list(sources), split="train")
    training_set = TrainingSet(bench, list(sources), None, SampleRecipe(seed=0))
    return training_set.samples(0, training_set.batches(0, size)[0])


def rank_margin(model, processor, samples) -> float:
    """Mean over (anchor, positive) pairs of s(anchor, positive) - the highest s(anchor, rival), rivals
    being the anchor's own distractors and every other sample's positives: the ranking L_NearID
    teaches, measured by full forward passes (not by the loss code)."""
    slots = {slot.key: slot for sample in samples for slot in sample.slots if slot is not None}
    with torch.no_grad():
        vectors = dict(
            zip(slots, model.get_image_features(pixel_values(list(slots.values()), preprocessor(processor))))
        )
    margins = []
    for i, sample in enumerate(samples):
        anchor = vectors[sample.anchor.key]
        others = [slot for j, other in enumerate(samples) if j != i for slot in other.slots[1:3] if slot is not None]
        rivals = [slot for slot in sample.slots[3:6] if slot is not None] + others
        best_rival = max(float(vectors[slot.key] @ anchor) for slot in rivals)
        margins += [float(vectors[slot.key] @ anchor) - best_rival for slot in sample.slots[1:3] if slot is not None]
    return sum(margins) / len(margins)


def test_the_head_learns_a_fixed_batch(data):
    """The trainer's step (tokens -> head -> L_NearID) with AdamW, on one batch over and over (40 steps):
    the loss (non-negative) falls by a clear factor and the anchors' own positives climb past their
    rivals (:func:`rank_margin`). A graph that stops before the head, a frozen head or a wrong-signed
    loss fails here."""
    model, processor = load_backbone("tiny")
    samples = fixed_batch(data)
    tokens = {}

    def tokens_of(slots):  # the trunk is frozen: compute each input once
        missing = [slot for slot in slots if slot.key not in tokens]
        if missing:
            tokens.update(
                zip([s.key for s in missing], model.encode_tokens(pixel_values(missing, preprocessor(processor))))
            )
        return torch.stack([tokens[slot.key] for slot in slots])

    before = rank_margin(model, processor, samples)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = CombinedLoss("nearid:1.0")
    losses = []
    for _ in range(40):
        loss = step_loss(model.head, loss_fn, samples, tokens_of, "cpu")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert 0 < losses[-1] < losses[0] / 4, losses
    after = rank_margin(model, processor, samples)
    assert after > before + 0.5, (before, after)  # measured: -0.67 -> -0.02
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("backbone.head."))


def test_training_improves_a_training_batch_and_touches_only_the_head(data, tmp_path):
    train(config(data, tmp_path / "b", epochs=3))
    model, processor = load_backbone("tiny")
    initial = {k: v.clone() for k, v in model.head.state_dict().items()}
    samples = fixed_batch(data)
    before = rank_margin(model, processor, samples)
    trained = head_of(tmp_path / "b")
    assert set(trained) == set(initial)  # head-only checkpoints: no trunk, no second head copy
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
    model.head.load_state_dict(trained)
    after = rank_margin(model, processor, samples)
    assert after > before + 0.2, (before, after)  # a batch it trained on; measured: -0.67 -> -0.24


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(data, tmp_path):
    reference = train(config(data, tmp_path / "ref", epochs=12, save_steps=2))
    argv = [
        sys.executable,
        "-m",
        "nearid",
        "train",
        "--data",
        str(data),
        "--mtg",
        str(data / "MTG"),
        *ARGS,
        "--epochs",
        "12",
        "--save-steps",
        "2",
        "--out",
        str(tmp_path / "run"),
    ]
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


@pytest.mark.slow
def test_two_processes_match_one(data, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    one = train(config(data, tmp_path / "one", max_steps=4, mtg=None))
    done = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "nearid",
            "train",
            "--data",
            str(data),
            *ARGS,
            "--epochs",
            "2",
            "--max-steps",
            "4",
            "--save-steps",
            "4",
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "on 2 process(es)" in done.stdout
    loss = float(done.stdout.split("loss ")[-1].split(",")[0])
    assert loss == pytest.approx(one["loss"], rel=1e-4)
    for name, tensor in head_of(tmp_path / "one").items():
        torch.testing.assert_close(head_of(tmp_path / "two")[name], tensor, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("token_cache", ["auto", "off"])
def test_prepare_run_and_steps_by_hand_give_the_head_of_train(data, tmp_path, token_cache):
    """``train(config)`` is ``fit(prepare_run(config))``: a run prepared and stepped by hand, on the inputs
    it decodes ahead (:func:`step_inputs`), has ``train``'s head, optimizer state and loss bit for bit,
    cached or streamed; a step past the plan is refused; and a run stepped once by hand (no inputs given:
    the step decodes its own) then fitted ends with the same head."""
    from nearid.io.errors import NearIDError
    from nearid.training.loop import fit, save_checkpoint, step, step_inputs
    from nearid.training.run import prepare_run

    settings = dict(max_steps=3, save_steps=3, token_cache=token_cache)
    trained = train(config(data, tmp_path / "t", **settings))
    expected = tmp_path / "t" / "checkpoints" / "step-3"
    run = prepare_run(config(data, tmp_path / "h", **settings))
    bench, mtg = load_nearid(data, ["Part", "Shape"], split="train"), load_mtg(data / "MTG", split="train")
    per_epoch = len(TrainingSet(bench, ["Part", "Shape"], mtg, SampleRecipe(seed=0)).batches(0, 8))
    assert (run.step, run.end, run.total_steps) == (0, 3, 2 * per_epoch)
    assert run.streams == (token_cache == "off") and (run.cache is None) == (token_cache == "off")
    with step_inputs(run) as inputs:
        numbers = [step(run, next(inputs)) for _ in range(3)]
    assert [(n.step, n.epoch) for n in numbers] == [(1, 0), (2, 0), (3, 0)]
    assert numbers[-1].loss == trained["loss"] and numbers[-1].lr == run.scheduler.get_last_lr()[0]
    hand = run.accelerator.unwrap_model(run.head).state_dict()
    assert all(torch.equal(hand[name], tensor) for name, tensor in load_file(expected / "head.safetensors").items())
    saved = save_checkpoint(run)
    assert saved == tmp_path / "h" / "checkpoints" / "step-3"
    ours, theirs = (torch.load(folder / "state.pt", weights_only=True) for folder in (saved, expected))
    assert ours["step"] == theirs["step"] == 3 and ours["scheduler"] == theirs["scheduler"]
    assert len(ours["optimizer"]["state"]) == len(theirs["optimizer"]["state"]) > 0
    for moments, reference in zip(ours["optimizer"]["state"].values(), theirs["optimizer"]["state"].values()):
        assert all(torch.equal(moments[key], reference[key]) for key in reference)
    with pytest.raises(NearIDError, match="the run has taken its planned steps"):
        step(run)
    # one step given no inputs (it builds its own), then fit takes the rest from where the run is
    mixed = prepare_run(config(data, tmp_path / "m", **settings))
    assert step(mixed).step == 1
    assert fit(mixed) == {**trained, "checkpoint": str(tmp_path / "m" / "checkpoints" / "step-3")}
    assert all(torch.equal(head_of(tmp_path / "m")[name], tensor) for name, tensor in head_of(tmp_path / "t").items())


def test_export_loads_with_from_pretrained(data, tmp_path, capsys):
    train(config(data, tmp_path / "run", epochs=1))
    checkpoint = max((tmp_path / "run" / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    assert main(["export", str(checkpoint), str(tmp_path / "model")]) == 0
    model = NearIDModel.from_pretrained(tmp_path / "model")
    for name, tensor in load_file(checkpoint / "head.safetensors").items():
        torch.testing.assert_close(model.head.state_dict()[name], tensor)
    assert (tmp_path / "model" / "preprocessor_config.json").is_file()
    elsewhere = tmp_path.parent / f"{tmp_path.name}-export"  # not inside the input folder (that is refused)
    assert main(["export", str(tmp_path), str(elsewhere)]) == 2
    assert "no head.safetensors; pass a RUN/checkpoints/step-N folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), str(elsewhere)]) == 2
    assert f"run: is a run folder; pass one checkpoint in it, e.g. the newest: {checkpoint}" in capsys.readouterr().err
    assert not elsewhere.exists()


def test_uncached_training_equals_cached(data, tmp_path, monkeypatch):
    """Cached and uncached runs must feed the head the same tokens for the same slots (keys, masks,
    flips, order). The cache stores float16, so here the trunk itself rounds to float16 in both runs:
    what is left to differ is the cache, and the heads must agree to float32 round-off."""
    encode_tokens = NearIDModel.encode_tokens
    monkeypatch.setattr(NearIDModel, "encode_tokens", lambda self, pixels: encode_tokens(self, pixels).half().float())
    cached = train(config(data, tmp_path / "c", max_steps=5, save_steps=5))
    fresh = train(config(data, tmp_path / "f", max_steps=5, save_steps=5, token_cache="off"))
    assert not (tmp_path / "f" / "token_cache").exists()
    assert fresh["step"] == cached["step"] == 5 and fresh["loss"] == pytest.approx(cached["loss"], rel=1e-6)
    initial = build_tiny_model(0).head.state_dict()
    assert any(not torch.equal(tensor, initial[name]) for name, tensor in head_of(tmp_path / "c").items())
    for name, tensor in head_of(tmp_path / "c").items():
        torch.testing.assert_close(head_of(tmp_path / "f")[name], tensor, rtol=0, atol=1e-6)


def test_validation_is_what_bench_reports_for_the_exported_model(data, tmp_path):
    """Validation during training = ``nearid bench`` on the same split with the model exported at that
    step (same sources, full images, sources pooled). The head must also have moved the numbers past
    the untrained model's, or a validation that scored a stale copy of the head would pass too (the
    tiny random trunk is context-dominated: it needs the paper's kind of distractor, Instance, a high
    learning rate and 40 steps to win a few trials)."""
    import json

    from nearid.bench.run import BenchConfig, run_bench
    from nearid.training.trainer import export

    train(
        config(
            data,
            tmp_path / "v",
            sources=["Instance"],
            mtg=None,
            epochs=20,
            max_steps=40,
            save_steps=40,
            eval_steps=20,
            val_split="test",
            lr=3e-2,
        )
    )
    lines = [json.loads(line) for line in (tmp_path / "v" / "validation.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [20, 40]
    model = export(tmp_path / "v" / "checkpoints" / "step-40", tmp_path / "model")

    def bench(spec, name):
        config = BenchConfig(
            encoders=[spec], data=str(data), sources=["Instance"], out=str(tmp_path / name), split="test", device="cpu"
        )
        (result,) = run_bench(config).encoders.values()
        return result.nearid.groups["all sources"].score.as_dict()

    trained, untrained = bench(f"nearid:{model}", "trained"), bench("tiny", "untrained")
    validated = {k: v for k, v in lines[-1].items() if k != "step"}
    assert validated == pytest.approx({k: trained[k] for k in validated}, rel=1e-9)
    assert validated["n_samples"] == 8 and validated["n_trials"] == 24  # the 8 test identities' directed view pairs
    assert validated["n_wins"] > untrained["n_wins"], (validated, untrained)


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

    argv = [
        "train",
        "--data",
        str(data),
        *ARGS,
        "--epochs",
        "1",
        "--max-steps",
        "1",
        "--eval-steps",
        "1",
        "--val-split",
        "test",
        "--uncached",
        "--out",
        str(tmp_path / "u"),
    ]
    assert main(argv) == 0
    resolved = json.loads((tmp_path / "u" / "config.json").read_text())
    assert resolved["eval_steps"] == 1 and resolved["val_split"] == "test" and resolved["token_cache"] == "off"
    assert resolved["lr"] == 1e-3 and resolved["batch_size"] == 8 and resolved["sources"] == ["Part", "Shape"]
    assert not (tmp_path / "u" / "token_cache").exists()
    logged = json.loads((tmp_path / "u" / "validation.jsonl").read_text())
    assert logged["n_samples"] == 8 * 2  # the 8 test identities x 2 sources, not the 4 val ones
    assert main(["train", "--data", str(data), *ARGS, "--max-steps", "1", "--out", str(tmp_path / "c")]) == 0
    defaults = json.loads((tmp_path / "c" / "config.json").read_text())
    assert defaults["token_cache"] == "auto" and defaults["eval_steps"] == 0  # absent options keep the defaults


# ------------------------------------------------------------------ augmentation options and precision (issue 13)
def test_jitter_and_disalignment_train_through_the_trunk(data, tmp_path, monkeypatch):
    """Augmented slots are not cached (each is drawn afresh per epoch, item and slot): a cached run with
    jitter and disalignment on completes, caches only the plain slots, and trains another head; with
    both at 0 the run is bit for bit today's (every slot read from the cache)."""
    import json

    from nearid.training import token_cache

    augmented = train(config(data, tmp_path / "j", max_steps=3, save_steps=3, jitter_prob=0.5, affine_prob=0.5))
    plain = train(config(data, tmp_path / "p", max_steps=3, save_steps=3))
    assert augmented["step"] == plain["step"] == 3 and augmented["loss"] != pytest.approx(plain["loss"])
    assert any(not torch.equal(t, head_of(tmp_path / "p")[n]) for n, t in head_of(tmp_path / "j").items())
    bench = load_nearid(data, ["Part", "Shape"], split="train")
    recipe = SampleRecipe(seed=0, jitter_prob=0.5, affine_prob=0.5)
    training_set = TrainingSet(bench, ["Part", "Shape"], load_mtg_train(data), recipe)
    # the cache holds the cacheable inputs of the 3 steps the run takes (max_steps), not of every epoch
    used = [
        s for batch in training_set.batches(0, 8)[:3] for item in training_set.samples(0, batch) for s in item.slots
    ]
    every = {s.key for s in used if s is not None}
    cacheable = {s.key for s in used if s is not None and s.cacheable}
    assert 0 < len(cacheable) < len(every) and len(cacheable) < len(training_set.slots(range(2), cacheable_only=True))
    cached_keys = token_cache.TokenCache.for_model(tmp_path / "j" / "token_cache", *load_backbone("tiny")).keys()
    assert set(cached_keys) == cacheable
    # probabilities 0: the cache-only path of before, exactly
    monkeypatch.setattr(
        token_cache, "slot_tokens", lambda slots, model, preprocess, cache, **_: cache.load([s.key for s in slots])
    )
    before = train(config(data, tmp_path / "b", max_steps=3, save_steps=3))
    assert before["loss"] == plain["loss"]
    for name, tensor in head_of(tmp_path / "b").items():
        assert torch.equal(head_of(tmp_path / "p")[name], tensor)
    saved = json.loads((tmp_path / "j" / "config.json").read_text())
    assert (saved["jitter_prob"], saved["affine_prob"], saved["mixed_precision"]) == (0.5, 0.5, "auto")


def load_mtg_train(data):
    return load_mtg(data / "MTG", split="train")


def test_augmentation_options_reach_the_config(data, tmp_path):
    import json

    argv = [
        "train",
        "--data",
        str(data),
        *ARGS,
        "--max-steps",
        "1",
        "--jitter-prob",
        "0.25",
        "--affine-prob",
        "0.5",
        "--mixed-precision",
        "no",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "o" / "config.json").read_text())
    assert (saved["jitter_prob"], saved["affine_prob"], saved["mixed_precision"]) == (0.25, 0.5, "no")


def test_mixed_precision_default_and_the_half_trunk():
    from nearid.io.errors import NearIDError
    from nearid.training.trainer import half_trunk, mixed_precision

    assert mixed_precision("auto", cuda=True) == "fp16" and mixed_precision("auto", cuda=False) == "no"
    assert mixed_precision("bf16", cuda=True) == "bf16" and mixed_precision("no", cuda=True) == "no"
    with pytest.raises(NearIDError, match="use auto, no, fp16 or bf16"):
        mixed_precision("fp8", cuda=True)
    model = build_tiny_model(0)
    pixels = torch.rand(2, 3, model.config.vision_config.image_size, model.config.vision_config.image_size)
    reference = model.encode_tokens(pixels)
    half_trunk(model, "no")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    half_trunk(model, "bf16")  # bf16 here: CPU kernels for it exist everywhere; fp16 is cast the same way
    trunk = [p for n, p in model.backbone.named_parameters() if not n.startswith("head.")]
    assert trunk and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in trunk)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.head.parameters())  # the head trains in fp32
    tokens = model.encode_tokens(pixels)
    assert tokens.dtype == torch.bfloat16 and not tokens.requires_grad
    assert torch.nn.functional.cosine_similarity(tokens.float(), reference, dim=-1).min() > 0.99
    assert model.pool(tokens).dtype == torch.float32
