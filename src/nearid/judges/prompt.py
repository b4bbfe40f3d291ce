"""What a VLM judge is asked and how its answer becomes a number.

The rubric is ours (the authors' ``vl_template_v2.txt`` is not redistributed; ``--prompt-file`` takes
it, or any other text, to reproduce their numbers). It covers what theirs does (spec 12.7): instance,
not category; no background, watermark or framing cues; evidence in priority order (markings > fine
geometry/parts > text/logos > colour only when patterned); about 5 when the object is occluded or
small; a 0-10 scale with anchors; JSON only. One difference, on purpose: ``score`` comes *first*, so
that the ``expected`` readout can force the answer up to the number (:data:`ANSWER_PREFIX`) and both
readouts read the same prompt.

Two parsers (``--judge-parser``, :data:`PARSERS`):

* ``authors`` (the default, so the published judge numbers are what the default computes): the
  authors' parse exactly (spec 12.10, :func:`parse_score_authors`): ``json_repair`` into an object, the
  first present key of ``score``/``Score``/``SCORE``/``similarity``/``Similarity`` through ``float()``,
  else a case-insensitive ``"score": <num>`` regex; a bare ``7`` or ``7/10`` is NaN.
* ``lenient`` (ours, :func:`parse_score`): the authors' order made stricter at each step and one step
  longer: the first JSON object (``json``), the same text repaired, the ``"score": <num>`` regex, then a
  bare number (the whole answer is one number, optionally ``/10``); only the ``score`` key, never
  ``true``. It reads answers the authors' parse leaves NaN, and NaN where theirs reads ``true`` as 1.

Either way the value is clipped to [0, 10]; nothing parsed is NaN (the judge counts those).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from nearid.io.errors import NearIDError

#: Our rubric (user-turn text after image A and image B).
RUBRIC = """You are shown two images, A and B. Decide whether they show the SAME physical object instance: \
the very same individual item, not merely an object of the same category, brand, model or style.

Rules:
- Judge only the main object. Ignore the background, the setting, other objects, lighting, watermarks, \
borders, cropping and framing. Two different objects photographed in the same place are different; \
the same object photographed in two places is the same.
- Weigh the evidence in this order: (1) unique markings: scratches, stains, wear, stickers, prints, damage; \
(2) fine geometry and parts: proportions, the shape and number of parts and how they attach; \
(3) readable text and logos; (4) colour and material, only when they form a distinctive pattern \
(a plain colour is shared by many objects).
- One clear conflict in (1)-(3) outweighs many generic similarities.
- If the object is occluded, very small, blurred or missing in either image, answer about 5.

Score from 0 to 10:
10 = certainly the same instance; 7-9 = probably the same; 4-6 = cannot tell; \
1-3 = probably different; 0 = certainly different.

Answer with JSON only, no other text, and put the score first:
{"score": <integer 0-10>, "confidence": "high" | "medium" | "low", "match_cues": ["..."], \
"conflict_cues": ["..."], "background_used": false}"""

#: The assistant's answer up to the number: what the ``expected`` readout forces before reading the
#: digit probabilities. Qwen's tokenizer splits ``": `` and the following digit, so the number starts
#: a fresh token after this prefix.
ANSWER_PREFIX = '{"score": '

#: The score scale's top: scores are clipped to [0, SCALE] and divided by it.
SCALE = 10.0

_SCORE_FIELD = re.compile(r'"score"\s*:\s*"?\s*(-?\d+(?:\.\d+)?)')
_BARE_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\.?\s*")


def read_prompt_file(path: str | os.PathLike) -> str:
    """The text of ``--prompt-file`` (UTF-8), stripped of surrounding whitespace as the authors read
    their template (``.strip()``, spec 12.10: a trailing newline would add tokens to every prompt and
    change a judge's answers); a missing, unreadable or empty file is a one-line error."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NearIDError(f"--prompt-file '{path}' does not exist; pass a UTF-8 text file with the rubric") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NearIDError(
            f"--prompt-file '{path}' cannot be read ({type(exc).__name__}); pass a UTF-8 text file"
        ) from None
    if not text.strip():
        raise NearIDError(f"--prompt-file '{path}' is empty; pass the rubric text the judge should read")
    return text.strip()


