"""Bench presets: the paper's tables in one command (``nearid bench --preset table1 --out DIR``).

A preset is a documented configuration of ``nearid bench``, nothing more: the encoders, data, sources,
split, masks and MTG the paper's table was made with. Options given on the command line override a
preset's values (``--sources Flux`` runs Table 1's machinery on one source). After the run the preset's
published values (``published/table1.json``, package data, with the source of every number) are
printed and written beside ours with the difference (``<out>/<preset>.md``, ``.csv``).

* ``table1``: Table 1. The four encoders ``nearid`` (the authors' release), ``siglip2-map`` (frozen
  SigLIP2, its MAP head), ``clip`` (ViT-L/14), ``dinov2`` (ViT-L/14); the 7 fill sources on the test
  split of ``Aleksandar/NearID``, pooled; MTG test; full images.
* ``table7``: Table 7's foreground-only columns: the same, with the views' masks cleaned as the
  authors clean them (spec 12.2) and MTG's object masks raw, binarised, as they use them (12.10).

Both form trials as the authors do (``--trials authors``, :mod:`nearid.eval.trials`): with a
missing distractor their compacted lists pair a view with another background's distractor.

The paper's PA columns count one more trial per identity (the authors' table script; spec 12.1), so
they compare with our ``pa_published``; the comparison shows both of ours.

Hub data and models must be in the Hugging Face cache when offline; :func:`check_available` says which
one is missing, with the download command, before anything is loaded or embedded.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from nearid.data.schema import HEADLINE_SOURCES, HUB_MTG, HUB_POSITIVES
from nearid.io.atomic import write_text_atomic
from nearid.io.errors import NearIDError


class PresetError(NearIDError):
    """An unknown preset, or a preset's hub data or model that is not available offline."""


@dataclass(frozen=True)
class Preset:
    """The ``nearid bench`` settings of one of the paper's tables."""

    name: str
    description: str
    encoders: tuple[str, ...]
    data: str = HUB_POSITIVES
    sources: tuple[str, ...] = HEADLINE_SOURCES
    split: str = "test"
    masks: bool = False
    mask_cleaning: str = "authors"
    mtg: str | None = HUB_MTG
    mtg_split: str = "test"
    trials: str = "authors"  # the authors' trial formation, so ours and the published numbers are one procedure
    mtg_mask_cleaning: str = "none"  # MTG's object masks raw, as the authors use them
    published: str = ""  # the key of this table in published/table1.json

    def values(self) -> dict:
        """The bench settings (lists for tuples), as ``nearid bench``'s options name them."""
        return {name: list(v) if isinstance(v := getattr(self, name), tuple) else v for name in SETTINGS}


#: The bench settings a preset fixes; every other option keeps its ordinary default.
SETTINGS = (
    "encoders",
    "data",
    "sources",
    "split",
    "masks",
    "mask_cleaning",
    "mtg",
    "mtg_split",
    "trials",
    "mtg_mask_cleaning",
)


