"""DreamBench++ metric-to-human alignment (M-H, spec section 6.5).

A concept-preservation metric is useful when it ranks generated images the way people do. DreamBench++
had two independent groups of humans rate the same 1,350 (reference, generated) pairs per method, so a
metric's score per method is the mean of its Pearson r against each group, and Pearson(group1, group2)
is the ceiling no metric can be expected to beat. Methods differ a lot in difficulty, so the figure
for a category averages the per-method correlations on Fisher's z scale rather than pooling items.

Items are paired by *normalised key*, never by position: the score files of different scorers list
the same pairs in different orders and spell a few keys differently (see :func:`normalise_key`).
"""

from __future__ import annotations

import glob
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from nearid.eval.metrics import fisher_z_mean, pearson
from nearid.io.errors import NearIDError

CATEGORIES = ("object", "live_subject_animal", "live_subject_human", "style")
METHODS = (
    "textual_inversion_sd",
    "dreambooth_sd",
    "dreambooth_lora_sdxl",
    "blip_diffusion",
    "emu2",
    "ip_adapter_plus_vit_h_sdxl",
    "ip_adapter_vit_g_sdxl",
)
HUMAN = "human"
CLIP = 0.9999  # DreamBench++'s clip before atanh; MTG uses 0.999

# Concept spellings that differ between score files for the same reference image.
CONCEPT_ALIASES = {"rubik's_cube": "magic_cube", "rubik’s_cube": "magic_cube", "rubiks_cube": "magic_cube"}

_HUMAN_DIR = Path("data_human_rating") / "merged_data"
_HUMAN_GROUPS = ("group1", "group2")
_SCORER_DIR = re.compile(r"^data_(?P<name>.+)_rating$")
# DreamBench++ keeps several aspects per judge (concept preservation, prompt following); M-H uses this one.
_ASPECT_SUBDIR = "concept_preservation_full"
# `<category>_<nn>_<concept>-<prompt>`, then the metric files' per-image index `_<n>`.
_IMAGE_INDEX = re.compile(r"(-\d+)_\d+$")
_KEY = re.compile(r"^(?P<category>" + "|".join(CATEGORIES) + r")_(?P<concept_id>\d+)_(?P<concept>.+)-(?P<prompt>\d+)$")
_CATEGORY_FOLDER = re.compile(r"^(?:" + "|".join(CATEGORIES) + r")-(?P<rest>.+)$")
_EXAMPLES = 5  # unpaired keys quoted in ``_details``; the counts are always complete


def normalise_key(key: str) -> str:
    """The spelling shared by human and metric files, so that one item pairs up across scorers.

    Metric files add the generated image's index (``..-3_0``) and the emu2 metric files name concept
    20 ``rubik's_cube`` where every other file says ``magic_cube``. ``nearid score`` keys images by
    relative path (``/`` -> ``-``), so images kept in category subfolders get the folder in front
    (``object-object_00_mug-0``); that prefix is dropped when the rest is a whole key.
    """
    key = _IMAGE_INDEX.sub(r"\1", key.strip())
    folder = _CATEGORY_FOLDER.match(key)
    if folder and _KEY.match(folder["rest"]):  # `nearid score` keys of images kept in category subfolders
        key = folder["rest"]
    match = _KEY.match(key)
    if match is None:
        return key
    concept = CONCEPT_ALIASES.get(match["concept"], match["concept"])
    return f"{match['category']}_{match['concept_id']}_{concept}-{match['prompt']}"


def category_of(key: str) -> str | None:
    match = _KEY.match(key)
    return match["category"] if match else None


@dataclass
class ScoreFile:
    """One method's scores by normalised key; ``merged`` counts raw keys that collapsed onto another
    (several images of one prompt), whose scores are averaged rather than one silently winning."""

    path: Path
    scores: dict[str, float]
    merged: int = 0


