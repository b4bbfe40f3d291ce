"""The frozen-trunk token cache: computed once, equal to fresh tokens, robust to partial shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nearid import load_encoder
from nearid.data import load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.io.errors import NearIDError
from nearid.tiny.model import build_tiny_model
from nearid.training import TokenCache, TrainingSet, disk_estimate, fill, model_signature, pixel_values, token_shape


@pytest.fixture(scope="module")
def nearid(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    config = SynthConfig(identities=16, size=48, seed=1, val=2, test=4, mtg_train=4, mtg_test=2, workers=1)
    generate(root, config, progress=False)
    return load_nearid(root, ["Part", "Shape"], split="train")


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny", device="cpu")


def _slots(nearid):
    return TrainingSet(nearid, ["Part", "Shape"]).slots([0])


def _cache(folder, encoder):
    return TokenCache(folder, model_signature(encoder.model), *token_shape(encoder.model))


def test_fill_computes_each_key_once(tmp_path, nearid, encoder):
    slots = _slots(nearid)
    cache = _cache(tmp_path / "cache", encoder)
    reported = []
    computed = fill(
        cache,
        encoder.model,
        slots + slots[:5] + [None],
        encoder.preprocess,
        batch_size=16,
        progress=lambda done, total: reported.append((done, total)),
    )
    assert computed == len(slots)
    assert reported[-1] == (len(slots), len(slots))
    assert len(list(cache.folder.glob("shard-*.npy"))) == -(-len(slots) // 16)  # one shard per batch
    assert fill(cache, encoder.model, slots, encoder.preprocess) == 0
    reopened = _cache(tmp_path / "cache", encoder)
    assert reopened.keys() == {slot.key for slot in slots}
    assert fill(reopened, encoder.model, slots, encoder.preprocess) == 0


def test_cached_tokens_equal_fresh_tokens(tmp_path, nearid, encoder):
    slots = _slots(nearid)
    masked = [s for s in slots if s.mask is not None][:2]
    flipped = [s for s in slots if s.flip][:2]
    chosen = list({s.key: s for s in masked + flipped + slots[:3]}.values())
    assert any(s.flip for s in chosen) and any(s.mask is not None for s in chosen)
    cache = _cache(tmp_path / "cache", encoder)
    fill(cache, encoder.model, chosen, encoder.preprocess, batch_size=3)
    loaded = cache.load([s.key for s in chosen][::-1]).flip(0)  # keys in any order
    assert loaded.dtype == torch.float16 and loaded.shape == (len(chosen), 64, 64)
    for slot, tokens in zip(chosen, loaded):
        pixels = encoder.preprocess([slot.image], [slot.mask])
        if slot.flip:
            pixels = torch.flip(pixels, dims=[-1])
        fresh = encoder.model.encode_tokens(pixels)[0]
        torch.testing.assert_close(tokens.float(), fresh.float(), atol=1e-2, rtol=0)
    # the flip is real: flipped pixels give other tokens than the unflipped input
    slot = next(s for s in chosen if s.flip)
    unflipped = encoder.model.encode_tokens(encoder.preprocess([slot.image], [slot.mask]))[0]
    assert (cache.load([slot.key])[0].float() - unflipped).abs().max() > 0.1
    expected = torch.flip(encoder.preprocess([slot.image], [slot.mask]), dims=[-1])
    torch.testing.assert_close(pixel_values([slot], encoder.preprocess), expected)


def test_a_shard_without_keys_is_ignored(tmp_path, nearid, encoder):
    slots = _slots(nearid)[:6]
    folder = tmp_path / "cache"
    cache = _cache(folder, encoder)
    fill(cache, encoder.model, slots, encoder.preprocess, batch_size=3)
    shards = sorted(folder.glob("shard-*.npy"))
    assert len(shards) == 2
    lost = shards[0].with_name(shards[0].name.replace(".npy", ".keys.json"))
    lost_keys = set(json.loads(lost.read_text()))
    lost.unlink()
    reopened = _cache(folder, encoder)
    assert reopened.keys() == {s.key for s in slots} - lost_keys
    with pytest.raises(KeyError, match="fill"):
        reopened.load(sorted(lost_keys))
    assert fill(reopened, encoder.model, slots, encoder.preprocess, batch_size=3) == 3
    # a shard whose keys and rows disagree is not counted either
    keys_file = sorted(folder.glob("shard-*.keys.json"))[0]
    keys_file.write_text(json.dumps(json.loads(keys_file.read_text())[:-1]))
    assert len(_cache(folder, encoder)) == 3


def test_manifest_mismatch_is_an_error_naming_the_folder(tmp_path, encoder):
    folder = tmp_path / "cache"
    TokenCache(folder, "abc", 64, 64)
    with pytest.raises(NearIDError, match=f"{folder}.*another cache folder"):
        TokenCache(folder, "def", 64, 64)
    with pytest.raises(NearIDError, match=str(folder)):
        TokenCache(folder, "abc", 729, 64)
    TokenCache(folder, "abc", 64, 64)  # the right one still opens


def test_model_signature_follows_the_trunk():
    model = build_tiny_model(0)
    signature = model_signature(model)
    assert signature == model_signature(build_tiny_model(0))
    with torch.no_grad():  # the head trains: it must not change the signature
        model.head.probe.add_(1.0)
    assert model_signature(model) == signature
    with torch.no_grad():
        model.backbone.encoder.layers[1].mlp.fc2.weight[0, 0] += 1e-3
    assert model_signature(model) != signature
    assert model_signature(build_tiny_model(1)) != signature
    assert model_signature(build_tiny_model(0).half()) != signature


def test_add_and_load_roundtrip(tmp_path):
    cache = TokenCache(tmp_path / "c", "sig", 4, 3)
    assert cache.bytes_per_image == 4 * 3 * 2 == disk_estimate(1, 4, 3)
    a = torch.randn(2, 4, 3)
    b = torch.randn(1, 4, 3)
    cache.add(["a", "b"], a)
    cache.add(["c"], b)
    assert "a" in cache and "z" not in cache
    got = cache.load(["c", "a", "b", "a"])
    torch.testing.assert_close(got.float(), torch.cat([b, a[:1], a[1:], a[:1]]).half().float())
    few_maps = TokenCache(tmp_path / "c", "sig", 4, 3, max_open=1)  # shards are re-mapped as needed
    torch.testing.assert_close(few_maps.load(["c", "a", "c"]), got[[0, 1, 0]])
    assert len(few_maps._open) == 1
    with pytest.raises(ValueError, match="shape"):
        cache.add(["d"], torch.randn(1, 5, 3))
    with pytest.raises(ValueError, match="not finite"):
        cache.add(["d"], torch.full((1, 4, 3), 1e6))
    assert "d" not in TokenCache(tmp_path / "c", "sig", 4, 3)
    assert not list((tmp_path / "c").glob(".*"))  # no temporary files left behind


def test_disk_estimate_of_the_paper_data():
    assert disk_estimate(1) == 1_679_616
    views = 43_816
    images = views + 4 * views
    assert disk_estimate(images) == 367_970_273_280
    assert disk_estimate(4 * images) == 1_471_881_093_120
    assert np.isclose(disk_estimate(images) / 1e9, 368.0, atol=0.1)
