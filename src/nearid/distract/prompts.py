"""Which object to inpaint: a description of a similar but different instance, per identity.

Default: retrieved from the *other* identities' descriptions in the same dataset by TF-IDF cosine
similarity (scikit-learn), inside a band — above ``low`` so the distractor is a hard negative (same
kind of thing), below ``high`` so it is not a re-description of the same object. Never the identity
itself, an identical description, or another row of the same 3D asset (``objaverse_id``). Within the
band the most similar candidate wins; if nothing falls in the band, the candidate closest to it is
taken and the choice is marked ``outside band``.

Alternatives: a prompts file (``{"<id>": "prompt"}`` or ``{"<id>": ["view 1", "view 2", "view 3"]}``)
and a template applied to whatever was chosen (``"a photo of {description}"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nearid.io.errors import NearIDError


@dataclass(frozen=True)
class PromptChoice:
    prompts: tuple[str | None, ...]  # one per view slot
    source: str  # "retrieved", "outside band", "file"
    donor_row: int | None = None  # the row whose description was retrieved
    similarity: float | None = None


def description_similarity(descriptions: Sequence[str]) -> np.ndarray:
    """Cosine similarity of TF-IDF vectors (word 1-2 grams) of every pair of descriptions."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [d or "" for d in descriptions]
    if not any(t.strip() for t in texts):
        return np.zeros((len(texts), len(texts)))
    matrix = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b").fit_transform(texts)
    return (matrix @ matrix.T).toarray()  # rows are L2-normalised by the vectorizer


def retrieve(
    descriptions: Sequence[str],
    assets: Sequence[str | None],
    rows: Sequence[int],
    *,
    band: tuple[float, float] = (0.1, 0.8),
) -> dict[int, tuple[int | None, float | None, bool]]:
    """For each of ``rows``: (donor row, similarity, inside band). ``None`` donor when no other row qualifies."""
    low, high = band
    if not 0.0 <= low <= high <= 1.0:
        raise NearIDError(f"--band {low} {high}: need 0 <= low <= high <= 1")
    sims = description_similarity(descriptions)
    texts = [(d or "").strip().lower() for d in descriptions]
    chosen = {}
    for row in rows:
        allowed = np.ones(len(texts), dtype=bool)
        allowed[row] = False
        allowed &= np.array([t != texts[row] and bool(t) for t in texts])
        if assets[row]:
            allowed &= np.array([a != assets[row] for a in assets])
        if not allowed.any():
            chosen[row] = (None, None, False)
            continue
        s = np.where(allowed, sims[row], np.nan)
        inside = allowed & (s >= low) & (s <= high)
        if inside.any():
            donor = int(np.nanargmax(np.where(inside, s, np.nan)))
        else:  # nothing in the band: the candidate nearest to it
            gap = np.where(s < low, low - s, s - high)
            donor = int(np.nanargmin(np.where(allowed, gap, np.nan)))
        chosen[row] = (donor, float(sims[row, donor]), bool(inside.any()))
    return chosen


def read_prompts_file(path: str | os.PathLike) -> dict[str, list[str] | str]:
    """``{"<id>": "prompt"}`` or ``{"<id>": ["view 1", "view 2", ...]}`` (JSON; ids as strings)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NearIDError(f"--prompts {path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise NearIDError(f"--prompts {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, (str, list)) for v in data.values()):
        raise NearIDError(f'--prompts {path}: must be a JSON object {{"<id>": "prompt" or ["view 1", "view 2"]}}')
    return {str(k): v for k, v in data.items()}


def apply_template(template: str, description: str, category: str) -> str:
    try:
        return template.format(description=description, category=category)
    except (KeyError, IndexError) as exc:
        raise NearIDError(
            f"--template '{template}': unknown field {exc}; use {{description}} and {{category}}"
        ) from None


def choose_prompts(
    ids: Sequence,
    descriptions: Sequence[str],
    categories: Sequence[str],
    assets: Sequence[str | None],
    slots: dict[int, list[int]],
    *,
    band: tuple[float, float] = (0.1, 0.8),
    template: str = "{description}",
    prompts_file: str | os.PathLike | None = None,
) -> dict[int, PromptChoice]:
    """A :class:`PromptChoice` for every row in ``slots`` (row -> its view slots)."""
    choices: dict[int, PromptChoice] = {}
    if prompts_file is not None:
        given = read_prompts_file(prompts_file)
        for row, row_slots in slots.items():
            key = str(ids[row])
            if key not in given:
                raise NearIDError(f"--prompts {prompts_file}: no prompt for id {key}; add it or drop --prompts")
            value = given[key]
            per_view = [value] * 3 if isinstance(value, str) else list(value) + [None] * (3 - len(value))
            for j in row_slots:
                if not per_view[j]:
                    raise NearIDError(f"--prompts {prompts_file}: id {key} has no prompt for view {j + 1}")
            prompts = tuple(
                apply_template(template, per_view[j], categories[row] or "") if j in row_slots else None
                for j in range(3)
            )
            choices[row] = PromptChoice(prompts, "file")
        return choices
    retrieved = retrieve(descriptions, assets, list(slots), band=band)
    for row, row_slots in slots.items():
        donor, similarity, inside = retrieved[row]
        if donor is None:
            raise NearIDError(
                f"row {row} (id {ids[row]}): no other identity with a different description to retrieve a distractor "
                "from; give prompts with --prompts FILE"
            )
        prompt = apply_template(template, descriptions[donor] or "", categories[donor] or "")
        choices[row] = PromptChoice(
            tuple(prompt if j in row_slots else None for j in range(3)),
            "retrieved" if inside else "outside band",
            donor,
            similarity,
        )
    return choices