@dataclass
class Ratings:
    """Human groups and scorers, each ``{method: ScoreFile}``; methods a scorer lacks are simply absent."""

    root: Path
    human: dict[str, tuple[ScoreFile, ScoreFile]]
    scorers: dict[str, dict[str, ScoreFile]] = field(default_factory=dict)
    human_incomplete: list[str] = field(default_factory=list)  # methods rated by only one group
    skipped: list[str] = field(default_factory=list)  # scorer folders without any method file


class _Pairs(list):
    """A JSON object's (key, value) pairs in file order, so repeated keys are seen, not overwritten."""


def read_scores(path: Path) -> ScoreFile:
    """A ``{key: number}`` JSON file; anything else is a user error, because a wrong file would
    otherwise just correlate as NaN and vanish from the average."""
    fix = "expected a JSON object mapping '<category>_<nn>_<concept>-<prompt>' keys to numbers; regenerate it or move it out of the folder"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_Pairs)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NearIDError(f"{path}: not a readable JSON file ({_first_line(exc)}); {fix}") from None
    if not isinstance(raw, _Pairs):
        kind = "array" if isinstance(raw, list) else type(raw).__name__
        raise NearIDError(f"{path}: top level is a JSON {kind}, not an object; {fix}")
    sums: dict[str, list[float]] = {}
    for key, value in raw:
        if value is None:
            value = math.nan  # an unscored item: Pearson skips it
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NearIDError(f"{path}: key {key!r} has value {value!r}, not a number; {fix}")
        sums.setdefault(normalise_key(key), []).append(float(value))
    scores = {key: sum(values) / len(values) for key, values in sums.items()}
    return ScoreFile(path, scores, merged=len(raw) - len(scores))


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def read_method_folder(folder: Path, suffix: str = "", *, score_outputs: bool = False) -> dict[str, ScoreFile]:
    """``<method><suffix>.json`` for each known method present in ``folder``; with ``score_outputs``
    also what ``nearid score --out <method>.csv`` writes there (``<method>.csv.dbpp.json``), so a
    score folder is read as it is. Two files for one method are refused rather than one picked."""
    found = {}
    for m in METHODS:
        candidates = [folder / f"{m}{suffix}.json"] if (folder / f"{m}{suffix}.json").is_file() else []
        if score_outputs:
            candidates += sorted(p for p in folder.glob(f"{glob.escape(m)}.*dbpp.json") if p.is_file())
        if len(candidates) > 1:
            raise NearIDError(
                f"{folder}: {len(candidates)} score files for {m} ({', '.join(p.name for p in candidates)}); keep one"
            )
        if candidates:
            found[m] = read_scores(candidates[0])
    return found


def scorer_name(folder: Path) -> str:
    match = _SCORER_DIR.match(folder.name)
    return match["name"] if match else folder.name


def load_ratings(ratings_dir) -> Ratings:
    """Every score file under DreamBench++'s ``ratings/`` folder, keyed by normalised item key."""
    root = Path(ratings_dir)
    if not root.is_dir():
        raise NearIDError(
            f"DreamBench++ ratings folder not found: {root}; pass the dreambench_plus/ratings folder "
            "(the one holding data_human_rating/ and data_<scorer>_rating/)"
        )
    ratings = Ratings(root, human={})
    _load_human(ratings)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _SCORER_DIR.match(p.name)):
        name = scorer_name(folder)
        if name == HUMAN:
            continue
        aspect = folder / _ASPECT_SUBDIR
        files = read_method_folder(aspect if aspect.is_dir() else folder)
        if files:
            ratings.scorers[name] = files
        else:
            ratings.skipped.append(folder.name)
    return ratings


def _load_human(ratings: Ratings) -> None:
    folders = [ratings.root / _HUMAN_DIR / group for group in _HUMAN_GROUPS]
    groups = [read_method_folder(folder, "-cp") for folder in folders]
    both = [m for m in METHODS if m in groups[0] and m in groups[1]]
    if not both:
        raise NearIDError(
            f"no human ratings in {folders[0]} and {folders[1]}: each group needs <method>-cp.json files "
            f"(e.g. {METHODS[0]}-cp.json) for the same methods; copy DreamBench++'s data_human_rating/merged_data there"
        )
    ratings.human = {m: (groups[0][m], groups[1][m]) for m in both}
    ratings.human_incomplete = [m for m in METHODS if (m in groups[0]) != (m in groups[1])]


