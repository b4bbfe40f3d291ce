"""``vlm:<model id or folder>``: a Qwen-VL model as an identity judge (a :class:`~nearid.models.pair_scorers.PairScorer`).

As the authors ran it (spec 12.7): one user turn of image A, image B and a rubric; greedy decoding;
the answer's 0-10 ``score`` (parsed by :func:`~nearid.judges.prompt.parse_score`) / 10, NaN when
nothing parses. All pairs of one ``score_pairs`` call go through one left-padded ``generate`` (at most
``judge_batch_size`` pairs per call, to bound memory); the order of the input is kept.

Two readouts:

* ``generate`` (the paper's): the judge writes its answer; ``max_new_tokens`` defaults to 512, since
  the authors' default of 128 cut their ~260-token answers and left them unparsed.
* ``expected``: the answer is forced up to the number (:data:`~nearid.judges.prompt.ANSWER_PREFIX`)
  and the score is the probability-weighted mean of 0..10 read from one forward pass
  (:func:`expected_scores`): continuous, so no integer ties, and no decoding at all.

Loading follows the encoder rules: hub ids resolved by :mod:`nearid.io.hub` (cache first, fail fast
offline, no ``*.py``, no pickles unless asked), no remote code, strict (a missing weight is an error).
The model class is chosen from ``config.json``'s ``model_type``. ``Qwen3VLProcessor`` is never built:
its video processor imports torchvision. The judge builds the chat text with the checkpoint's own chat
template, preprocesses images as Qwen's fast image processor does (:mod:`nearid.judges.pixels`,
``--judge-pixels fast``, the authors' pixels; ``pil``: transformers' PIL twin), parses answers as the
authors do (``--judge-parser authors``; ``lenient``: ours) and expands each ``<|image_pad|>`` to
``grid_t * grid_h * grid_w / merge_size**2`` tokens, as the processor does (:func:`expand_image_tokens`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nearid.images.decode import load_masked
from nearid.io.errors import EncoderSpecError, ModelNotAvailableError, NearIDError
from nearid.judges.prompt import ANSWER_PREFIX, PARSERS, RUBRIC, SCALE

#: ``config.json`` ``model_type`` -> transformers class of the judges we run.
MODEL_CLASSES = {
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}
READOUTS = ("generate", "expected")
PIXELS = ("fast", "pil")
#: The authors' answers run ~250-260 tokens; their default 128 truncated them (spec 12.7), 512 leaves room.
DEFAULT_MAX_NEW_TOKENS = 512
#: Pairs per generate call: an identity's 3-6 pairs fit; more are split to bound activation memory.
DEFAULT_JUDGE_BATCH_SIZE = 8
#: Bumped when :func:`~nearid.judges.prompt.parse_score` or :func:`expected_scores` change meaning.
SCORING_VERSION = 2  # 2: the parser is named in the fingerprint


@dataclass
class JudgeStats:
    """What a judge did so far (summed over ``score_pairs`` calls): bench and score report it."""

    pairs: int = 0
    #: pairs whose answer had no score (NaN); ``generate`` readout only
    unparsed: int = 0
    #: new tokens written (``generate``), up to and including the end-of-answer token
    generated_tokens: int = 0
    #: model calls (generate or forward)
    calls: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_pair(self) -> float:
        return self.seconds / self.pairs if self.pairs else math.nan

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds_per_pair": self.seconds_per_pair}


class VLMJudge:
    """A Qwen-VL judge over a loaded model, its tokenizer and its (PIL) image processor."""

    def __init__(
        self,
        model,
        tokenizer,
        image_processor,
        *,
        name: str,
        chat_template: str,
        prompt: str = RUBRIC,
        readout: str = "generate",
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        judge_batch_size: int = DEFAULT_JUDGE_BATCH_SIZE,
        weights_fingerprint: str | None = None,
        parser: str = "authors",
    ):
        check_judge_options(
            readout=readout, max_new_tokens=max_new_tokens, judge_batch_size=judge_batch_size, parser=parser
        )
        self.parser = parser
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.image_processor = image_processor
        self.name = name
        self.chat_template = chat_template
        self.prompt = prompt
        self.readout = readout
        self.max_new_tokens = int(max_new_tokens)
        self.judge_batch_size = int(judge_batch_size)
        self.image_token = "<|image_pad|>"
        self.image_token_id = int(model.config.image_token_id)
        if tokenizer.convert_tokens_to_ids(self.image_token) != self.image_token_id:
            raise ModelNotAvailableError(
                f"judge '{name}': the tokenizer's {self.image_token} is not the model's image token "
                f"{self.image_token_id}; the tokenizer files do not belong to these weights"
            )
        self.digit_ids = digit_token_ids(tokenizer) if readout == "expected" else None
        self.stats = JudgeStats()
        #: the raw answers of the last ``score_pairs`` call (``generate`` readout), for inspection
        self.answers: list[str] = []
        self._weights_fingerprint = weights_fingerprint
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ identity of the judgments
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def fingerprint(self) -> str:
        """SHA-256 of what decides the scores: the weights (the files' (path, size, mtime_ns) when
        loaded from a folder, see :func:`load_vlm_judge`; else every tensor), config, image processor,
        tokenizer, chat template, rubric, readout (with ``max_new_tokens`` for ``generate``, the forced
        prefix for ``expected``), attention kernel, dtype and the parser's version. Not
        ``judge_batch_size``: it changes padding, not the prompt each pair sees."""
        if self._fingerprint is None:
            from nearid.io.fingerprint import of_json, of_tensors
            from nearid.models.encoders import semantic_config

            weights = self._weights_fingerprint or of_tensors(self.model.state_dict())
            self._fingerprint = of_json(
                {
                    "judge": "vlm",
                    "weights": weights,
                    "config": semantic_config(self.model.config.to_dict()),
                    "processor": semantic_config(self.image_processor.to_dict()),
                    "vocab": len(self.tokenizer),
                    "chat_template": self.chat_template,
                    "prompt": self.prompt,
                    "readout": self.readout,
                    "max_new_tokens": self.max_new_tokens if self.readout == "generate" else None,
                    "parser": self.parser if self.readout == "generate" else None,
                    "answer_prefix": ANSWER_PREFIX if self.readout == "expected" else None,
                    "attention": getattr(self.model.config, "_attn_implementation", None),
                    "dtype": str(self.dtype),
                    "scoring": SCORING_VERSION,
                }
            )
        return self._fingerprint

    def __repr__(self) -> str:
        return f"<VLMJudge {self.name} readout={self.readout} device={self.device} dtype={self.dtype}>"

    # ------------------------------------------------------------------------------- inputs
    def chat_text(self, answer_prefix: str = "") -> str:
        """The prompt of one pair before image-token expansion: the chat template applied to one user
        turn [image A, image B, rubric], the assistant's turn opened, then ``answer_prefix``."""
        messages = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": self.prompt}],
            }
        ]
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        return text + answer_prefix

    def encode(self, images: Sequence, answer_prefix: str = ""):
        """Model inputs for pairs of PIL images: ``input_ids`` / ``attention_mask`` (left-padded),
        ``mm_token_type_ids``, ``pixel_values`` and ``image_grid_thw`` of every image in order
        (pair 0 A, pair 0 B, pair 1 A, ...)."""
        flat = [image for pair in images for image in pair]
        vision = self.image_processor(images=flat, return_tensors="pt")
        grid = vision["image_grid_thw"]
        merge = int(self.image_processor.merge_size)
        counts = [int(row.prod()) // merge**2 for row in grid]
        template = self.chat_text(answer_prefix)
        texts = [expand_image_tokens(template, self.image_token, counts[2 * i : 2 * i + 2]) for i in range(len(images))]
        text = self.tokenizer(texts, padding=True, return_tensors="pt")
        inputs = {
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "mm_token_type_ids": (text["input_ids"] == self.image_token_id).to(torch.int32),
            "pixel_values": vision["pixel_values"],
            "image_grid_thw": grid,
        }
        found = int((text["input_ids"] == self.image_token_id).sum())
        if found != sum(counts):  # a chat template that drops or repeats image placeholders
            raise NearIDError(
                f"judge '{self.name}': the prompt holds {found} image tokens for {sum(counts)} image patches; "
                "the chat template must place exactly one image placeholder per image"
            )
        return {
            key: value.to(self.device, dtype=self.dtype if value.is_floating_point() else value.dtype)
            for key, value in inputs.items()
        }

    # ------------------------------------------------------------------------------- scoring
    def score_pairs(self, pairs, masks=None) -> np.ndarray:
        """float64 ``[len(pairs)]`` scores in [0, 1], input order kept; NaN where the answer had no
        score. Pairs go to the model ``judge_batch_size`` at a time (callers pass one identity's)."""
        pairs = list(pairs)
        masks = list(masks) if masks is not None else [(None, None)] * len(pairs)
        if len(masks) != len(pairs):
            raise ValueError(f"{len(pairs)} pairs but {len(masks)} mask pairs")
        scores = np.full(len(pairs), np.nan, dtype=np.float64)
        self.answers = []
        start = time.perf_counter()
        for begin in range(0, len(pairs), self.judge_batch_size):
            chunk = range(begin, min(begin + self.judge_batch_size, len(pairs)))
            images = [(load_masked(pairs[i][0], masks[i][0]), load_masked(pairs[i][1], masks[i][1])) for i in chunk]
            if self.readout == "expected":
                scores[chunk.start : chunk.stop] = self._expected(images)
            else:
                scores[chunk.start : chunk.stop] = self._generate(images)
        self.stats.pairs += len(pairs)
        self.stats.seconds += time.perf_counter() - start
        return scores

    @torch.inference_mode()
    def _generate(self, images) -> np.ndarray:
        inputs = self.encode(images)
        eos = _eos_ids(self.model, self.tokenizer)
        output = self.model.generate(
            **inputs,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        self.stats.calls += 1
        new = output[:, inputs["input_ids"].shape[1] :].cpu()
        answers = []
        for row in new:
            ends = [i for i, token in enumerate(row.tolist()) if token in eos]
            length = ends[0] + 1 if ends else len(row)
            self.stats.generated_tokens += length
            answers.append(self.tokenizer.decode(row[:length], skip_special_tokens=True))
        self.answers.extend(answers)
        parse = PARSERS[self.parser]
        scores = np.array([parse(answer) for answer in answers], dtype=np.float64)
        self.stats.unparsed += int(np.isnan(scores).sum())
        return scores / SCALE

    @torch.inference_mode()
    def _expected(self, images) -> np.ndarray:
        # One pass over prompt + prefix + "1": the logits before the "1" are the first digit's
        # distribution, the logits after it say whether "1" goes on to "10" (causal attention: the
        # appended token changes nothing before it).
        inputs = self.encode(images, answer_prefix=ANSWER_PREFIX + "1")
        logits = self.model(**inputs, logits_to_keep=2).logits[:, -2:].float()
        self.stats.calls += 1
        probs = torch.softmax(logits, dim=-1)[:, :, self.digit_ids].double().cpu().numpy()
        return expected_scores(probs[:, 0], probs[:, 1]) / SCALE


def expected_scores(first: np.ndarray, after_one: np.ndarray) -> np.ndarray:
    """Probability-weighted 0-10 scores from digit probabilities, ``[B]`` float64.

    ``first[b, d]`` = p(first digit d | prompt + prefix), ``after_one[b, d]`` = p(next token is digit d
    | prompt + prefix + "1"), both over the whole vocabulary (d = 0..9). Qwen writes numbers digit by
    digit, so "1" starts both 1 and 10. Rule, the one :func:`~nearid.judges.prompt.parse_score`
    applies to a written answer: the first digit's distribution is renormalised over the ten digits
    (mass on non-digits is the judge not answering in the format; it does not move the score); "1"
    followed by any digit is a number >= 10, clipped to 10; "1" followed by anything else is 1. A
    first digit 2..9 followed by more digits would also clip to 10, but its continuation is not read:
    the rubric asks for 0-10, and those answers are the model's error, not a scale it uses.
    """
    first = np.asarray(first, dtype=np.float64)
    after_one = np.asarray(after_one, dtype=np.float64)
    p = first / first.sum(axis=1, keepdims=True)
    ten = np.clip(after_one.sum(axis=1), 0.0, 1.0)
    values = np.arange(10, dtype=np.float64)
    expected = (p * values).sum(axis=1)  # 1 counted as 1 for all of p[:, 1]
    return expected + p[:, 1] * ten * (10.0 - 1.0)  # the share of "1" that continues is 10, not 1


def expand_image_tokens(text: str, image_token: str, counts: Sequence[int]) -> str:
    """``text`` with its i-th ``image_token`` repeated ``counts[i]`` times, as Qwen-VL processors expand
    each image placeholder to its number of merged patches. A count that does not match the
    placeholders is a bug in the caller (or a chat template without one placeholder per image)."""
    parts = text.split(image_token)
    if len(parts) - 1 != len(counts):
        raise NearIDError(
            f"the chat text holds {len(parts) - 1} {image_token} placeholders for {len(counts)} images; "
            "the chat template must place one placeholder per image"
        )
    out = [parts[0]]
    for count, part in zip(counts, parts[1:]):
        out += [image_token * int(count), part]
    return "".join(out)


def digit_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens "0".."9"; the ``expected`` readout needs numbers written digit by digit (Qwen's
    tokenizers do), else it cannot read a score from next-token probabilities."""
    ids = []
    for digit in "0123456789":
        encoded = tokenizer.encode(digit, add_special_tokens=False)
        if len(encoded) != 1:
            raise NearIDError(f"--judge-readout expected: the tokenizer writes '{digit}' as {len(encoded)} tokens")
        ids.append(encoded[0])
    if tokenizer.encode("10", add_special_tokens=False) != [ids[1], ids[0]]:
        raise NearIDError(
            "--judge-readout expected: the tokenizer does not split '10' into '1' '0'; use --judge-readout generate"
        )
    return ids


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = eos if eos is not None else tokenizer.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos)
    return sorted({*eos, tokenizer.convert_tokens_to_ids("<|im_end|>")} - {None})


def check_judge_options(
    *,
    readout="generate",
    max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
    judge_batch_size=8,
    parser="authors",
    pixels="fast",
    **_,
):
    """The judge settings a user types, checked before any model loads."""
    if readout not in READOUTS:
        raise EncoderSpecError(f"--judge-readout '{readout}': use one of {', '.join(READOUTS)}")
    if parser not in PARSERS:
        raise EncoderSpecError(f"--judge-parser '{parser}': use one of {', '.join(PARSERS)}")
    if pixels not in PIXELS:
        raise EncoderSpecError(f"--judge-pixels '{pixels}': use one of {', '.join(PIXELS)}")
    if int(max_new_tokens) < 1:
        raise EncoderSpecError(f"--max-new-tokens {max_new_tokens}: a judge needs at least 1 (default 512)")
    if int(judge_batch_size) < 1:
        raise EncoderSpecError(f"--judge-batch-size {judge_batch_size}: at least 1 pair per call (default 8)")


# ------------------------------------------------------------------------------------ loading
def judge_name(argument: str, readout: str, prompt: str) -> str:
    """The judge's name in results (``results.json``'s entry, logs): ``vlm:<argument>``, ``@expected`` for
    that readout, and ``#<rubric>`` (the first 8 hex digits of the SHA-256 of a ``--prompt-file``'s text)
    when the rubric is not the built-in one. The rubric and readout decide what a judgment is, so two
    rubrics are two results side by side, never one replacing the other."""
    import hashlib

    name = f"vlm:{argument}" + ("@expected" if readout == "expected" else "")
    if prompt != RUBRIC:
        name += "#" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8]
    return name


def load_vlm_judge(
    argument: str,
    *,
    device="auto",
    dtype="auto",
    allow_pickle: bool = False,
    prompt_file=None,
    readout: str | None = "generate",
    max_new_tokens: int | None = None,
    judge_batch_size: int | None = None,
    parser: str = "authors",
    pixels: str = "fast",
) -> VLMJudge:
    """``vlm:<argument>``: load a Qwen3-VL, Qwen3-VL-MoE or Qwen2.5-VL checkpoint as a judge.

    bf16 on CUDA (``dtype=auto``; fp32 on the CPU), loaded straight onto the device; flash attention
    2 when ``flash_attn`` is installed and the device is CUDA, else PyTorch's SDPA. The weights are
    fingerprinted by their files' (resolved path, size, mtime_ns) (:func:`nearid.io.fingerprint.of_files`),
    not by hashing tensors as encoders do: a 30B judge is ~60 GB, a minute or more of SHA-256 on every
    run, to learn what ``stat`` says; a judge's weights are never changed after loading, and hub-cache
    files resolve to blobs named by their content hash, so a re-download is a new fingerprint."""
    from nearid.io.fingerprint import of_files
    from nearid.io.hub import resolve_model_dir
    from nearid.judges.prompt import read_prompt_file
    from nearid.models.encoders import resolve_device, resolve_dtype
    from nearid.models.loading import quiet_transformers

    readout = readout or "generate"
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    judge_batch_size = DEFAULT_JUDGE_BATCH_SIZE if judge_batch_size is None else judge_batch_size
    check_judge_options(
        readout=readout, max_new_tokens=max_new_tokens, judge_batch_size=judge_batch_size, parser=parser, pixels=pixels
    )
    prompt = read_prompt_file(prompt_file) if prompt_file else RUBRIC
    if importlib.util.find_spec("json_repair") is None:
        raise NearIDError("the vlm judge parses answers with json_repair: pip install 'nearid[judge]'")
    resolved = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, resolved, "vlm")
    folder = resolve_model_dir(argument, allow_pickle=allow_pickle)
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type not in MODEL_CLASSES:
        raise ModelNotAvailableError(
            f"vlm:{argument}: model_type '{model_type}' is not a judge we run; "
            f"use a {', '.join(MODEL_CLASSES)} checkpoint (e.g. Qwen/Qwen3-VL-8B-Instruct)"
        )
    import transformers

    model_class = getattr(transformers, MODEL_CLASSES[model_type])
    flash = resolved.type == "cuda" and torch_dtype in (torch.bfloat16, torch.float16)  # its kernels' dtypes
    attention = "flash_attention_2" if flash and importlib.util.find_spec("flash_attn") else "sdpa"
    kwargs = dict(
        dtype=torch_dtype,
        attn_implementation=attention,
        use_safetensors=None if allow_pickle else True,
        output_loading_info=True,
    )
    if resolved.type == "cuda":
        kwargs["device_map"] = {"": str(resolved)}  # straight to the GPU, never a full CPU copy
    try:
        with quiet_transformers():
            model, info = model_class.from_pretrained(folder, **kwargs)
    except RuntimeError:
        raise ModelNotAvailableError(
            f"vlm:{argument}: not a {model_class.__name__} checkpoint (weights of the wrong shape)"
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotAvailableError(f"vlm:{argument}: cannot load it as {model_class.__name__} ({first})") from None
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ModelNotAvailableError(
            f"vlm:{argument}: not a {model_class.__name__} checkpoint ({len(missing)} weights missing, e.g. "
            f"{missing[0]}); check that the folder holds the whole model"
        )
    if resolved.type != "cuda":
        model = model.to(resolved)
    tokenizer, image_processor, template = _load_text_and_vision(folder, argument, pixels)
    files = sorted(
        p for pattern in ("*.safetensors", "*.bin", "*.json", "*.jinja", "*.txt") for p in folder.glob(pattern)
    )
    return VLMJudge(
        model,
        tokenizer,
        image_processor,
        name=judge_name(argument, readout, prompt),
        chat_template=template,
        prompt=prompt,
        readout=readout,
        max_new_tokens=max_new_tokens,
        judge_batch_size=judge_batch_size,
        weights_fingerprint=of_files(files),
        parser=parser,
    )


def _load_text_and_vision(folder: Path, argument: str, pixels: str = "fast"):
    """The tokenizer (left padding), the image processor (``pixels``: :mod:`nearid.judges.pixels`) and
    the chat template of a checkpoint.
    The template is the processor's (``chat_template.json`` / ``.jinja``), else the tokenizer's, else
    Qwen3-VL's layout (:data:`nearid.judges.prompt.CHAT_TEMPLATE`)."""
    from transformers import AutoTokenizer

    from nearid.judges.pixels import image_processor as load_image_processor
    from nearid.judges.prompt import CHAT_TEMPLATE
    from nearid.models.loading import quiet_transformers

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(folder)
            image_processor = load_image_processor(pixels, folder)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotAvailableError(
            f"vlm:{argument}: tokenizer or preprocessor_config.json missing ({first})"
        ) from None
    tokenizer.padding_side = "left"
    template = None
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    elif (folder / "chat_template.json").is_file():
        template = json.loads((folder / "chat_template.json").read_text()).get("chat_template")
    return tokenizer, image_processor, template or tokenizer.chat_template or CHAT_TEMPLATE


__all__ = [
    "DEFAULT_JUDGE_BATCH_SIZE",
    "DEFAULT_MAX_NEW_TOKENS",
    "MODEL_CLASSES",
    "READOUTS",
    "JudgeStats",
    "VLMJudge",
    "check_judge_options",
    "digit_token_ids",
    "expand_image_tokens",
    "expected_scores",
    "load_vlm_judge",
]
