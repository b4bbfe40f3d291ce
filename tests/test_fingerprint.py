"""Content fingerprints (nearid.io.fingerprint) and where they are attached: encoders, tables, image refs."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
from datasets import Dataset

from nearid.images.decode import ImageRef
from nearid.io.fingerprint import file_version, of_files, of_json, of_tensors


def test_of_tensors_is_an_independent_sha256_of_names_dtypes_shapes_and_bytes():
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    b = torch.tensor([1, -2], dtype=torch.int64)
    expected = hashlib.sha256()
    for name, tensor in (("a", a), ("b", b)):  # by name
        expected.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode() + tensor.numpy().tobytes())
    assert of_tensors({"b": b, "a": a}) == expected.hexdigest()
    assert of_tensors({"a": a.t().contiguous().t(), "b": b}) == expected.hexdigest()  # layout is not content
    assert of_tensors({"a": a.t(), "b": b}) != expected.hexdigest()  # another shape
    assert of_tensors({"a": a.double(), "b": b}) != expected.hexdigest()  # another dtype
    c = a.clone()
    c[1, 2] = torch.nextafter(c[1, 2], torch.tensor(100.0))  # one bit
    assert of_tensors({"a": c, "b": b}) != expected.hexdigest()
    assert of_tensors({"x": a, "b": b}) != expected.hexdigest()  # another name


def test_of_tensors_hashes_bfloat16_by_its_bits():
    x = torch.tensor([1.0, 1.0078125, -3.5], dtype=torch.bfloat16)
    bits = x.view(torch.int16).numpy().tobytes()
    expected = hashlib.sha256(f"x\0{x.dtype}\0(3,)\0".encode() + bits).hexdigest()
    assert of_tensors({"x": x}) == expected
    y = x.clone()
    y[1] = 1.015625  # the next bfloat16 value
    assert of_tensors({"x": y}) != expected


def test_of_files_follows_path_size_and_mtime(tmp_path):
    f = tmp_path / "a.arrow"
    f.write_bytes(b"0123")
    first = of_files([f])
    assert of_files([tmp_path / "." / "a.arrow"]) == first  # spelling of the path
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1))
    assert of_files([f]) != first  # rewritten (same size)
    g = tmp_path / "b.arrow"
    g.write_bytes(b"0123")
    os.utime(g, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns))
    assert of_files([g]) != of_files([f])  # another file
    assert of_files([f, g]) == of_files([g, f])
    assert file_version(f) == f"4-{f.stat().st_mtime_ns:x}"
    with pytest.raises(OSError):
        of_files([tmp_path / "missing"])


def test_of_json_is_canonical():
    assert of_json({"a": 1, "b": [1, 2]}) == of_json({"b": [1, 2], "a": 1})
    assert of_json({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()


def test_image_ref_cache_key_and_file_refs(tmp_path):
    plain = ImageRef("NearID[row 1].images0", lambda: b"")
    assert plain.cache_key == plain.key
    versioned = ImageRef("NearID[row 1].images0", lambda: b"", version="abc")
    assert versioned.cache_key == "NearID[row 1].images0@abc" and versioned == plain  # compare by key
    path = tmp_path / "x.png"
    path.write_bytes(b"123")
    ref = ImageRef.of_file(path)
    assert ref.key == str(path) and ref.fetch() == path and ref.cache_key != ref.key
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 5))
    assert ImageRef.of_file(path).cache_key != ref.cache_key


def test_table_fingerprint_follows_its_files(tmp_path):
    from nearid.data.loading import open_table

    Dataset.from_dict({"id": [1, 2]}).save_to_disk(tmp_path / "d")
    table = open_table(tmp_path / "d")
    assert len(table.fingerprint) == 64 and open_table(str(tmp_path / "d") + "/").fingerprint == table.fingerprint
    assert table.ref(0, "id").version == table.fingerprint[:16]
    Dataset.from_dict({"id": [1, 3]}).save_to_disk(tmp_path / "d2")
    os.replace(tmp_path / "d2" / "data-00000-of-00001.arrow", tmp_path / "d" / "data-00000-of-00001.arrow")
    assert open_table(tmp_path / "d").fingerprint != table.fingerprint  # regenerated at the same path
    parquet = tmp_path / "p" / "train-0.parquet"
    parquet.parent.mkdir()
    Dataset.from_dict({"id": [1, 2]}).to_parquet(parquet)
    before = open_table(parquet.parent).fingerprint
    Dataset.from_dict({"id": [5, 6]}).to_parquet(parquet)
    assert open_table(parquet.parent).fingerprint != before
    in_memory = Dataset.from_dict({"id": np.arange(3)})
    from nearid.data.loading import Table

    assert Table(in_memory, "m").fingerprint == Table(in_memory, "m").fingerprint


def test_encoder_fingerprints():
    from nearid.models.backbones import load_backbone
    from nearid.models.encoders import HistogramEncoder, load_encoder, mean_token_readout, nearid_encoder

    tiny = load_encoder("tiny:0", device="cpu")
    assert tiny.fingerprint == load_encoder("tiny:0", device="cpu").fingerprint and len(tiny.fingerprint) == 64
    assert load_encoder("tiny:1", device="cpu").fingerprint != tiny.fingerprint  # weights
    assert load_encoder("tiny:0", device="cpu", dtype="bfloat16").fingerprint != tiny.fingerprint  # dtype
    model, processor = load_backbone("tiny:0")
    assert nearid_encoder(model, processor, name="x", device="cpu").fingerprint == tiny.fingerprint  # not the name
    model, processor = load_backbone("tiny:0")
    assert (
        nearid_encoder(model, processor, name="x", readout=mean_token_readout, device="cpu").fingerprint
        != tiny.fingerprint
    )
    model, processor = load_backbone("tiny:0")
    processor.image_mean = [0.4, 0.5, 0.5]
    assert nearid_encoder(model, processor, name="x", device="cpu").fingerprint != tiny.fingerprint  # preprocessing
    assert HistogramEncoder(8).fingerprint == load_encoder("histogram:8").fingerprint != HistogramEncoder(4).fingerprint