def add_scorer(ratings: Ratings, scores_dir, name: str | None = None) -> str:
    """A user's own metric, in the layout of a ``data_<scorer>_rating`` folder, as one more scorer."""
    folder = Path(scores_dir)
    if not folder.is_dir():
        raise NearIDError(f"scores folder not found: {folder}; pass the folder holding your <method>.json files")
    name = name or scorer_name(folder)
    if name == HUMAN or name in ratings.scorers:
        raise NearIDError(f"scorer name {name!r} for {folder} is already taken by the ratings; pass another name")
    files = read_method_folder(folder, score_outputs=True)
    if not files:
        raise NearIDError(
            f"{folder} holds no method score files: expected <method>.json (or the <method>.csv.dbpp.json of "
            f"`nearid score --out <method>.csv`) for some of {', '.join(METHODS)} "
            "(a {'<key>': score} object each, as in data_<scorer>_rating/)"
        )
    ratings.scorers[name] = files
    return name


def method_correlations(group1: dict, group2: dict, metric: dict | None = None) -> dict:
    """Per category: n paired items and r1, r2 against each human group (or, without ``metric``,
    Pearson between the groups). Only items present in every file take part."""
    shared = {category: [] for category in CATEGORIES}
    for k in group1:
        if k in group2 and (metric is None or k in metric) and category_of(k) in shared:
            shared[category_of(k)].append(k)
    rows = {}
    for category, keys in shared.items():
        h1, h2 = [group1[k] for k in keys], [group2[k] for k in keys]
        if metric is None:
            rows[category] = {"n": len(keys), "r": pearson(h1, h2)}
        else:
            m = [metric[k] for k in keys]
            r1, r2 = pearson(h1, m), pearson(h2, m)
            rows[category] = {"n": len(keys), "r1": r1, "r2": r2, "r": (r1 + r2) / 2}
    return rows


def unpaired(human: dict, metric: dict) -> dict:
    """Keys that could not be paired, counted both ways so a misspelt concept cannot hide."""
    metric_only = sorted(k for k in metric if k not in human or category_of(k) is None)
    human_only = sorted(k for k in human if k not in metric)
    return {
        "metric_only": len(metric_only),
        "human_only": len(human_only),
        "examples": metric_only[:_EXAMPLES] + human_only[:_EXAMPLES],
    }


def alignment(ratings_dir, scores_dir=None, name: str | None = None) -> dict:
    """M-H per category and over all categories for every scorer and the human ceiling.

    The main keys hold ``{scorer: r}`` only; ``_details`` keeps what explains each figure (per-method
    r1/r2, paired counts, unpaired keys, missing methods).
    """
    ratings = load_ratings(ratings_dir)
    added = add_scorer(ratings, scores_dir, name) if scores_dir is not None else None
    methods = list(ratings.human)
    details = {
        "methods": methods,
        "human_incomplete_methods": ratings.human_incomplete,
        "skipped_folders": ratings.skipped,
        "scorers": {},
    }
    per_method = {}  # scorer -> method -> category -> row
    for scorer, files in ratings.scorers.items():
        present = [m for m in methods if m in files]
        per_method[scorer] = {}
        info = {"missing_methods": [m for m in methods if m not in files], "methods": {}}
        for m in present:
            group1, group2 = (f.scores for f in ratings.human[m])
            rows = method_correlations(group1, group2, files[m].scores)
            per_method[scorer][m] = rows
            info["methods"][m] = {
                "file": str(files[m].path),
                "n_paired": sum(row["n"] for row in rows.values()),
                "merged_keys": files[m].merged,
                "unpaired": unpaired(group1, files[m].scores),
                "categories": rows,
            }
        details["scorers"][scorer] = info
    per_method[HUMAN] = {m: method_correlations(*(f.scores for f in ratings.human[m])) for m in methods}
    details["scorers"][HUMAN] = {
        "missing_methods": [],
        "methods": {m: {"categories": per_method[HUMAN][m]} for m in methods},
    }
    if added is not None:
        _check_paired(details, added, scores_dir)
    result = aggregate(per_method)
    result["_details"] = details
    return result


