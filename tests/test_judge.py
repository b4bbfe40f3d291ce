"""The ``vlm:`` judge (nearid.judges): answer parsing, the expected readout, batching, image-token
expansion, loading rules and the CLI options, on a tiny random Qwen3-VL built offline.

The tiny judge's answers are random bytes: its scores mean nothing, the machinery is what is tested.
Where a test needs answers that parse, the model's ``generate`` is replaced by a scripted one that
returns fixed text through the real tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from nearid.eval.metrics import nearid_scores
from nearid.io.errors import EncoderSpecError, ModelNotAvailableError, NearIDError
from nearid.judges.loading import load_metric
from nearid.judges.prompt import ANSWER_PREFIX, RUBRIC, parse_score, read_prompt_file
from nearid.judges.vlm import VLMJudge, expand_image_tokens, expected_scores, load_vlm_judge
from nearid.models.pair_scorers import PairScorer, is_pair_scorer
from nearid.tiny.judge import save_tiny_judge


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    return save_tiny_judge(tmp_path_factory.mktemp("tiny-qwen3vl"), seed=0)


@pytest.fixture(scope="module")
def images():
    """Random RGB images of several sizes (height, width): 64x64, 100x50, 80x120, 200x200."""
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(64, 64), (100, 50), (80, 120), (200, 200)]
    ]


@pytest.fixture(scope="module")
def pairs(images):
    a, b, c, d = images
    return [(a, b), (c, d), (b, d), (d, a)]


def scripted(judge: VLMJudge, answers: list[str]):
    """Replace ``judge.model.generate`` by one that writes ``answers`` in order (then EOS, then padding)."""
    tokenizer, queue = judge.tokenizer, iter(answers)
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id

    def generate(input_ids, **_):
        rows = [[*tokenizer.encode(next(queue), add_special_tokens=False), eos] for _ in range(len(input_ids))]
        width = max(map(len, rows))
        new = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
        return torch.cat([input_ids, new], dim=1)

    judge.model.generate = generate
    return judge


# ----------------------------------------------------------------------------------- parsing
PARSE_CASES = [
    ('{"score": 7, "confidence": "high"}', 7.0),  # valid JSON
    ('```json\n{"score": 3, "match_cues": []}\n```', 3.0),  # JSON in a code fence
    ('{"match_cues": ["a }"], "score": 8}', 8.0),  # a brace inside a string: parsed, not cut
    ('{"score": "9"}', 9.0),  # a number written as a string
    ('{"score": 6.5}', 6.5),
    ("{score: 6, confidence: 'low',}", 6.0),  # repaired JSON only: no quoted "score" for the regex
    ('{"score": 8, "match_cues": ["red stri', 8.0),  # cut by max_new_tokens: repaired
    ('The answer: "score": 4 because', 4.0),  # regex fallback
    ("7", 7.0),  # a bare number
    (" 7/10 ", 7.0),
    ('{"score": 14}', 10.0),  # out of range: clipped
    ('{"score": -2}', 0.0),
    ("I cannot tell.", math.nan),  # nothing
    ("", math.nan),
    ('{"score": true}', math.nan),  # not a number
    ('{"score": null, "confidence": "low"}', math.nan),
    ("scores 3 and 4", math.nan),  # numbers, but no score
]


@pytest.mark.parametrize(("answer", "expected"), PARSE_CASES)
def test_parse_score(answer, expected):
    got = parse_score(answer)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


#: Answers the two parsers read differently, and the usual ones (the parametrized cases above).
MALFORMED = [
    "7",
    " 7/10 ",
    "8.",
    '{"Score": 8}',
    '{"SCORE": "9"}',
    '{"similarity": 6}',
    '{"Similarity": "4.5", "score": 2}',
    '{"score": true}',
    '{"score": null, "Score": 7}',
    "Score: 8",
    'I think {"confidence": "low"} and "score": 5',
    '{"confidence": "low"}\n"Score" : 3',
    '{"score": "7/10"}',
    '{"score": "n/a"}',
    '[{"score": 5}]',
    "The score is 6 out of 10.",
    '```\n{"score": 12.5}\n```',
    '  {"score": -0.0}  ',
]


def authors_parse(answer: str) -> float:
    """The authors' parse as spec 12.10 describes it, written here independently of nearid: strip; repair
    into an object (objects only); the first present key of score/Score/SCORE/similarity/Similarity
    through float(); else the case-insensitive ``"score": <num>`` regex on the repaired string (the raw
    text when repair gave nothing); clip finite scores to [0, 10]."""
    import re

    import json_repair

    text = answer.strip()
    if not text:
        return math.nan
    score = math.nan
    obj = json_repair.loads(text)
    if isinstance(obj, dict):
        key = next((k for k in ("score", "Score", "SCORE", "similarity", "Similarity") if k in obj), None)
        if key is not None:
            try:
                score = float(obj[key])
            except (TypeError, ValueError):
                score = math.nan
    if math.isnan(score):
        haystack = json_repair.repair_json(text) or text
        found = re.search(r'"score"\s*:\s*([-+]?\d+(?:\.\d+)?)', haystack, re.IGNORECASE)
        score = float(found.group(1)) if found else math.nan
    return score if math.isnan(score) else min(max(score, 0.0), 10.0)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_the_authors_parser_reads_as_the_authors():
    """``parser="authors"`` (the default) equals the authors' parse on every answer, the malformed ones
    included; ``lenient`` (ours) reads more of the malformed ones."""
    from nearid.judges.prompt import PARSERS

    usual = [answer for answer, _ in PARSE_CASES]
    for answer in usual + MALFORMED:
        assert _same(PARSERS["authors"](answer), authors_parse(answer)), answer
    differ = [a for a in usual + MALFORMED if not _same(PARSERS["lenient"](a), authors_parse(a))]
    assert PARSERS["lenient"] is parse_score and len(differ) >= 5
    assert math.isnan(PARSERS["authors"]("7")) and PARSERS["authors"]('{"score": true}') == 1.0


def test_rubric_puts_the_score_first_for_the_forced_prefix():
    """The expected readout forces ``{"score": `` as the answer's start: our rubric must ask for it there."""
    example = RUBRIC[RUBRIC.rindex("{") :]
    assert example.startswith(ANSWER_PREFIX)
    for word in ("instance", "background", "watermark", "markings", "logos", "pattern", "occluded", "about 5"):
        assert word in RUBRIC


def test_prompt_file(tmp_path):
    path = tmp_path / "rubric.txt"
    path.write_text("Same object? Answer JSON with score.", encoding="utf-8")
    assert read_prompt_file(path) == "Same object? Answer JSON with score."
    with pytest.raises(NearIDError, match="does not exist"):
        read_prompt_file(tmp_path / "nope.txt")
    (tmp_path / "padded.txt").write_text("\n  Same object?\nJSON only.  \n\n", encoding="utf-8")
    # the authors read their template with .strip() (spec 12.10): no extra tokens around it
    assert read_prompt_file(tmp_path / "padded.txt") == "Same object?\nJSON only."
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(NearIDError, match="empty"):
        read_prompt_file(tmp_path / "empty.txt")


# ------------------------------------------------------------------------- expected readout
def test_expected_scores_hand_computed():
    # first digit: p(7) = .5, p(1) = .25, p(3) = .25; after "1": p("0") = .4, no other digit
    first = np.zeros((1, 10))
    first[0, [7, 1, 3]] = [0.5, 0.25, 0.25]
    after_one = np.zeros((1, 10))
    after_one[0, 0] = 0.4
    # P(10) = .25 * .4 = .1, P(1) = .25 * .6 = .15: 7 * .5 + 1 * .15 + 3 * .25 + 10 * .1 = 5.4
    assert expected_scores(first, after_one) == pytest.approx([5.4], abs=1e-12)
    # mass off the digits (the first digit's distribution is renormalised) does not move it
    assert expected_scores(first * 0.3, after_one) == pytest.approx([5.4], abs=1e-12)
    # any digit after "1" makes a number >= 10, clipped to 10 as a written answer would be
    split = np.zeros((1, 10))
    split[0, [0, 5]] = [0.2, 0.2]
    assert expected_scores(first, split) == pytest.approx([5.4], abs=1e-12)
    # certain answers give their value; all mass on "10"
    certain = np.eye(10)
    assert expected_scores(certain, np.zeros((10, 10))) == pytest.approx(np.arange(10.0))
    ten = np.zeros((1, 10))
    ten[0, 1] = 1.0
    assert expected_scores(ten, np.eye(10)[[0]]) == pytest.approx([10.0])


def test_expected_readout_reads_the_digit_after_the_forced_prefix(judge_dir, pairs):
    """One pass over prompt + prefix + "1" gives the same first-digit distribution as a pass over
    prompt + prefix alone (causal attention), and the judge's score is expected_scores of it."""
    judge = load_vlm_judge(str(judge_dir), device="cpu", readout="expected")
    scores = judge.score_pairs(pairs[:2])
    with torch.inference_mode():
        alone = judge.encode(pairs[:2], answer_prefix=ANSWER_PREFIX)
        first = torch.softmax(judge.model(**alone).logits[:, -1].float(), -1)[:, judge.digit_ids]
        longer = judge.encode(pairs[:2], answer_prefix=ANSWER_PREFIX + "1")
        after = torch.softmax(judge.model(**longer).logits[:, -1].float(), -1)[:, judge.digit_ids]
    independent = expected_scores(first.double().numpy(), after.double().numpy()) / 10
    assert scores == pytest.approx(independent, abs=1e-6)
    assert np.all((scores >= 0) & (scores <= 1)) and len(set(scores.round(8))) == 2  # continuous
    assert judge.stats.pairs == 2 and judge.stats.calls == 1 and judge.stats.generated_tokens == 0
    assert judge.score_pairs([]).shape == (0,) and judge.stats.calls == 1


def test_masks_black_out_the_background(judge_dir, images):
    """A pair under masks scores as the pair of images with their background blacked out by hand."""
    judge = load_vlm_judge(str(judge_dir), device="cpu", readout="expected")
    a, b = images[0], images[2]
    masks, cut_out = [], []
    for image in (a, b):
        keep = np.zeros((image.height, image.width), dtype=bool)
        keep[8:40, 8:40] = True
        masks.append(Image.fromarray((keep * 255).astype(np.uint8)))
        cut_out.append(Image.fromarray(np.asarray(image) * keep[..., None].astype(np.uint8)))
    masked = judge.score_pairs([(a, b)], masks=[tuple(masks)])
    assert masked == pytest.approx(judge.score_pairs([tuple(cut_out)]), abs=1e-9)
    assert abs(judge.score_pairs([(a, b)])[0] - masked[0]) > 1e-6


# ------------------------------------------------------------------------------- batching
def test_batching_keeps_the_input_order(judge_dir, pairs, tmp_path):
    """A left-padded batch (prompts of different lengths: images of different sizes) equals each pair
    alone; chunks of judge_batch_size change nothing; reversed input gives reversed scores."""
    expected = load_vlm_judge(str(judge_dir), device="cpu", readout="expected", judge_batch_size=3)
    together = expected.score_pairs(pairs)
    alone = np.array([expected.score_pairs([pair])[0] for pair in pairs])
    assert together == pytest.approx(alone, abs=1e-5)
    assert expected.score_pairs(pairs[::-1]) == pytest.approx(together[::-1], abs=1e-5)
    assert expected.stats.calls == 2 + 4 + 2

    short = tmp_path / "short.txt"  # a short rubric: 16 decoding steps over a short context stay fast
    short.write_text("Same object? JSON with score 0-10.")
    generate = load_vlm_judge(str(judge_dir), device="cpu", max_new_tokens=16, judge_batch_size=3, prompt_file=short)
    generate.score_pairs(pairs)
    batched = list(generate.answers)
    single = []
    for pair in pairs:
        generate.score_pairs([pair])
        single += generate.answers
    assert batched == single and len(set(batched)) > 1  # the answers differ per pair: order is visible


def test_left_padding(judge_dir, pairs):
    judge = load_vlm_judge(str(judge_dir), device="cpu")
    inputs = judge.encode(pairs[:2])  # 64x64 + 100x50 (4 + 6 image tokens) vs 80x120 + 200x200 (8 + 16)
    mask = inputs["attention_mask"]
    assert mask[:, -1].all() and not mask[0, 0] and mask[1].all()
    assert int(mask[1].sum() - mask[0].sum()) == (8 + 16) - (4 + 6)


def test_nan_answers_are_counted(judge_dir, pairs):
    judge = load_vlm_judge(str(judge_dir), device="cpu", judge_batch_size=2)
    scripted(judge, ['{"score": 7, "confidence": "high"}', "no idea", '{"score": 3', "{}"])
    scores = judge.score_pairs(pairs)
    assert scores[[0, 2]] == pytest.approx([0.7, 0.3]) and np.isnan(scores[[1, 3]]).all()
    assert judge.stats.unparsed == 2 and judge.stats.pairs == 4 and judge.stats.calls == 2
    assert judge.answers == ['{"score": 7, "confidence": "high"}', "no idea", '{"score": 3', "{}"]
    # tokens written up to and including the end of each answer
    assert judge.stats.generated_tokens == sum(len(a.encode()) + 1 for a in judge.answers)


def test_integer_ties_lose_in_ssr(judge_dir, images):
    """A judge answering the same integer for a positive pair and its distractor pair ties: the trial
    loses (margin > 0 wins), through the judge's parsing and the bench's metrics."""
    judge = load_vlm_judge(str(judge_dir), device="cpu")
    views, distractors = images[:3], images[1:4]
    positive = [(views[a], views[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    cross = [(views[v], distractors[v]) for v in range(3)]
    # positives 7, 7, 8; distractors 7, 6, 6: view 0 ties with the (0, 1) and (0, 2) pairs
    scripted(judge, ['{"score": 7}', '{"score": 7}', '{"score": 8}', '{"score": 7}', '{"score": 6}', '{"score": 6}'])
    pair_sims = judge.score_pairs(positive)[None]
    cross_sims = judge.score_pairs(cross)[None]
    score = nearid_scores(pair_sims, cross_sims)
    # margins: (0,1): .7-.7, .7-.6; (0,2): .7-.7, .7-.6; (1,2): .8-.6, .8-.6 -> 4 wins of 6, no SSR
    assert (score.n_trials, score.n_wins, score.n_all_win) == (6, 4, 0)


# ------------------------------------------------------------------------ inputs and loading
def test_image_tokens_expanded_as_the_processor_does(judge_dir, pairs):
    """64x64 -> a 64x64 resize (4x4 patches of 16) -> 4 tokens after the 2x2 merge; 100x50 -> 96x64
    (6x4 patches) -> 6 tokens. The count rule is Qwen3VLProcessor's own (called unbound: building the
    processor needs torchvision)."""
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    judge = load_vlm_judge(str(judge_dir), device="cpu")
    inputs = judge.encode([pairs[0]])
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4], [1, 6, 4]]
    stand_in = SimpleNamespace(image_processor=judge.image_processor, image_token="<|image_pad|>")
    real = [Qwen3VLProcessor.replace_image_token(stand_in, inputs, i) for i in range(2)]
    assert [r.count("<|image_pad|>") for r in real] == [4, 6]
    text = judge.tokenizer.decode(inputs["input_ids"][0])
    assert "<|vision_start|>" + real[0] + "<|vision_end|><|vision_start|>" + real[1] + "<|vision_end|>" in text
    assert text.startswith("<|im_start|>user\n<|vision_start|>") and text.endswith("<|im_start|>assistant\n")
    assert RUBRIC in text
    ids = inputs["input_ids"][0]
    assert inputs["mm_token_type_ids"][0].tolist() == (ids == judge.image_token_id).int().tolist()
    assert expand_image_tokens("a<i>b<i>c", "<i>", [2, 1]) == "a<i><i>b<i>c"
    with pytest.raises(NearIDError, match="placeholders"):
        expand_image_tokens("a<i>b", "<i>", [2, 1])


def test_load_metric_gives_a_pair_scorer(judge_dir, pairs, tmp_path):
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Same object instance? JSON with score 0-10.")
    judge = load_metric(
        f"vlm:{judge_dir}",
        device="cpu",
        dtype="auto",
        judge_options={"prompt_file": str(rubric), "readout": "generate", "max_new_tokens": 8, "judge_batch_size": 2},
    )
    assert isinstance(judge, PairScorer) and is_pair_scorer(judge)
    assert judge.prompt == rubric.read_text() and judge.dtype == torch.float32
    rubric_fp = hashlib.sha256(rubric.read_text().encode()).hexdigest()[:8]  # another rubric: named so (issue 21.8)
    assert judge.name == f"vlm:{judge_dir}#{rubric_fp}" and judge.max_new_tokens == 8
    scores = judge.score_pairs(pairs[:3])
    assert scores.dtype == np.float64 and scores.shape == (3,)
    assert judge.stats.unparsed == int(np.isnan(scores).sum())
    assert 3 <= judge.stats.generated_tokens <= 3 * 8 and judge.stats.seconds_per_pair > 0


def test_fingerprint_covers_what_decides_the_scores(judge_dir, tmp_path):
    base = load_vlm_judge(str(judge_dir), device="cpu")
    assert base.fingerprint == load_vlm_judge(str(judge_dir), device="cpu", judge_batch_size=1).fingerprint
    rubric = tmp_path / "r.txt"
    rubric.write_text("another rubric")
    others = [
        load_vlm_judge(str(judge_dir), device="cpu", readout="expected"),
        load_vlm_judge(str(judge_dir), device="cpu", max_new_tokens=128),
        load_vlm_judge(str(judge_dir), device="cpu", prompt_file=rubric),
        load_vlm_judge(str(judge_dir), device="cpu", dtype="bfloat16"),
        load_vlm_judge(str(save_tiny_judge(tmp_path / "reseeded", seed=1)), device="cpu"),
    ]
    assert len({base.fingerprint, *(o.fingerprint for o in others)}) == 1 + len(others)
    # the expected readout does not depend on max_new_tokens
    a = load_vlm_judge(str(judge_dir), device="cpu", readout="expected", max_new_tokens=5)
    assert a.fingerprint == others[0].fingerprint


@pytest.mark.parametrize(
    ("model_type", "class_name"),
    [("qwen3_vl_moe", "Qwen3VLMoeForConditionalGeneration"), ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration")],
)
def test_the_class_comes_from_the_model_type(tmp_path, pairs, model_type, class_name):
    import transformers

    folder = save_tiny_judge(tmp_path / model_type, model_type=model_type)
    judge = load_vlm_judge(str(folder), device="cpu", readout="expected")
    assert type(judge.model) is getattr(transformers, class_name)
    assert np.isfinite(judge.score_pairs(pairs[:2])).all()
    generate = load_vlm_judge(str(folder), device="cpu", max_new_tokens=4)
    assert generate.score_pairs(pairs[:2]).shape == (2,) and generate.stats.generated_tokens > 0


def test_loading_is_strict(judge_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(judge_dir, broken)
    weights = load_file(broken / "model.safetensors")
    dropped = sorted(weights)[0]
    save_file(
        {k: v for k, v in weights.items() if k != dropped}, broken / "model.safetensors", metadata={"format": "pt"}
    )
    with pytest.raises(ModelNotAvailableError, match="weights missing"):
        load_vlm_judge(str(broken), device="cpu")

    other = tmp_path / "vit"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ModelNotAvailableError, match="model_type 'vit'"):
        load_vlm_judge(str(other), device="cpu")
    with pytest.raises(ModelNotAvailableError, match="not on this machine"):
        load_vlm_judge("Qwen/Qwen3-VL-8B-Instruct", device="cpu")  # offline, not cached: fails at once
    with pytest.raises(EncoderSpecError, match="judge-readout"):
        load_vlm_judge(str(judge_dir), device="cpu", readout="mean")


def test_judge_parser_and_pixels_options(judge_dir):
    """The default judge parses as the authors and sees the fast processor's pixels; the options switch
    both, and the fingerprint tells the judgments apart."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from nearid.judges.pixels import QwenFastPixels

    default = load_vlm_judge(str(judge_dir), device="cpu")
    ours = load_vlm_judge(str(judge_dir), device="cpu", parser="lenient", pixels="pil")
    assert isinstance(default.image_processor, QwenFastPixels) and default.parser == "authors"
    assert type(ours.image_processor) is Qwen2VLImageProcessorPil and ours.parser == "lenient"
    assert default.fingerprint != ours.fingerprint
    a, b = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (30, 40), "blue")
    assert np.isnan(scripted(default, ["7/10"]).score_pairs([(a, b)])).all()  # the authors': NaN
    assert scripted(ours, ["7/10"]).score_pairs([(a, b)]).tolist() == [0.7]
    with pytest.raises(EncoderSpecError, match="judge-parser"):
        load_vlm_judge(str(judge_dir), device="cpu", parser="loose")
    with pytest.raises(EncoderSpecError, match="judge-pixels"):
        load_vlm_judge(str(judge_dir), device="cpu", pixels="slow")


def test_vlm_spec_rules():
    from nearid.models.encoders import load_encoder
    from nearid.models.specs import available_encoders, parse_encoder_spec

    assert "vlm" in available_encoders()
    with pytest.raises(EncoderSpecError, match="needs an argument"):
        parse_encoder_spec("vlm")
    with pytest.raises(EncoderSpecError, match="pair scorer"):
        load_encoder("vlm:some/judge", device="cpu")


def test_cli_judge_options(tmp_path):
    from nearid.cli.app import build_parser, judge_options

    for command in (["bench", "--out", str(tmp_path)], ["score", "--refs", str(tmp_path)]):
        args = build_parser().parse_args(command)
        assert judge_options(args) == {
            "prompt_file": None,
            "readout": "generate",
            "max_new_tokens": 512,
            "judge_batch_size": 8,
            "parser": "authors",  # the authors' parse and pixels by default
            "pixels": "fast",
        }
        options = ["--judge-readout", "expected", "--max-new-tokens", "64", "--judge-batch-size", "2"]
        options += ["--judge-parser", "lenient", "--judge-pixels", "pil"]
        args = build_parser().parse_args([*command, *options, "--prompt-file", "r.txt"])
        assert judge_options(args) == {
            "prompt_file": "r.txt",
            "readout": "expected",
            "max_new_tokens": 64,
            "judge_batch_size": 2,
            "parser": "lenient",
            "pixels": "pil",
        }
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--out", str(tmp_path), "--judge-readout", "mean"])


def test_cli_hands_the_judge_options_to_the_command(tmp_path, monkeypatch):
    """main() runs score's command, which builds the judge options as the value load_metric takes
    (``LoadOptions.judge``, from nearid.cli.options) and as the dict bench's config holds."""
    import nearid.cli.app as cli
    import nearid.cli.score as score_command
    from nearid.cli.options import judge_options, load_options
    from nearid.models.options import JudgeOptions

    seen = {}

    def command(args):
        seen.update(value=load_options(args).judge, kwargs=judge_options(args))
        return 0

    monkeypatch.setattr(score_command, "cmd_score", command)
    assert cli.main(["score", "--refs", str(tmp_path), "--judge-readout", "expected", "--max-new-tokens", "7"]) == 0
    assert seen["value"] == JudgeOptions(prompt_file=None, readout="expected", max_new_tokens=7, judge_batch_size=8)
    assert seen["kwargs"] == {
        "prompt_file": None,
        "readout": "expected",
        "max_new_tokens": 7,
        "judge_batch_size": 8,
        "parser": "authors",
        "pixels": "fast",
    }


@pytest.mark.slow
def test_judge_imports_no_torchvision(judge_dir, tmp_path):
    """Loading and running the judge never imports torchvision (it cannot be imported here, and it
    stays optional everywhere)."""
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    code = (
        "import sys\n"
        "from nearid.judges.loading import load_metric\n"
        f"judge = load_metric('vlm:{judge_dir}', device='cpu', judge_options={{'max_new_tokens': 2}})\n"
        f"print(judge.score_pairs([({str(image)!r}, {str(image)!r})]))\n"
        "judge = load_metric("
        f"'vlm:{judge_dir}', device='cpu', judge_options={{'readout': 'expected'}})\n"
        f"print(judge.score_pairs([({str(image)!r}, {str(image)!r})]))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision')\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
