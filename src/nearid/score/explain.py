"""``nearid explain``: identity maps as pictures, for one pair or a batch (a pairs CSV or a folder pair),
as a library call (:func:`run_explain` with an :class:`ExplainConfig`).

The batch form pairs images by ``nearid score``'s rules and checks them the same way (every bad input
listed in one line before the model loads); masks come from ``--masks R M`` (one pair; the batch
form reads ``mask_folder`` in the layout ``nearid score`` reads, from Python). The maps are :func:`nearid.explain`'s; the
picture is :mod:`nearid.report.explain_figure`'s; a calibrated threshold puts the verdict in the title.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nearid.images.options import ReadOptions
from nearid.io.errors import NearIDError
from nearid.models.options import LoadOptions

OWNER = "explain"


@dataclass(frozen=True)
class ExplainConfig:
    """What ``nearid explain`` was asked: ``refs`` (an image, a pairs CSV or a folder), ``gens`` (an image
    or a folder; none with a CSV), ``out`` (a PNG for one pair, a folder for a batch)."""

    refs: str
    gens: str | None
    out: str
    model: str = "nearid"
    masks: tuple[str, str] | None = None
    mask_folder: str | None = None
    method: str = "tokens"
    threshold: str | None = None
    calibration: str | None = None
    read: ReadOptions = field(default_factory=ReadOptions)
    load: LoadOptions = field(default_factory=LoadOptions)


def _is_single(config: ExplainConfig) -> bool:
    return config.gens is not None and Path(config.refs).is_file() and Path(config.gens).is_file()


def _pairs(config: ExplainConfig):
    """[(reference, generated, (ref mask, gen mask), picture name)], checked before any model loads."""
    from nearid.images.decode import load_image

    if _is_single(config):
        if config.mask_folder:
            raise NearIDError("a mask folder is for the batch form; for one pair give --masks REF_MASK GEN_MASK")
        for path in (config.refs, config.gens, *(config.masks or ())):
            load_image(path, draft=64)  # a missing or corrupt file: its one-line error now
        return [(Path(config.refs), Path(config.gens), tuple(config.masks or (None, None)), Path(config.out))]
    if config.masks:
        raise NearIDError(
            "--masks REF_MASK GEN_MASK is for one pair; a batch reads no masks (from Python: mask_folder)"
        )
    from nearid.score.inputs import check_plan, prepare
    from nearid.score.plan import plan_pairs

    pairing = "csv" if config.gens is None else "paths"
    plan = prepare(plan_pairs(config.refs, config.gens, pairing), config.mask_folder)
    check_plan(plan)
    out = Path(config.out)
    return [
        (
            pair.reference,
            pair.generated,
            (plan.mask_of.get((pair.reference, "refs")), plan.mask_of.get((pair.generated, "gens"))),
            out / f"{index:04d}-{pair.generated.stem}.png",
        )
        for index, pair in enumerate(plan.pairs)
    ]


def _check_outputs(config: ExplainConfig, pairs) -> None:
    from nearid.io.outputs import check_outputs
    from nearid.io.ownership import owned_by

    inputs = [config.refs, config.gens, config.mask_folder, *(config.masks or ())]
    inputs += [str(p) for ref, gen, masks, _ in pairs for p in (ref, gen, *masks) if p is not None]
    if _is_single(config):
        if Path(config.out).suffix.lower() != ".png":
            raise NearIDError(f"--out {config.out}: one pair writes one picture; give a .png file name")
        check_outputs([config.out], inputs)
        return
    out = Path(config.out)
    check_outputs([], inputs, folders=[out])
    if out.exists() and any(out.iterdir()) and owned_by(out) != OWNER:
        raise NearIDError(f"--out {out}: a folder with other contents; give a new or empty folder for the pictures")


def run_explain(config: ExplainConfig, log: Callable[[str], None] = print) -> list[Path]:
    """Check everything, load the model once, explain each pair (each image read once) and write one
    picture per pair. Returns the pictures written."""
    from nearid.judges.loading import load_metric
    from nearid.models.explain import check_explainable, explain_pairs
    from nearid.models.specs import parse_encoder_spec
    from nearid.report.explain_figure import figure_png, verdict_text, write_figure
    from nearid.score.thresholds import resolve_threshold

    family = parse_encoder_spec(config.model).family
    if family in ("vlm", "histogram"):
        raise NearIDError(
            f"--model {config.model}: has no patch tokens to explain (a {family} metric); use a ViT encoder"
        )
    pairs = _pairs(config)
    _check_outputs(config, pairs)
    if config.threshold == "calibrated" and config.calibration is None:
        resolve_threshold(config.threshold, None, None)  # its one-line error, before the model loads
    encoder = load_metric(config.model, config.load)
    check_explainable(encoder, config.method)
    threshold = resolve_threshold(config.threshold, encoder, config.calibration)
    if not _is_single(config):
        from nearid.io.ownership import create_owned, owned_by

        if owned_by(config.out) != OWNER:
            create_owned(config.out, OWNER)
    from nearid.images.decode import load_masked

    explanations = explain_pairs(
        encoder,
        [(ref, gen) for ref, gen, _, _ in pairs],
        [masks for _, _, masks, _ in pairs],
        method=config.method,
        batch_size=config.read.batch_size,
    )
    written = []
    for (ref, gen, masks, picture), result in zip(pairs, explanations):
        title = f"{encoder.name}: {verdict_text(result.similarity, threshold)}"
        png = figure_png(
            load_masked(ref, masks[0]),
            load_masked(gen, masks[1]),
            result.reference_map,
            result.generated_map,
            title,
            names=(f"reference: {ref.name}", f"generated: {gen.name}"),
        )
        written.append(write_figure(picture, png))
    log(f"wrote {len(written)} picture{'s' if len(written) != 1 else ''} to {config.out}")
    return written


def explain_example(mtg: str | os.PathLike, spec: str, out: str | os.PathLike) -> Path:
    """The picture ``make demo`` ends with: ``spec``'s map of the first MTG test sample (an object and the
    same object with one part re-drawn), written to ``out``."""
    from nearid.data.mtg import load_mtg
    from nearid.images.decode import load_image
    from nearid.models.encoders import load_encoder
    from nearid.models.explain import explain
    from nearid.report.explain_figure import figure_png, verdict_text, write_figure

    sample = load_mtg(mtg, "test")[0]
    encoder = load_encoder(spec, device="cpu")
    original, edited = load_image(sample.originals[0]), load_image(sample.edited[0])
    result = explain(encoder, original, edited)
    title = f"{spec}: {verdict_text(result.similarity, None)} (one part re-drawn)"
    png = figure_png(
        original, edited, result.reference_map, result.generated_map, title, names=("original", "part edited")
    )
    return write_figure(out, png)


def explain_out(out: str | os.PathLike) -> Path:
    """Where ``nearid score --explain K`` keeps its maps: ``<out>.explain.json``, named from the whole
    ``--out`` as every side file is (``nearid report`` finds it beside the pairs file)."""
    from nearid.report.explain_figure import EXPLAIN_SIDE_FILE
    from nearid.score.write import side_file

    return side_file(out, EXPLAIN_SIDE_FILE)


def write_score_explanations(
    metrics: list[tuple[str, object]],
    result,
    out: str | os.PathLike,
    count: int,
    *,
    mask_cleaning: str = "authors",
    mask_dilate: int = 0,
    batch_size: int = 8,
    log: Callable[[str], None] = print,
) -> Path | None:
    """Maps of the ``count`` lowest-scoring pairs of the first encoder metric into :func:`explain_out`
    (atomic JSON: patch maps and each image's geometry, so a report draws them without a model). The
    masks are the ones the scores were computed with (the same cleaning)."""
    import dataclasses
    import json
    import time

    import numpy as np

    from nearid.images.mask_cleaning import evaluation_mask
    from nearid.io.atomic import write_text_atomic
    from nearid.models.explain import explain_pairs
    from nearid.models.pair_scorers import is_pair_scorer

    chosen = [(spec, m) for spec, m in metrics if not is_pair_scorer(m) and getattr(m, "pixel_split", None) is not None]
    if not chosen:
        log("--explain: no metric of this run has patch tokens to explain; no maps written")
        return None
    spec, encoder = chosen[0]
    similarities = next(m.similarities for m in result.metrics if m.spec == spec)
    finite = np.flatnonzero(np.isfinite(similarities))
    lowest = finite[np.argsort(similarities[finite], kind="stable")[:count]]
    plan = result.plan
    pairs = [(plan.pairs[i].reference, plan.pairs[i].generated) for i in lowest]
    masks = [
        tuple(
            evaluation_mask(plan.mask_of.get((image, side)), mask_cleaning, mask_dilate)
            for image, side in ((ref, "refs"), (gen, "gens"))
        )
        for ref, gen in pairs
    ]
    start = time.perf_counter()
    explanations = explain_pairs(encoder, pairs, masks, batch_size=batch_size)
    seconds = time.perf_counter() - start
    entries = []
    for index, (ref, gen), explanation in zip(lowest, pairs, explanations):
        entries.append(
            {
                "pair": int(index),
                "reference": str(Path(ref).resolve()),
                "generated": str(Path(gen).resolve()),
                "similarity": explanation.similarity,
                "reference_patches": explanation.reference_patches.tolist(),
                "generated_patches": explanation.generated_patches.tolist(),
                "reference_geometry": dataclasses.asdict(explanation.reference_geometry),
                "generated_geometry": dataclasses.asdict(explanation.generated_geometry),
            }
        )
    path = explain_out(out)
    payload = {"kind": "score-explanations", "model": spec, "method": "tokens", "seconds": seconds, "pairs": entries}
    write_text_atomic(path, json.dumps(payload))
    log(f"explained the {len(entries)} lowest-scoring pairs in {seconds:.2f} s: {path}")
    return path


__all__ = ["ExplainConfig", "explain_example", "explain_out", "run_explain", "write_score_explanations"]
