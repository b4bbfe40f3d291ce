"""`nearid distract`: compositing, prompt retrieval, quality verdicts, and the tiny pipelines end to end.

End-to-end runs use the tiny (random-weight) diffusers pipelines on a small `nearid synth` benchmark at
2 steps on a 32-pixel canvas, so the whole file stays fast on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")

from nearid.cli.app import main
from nearid.data import load_nearid, open_table
from nearid.data.schema import distractors_features
from nearid.data.synth import SynthConfig, generate
from nearid.distract import DistractConfig, compositing, distract
from nearid.distract.generators import generation_size, tiny_clip_tokenizer, tiny_t5_tokenizer, view_seed
from nearid.distract.prompts import choose_prompts, description_similarity, retrieve
from nearid.distract.quality import SAME, UNCHANGED, Verdict, parse_quality, quality_string
from nearid.images.decode import load_image, load_mask
from nearid.io.errors import ModelNotAvailableError, NearIDError

FAST = ["--steps", "2", "--resolution", "32", "--dilate", "2", "--feather", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("distract") / "synth"
    generate(
        root,
        SynthConfig(
            identities=6, size=48, seed=3, val=1, test=2, mtg_train=0, mtg_test=0, workers=1, sources=("Instance",)
        ),
        progress=False,
    )
    return root


# ------------------------------------------------------------------------------------- compositing
def test_dilate_is_a_disc():
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    grown = compositing.dilate(mask, 2)
    yy, xx = np.mgrid[:9, :9]
    assert np.array_equal(grown, (yy - 4) ** 2 + (xx - 4) ** 2 <= 4)  # every pixel within 2 (Euclidean)
    assert np.array_equal(compositing.dilate(mask, 0), mask)


def test_blend_weights_ramp_inside_and_zero_outside():
    region = np.zeros((20, 20), bool)
    region[5:15, 5:15] = True
    w = compositing.blend_weights(region, 3)
    assert (w[~region] == 0).all()
    assert w[10, 10] == 1.0 and w[5, 10] == pytest.approx(1 / 3) and w[6, 10] == pytest.approx(2 / 3)
    edge = np.zeros((10, 10), bool)
    edge[:, :5] = True  # touches the image edge: no ramp there, only at the inner border
    assert compositing.blend_weights(edge, 3)[5, 0] == 1.0
    assert np.array_equal(compositing.blend_weights(region, 0), region.astype(np.float32))


def test_feather_within_the_dilation_leaves_the_object_fully_generated():
    mask = np.zeros((40, 40), bool)
    mask[12:25, 15:30] = True
    mask[20:28, 10:16] = True  # not convex
    for dilation in (2, 5, 8):
        w = compositing.blend_weights(compositing.dilate(mask, dilation), dilation)
        assert (w[mask] == 1.0).all()  # no pixel of the original object is blended back in


def test_paste_back_keeps_the_outside_exactly():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    region = np.zeros((16, 16), bool)
    region[4:12, 4:12] = True
    out = compositing.paste_back(original, generated, compositing.blend_weights(region, 2))
    assert np.array_equal(out[~region], original[~region])
    assert np.array_equal(out[7:9, 7:9], generated[7:9, 7:9])  # deep inside: the generated pixels
    half = compositing.paste_back(
        np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 101, np.uint8), np.full((1, 1), 0.5)
    )
    assert half[0, 0, 0] == 50  # rint(50.5) -> 50 (round half to even)


def test_measurements_by_hand():
    original = np.zeros((4, 4, 3), np.uint8)
    result = original.copy()
    region = np.zeros((4, 4), bool)
    region[:, :2] = True
    result[:, :2] = 90  # a hard paste of a flat grey on the left half
    assert compositing.outside_difference(original, result, region) == 0.0
    assert compositing.inside_difference(original, result, region) == 90.0
    assert compositing.seam_strength(original, result, region) == 90.0  # every crossing pair steps by 90
    result[:, 2:] = 30
    assert compositing.outside_difference(original, result, region) == 30.0
    assert compositing.seam_strength(original, result, region) == 60.0


# ------------------------------------------------------------------------------------- prompts
DESCRIPTIONS = [
    "a red mug with a handle",
    "a red mug with a handle",  # the same description: never a distractor of row 0
    "a blue mug with a handle",
    "a red cup",
    "a wooden chair",
    "a red mug with a handle and a lid",
]


def test_retrieval_excludes_itself_its_asset_and_its_description():
    assets = ["a0", "a1", "a2", "a0", "a4", "a5"]
    sims = description_similarity(DESCRIPTIONS)
    chosen = retrieve(DESCRIPTIONS, assets, [0], band=(0.0, 1.0))
    donor, similarity, inside = chosen[0]
    # candidates: not 0 (itself), not 1 (same text), not 3 (same asset a0)
    allowed = [2, 4, 5]
    assert donor == max(allowed, key=lambda r: sims[0, r]) and inside
    assert similarity == pytest.approx(sims[0, donor])


def test_retrieval_respects_the_band():
    assets = [None] * len(DESCRIPTIONS)
    sims = description_similarity(DESCRIPTIONS)
    others = [2, 3, 4, 5]
    ordered = sorted(others, key=lambda r: sims[0, r])
    assert len({round(sims[0, r], 6) for r in others}) == 4  # no ties, so the expected donor is unique
    high = (sims[0, ordered[-1]] + sims[0, ordered[-2]]) / 2  # the most similar one is "too close"
    donor, similarity, inside = retrieve(DESCRIPTIONS, assets, [0], band=(0.01, high))[0]
    assert donor == ordered[-2] and inside and similarity <= high
    # nothing in the band: the nearest to it, marked outside
    donor, similarity, inside = retrieve(DESCRIPTIONS, assets, [0], band=(0.999, 1.0))[0]
    assert donor == ordered[-1] and not inside
    with pytest.raises(NearIDError, match="band"):
        retrieve(DESCRIPTIONS, assets, [0], band=(0.9, 0.1))


def test_tfidf_similarity_is_cosine_of_tfidf_vectors():
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectors = (
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
        .fit_transform(DESCRIPTIONS)
        .toarray()
    )
    norms = np.linalg.norm(vectors, axis=1)
    expected = vectors @ vectors.T / np.outer(norms, norms)
    assert np.allclose(description_similarity(DESCRIPTIONS), expected)


def test_prompts_file_template_and_errors(tmp_path):
    ids, cats = [10, 11], ["mug", "mug"]
    file = tmp_path / "prompts.json"
    file.write_text(json.dumps({"10": "a green mug", "11": ["a cup", "a bowl"]}))
    slots = {0: [0, 1], 1: [0, 1]}
    choices = choose_prompts(
        ids, ["x", "y"], cats, [None, None], slots, prompts_file=file, template="a photo of {description}"
    )
    assert choices[0].prompts == ("a photo of a green mug", "a photo of a green mug", None)
    assert choices[1].prompts == ("a photo of a cup", "a photo of a bowl", None)
    with pytest.raises(NearIDError, match="no prompt for view 3"):
        choose_prompts(ids, ["x", "y"], cats, [None, None], {1: [0, 1, 2]}, prompts_file=file)
    file.write_text(json.dumps({"10": "a green mug"}))
    with pytest.raises(NearIDError, match="no prompt for id 11"):
        choose_prompts(ids, ["x", "y"], cats, [None, None], slots, prompts_file=file)
    retrieved = choose_prompts(
        ids, ["a red mug", "a blue mug"], cats, [None, None], slots, template="{category}: {description}"
    )
    assert retrieved[0].prompts[:2] == ("mug: a blue mug",) * 2 and retrieved[0].donor_row == 1
    with pytest.raises(NearIDError, match="unknown field"):
        choose_prompts(ids, ["a", "b"], cats, [None, None], slots, template="{colour}")


# ------------------------------------------------------------------------------------- quality
def test_verdicts():
    assert Verdict(0, changed=1.0, change_threshold=2.0).label == UNCHANGED
    assert Verdict(0, changed=5.0).label == "ok"
    assert Verdict(1, changed=5.0, distractor_similarity=0.9, view_similarity=0.8).label == SAME
    assert Verdict(1, changed=5.0, distractor_similarity=0.7, view_similarity=0.8).label == "ok"
    text = quality_string([Verdict(2, 5.0), Verdict(0, 0.0)])
    assert text == "view1=unchanged;view3=ok" and parse_quality(text) == {0: UNCHANGED, 2: "ok"}


# ------------------------------------------------------------------------------------- generators
def test_tiny_tokenizers_and_seeds():
    clip = tiny_clip_tokenizer()
    ids = clip("ab b").input_ids
    assert ids[0] == len(clip) - 2 and ids[-1] == len(clip) - 1 and len(ids) == 5  # <s> a b</w> b</w> </s>
    assert clip.convert_ids_to_tokens(ids[1:-1]) == ["a", "b</w>", "b</w>"]
    t5 = tiny_t5_tokenizer()
    assert t5("ab").input_ids[-1] == 1  # </s>
    assert view_seed(0, 5, 1, "Gen") == view_seed(0, 5, 1, "Gen") != view_seed(0, 5, 2, "Gen")
    assert (
        generation_size(48, 36, 64) == (64, 48)
        and generation_size(36, 48, 64) == (48, 64)
        and generation_size(512, 512, 1024) == (1024, 1024)
    )


@pytest.mark.parametrize("name", ["tiny-flux-fill", "tiny-sdxl-inpaint"])
def test_a_generation_depends_only_on_its_inputs_and_seed(name):
    """Resume and multi-process equality rest on this: no state carried from one call to the next."""
    from nearid.distract.generators import load_generator

    generator = load_generator(name, steps=2, resolution=32, device="cpu")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    mask = np.zeros((40, 48), bool)
    mask[8:30, 10:34] = True
    first = np.asarray(generator.inpaint(image, mask, "a red mug", 7))
    other = np.asarray(generator.inpaint(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), mask, "a cup", 8))
    again = np.asarray(generator.inpaint(image, mask, "a red mug", 7))
    assert first.shape == (40, 48, 3) and np.array_equal(first, again) and not np.array_equal(first, other)
    assert not np.array_equal(first, np.asarray(generator.inpaint(image, mask, "a red mug", 9)))  # the seed matters


def test_real_generator_offline_names_the_download(synth, tmp_path):
    with pytest.raises(ModelNotAvailableError, match=r"hf download black-forest-labs/FLUX\.1-Fill-dev"):
        distract(
            DistractConfig(data=str(synth), generator="flux-fill", source="F", out=str(tmp_path / "f"), progress=False)
        )
    with pytest.raises(NearIDError, match="unknown generator"):
        distract(DistractConfig(data=str(synth), generator="dalle", source="F", out=str(tmp_path / "f")))


def test_dataset_without_masks_points_to_nearid_mask(synth, tmp_path):
    table = open_table(synth / "NearID")
    table.dataset.remove_columns(["masks1", "masks2", "masks3"]).save_to_disk(str(tmp_path / "nomasks"))
    assert (
        main(["distract", "--data", str(tmp_path / "nomasks"), "--generator", "tiny-flux-fill", "--source", "G"]) == 2
    )
    with pytest.raises(NearIDError, match="nearid mask"):
        distract(DistractConfig(data=str(tmp_path / "nomasks"), generator="tiny-flux-fill", source="G"))


# ------------------------------------------------------------------------------------- end to end
def _arrow_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((folder / "train").glob("*.arrow")))


def test_synth_distract_bench(synth, tmp_path, capsys):
    """The acceptance run: synth -> distract (tiny SDXL, paste-back) -> bench, and what the output holds."""
    data = tmp_path / "synth"
    shutil.copytree(synth, data)
    argv = [
        "distract",
        "--data",
        str(data),
        "--generator",
        "tiny-sdxl-inpaint",
        "--source",
        "Gen",
        *FAST,
        "--quality-encoder",
        "histogram",
        "--keep-shards",
    ]
    assert main(argv) == 0
    assert "untrained" in capsys.readouterr().out
    out = data / "NearID-Gen"
    summary = json.loads((out / "distract.json").read_text())
    positives = open_table(data / "NearID")
    table = open_table(out)
    assert table.dataset.features == distractors_features()
    assert table.values("id") == positives.values("id") and len(table) == len(positives) == 6
    assert summary["untrained"] is True and summary["identities"] == 6
    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    descriptions, assets = positives.values("category_description"), positives.values("objaverse_id")
    for entry in prompts:
        row = entry["row"]
        assert entry["from_row"] != row and assets[entry["from_row"]] != assets[row]
        assert entry["prompt"] == descriptions[entry["from_row"]]
    row_prompts = {e["row"]: e["prompt"] for e in prompts}
    checked = 0
    for row in range(len(positives)):
        for j in range(3):
            has_view = positives.present(f"images{j + 1}")[row]
            assert table.present(f"nimg{j + 1}")[row] == has_view  # slot kept, nothing moved
            assert table.values(f"prompts{j + 1}")[row] == (row_prompts[row] if has_view else None)
            if not has_view:
                continue
            view = np.asarray(load_image(positives.ref(row, f"images{j + 1}")))
            mask = load_mask(positives.ref(row, f"masks{j + 1}"))
            made = np.asarray(load_image(table.ref(row, f"nimg{j + 1}")))
            assert made.shape == view.shape
            from scipy.ndimage import binary_dilation

            disc = np.add.outer(np.arange(-2, 3) ** 2, np.arange(-2, 3) ** 2) <= 4
            outside = ~binary_dilation(mask, structure=disc)
            assert np.array_equal(made[outside], view[outside])  # paste-back: byte-identical background
            assert not np.array_equal(made[mask], view[mask])
            checked += 1
    assert checked == summary["distractors"]
    assert set(parse_quality(table.values("quality")[0]).values()) <= {"ok", SAME, UNCHANGED}
    assert (out / "contact_sheet.png").is_file() and "untrained" in (out / "quality.md").read_text()
    m = summary["measurements"]
    assert m["outside_mean_abs"]["with_paste_back"] == 0.0 < m["outside_mean_abs"]["without_paste_back"]
    # the benchmark reads it unchanged
    assert (
        main(
            [
                "bench",
                "--encoder",
                "histogram",
                "--data",
                str(data),
                "--sources",
                "Gen",
                "--split",
                "all",
                "--out",
                str(tmp_path / "bench"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert results["encoders"]["histogram:8"]["nearid"]["per_source"]["Gen"]["n_samples"] == 6
    # a second run with the same settings reuses every shard; another dilation reuses none
    again = distract(
        DistractConfig(
            data=str(data),
            generator="tiny-sdxl-inpaint",
            source="Gen",
            steps=2,
            resolution=32,
            dilate=2,
            feather=2,
            overwrite=True,
            keep_shards=True,
            progress=False,
        )
    )
    assert again["resumed_identities"] == 6 and _arrow_bytes(out) == _arrow_bytes(tmp_path / "synth" / "NearID-Gen")
    other = distract(
        DistractConfig(
            data=str(data),
            generator="tiny-sdxl-inpaint",
            source="Gen",
            steps=2,
            resolution=32,
            dilate=1,
            feather=1,
            overwrite=True,
            progress=False,
            limit=1,
        )
    )
    assert other["resumed_identities"] == 0


def test_no_paste_back_and_filter(synth, tmp_path):
    config = dict(
        data=str(synth),
        generator="tiny-flux-fill",
        source="Raw",
        steps=2,
        resolution=32,
        dilate=2,
        feather=2,
        progress=False,
        split="test",
    )
    raw = distract(DistractConfig(**config, out=str(tmp_path / "raw"), paste_back=False))
    assert raw["measurements"]["outside_mean_abs"]["without_paste_back"] > 0
    table = open_table(tmp_path / "raw")
    positives = open_table(synth / "NearID")
    test_rows = [r for r, s in enumerate(positives.values("split")) if s == "test"]
    assert [r for r in range(len(table)) if table.present("nimg1")[r]] == test_rows  # other rows stay empty
    row = test_rows[0]
    view = np.asarray(load_image(positives.ref(row, "images1")))
    made = np.asarray(load_image(table.ref(row, "nimg1")))
    assert not np.array_equal(
        made[~load_mask(positives.ref(row, "masks1"))], view[~load_mask(positives.ref(row, "masks1"))]
    )
    # an impossible change threshold fails every distractor; --filter drops them and keeps the slots empty
    filtered = distract(DistractConfig(**config, out=str(tmp_path / "filtered"), change_threshold=256.0, filter=True))
    assert filtered["kept"] == 0 and filtered["filtered"] == filtered["distractors"] > 0
    table = open_table(tmp_path / "filtered")
    for r in test_rows:
        assert set(parse_quality(table.values("quality")[r]).values()) == {UNCHANGED}
        assert not any(table.present(f"nimg{j}")[r] for j in (1, 2, 3))
        assert table.values("prompts1")[r]  # the prompt is still recorded
    bench = load_nearid(synth, [f"Filtered={tmp_path / 'filtered'}"], split="test")
    assert all(identity.distractor("Filtered", j) is None for identity in bench for j in range(3))


@pytest.fixture(scope="module")
def reference(synth, tmp_path_factory):
    """One uninterrupted single-process run with one thread (as each torchrun worker has)."""
    import torch

    out = tmp_path_factory.mktemp("ref") / "Gen"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_flux_argv(synth, out)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _flux_argv(synth, out):
    return [
        "distract",
        "--data",
        str(synth),
        "--generator",
        "tiny-flux-fill",
        "--source",
        "Gen",
        "--out",
        str(out),
        *FAST,
    ]


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_bytes(synth, reference, tmp_path):
    out = tmp_path / "Gen"
    shards = tmp_path / ".Gen.shards"
    process = subprocess.Popen(
        [sys.executable, "-m", "nearid", *_flux_argv(synth, out)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not list(shards.glob("row-*.safetensors")):
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list(shards.glob("row-*.safetensors")))
    assert 1 <= done_before < 6 and not out.exists()  # killed part-way: some rows done, nothing assembled
    done = subprocess.run(
        [sys.executable, "-m", "nearid", *_flux_argv(synth, out)], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed {done_before})" in done.stdout
    assert _arrow_bytes(out) == _arrow_bytes(reference)
    assert not shards.exists()  # removed once assembled


@pytest.mark.slow
def test_two_processes_give_the_same_dataset(synth, reference, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path / "Gen"
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "nearid", *_flux_argv(synth, out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "process 1: generated" in done.stdout and "process 0: generated" in done.stdout
    assert json.loads((out / "distract.json").read_text())["processes"] == 2
    assert _arrow_bytes(out) == _arrow_bytes(reference)


def test_folder_layout_becomes_a_benchmark_root(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for name, description in (("mug", "a red mug"), ("cup", "a blue cup"), ("bowl", "a green bowl")):
        for j in (1, 2):
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"view{j}.png")
            mask = np.zeros((40, 48), np.uint8)
            mask[10:30, 12:36] = 255
            Image.fromarray(mask).save(folder / f"view{j}_mask.png")
        (folder / "meta.json").write_text(json.dumps({"description": description, "split": "test"}))
    summary = distract(
        DistractConfig(
            data=str(root),
            generator="tiny-flux-fill",
            source="Mine",
            steps=2,
            resolution=32,
            dilate=2,
            feather=2,
            progress=False,
        )
    )
    out = tmp_path / "photos-nearid"
    assert summary["out"] == str(out) and summary["distractors"] == 6
    bench = load_nearid(out, ["Mine"], split="test")
    assert len(bench) == 3 and all(identity.distractor("Mine", j) is not None for identity in bench for j in (0, 1))
    assert np.array_equal(
        np.asarray(load_image(bench[0].views[0].image)), np.asarray(Image.open(root / "bowl" / "view1.png"))
    )
    (root / "cup" / "view2_mask.png").unlink()
    with pytest.raises(NearIDError, match="nearid mask"):
        distract(DistractConfig(data=str(root), generator="tiny-flux-fill", source="Mine", out=str(tmp_path / "x")))


def test_refuses_to_replace_what_it_did_not_write(synth, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("mine")
    with pytest.raises(NearIDError, match="already exists"):
        distract(DistractConfig(data=str(synth), generator="tiny-flux-fill", source="G", out=str(tmp_path / "taken")))
    with pytest.raises(NearIDError, match="feather"):
        distract(DistractConfig(data=str(synth), generator="tiny-flux-fill", source="G", dilate=2, feather=3))
    with pytest.raises(NearIDError, match="not written by nearid distract"):
        distract(
            DistractConfig(
                data=str(synth), generator="tiny-flux-fill", source="G", out=str(tmp_path / "taken"), overwrite=True
            )
        )


def test_list_generators(capsys):
    assert main(["distract", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("flux-fill", "sdxl-inpaint", "qwen-image", "tiny-flux-fill", "tiny-sdxl-inpaint"):
        assert name in listed
    assert "Non-Commercial" in listed