def _check_paired(details: dict, name: str, scores_dir) -> None:
    """Count the added scorer's keys that paired with human ratings; none at all is an error, because
    the table would only show '-' for it and the run would look fine."""
    info = details["scorers"][name]
    paired = sum(m["n_paired"] for m in info["methods"].values())
    total = sum(m["n_paired"] + m["unpaired"]["metric_only"] for m in info["methods"].values())
    info["keys_paired"], info["keys_total"] = paired, total
    if paired == 0:
        examples = [e for m in info["methods"].values() for e in m["unpaired"]["examples"]][:2]
        raise NearIDError(
            f"{scores_dir}: no key of {name}'s scores paired with the human ratings (e.g. "
            f"{', '.join(map(repr, examples))}); keys must read <category>_<nn>_<concept>-<prompt>, as "
            "`nearid score` writes for the DreamBench++ samples layout"
        )


def aggregate(per_method: dict) -> dict:
    """Fisher-z mean over methods per category, then over the four categories for ``all``."""
    result = {category: {} for category in (*CATEGORIES, "all")}
    for scorer, by_method in per_method.items():
        for category in CATEGORIES:
            result[category][scorer] = fisher_z_mean([rows[category]["r"] for rows in by_method.values()], clip=CLIP)
        result["all"][scorer] = fisher_z_mean([result[c][scorer] for c in CATEGORIES], clip=CLIP)
    return result


_COLUMNS = (
    ("object", "object"),
    ("live_subject_animal", "animal"),
    ("live_subject_human", "human-subj"),
    ("style", "style"),
    ("all", "all"),
)


def alignment_json(result: dict) -> dict:
    """``{category: {scorer: r}}`` of an :func:`alignment` result, ready for ``json.dumps``.

    ``_details`` is left out, and NaN (a category without items) becomes ``None``: JSON has no NaN,
    and ``json.dumps`` would otherwise write the non-standard ``NaN`` that strict parsers reject.
    """
    return {
        category: {scorer: None if isinstance(r, float) and math.isnan(r) else r for scorer, r in values.items()}
        for category, values in result.items()
        if not category.startswith("_")
    }


def format_table(result: dict) -> str:
    """Scorers best-first on object M-H (the paper's headline column), NaN last."""
    scorers = sorted(result["object"], key=lambda s: _sort_key(result["object"][s]))
    missing = {
        s: v["missing_methods"]
        for s, v in result.get("_details", {}).get("scorers", {}).items()
        if v["missing_methods"]
    }
    labels = {s: s + (" *" if s in missing else "") for s in scorers}
    width = max([len("scorer"), *map(len, labels.values())])
    lines = ["scorer".ljust(width) + "".join(f"{title:>12}" for _, title in _COLUMNS)]
    lines.append("-" * len(lines[0]))
    for s in scorers:
        lines.append(labels[s].ljust(width) + "".join(f"{_fmt(result[c].get(s)):>12}" for c, _ in _COLUMNS))
    n_methods = len(result.get("_details", {}).get("methods", METHODS))
    for s in scorers:
        if s in missing:
            lines.append(
                f"* {s}: averaged over {n_methods - len(missing[s])} of {n_methods} methods (missing: {', '.join(missing[s])})"
            )
    return "\n".join(lines)


def _sort_key(value) -> tuple:
    return (value is None or math.isnan(value), -(value or 0.0))


def _fmt(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"
