"""The input pipeline (nearid.images.pipeline) and the uint8 split of preprocessing (processors.PixelSplit):
the same pixels as the transformers processors, the same embeddings in the same order and the same
failures with or without worker processes, JPEG draft decoding only when asked, and no worker left
behind after an exception or Ctrl-C."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

import nearid
from nearid.cli.app import main
from nearid.images.decode import load_image
from nearid.images.pipeline import decoded_fingerprint, resolve_num_workers
from nearid.images.processors import (
    DinoEvalProcessor,
    clip_processor,
    dinov2_processor,
    dinov3_processor,
    preprocess_images,
    siglip_processor,
    split_processor,
)
from nearid.io.errors import ImageError, NearIDError

#: Odd, non-square sizes (width, height): tall, wide, smaller than every model input, nearly square.
SIZES = [(91, 37), (123, 301), (50, 17), (499, 500)]

PROCESSORS = {
    "siglip": lambda: siglip_processor(32),  # square bilinear resize, mean = std = 0.5
    "siglip-384": lambda: siglip_processor(384),
    "clip": clip_processor,  # shortest side 224 bicubic, centre crop 224, CLIP mean/std
    "dinov2": dinov2_processor,  # shortest side 256 bicubic, centre crop 224, ImageNet mean/std
    "dinov3": lambda: dinov3_processor(None, 48),  # a ViT processor: square bilinear, ImageNet mean/std
    "dino-i": lambda: DinoEvalProcessor.for_image_size(56),  # DINO's eval transform, torchvision's crop rounding
}


def _photo(size, seed: int) -> Image.Image:
    """A smooth gradient with shapes and some noise: resizing it exercises every filter tap."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(w + h - 2, 1)], -1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    ImageDraw.Draw(image).ellipse((w // 5, h // 5, 3 * w // 4, 4 * h // 5), fill=(250, 30, 60))
    return image


