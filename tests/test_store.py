"""The memory-mapped embedding store (issue 14 item 5): the same vectors as the dict path it replaced,
shards in flight ignored, new shards of other writers seen, and peak memory bounded by one shard."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from nearid.bench.store import EmbeddingStore, MissingEmbeddingsError, StoreError


def _store(folder, dim=8):
    return EmbeddingStore(folder, "test", dim, "f" * 64)


def _fill(store, shards, rows, seed=0, prefix="k"):
    rng = np.random.default_rng(seed)
    keys = []
    for s in range(shards):
        names = [f"{prefix}{s}-{r}@v1" for r in range(rows)]
        store.add(names, torch.from_numpy(rng.normal(size=(rows, store.dim)).astype(np.float32)), writer=str(s))
        keys += names
    return keys


def test_matrix_equals_the_dict_path_in_any_order(tmp_path):
    store = _store(tmp_path)
    keys = _fill(store, shards=5, rows=7)
    # a key stored twice: the later shard wins, as in load()
    again = torch.full((2, 8), 3.0)
    store.add([keys[3], keys[20]], again, writer="x")
    order = list(np.random.default_rng(1).permutation(keys))
    reference = store.load()
    expected = np.stack([reference[k].double().numpy() for k in order])
    got = EmbeddingStore(tmp_path, "test", 8, "f" * 64).matrix(order)  # a fresh reader
    assert got.dtype == np.float64 and got.shape == (len(keys), 8)
    np.testing.assert_array_equal(got, expected)
    assert (got[order.index(keys[3])] == 3.0).all() and (got[order.index(keys[20])] == 3.0).all()
    np.testing.assert_array_equal(store.matrix(order, dtype=np.float32), expected.astype(np.float32))
    assert store.matrix([]).shape == (0, 8)
    assert len(store) == len(keys) == len(store.keys())


def test_missing_keys(tmp_path):
    store = _store(tmp_path)
    assert store.missing(["a", "b"]) == ["a", "b"]  # an empty store
    keys = _fill(store, shards=2, rows=3)
    assert store.missing(["nope", keys[4], "also"]) == ["nope", "also"]
    with pytest.raises(MissingEmbeddingsError, match=r"1 of 2 keys are not in the store .*e\.g\. nope"):
        store.matrix([keys[0], "nope"])


def test_shards_written_after_the_first_read_are_seen(tmp_path):
    reader = _store(tmp_path)
    first = _fill(reader, shards=1, rows=4)
    assert reader.missing(first) == []
    writer = _store(tmp_path)  # another process
    later = _fill(writer, shards=1, rows=4, seed=1, prefix="late")
    assert reader.missing(later) == []
    np.testing.assert_array_equal(reader.matrix(later), writer.matrix(later))


def test_a_shard_in_flight_is_ignored(tmp_path):
    store = _store(tmp_path)
    keys = _fill(store, shards=2, rows=3)
    # what nearid.io.atomic.atomic_path leaves while a shard is being written (or after a SIGKILL mid-write)
    (tmp_path / ".shard-99-0.safetensors.abc123.part").write_bytes(b"\x10\x00\x00\x00half a header")
    assert len(store) == 6 and store.missing(keys) == []

    class Boom(Exception):
        pass

    class Exploding(torch.Tensor):
        def float(self):
            raise Boom

    with pytest.raises(Boom):  # a writer dying inside add leaves no shard and no temporary file
        store.add(["x"], torch.zeros(1, 8).as_subclass(Exploding))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".shard-")) == [
        ".shard-99-0.safetensors.abc123.part"
    ]
    assert store.missing(["x"]) == ["x"]


def test_a_shard_written_by_the_old_code_is_read(tmp_path):
    """The file format did not change: a shard written by safetensors as the dict-path store wrote it."""
    store = _store(tmp_path)
    vectors = torch.arange(16, dtype=torch.float32).reshape(2, 8)
    save_file({"vectors": vectors}, str(tmp_path / "shard-1-0.safetensors"), metadata={"keys": json.dumps(["a", "b"])})
    np.testing.assert_array_equal(store.matrix(["b", "a"]), vectors.double().numpy()[::-1])


def test_a_truncated_shard_is_named(tmp_path):
    store = _store(tmp_path)
    _fill(store, shards=1, rows=3)
    shard = next(tmp_path.glob("shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.raises(StoreError, match=rf"{shard.name}: truncated store shard; delete it"):
        store.missing(["a"])


@pytest.mark.slow
def test_peak_memory_is_bounded_by_one_shard(tmp_path):
    """100 MB of vectors in 50 shards, read back in full, 4096 random rows at a time: the memory map
    adds about one shard (2 MB) plus the answer to the resident set; the dict path holds all 100 MB."""
    store = EmbeddingStore(tmp_path, "test", 512, "f" * 64)
    rng = np.random.default_rng(0)
    for s in range(50):
        keys = [f"{s}/{r}" for r in range(1024)]
        store.add(keys, torch.from_numpy(rng.standard_normal((1024, 512), dtype=np.float32)), writer=str(s))
    script = textwrap.dedent(
        f"""
        import json, re, sys
        import numpy as np
        from nearid.bench.store import EmbeddingStore

        def peak_mb():  # the resident set's high-water mark since the last reset
            return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

        def reset():  # Linux: writing 5 to clear_refs resets VmHWM to the current resident set
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")

        store = EmbeddingStore({str(tmp_path)!r}, "test", 512, "f" * 64)
        keys = [f"{{s}}/{{r}}" for s in range(50) for r in range(1024)]
        order = np.random.default_rng(1).permutation(len(keys))
        store.missing(keys[:1])  # the index
        reset()
        base = peak_mb()
        total = 0.0
        for start in range(0, len(keys), 4096):
            total += float(store.matrix([keys[i] for i in order[start:start + 4096]], dtype=np.float32).sum())
        mapped = peak_mb() - base
        reset()
        base = peak_mb()
        vectors = store.load()
        total += float(sum(float(vectors[k].sum()) for k in keys[:10]))
        print(json.dumps({{"mapped": mapped, "dict": peak_mb() - base}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    grew = json.loads(done.stdout)
    assert grew["mapped"] < 30, grew  # one shard (2 MB) + the answer (8 MB) + slack
    assert grew["dict"] > 80, grew  # the dict path holds all 100 MB: the measurement can tell them apart