TABLE1_ENCODERS = ("nearid", "siglip2-map", "clip", "dinov2")
PRESETS = {
    "table1": Preset(
        "table1",
        "the paper's Table 1: 4 encoders, 7 fill sources (test split), MTG test, full images",
        TABLE1_ENCODERS,
        published="table1",
    ),
    "table7": Preset(
        "table7",
        "the paper's Table 7, foreground only: Table 1's run with the views' masks, cleaned as the authors clean them",
        TABLE1_ENCODERS,
        masks=True,
        published="table7",
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset '{name}'; use one of {', '.join(PRESETS)}") from None


def resolve(name: str, explicit: dict) -> dict:
    """The preset's settings with every explicit (not ``None``) option on top."""
    values = get_preset(name).values()
    values.update({k: v for k, v in explicit.items() if v is not None})
    return values


def published_values() -> dict:
    """``published/table1.json``: every published number the presets compare with, and its source."""
    return json.loads(resources.files("nearid.bench").joinpath("published/table1.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ offline, fail fast
def hub_ids(values: dict) -> list[tuple[str, str]]:
    """``(kind, repo id)`` of every hub dataset and model a run with ``values`` opens, in the order the
    run would open them (positives, each source, MTG, then the encoders' models)."""
    from nearid.data.nearid_bench import bench_locations
    from nearid.io.hub import looks_like_local_path
    from nearid.models.specs import parse_encoder_spec

    ids = []
    positives, sources = bench_locations(values["data"], values["sources"])
    for location in (positives, *sources.values(), values.get("mtg")):
        if location and not looks_like_local_path(location):
            ids.append(("dataset", location))
    for spec in values["encoders"]:
        parsed = parse_encoder_spec(spec)
        argument = parsed.argument
        if parsed.family in ("histogram", "tiny") or not argument or looks_like_local_path(argument):
            continue
        ids.append(("model", argument))
    return ids


def check_available(values: dict) -> None:
    """Offline (``HF_HUB_OFFLINE``), the first hub dataset or model of the run that is not in the
    Hugging Face cache is a one-line :class:`PresetError` with the download command, raised before
    anything is loaded. Online, nothing is checked: the run downloads what it needs."""
    from nearid.io.hub import offline

    if not offline():
        return
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    for kind, repo_id in hub_ids(values):
        try:
            snapshot_download(repo_id, repo_type="dataset" if kind == "dataset" else "model", local_files_only=True)
        except (LocalEntryNotFoundError, OSError, ValueError):
            flag = " --repo-type dataset" if kind == "dataset" else ""
            option = "--data/--sources/--mtg FOLDER" if kind == "dataset" else "--model FAMILY:FOLDER"
            raise PresetError(
                f"{kind} '{repo_id}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set: run "
                f"`hf download {repo_id}{flag}` where there is network (then unset HF_HUB_OFFLINE or copy the "
                f"cache here), or pass {option}"
            ) from None


# ------------------------------------------------------------------------------ protocol
#: settings outside a preset that change the numbers too: their value in the published protocol
PROTOCOL_EXTRAS = {"split_file": None, "mask_dilate": 0, "fast_decode": False}


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def protocol_differences(preset: Preset, values: dict) -> list[str]:
    """How a run's settings (``values``: :data:`SETTINGS` and :data:`PROTOCOL_EXTRAS`) differ from the
    published protocol of ``preset`` (``name: ours instead of theirs``); ``[]``: it is that protocol and
    its numbers may be set beside the published ones. The models are not compared here: a model the
    table does not hold is left out of the comparison (:func:`compared_encoders`), not the whole run."""
    theirs = {**preset.values(), **PROTOCOL_EXTRAS}
    found = []
    for name, published in theirs.items():
        if name == "encoders" or (name == "mask_cleaning" and not preset.masks):
            continue
        ours = values.get(name, published)
        if name == "sources":
            ours, published = list(ours or []), list(published)
        if ours != published:
            found.append(f"{name}: {_shown(ours)} instead of {_shown(published)}")
    return found


def compared_encoders(preset: Preset, encoders) -> list[str]:
    """The specs of ``encoders`` that are the table's models exactly as the preset names them (another
    checkpoint of a family, ``nearid:./mine``, is another model: its numbers are not the paper's)."""
    return [spec for spec in encoders if spec in preset.encoders]


# ------------------------------------------------------------------------------ comparison
METRICS = (  # (label, our value from (group score, mtg), published key)
    ("SSR", lambda g, m: g.ssr, "ssr"),
    ("PA (definition)", lambda g, m: g.pa, "pa"),
    ("PA (as published)", lambda g, m: g.pa_published, "pa"),
    ("MTG M-O", lambda g, m: m.m_o if m else math.nan, "mtg_m_o"),
    ("MTG M-Opair", lambda g, m: m.m_opair if m else math.nan, "mtg_m_opair"),
    ("MTG SSR", lambda g, m: m.ssr if m else math.nan, "mtg_ssr"),
    ("MTG PA", lambda g, m: m.pa if m else math.nan, "mtg_pa"),
)


def comparison_rows(results, preset: Preset, specs=None) -> list[dict]:
    """One row per (encoder, metric): ours, the published value and ours - published (NaN: none).
    ``specs``: only the entries of these specs (``None``: every entry)."""
    from nearid.models.specs import parse_encoder_spec
    from nearid.report.tables import PRIMARY_GROUPS

    table = published_values()["tables"][preset.published]
    rows = []
    for name, result in results.encoders.items():
        if specs is not None and result.spec not in specs:
            continue
        family = parse_encoder_spec(result.spec).family
        paper = table["rows"].get(family, {})
        group = next((result.nearid.groups[g].score for g in PRIMARY_GROUPS if g in result.nearid.groups), None)
        if group is None:
            continue
        for label, ours_of, key in METRICS:
            ours = float(ours_of(group, result.mtg))
            theirs = paper.get(key)
            theirs = math.nan if theirs is None else float(theirs)
            rows.append(
                {
                    "encoder": name,
                    "metric": label,
                    "ours": ours,
                    "published": theirs,
                    "difference": ours - theirs,
                    "source": paper.get("source", ""),
                }
            )
    return rows


def _fmt(value: float, metric: str) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.3f}" if "M-O" in metric else f"{value:.2f}"


def comparison_markdown(results, preset: Preset, specs=None) -> str:
    rows = comparison_rows(results, preset, specs)
    source = published_values()["tables"][preset.published]["source"]
    lines = [
        f"Preset {preset.name}: {preset.description}.",
        f"Published: {source}.",
        (
            "The paper's PA counts one more trial per identity (its mean margin > 0): compare it with "
            "'PA (as published)'."
        ),
        "",
        "| encoder | metric | ours | published | ours - published |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        m = row["metric"]
        diff = row["difference"]
        diff_text = "–" if math.isnan(diff) else (f"{diff:+.3f}" if "M-O" in m else f"{diff:+.2f}")
        lines.append(f"| {row['encoder']} | {m} | {_fmt(row['ours'], m)} | {_fmt(row['published'], m)} | {diff_text} |")
    return "\n".join(lines) + "\n"


def comparison_csv(results, preset: Preset, specs=None) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["encoder", "metric", "ours", "published", "difference", "source"])
    writer.writeheader()
    for row in comparison_rows(results, preset, specs):
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_comparison(results, preset: Preset, out: str | os.PathLike, specs=None) -> Path:
    """``<out>/<preset>.md`` and ``.csv``; returns the Markdown file."""
    out = Path(out)
    write_text_atomic(out / f"{preset.name}.csv", comparison_csv(results, preset, specs))
    path = out / f"{preset.name}.md"
    write_text_atomic(path, comparison_markdown(results, preset, specs))
    return path


def compare_run(results, preset: Preset, values: dict, out: str | os.PathLike, say=print) -> Path | None:
    """After ``nearid bench --preset``: set the run's numbers beside the published ones only when the run
    is the published protocol (:func:`protocol_differences`), for the table's own models; otherwise say
    in one line why there is no comparison. Returns the comparison file written, if any."""
    differences = protocol_differences(preset, values)
    compared = compared_encoders(preset, values["encoders"])
    others = [spec for spec in values["encoders"] if spec not in compared]
    if differences or not compared:
        why = differences + ([f"models not in the table: {', '.join(others)}"] if others else [])
        say(f"no comparison with the published {preset.name} values: this run is not its protocol ({'; '.join(why)})")
        return None
    say("\n" + comparison_markdown(results, preset, compared))
    if others:
        say(f"not compared (not the table's models): {', '.join(others)}")
    return write_comparison(results, preset, out, compared)


__all__ = [
    "PRESETS",
    "Preset",
    "PresetError",
    "check_available",
    "compare_run",
    "compared_encoders",
    "comparison_csv",
    "comparison_markdown",
    "comparison_rows",
    "get_preset",
    "hub_ids",
    "protocol_differences",
    "published_values",
    "resolve",
    "write_comparison",
]
