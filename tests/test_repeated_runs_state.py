"""Issue 12, "Trust across repeated runs", stale state (items 1, 2, 6): a result never comes from
inputs other than the ones named now.

* ``nearid bench`` re-run into the same ``--out`` after the data was regenerated at the same path, or
  after another model was exported into the same folder, gives what a fresh ``--out`` gives, and says
  it computed the embeddings again; an unchanged re-run computes nothing.
* The training token cache after the data was regenerated gives the head a fresh run gives.
* ``nearid score --threshold calibrated`` finds the threshold by the model's content, whatever the
  spelling of its path, and refuses a calibration made with other weights at the same path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from nearid.bench.run import BenchConfig, run_bench
from nearid.cli.app import main
from nearid.data.synth import SynthConfig, generate

SOURCES = ["Part"]


def synth(root: Path, seed: int, **overrides) -> Path:
    """(Re)generate a tiny synthetic benchmark at ``root``: what a user regenerating data does."""
    values = dict(
        identities=12, size=32, seed=seed, val=2, test=6, mtg_train=0, mtg_test=2, workers=1, sources=tuple(SOURCES)
    )
    values.update(overrides)
    generate(root, SynthConfig(**values), overwrite=True, progress=False)
    return root


def export_tiny(folder: Path, seed: int) -> Path:
    """Write the tiny model of ``seed`` as a NearID checkpoint folder (a re-export overwrites it)."""
    from nearid.models.backbones import load_backbone

    model, processor = load_backbone(f"tiny:{seed}")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def bench(data: Path, out: Path, encoders, **overrides):
    values = dict(
        encoders=list(encoders),
        data=str(data),
        sources=SOURCES,
        out=str(out),
        mtg=str(data / "MTG"),
        device="cpu",
        batch_size=16,
    )
    values.update(overrides)
    return run_bench(BenchConfig(**values))


def same_numbers(a, b) -> None:
    """Two bench results report the same numbers for the same encoders (the spec text may differ)."""
    assert len(a.encoders) == len(b.encoders)
    for (name_a, x), (name_b, y) in zip(a.encoders.items(), b.encoders.items()):
        assert x.nearid.to_dict() == y.nearid.to_dict(), (name_a, name_b)
        assert x.calibration.to_dict() == y.calibration.to_dict(), (name_a, name_b)
        assert json.dumps(x.mtg.as_dict()) == json.dumps(y.mtg.as_dict()), (name_a, name_b)


# ------------------------------------------------------------------ item 1: the bench embedding store
def test_bench_after_regenerating_the_data_at_the_same_path_equals_a_fresh_out(tmp_path):
    data = synth(tmp_path / "synth", seed=1)
    first = bench(data, tmp_path / "out", ["histogram"])
    synth(data, seed=2)  # same path, other images
    again = bench(data, tmp_path / "out", ["histogram"])
    fresh = bench(data, tmp_path / "fresh", ["histogram"])
    entry = again.encoders["histogram:8"]
    assert entry.embeddings_computed == entry.unique_images > 0
    assert first.encoders["histogram:8"].nearid.to_dict() != fresh.encoders["histogram:8"].nearid.to_dict()
    same_numbers(again, fresh)


def test_bench_after_re_exporting_a_model_to_the_same_folder_equals_a_fresh_out(tmp_path):
    data = synth(tmp_path / "synth", seed=1)
    model = export_tiny(tmp_path / "model", seed=0)
    spec = f"nearid:{model}"
    bench(data, tmp_path / "out", [spec])
    export_tiny(model, seed=1)  # another model, same folder
    again = bench(data, tmp_path / "out", [spec])
    fresh = bench(data, tmp_path / "fresh", [spec])
    entry = again.encoders[spec]
    assert entry.embeddings_computed == entry.unique_images > 0
    same_numbers(again, fresh)
    assert entry.fingerprint == fresh.encoders[spec].fingerprint


def test_unchanged_data_and_model_compute_nothing_whatever_the_path_spelling(tmp_path, monkeypatch):
    data = synth(tmp_path / "synth", seed=1)
    export_tiny(tmp_path / "model", seed=0)
    monkeypatch.chdir(tmp_path)
    first = bench(Path("synth"), tmp_path / "out", ["nearid:./model", "histogram"])
    again = bench(data, tmp_path / "out", ["nearid:model", "histogram"])  # same content, other spellings
    assert all(e.embeddings_computed == e.unique_images for e in first.encoders.values())
    # results.json keeps every encoder run into --out (merged per spec): pick this run's two
    rerun = [again.encoders["nearid:model"], again.encoders["histogram:8"]]
    assert [e.embeddings_computed for e in rerun] == [0, 0]
    for before, after in zip(first.encoders.values(), rerun):
        assert before.nearid.to_dict() == after.nearid.to_dict()
        assert before.calibration.to_dict() == after.calibration.to_dict()
    fingerprints = [e.fingerprint for e in rerun]
    assert fingerprints == [e.fingerprint for e in first.encoders.values()] and all(len(f) == 64 for f in fingerprints)


def test_one_store_per_encoder_content(tmp_path):
    """Two spellings of one model share a store; the histogram and the model do not."""
    data = synth(tmp_path / "synth", seed=1)
    export_tiny(tmp_path / "model", seed=0)
    bench(data, tmp_path / "out", [f"nearid:{tmp_path / 'model'}", f"nearid:{tmp_path}/./model", "histogram"])
    stores = sorted(p.name for p in (tmp_path / "out" / "embeddings").iterdir())
    assert len(stores) == 2, stores


# ------------------------------------------------------------------ item 2: the training token cache
def test_token_cache_after_regenerating_the_data_gives_a_fresh_runs_head(tmp_path):
    from nearid.models.backbones import load_backbone
    from nearid.training.token_cache import TokenCache
    from nearid.training.trainer import TrainConfig, train

    def run(out: Path, **options):
        return train(
            TrainConfig(
                data=str(data),
                out=str(out),
                sources=SOURCES,
                mtg=None,
                backbone="tiny",
                batch_size=4,
                epochs=1,
                max_steps=3,
                save_steps=3,
                warmup_steps=1,
                lr=1e-2,
                log_steps=100,
            ),
            **options,
        )

    def head(out: Path) -> dict:
        return load_file(out / "checkpoints" / "step-3" / "head.safetensors")

    data = synth(tmp_path / "synth", seed=1, identities=16, test=2)
    run(tmp_path / "again")
    first_keys = TokenCache.for_model(tmp_path / "again" / "token_cache", *load_backbone("tiny")).keys()
    synth(data, seed=2, identities=16, test=2)
    run(tmp_path / "again", overwrite=True)  # the re-run into one --out keeps its (content-keyed) token cache
    kept = TokenCache.for_model(tmp_path / "again" / "token_cache", *load_backbone("tiny")).keys()
    assert first_keys and first_keys < kept  # the old tokens are still there, the new data's were added
    run(tmp_path / "fresh")
    for name, tensor in head(tmp_path / "fresh").items():
        torch.testing.assert_close(head(tmp_path / "again")[name], tensor, rtol=0, atol=0)
    inputs = json.loads((tmp_path / "again" / "inputs.json").read_text())
    assert set(inputs["data"]) == {"positives", "Part"} and all(len(v) == 64 for v in inputs["data"].values())


# ------------------------------------------------------------------ item 6: the calibrated threshold
@pytest.fixture
def score_inputs(tmp_path):
    for i in range(2):
        colour = (40 + 100 * i, 90, 200 - 80 * i)
        for folder in ("refs", "gens"):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.new("RGB", (32, 32), colour).save(tmp_path / folder / f"{i}.png")
    return tmp_path


def score(spec: str, calibration: str) -> list[str]:
    return [
        "score",
        "--refs",
        "refs",
        "--gens",
        "gens",
        "--model",
        spec,
        "--device",
        "cpu",
        "--out",
        "s.csv",
        "--threshold",
        "calibrated",
        "--calibration",
        calibration,
    ]


def test_calibrated_threshold_is_found_by_the_models_content_not_its_spelling(score_inputs, monkeypatch, capsys):
    monkeypatch.chdir(score_inputs)
    synth(score_inputs / "synth", seed=1)
    export_tiny(score_inputs / "model", seed=0)
    spec = f"nearid:{score_inputs}/./model"
    results = bench(Path("synth"), score_inputs / "out", [spec], split="val")
    value = results.encoders[spec].calibration.threshold.value
    for spelling in ("nearid:./model", "nearid:model", "nearid:model/"):
        assert main(score(spelling, "out/results.json")) == 0, capsys.readouterr().err
        assert f"threshold {value:.4f} (calibrated on val" in capsys.readouterr().out


def test_calibration_made_with_other_weights_at_the_same_path_is_refused(score_inputs, monkeypatch, capsys):
    monkeypatch.chdir(score_inputs)
    synth(score_inputs / "synth", seed=1)
    export_tiny(score_inputs / "model", seed=0)
    bench(Path("synth"), score_inputs / "out", ["nearid:model"], split="val")
    export_tiny(score_inputs / "model", seed=1)
    capsys.readouterr()
    assert main(score("nearid:model", "out/results.json")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "out/results.json" in err and "calibrated with other weights" in err and "nearid bench" in err


def test_resume_onto_regenerated_data_is_refused(tmp_path):
    from nearid.io.errors import NearIDError
    from nearid.training.trainer import TrainConfig, train

    data = synth(tmp_path / "synth", seed=1, identities=16, test=2)
    config = TrainConfig(
        data=str(data),
        out=str(tmp_path / "run"),
        sources=SOURCES,
        mtg=None,
        backbone="tiny",
        batch_size=4,
        epochs=1,
        max_steps=2,
        save_steps=2,
        warmup_steps=1,
        log_steps=100,
    )
    train(config)
    synth(data, seed=2, identities=16, test=2)
    with pytest.raises(
        NearIDError, match=r"--resume onto other data than the run started on \(Part, positives changed"
    ):
        train(config, resume=True)