def parse_score(answer: str) -> float:
    """The judge's 0-10 score in ``answer``, clipped to [0, 10]; NaN when no step finds one.

    Steps, first hit wins: the first JSON object's ``score``; the answer from its first ``{`` repaired
    by ``json_repair`` (a truncated or slightly malformed object); ``"score": <num>`` anywhere; the
    whole answer a bare number (``7``, ``7/10``)."""
    for step in (_from_json, _from_repaired_json, _from_score_field, _from_bare_number):
        value = step(answer)
        if value is not None and math.isfinite(value):
            return min(max(value, 0.0), SCALE)
    return math.nan


#: The keys the authors' parse looks for, in order; the first one present is taken.
AUTHORS_KEYS = ("score", "Score", "SCORE", "similarity", "Similarity")
_AUTHORS_SCORE = re.compile(r'"score"\s*:\s*([-+]?\d+(?:\.\d+)?)', re.IGNORECASE)


def parse_score_authors(answer: str) -> float:
    """The authors' parse (spec 12.10): strip (empty: NaN); repair the text with ``json_repair``; from
    the repaired object (a dict only) the first present key of :data:`AUTHORS_KEYS` through ``float()``
    (so ``true`` is 1 and a failure NaN); if still NaN, the case-insensitive ``"score": <num>`` regex on
    the repaired string, or on the text when repair gave nothing. Finite scores clipped to [0, 10]."""
    import json_repair

    text = answer.strip()
    if not text:
        return math.nan
    repaired = json_repair.repair_json(text)
    try:
        value = json.loads(repaired) if repaired else None
    except ValueError:
        value = None
    score = math.nan
    if isinstance(value, dict):
        key = next((k for k in AUTHORS_KEYS if k in value), None)
        if key is not None:
            try:
                score = float(value[key])
            except (TypeError, ValueError):
                score = math.nan
    if math.isnan(score):
        match = _AUTHORS_SCORE.search(repaired or text)
        score = float(match.group(1)) if match else math.nan
    return score if math.isnan(score) else min(max(score, 0.0), SCALE)


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _BARE_NUMBER.fullmatch(value)
        return float(match.group(1)) if match else None
    return None


def _from_json(answer: str) -> float | None:
    start = answer.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(answer, start)
    except ValueError:
        return None
    return _number(value.get("score")) if isinstance(value, dict) else None


def _from_repaired_json(answer: str) -> float | None:
    import json_repair

    start = answer.find("{")
    if start < 0:
        return None
    try:
        value = json_repair.loads(answer[start:])
    except Exception:  # json_repair gives up in its own ways; the next steps still run
        return None
    if isinstance(value, list):  # several objects: the first
        value = next((item for item in value if isinstance(item, dict)), None)
    return _number(value.get("score")) if isinstance(value, dict) else None


def _from_score_field(answer: str) -> float | None:
    match = _SCORE_FIELD.search(answer)
    return float(match.group(1)) if match else None


def _from_bare_number(answer: str) -> float | None:
    match = _BARE_NUMBER.fullmatch(answer)
    return float(match.group(1)) if match else None


#: ``--judge-parser``: name -> parse function (answer text -> 0-10 score or NaN).
PARSERS = {"authors": parse_score_authors, "lenient": parse_score}


#: Qwen3-VL's chat layout for what a judge sends (a user turn of images and text, no system turn):
#: ``<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>...text<|im_end|>\n<|im_start|>assistant\n``.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


__all__ = [
    "ANSWER_PREFIX",
    "AUTHORS_KEYS",
    "CHAT_TEMPLATE",
    "PARSERS",
    "RUBRIC",
    "SCALE",
    "parse_score",
    "parse_score_authors",
    "read_prompt_file",
]