def _mask(size) -> Image.Image:
    w, h = size
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((w // 6, h // 6, 5 * w // 6, 5 * h // 6), fill=255)
    return mask


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    images, masks = [], []
    for i, size in enumerate(SIZES):
        images.append(folder / f"photo{i}.png")
        _photo(size, i).save(images[-1])
        masks.append(folder / f"photo{i}_mask.png")
        _mask(size).save(masks[-1])
    return images, masks


@pytest.fixture(scope="module")
def tiny():
    return nearid.load_encoder("tiny", device="cpu")


def _split_pixels(split, images, masks, **kw) -> torch.Tensor:
    return split.finish(torch.from_numpy(np.stack([split.load(i, m, **kw) for i, m in zip(images, masks)])))


# ----------------------------------------------------------------------------- same pixels


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("name", list(PROCESSORS))
def test_uint8_workers_and_device_normalisation_give_the_processors_pixels(files, name, masked):
    processor = PROCESSORS[name]()
    images, masks = files
    masks = masks if masked else [None] * len(images)
    split = split_processor(processor)
    assert split is not None
    expected = preprocess_images(processor, images, masks)  # the transformers processor (or DINO's), whole
    worker_side = [split.load(i, m) for i, m in zip(images, masks)]
    assert all(p.dtype == np.uint8 and p.shape == (*split.size, 3) for p in worker_side)
    got = split.finish(torch.from_numpy(np.stack(worker_side)))
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", ["siglip", "clip", "dino-i"])
def test_the_lookup_table_path_equals_the_arithmetic_path(files, name):
    """Where the float32 arithmetic would not reproduce the processor's rounding, finish() looks values up."""
    processor = PROCESSORS[name]()
    split = split_processor(processor)
    assert split._arithmetic_is_exact(torch.device("cpu"))  # the fast path is the one checked above
    table_only = dataclasses.replace(split, affine=None)
    assert not table_only._arithmetic_is_exact(torch.device("cpu"))
    expected = preprocess_images(processor, files[0])
    assert (_split_pixels(table_only, files[0], [None] * len(SIZES)) - expected).abs().max().item() <= 1e-6
    # and a wrong affine is caught by the per-device check, not used
    wrong = dataclasses.replace(split, affine=(255.0, (0.1, 0.2, 0.3), (1.0, 1.0, 1.0)))
    assert not wrong._arithmetic_is_exact(torch.device("cpu"))
    assert (_split_pixels(wrong, files[0], [None] * len(SIZES)) - expected).abs().max().item() <= 1e-6


class _OwnSteps(SiglipImageProcessorPil):
    def _preprocess(self, images, **kwargs):
        return super()._preprocess(images, **kwargs)


@pytest.mark.parametrize(
    "processor",
    [
        SiglipImageProcessorPil(size={"shortest_edge": 32}),  # no fixed output size: no batch of uint8
        CLIPImageProcessorPil(do_rescale=False, do_normalize=False),  # the processor's output stays uint8
        SiglipImageProcessorPil(do_pad=True),
        _OwnSteps(),  # a subclass with its own steps
        lambda images, return_tensors="pt": None,  # not a transformers processor at all
    ],
    ids=["shortest-edge-only", "uint8-output", "padding", "own-steps", "callable"],
)
def test_processors_that_cannot_be_split_exactly_are_not(processor):
    assert split_processor(processor) is None


def test_an_encoder_without_a_split_runs_its_preprocess_in_the_workers(files, tiny):
    """The histogram encoder, a user's own minimal encoder and a TransformersEncoder subclass with its
    own preprocess (which a split would bypass) all go through `preprocess`, in workers too."""
    images = files[0]

    class Minimal:
        name, dim, fingerprint = "minimal", 3, "0" * 64

        def preprocess(self, images, masks=None):
            return torch.stack([torch.tensor(np.asarray(load_image(i)).mean((0, 1))) for i in images])

        def embed(self, pixel_values):
            return torch.nn.functional.normalize(pixel_values.float(), dim=-1)

    class Shifted(type(tiny)):
        def preprocess(self, images, masks=None):
            return super().preprocess(images, masks) + 0.5

    shifted = Shifted(tiny.name, tiny.model, tiny.processor, tiny.readout, device="cpu", dtype=torch.float32)
    assert shifted.pixel_split is None and tiny.pixel_split is not None
    patched = type(tiny)(tiny.name, tiny.model, tiny.processor, tiny.readout, device="cpu", dtype=torch.float32)
    patched.preprocess = lambda images, masks=None: tiny.preprocess(images, masks)  # on the instance
    assert patched.pixel_split is None
    for encoder in (nearid.load_encoder("histogram"), Minimal(), shifted):
        expected = encoder.embed(encoder.preprocess(images))
        for workers in (0, 2):
            torch.testing.assert_close(nearid.embed(encoder, images, batch_size=3, num_workers=workers), expected)
    assert not torch.allclose(nearid.embed(shifted, images), nearid.embed(tiny, images))


# ----------------------------------------------------------------------------- order, failures, workers


class WholePreprocess:
    """An encoder seen without its pixel_split: what nearid.embed did before the uint8 split."""

    def __init__(self, encoder):
        self.encoder, self.name, self.dim = encoder, encoder.name, encoder.dim

    def preprocess(self, images, masks=None):
        return self.encoder.preprocess(images, masks)

    def embed(self, pixel_values):
        return self.encoder.embed(pixel_values)


def test_workers_give_the_same_embeddings_in_input_order(files, tiny):
    images, masks = files
    images, masks = images * 3, [m if i % 2 else None for i, m in enumerate(masks * 3)]
    for batch_size in (1, 5):  # 5: a short last batch
        # bit for bit what the whole processor gave (at one batch size: a model's float sums depend on it)
        before = nearid.embed(WholePreprocess(tiny), images, masks, batch_size=batch_size)
        for workers in (0, 1, 2):
            got = nearid.embed(tiny, images, masks, batch_size=batch_size, num_workers=workers)
            assert torch.equal(got, before), (workers, batch_size)


def test_failures_are_collected_in_order_with_workers(files, tiny, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    good = files[0]
    images = [good[0], bad, good[1], good[2], good[3], tmp_path / "missing.png", good[0]]
    expected = nearid.embed(tiny, [good[0], good[1], good[2], good[3], good[0]])
    for workers in (0, 2):
        failures = {}
        got = nearid.embed(tiny, images, batch_size=2, failures=failures, num_workers=workers)
        assert sorted(failures) == [1, 5]
        assert "bad.png: not an image file" in failures[1] and "missing.png: no such file" in failures[5]
        assert torch.isnan(got[[1, 5]]).all() and not torch.isnan(got[[0, 2, 3, 4, 6]]).any()
        torch.testing.assert_close(got[[0, 2, 3, 4, 6]], expected)
        with pytest.raises(ImageError, match=r"bad\.png: not an image file"):  # the first failure, as before
            nearid.embed(tiny, images, batch_size=2, num_workers=workers)


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


def test_an_exception_in_the_main_process_stops_the_workers(files, tiny):
    before = _children()

    class Failing(type(tiny)):
        calls = 0

        def embed(self, pixel_values):
            Failing.calls += 1
            if Failing.calls == 2:
                raise RuntimeError("model failed")
            return super().embed(pixel_values)

    failing = Failing(tiny.name, tiny.model, tiny.processor, tiny.readout, device="cpu", dtype=torch.float32)
    with pytest.raises(RuntimeError, match="model failed") as raised:
        nearid.embed(failing, files[0] * 10, batch_size=1, num_workers=2)
    # joined before the exception left embed, though its traceback (held here) keeps embed's frame alive
    assert raised.tb is not None and _children() == before


def test_num_workers_setting():
    assert resolve_num_workers(3) == 3 and resolve_num_workers(0, "cuda") == 0
    assert resolve_num_workers("auto", "cpu") == 0  # on the CPU workers would take the model's cores
    cpus = len(os.sched_getaffinity(0))
    assert resolve_num_workers("auto", torch.device("cuda")) == min(8, cpus)
    for bad in (-1, 1.5, "many", True):
        with pytest.raises(NearIDError, match="num_workers"):
            resolve_num_workers(bad)


def test_auto_workers_on_cuda_are_capped_at_8(monkeypatch):
    import nearid.images.pipeline as pipeline

    monkeypatch.setattr(pipeline, "available_cpus", lambda: 3)
    assert resolve_num_workers("auto", "cuda:0") == 3
    monkeypatch.setattr(pipeline, "available_cpus", lambda: 64)
    assert resolve_num_workers("auto", "cuda:0") == 8


def test_batches_in_this_process_are_pinned_like_the_loaders(monkeypatch, files):
    """On CUDA the in-process path pins what DataLoader would pin: tensors, in (named) tuples; the
    rest (a failure's exception) passes through. Pinning itself needs CUDA: stood in for here."""
    from nearid.images.pipeline import ImageBatches, batches

    pinned = []

    def pin(tensor):
        pinned.append(tensor.shape)
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    split = split_processor(siglip_processor(32))
    images = [files[0][0], "missing.png", files[0][1]]
    with batches(ImageBatches(images, None, 2, split=split), pin_memory=True) as loader:
        got = list(loader)
    assert pinned == [(1, 32, 32, 3), (1, 32, 32, 3)]
    assert [len(batch.failed) for batch in got] == [1, 0] and isinstance(got[0].failed[0][1], ImageError)


# ----------------------------------------------------------------------------- fast decode


def _jpeg(path: Path, size, seed=0) -> Path:
    _photo(size, seed).save(path, quality=95)
    return path


def test_draft_decoding_only_for_jpegs_at_least_twice_the_size(tmp_path):
    big = _jpeg(tmp_path / "big.jpg", (256, 200))
    # 256 // 64 = 4 and 200 // 64 = 3: the largest DCT scale keeping both sides >= 64 is 1/2
    assert load_image(big, draft=64).size == (128, 100)
    assert load_image(big, draft=32).size == (64, 50)  # 1/4 (200 // 32 = 6)
    assert load_image(big, draft=101).size == (256, 200)  # 200 < 2 * 101: exact
    assert load_image(big).size == (256, 200)
    png = tmp_path / "big.png"
    Image.open(big).save(png)
    assert load_image(png, draft=64).size == (256, 200)  # only JPEG has DCT scaling


def test_fast_decode_equals_the_processor_on_the_draft_image(tmp_path):
    """The fast path is exactly: Pillow's draft decode, then the same processor (independently computed)."""
    processor = siglip_processor(64)
    split = split_processor(processor)
    big = _jpeg(tmp_path / "big.jpg", (257, 199))  # odd: the draft image is ceil(257/2) x ceil(199/2)
    drafted = Image.open(big)
    drafted.draft("RGB", (64, 64))
    drafted = drafted.convert("RGB")
    assert drafted.size == (129, 100)
    mask = _mask((257, 199))
    mask.save(tmp_path / "mask.png")
    small_mask = np.asarray(mask.resize(drafted.size, Image.Resampling.NEAREST)) > 0
    masked = np.asarray(drafted).copy()
    masked[~small_mask] = 0
    for mask_path, reference in ((None, drafted), (tmp_path / "mask.png", Image.fromarray(masked))):
        fast = _split_pixels(split, [big], [mask_path], fast_decode=True)
        assert (fast - preprocess_images(processor, [reference])).abs().max().item() <= 1e-6
        exact = _split_pixels(split, [big], [mask_path])
        assert (exact - preprocess_images(processor, [big], [mask_path])).abs().max().item() <= 1e-6
        assert (fast - exact).abs().max().item() > 1e-3  # the fast path is not the exact one


def test_a_full_resolution_mask_fits_a_draft_image_of_extreme_shape(tmp_path):
    """Rounding bends a draft image's aspect ratio by more than the 1 % a resized mask may differ."""
    wide = _jpeg(tmp_path / "wide.jpg", (2001, 131))
    _mask((2001, 131)).save(tmp_path / "wide_mask.png")
    split = split_processor(siglip_processor(32))
    assert load_image(wide, draft=32).size == (501, 33)  # 1/4: 2001/131 = 15.27, 501/33 = 15.18
    pixels = split.load(wide, tmp_path / "wide_mask.png", fast_decode=True)
    assert pixels.shape == (32, 32, 3)


def test_fast_decode_in_embed(tmp_path, tiny):
    big = [_jpeg(tmp_path / f"{i}.jpg", (300, 260), i) for i in range(3)]  # >= 2 x the tiny model's 64 px
    small = [_jpeg(tmp_path / f"s{i}.jpg", (120, 100), i) for i in range(2)]
    exact = nearid.embed(tiny, big + small)
    for workers in (0, 2):
        fast = nearid.embed(tiny, big + small, fast_decode=True, num_workers=workers)
        assert torch.equal(fast[3:], exact[3:])  # below twice the model's size: decoded exactly
        assert not torch.equal(fast[:3], exact[:3])
        assert (fast[:3] * exact[:3]).sum(-1).min() > 0.9  # close, not equal


def test_fast_decode_has_a_fingerprint_of_its_own():
    assert decoded_fingerprint("ab" * 32, False) == "ab" * 32
    assert decoded_fingerprint("ab" * 32, True) == decoded_fingerprint("ab" * 32, True) != "ab" * 32
    assert decoded_fingerprint(None, True) is None


# ----------------------------------------------------------------------------- commands


def test_embed_command_with_workers_and_fast_decode(files, tmp_path, capsys):
    folder = Path(files[0][0]).parent
    outs = {}
    for name, extra in {
        "w0": ["--num-workers", "0"],
        "w2": ["--num-workers", "2"],
        "auto": [],
        "fast": ["--fast-decode"],
    }.items():
        outs[name] = tmp_path / f"{name}.npz"
        assert main(["embed", str(folder), "--model", "tiny", "--out", str(outs[name]), *extra]) == 0
    vectors = {name: np.load(path)["embeddings"] for name, path in outs.items()}
    assert np.array_equal(vectors["w0"], vectors["w2"]) and np.array_equal(vectors["w0"], vectors["auto"])
    assert np.array_equal(vectors["w0"], vectors["fast"])  # PNGs: nothing to draft-decode
    capsys.readouterr()
    assert main(["embed", str(folder), "--model", "tiny", "--out", str(tmp_path / "x.npz"), "--num-workers", "-1"]) == 2
    assert "--num-workers: -1: give an integer of at least 0" in capsys.readouterr().err


def test_bench_and_score_pass_the_input_options_on(tmp_path, monkeypatch):
    import nearid.models.embedding as embedding
    import nearid.score.compute
    from nearid.bench.run import BenchConfig, run_bench
    from nearid.data.synth import SynthConfig, generate

    seen = []
    original = embedding.embed

    def spy(*args, **kwargs):
        seen.append((kwargs["num_workers"], kwargs["fast_decode"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(embedding, "embed", spy)
    monkeypatch.setattr(nearid.score.compute, "embed", spy)  # score imports it at its own import
    data = tmp_path / "synth"
    generate(
        data,
        SynthConfig(identities=6, size=40, seed=1, val=1, test=3, mtg_train=0, mtg_test=1, workers=1),
        progress=False,
    )
    base = ["bench", "--encoder", "tiny", "--data", str(data), "--sources", "Part", "--batch-size", "4"]
    assert main([*base, "--out", str(tmp_path / "a"), "--num-workers", "0"]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--num-workers", "2", "--fast-decode"]) == 0
    assert seen[0] == (0, False) and seen[-1] == (2, True)
    # the same batches (a model's float sums depend on the batch, and the untrained model's trials are
    # near ties): the stored exact embeddings of the first run, recomputed by 2 workers into a new store
    same = dict(encoders=["tiny"], data=str(data), sources=["Part"], batch_size=4)
    one = run_bench(BenchConfig(**same, out=str(tmp_path / "a")))
    two = run_bench(BenchConfig(**same, out=str(tmp_path / "b"), num_workers=2))
    assert two.encoders["tiny:0 (untrained)"].embeddings_computed == 12
    assert one.encoders["tiny:0 (untrained)"].nearid == two.encoders["tiny:0 (untrained)"].nearid
    # draft-decoded embeddings are never stored where exact ones are looked up
    stores = sorted(p.name for p in (tmp_path / "b" / "embeddings").iterdir())
    assert len(stores) == 2, stores

    seen.clear()
    refs, gens = tmp_path / "refs", tmp_path / "gens"
    for folder in (refs, gens):
        folder.mkdir()
        for i in range(2):
            _photo((60, 50), i + (folder == gens)).save(folder / f"{i}.png")
    out = tmp_path / "scores.csv"
    argv = ["score", "--refs", str(refs), "--gens", str(gens), "--model", "tiny", "--out", str(out)]
    assert main([*argv, "--num-workers", "2", "--fast-decode"]) == 0
    assert seen == [(2, True)]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell may start the suite with SIGINT ignored


@pytest.mark.slow
@pytest.mark.parametrize("group", [True, False], ids=["terminal-ctrl-c", "main-process-only"])
def test_ctrl_c_with_workers_leaves_no_process_and_no_output(tmp_path, group):
    """SIGINT to the whole process group (a terminal's Ctrl-C) or to the main process alone, while two
    workers decode: status 130, one line, no worker left, no output file, no temporary file."""
    folder = tmp_path / "images"
    folder.mkdir()
    slow = tmp_path / "slow.png"
    Image.new("RGB", (4000, 3000), (90, 120, 150)).save(slow, compress_level=1)  # ~0.2 s to decode and resize
    for i in range(200):
        (folder / f"{i:03d}.png").symlink_to(slow)  # nearid lists linked files like any other
    out = tmp_path / "out" / "vectors.npz"
    out.parent.mkdir()
    argv = ["embed", str(folder), "--model", "tiny", "--out", str(out), "--num-workers", "2", "--batch-size", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "nearid", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        parent = psutil.Process(process.pid)
        deadline = time.monotonic() + 120
        while len(parent.children(recursive=True)) < 2:  # the two workers have started
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no workers started: {process.communicate()}")
            time.sleep(0.05)
        workers = parent.children(recursive=True)
        time.sleep(0.5)  # mid-embedding: 200 images take the workers ~20 s
        if group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert (process.returncode, err) == (130, "nearid: interrupted\n")
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, worker
    assert list(out.parent.iterdir()) == []  # neither the output nor an atomic writer's temporary file
