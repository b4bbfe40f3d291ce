"""Pure evaluation: plan the images a benchmark needs, fill similarity tables, score them.

:func:`plan_images` walks the benchmark once and lists each unique (image, mask) once, for every
source and for MTG, with index arrays saying which row of the embedding matrix is which view or
distractor; the same plan serves every encoder. Given that matrix (float64, one row per planned key),
:func:`fill_tables` fills each source's table with one batched matrix product, and
:func:`score_tables` turns tables into results (per source, the paper's source groups pooled by
:meth:`~nearid.eval.metrics.DiscriminationScore.pool`, the calibrated threshold, MTG). Nothing here knows
about processes, stores or files; :mod:`nearid.bench.run` does. Positives are shared by every source, so
a run over 7 sources embeds each view once, not 7 times; image identity is the
:class:`~nearid.images.decode.ImageRef` key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nearid.data.schema import HEADLINE_SOURCES, TRAINING_SOURCES, UNSEEN_FILL_SOURCES
from nearid.eval.metrics import (
    VIEW_PAIRS,
    DiscriminationScore,
    calibrate_threshold,
    mtg_scores,
    nearid_scores,
)
from nearid.eval.results import Calibration, NearIDResult, SourceGroup
from nearid.images.decode import ImageRef
from nearid.io.errors import NearIDError

#: The paper's pooled groups (spec 6.2); a group is reported when all its sources were evaluated.
SOURCE_GROUPS = {
    "training sources (4)": TRAINING_SOURCES,
    "unseen fill sources (3)": UNSEEN_FILL_SOURCES,
    "all 7 (headline)": HEADLINE_SOURCES,
    "canny sources (2)": ("FluxC", "FluxC_1024"),
}
#: MTG's five similarities: (name, first image, second image) with images 0 = 1, 1 = 2, 2 = 1', 3 = 2'.
MTG_PAIRS = (
    ("mtg_sim_1_2", 0, 1),
    ("mtg_sim_1_1p", 0, 2),
    ("mtg_sim_1_2p", 0, 3),
    ("mtg_sim_2_2p", 1, 3),
    ("mtg_sim_2_1p", 1, 2),
)
_FIRST, _SECOND = np.array([a for a, _ in VIEW_PAIRS]), np.array([b for _, b in VIEW_PAIRS])


@dataclass
class SimilarityTable:
    """One source's similarities, one row per identity: ``pair[i, k]`` = s(p_a, p_b) for the k-th
    pair of ``VIEW_PAIRS``; ``cross[i, a, b]`` = s(p_a, n_b), view a against the distractor in view b's
    background (the authors' ``cross_ab``). NaN where a view or distractor is missing."""

    source: str
    ids: list
    pair: np.ndarray
    cross: np.ndarray

    @property
    def own_background(self) -> np.ndarray:
        """``[N, 3]``: s(p_v, n_v), each view against the distractor in its own background."""
        return np.diagonal(self.cross, axis1=1, axis2=2)

    def scores(self) -> DiscriminationScore:
        return nearid_scores(self.pair, self.own_background)


def pooled_scores(tables: dict[str, SimilarityTable]) -> DiscriminationScore:
    """SSR / PA over several sources: each (identity, source) counts once."""
    return DiscriminationScore.pool(*(table.scores() for table in tables.values()))


@dataclass
class ImagePlan:
    """Every image a benchmark needs, each (image, mask) once, and where each one sits.

    ``keys[r]`` / ``images[r]`` / ``masks[r]`` describe row r of the embedding matrix. ``views[i, j]``
    is the row of identity i's view j and ``distractors[source][i, j]`` the row of its distractor in
    view j's background; ``mtg[m]`` the rows of MTG sample m's images 1, 2, 1', 2'. -1: missing.
    """

    keys: list[str] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)
    masks: list[ImageRef | None] = field(default_factory=list)
    ids: list = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    views: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    distractors: dict[str, np.ndarray] = field(default_factory=dict)
    mtg: np.ndarray | None = None
    views_without_mask: int = 0  # views dropped (with their distractors) under masks: no mask to cut with
    masks_emptied: int = 0  # views whose mask had no foreground: embedded all black (nearid.images.accept)
    masks_resized: int = 0  # view masks of another aspect ratio, resized to their image
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    def add(self, image: ImageRef, mask: ImageRef | None) -> int:
        """The row of (image, mask), appended when new."""
        key = image_key(image, mask)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = len(self.keys)
            self.keys.append(key)
            self.images.append(image)
            self.masks.append(mask)
        return row

    @property
    def sources(self) -> list[str]:
        return list(self.distractors)

    def __len__(self) -> int:
        return len(self.keys)


def image_key(image: ImageRef, mask: ImageRef | None) -> str:
    """What identifies one embedding: the image, and the mask it is cut with (if any), each with its
    content version (:attr:`~nearid.images.decode.ImageRef.cache_key`), so regenerated data is never matched
    with embeddings of the old data."""
    return image.cache_key if mask is None else f"{image.cache_key}|mask={mask.cache_key}"


def plan_images(
    bench,
    sources: Sequence[str],
    *,
    masks: bool = False,
    mtg=None,
    mask_cleaning: str = "authors",
    mask_dilate: int = 0,
    mtg_mask_cleaning: str = "none",
    accept_masks: bool = False,
) -> ImagePlan:
    """Walk ``bench`` (and ``mtg``) once and plan every view and distractor, each unique key once.

    With ``masks`` the distractor in view j's background is cut with view j's mask (the paper: a
    distractor uses the silhouette of its positive), so the key of a masked image includes its mask;
    MTG images are cut with their view's object mask. Masks are cleaned as the authors clean them
    (``mask_cleaning="authors"``, optionally dilated by ``mask_dilate``; spec 12.2) or used raw
    (``"none"``); a cleaned mask's key says so, so an embedding store never mixes the two. MTG's object
    masks follow ``mtg_mask_cleaning``, raw by default as the authors use them (binarised, never cleaned:
    "MTG masks are already clean"; cleaning drops separate object parts, spec 12.10). A view
    without a mask is dropped with its distractors (the authors' rule) and counted in
    ``plan.views_without_mask`` (``load_nearid(..., masks=True)`` has already dropped and counted them).
    With ``accept_masks`` (bench) a mask the authors accept is planned as they use it: an empty one
    makes the view and its distractors all black, one of another aspect ratio is resized
    (:func:`nearid.images.accept.accept_mask`, counted in ``masks_emptied`` / ``masks_resized``).
    """
    from nearid.images.accept import accept_mask
    from nearid.images.mask_cleaning import evaluation_mask

    evaluation_mask(None, mask_cleaning, mask_dilate)  # a bad setting fails before the walk
    plan = ImagePlan()
    views, distractors = [], {source: [] for source in sources}
    for identity in bench:
        plan.ids.append(identity.id)
        plan.categories.append(identity.category)
        row, rows = [-1, -1, -1], {source: [-1, -1, -1] for source in sources}
        for j in identity.view_slots:
            view = identity.views[j]
            if masks and view.mask is None:
                plan.views_without_mask += 1
                continue
            mask = evaluation_mask(view.mask, mask_cleaning, mask_dilate) if masks else None
            image, emptied = view.image, None
            if masks and accept_masks:
                image, mask, outcome = accept_mask(view.image, mask)
                plan.masks_emptied += outcome == "emptied"
                plan.masks_resized += outcome == "resized"
                emptied = image if outcome == "emptied" else None
            row[j] = plan.add(image, mask)
            for source in sources:
                distractor = identity.distractor(source, j)
                if distractor is not None:
                    rows[source][j] = plan.add(emptied or distractor, mask)
        views.append(row)
        for source in sources:
            distractors[source].append(rows[source])
    plan.views = np.array(views, dtype=np.int64).reshape(-1, 3)
    plan.distractors = {source: np.array(rows, dtype=np.int64).reshape(-1, 3) for source, rows in distractors.items()}
    if mtg is not None:
        rows = []
        for sample in mtg:
            object_masks = [
                evaluation_mask(
                    sample.object_masks[k], mtg_mask_cleaning, mask_dilate if mtg_mask_cleaning != "none" else 0
                )
                if masks
                else None
                for k in (0, 1)
            ]
            rows.append(
                [
                    plan.add(sample.originals[0], object_masks[0]),
                    plan.add(sample.originals[1], object_masks[1]),
                    plan.add(sample.edited[0], object_masks[0]),
                    plan.add(sample.edited[1], object_masks[1]),
                ]
            )
        plan.mtg = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return plan


def _gather(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows]`` with a NaN vector where a row is -1 (missing)."""
    padded = np.concatenate([np.asarray(matrix, dtype=np.float64), np.full((1, matrix.shape[1]), np.nan)])
    return padded[np.where(rows < 0, len(matrix), rows)]


def fill_tables(plan: ImagePlan, matrix: np.ndarray) -> dict[str, SimilarityTable]:
    """One table per source from the embedding matrix (row r = ``plan.keys[r]``, unit vectors).

    float64 throughout: a float32 dot product's last bit depends on memory alignment, and MTG
    correlates similarities that can differ only in the fourth decimal. Each table is one batched
    matrix product, views ``[N, 3, D]`` against distractors ``[N, 3, D]``; NaN rows make NaN cells.
    """
    views = _gather(matrix, plan.views)
    pair = np.einsum("nad,nbd->nab", views, views)[:, _FIRST, _SECOND]
    tables = {}
    for source, rows in plan.distractors.items():
        cross = np.einsum("nad,nbd->nab", views, _gather(matrix, rows))
        tables[source] = SimilarityTable(source, list(plan.ids), pair.copy(), cross)
    return tables


def mtg_similarities(plan: ImagePlan, matrix: np.ndarray) -> dict[str, np.ndarray]:
    """MTG's five similarities per sample (``MTG_PAIRS``), one row-wise product each."""
    images = _gather(matrix, plan.mtg)
    return {name: np.einsum("nd,nd->n", images[:, a], images[:, b]) for name, a, b in MTG_PAIRS}


# ------------------------------------------------------------------- pair scorers (a VLM judge)
@dataclass
class JudgedPairs:
    """The image pairs the metrics read, for a :class:`~nearid.models.pair_scorers.PairScorer`, each pair once.

    ``rows[p]`` = (row of the first image, row of the second) in the :class:`ImagePlan`; ``groups``
    lists pair indices per identity (its view pairs and every source's same-background
    view-distractor pairs) and then per MTG sample (its five pairs), so a judge scores the pairs of one
    identity in one call. ``full_table`` is how many pairs filling every cell of the tables would take
    (every view against every distractor, MTG's five), for the log.
    """

    rows: np.ndarray  # [P, 2] int64
    groups: list[np.ndarray]
    full_table: int
    _index: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def index(self, first: int, second: int) -> int:
        """The pair index of (first, second), -1 when either is missing or the pair was not planned."""
        return self._index.get((int(first), int(second)), -1)


def plan_judged_pairs(plan: ImagePlan) -> JudgedPairs:
    """Exactly the pairs SSR, PA, the calibration and MTG read (spec 6.1, 6.4), each once.

    SSR / PA / calibration read ``pair`` (s(p_a, p_b), the three view pairs) and the diagonal of
    ``cross`` (s(p_v, n_v): a view against the distractor in *its own* background), never
    ``cross[a, b]`` with a != b; MTG reads its five similarities. Positives are shared by every
    source, so a view pair is judged once however many sources run. The order in a pair is the
    order of the tables (view first; MTG's ``MTG_PAIRS``).
    """
    rows: list[tuple[int, int]] = []
    index: dict[tuple[int, int], int] = {}
    groups: list[np.ndarray] = []

    def add(first: int, second: int, group: list[int]) -> None:
        if first < 0 or second < 0:
            return
        key = (int(first), int(second))
        p = index.get(key)
        if p is None:
            p = index[key] = len(rows)
            rows.append(key)
        if p not in group:
            group.append(p)

    full = 0
    for i in range(len(plan.views)):
        group: list[int] = []
        views = plan.views[i]
        for a, b in VIEW_PAIRS:
            add(views[a], views[b], group)
        n_views = int((views >= 0).sum())
        full += n_views * (n_views - 1) // 2
        for distractors in plan.distractors.values():
            for v in range(3):
                add(views[v], distractors[i, v], group)
            full += n_views * int((distractors[i] >= 0).sum())
        groups.append(np.array(group, dtype=np.int64))
    if plan.mtg is not None:
        for images in plan.mtg:
            group = []
            for _, a, b in MTG_PAIRS:
                add(images[a], images[b], group)
            full += len(MTG_PAIRS)
            groups.append(np.array(group, dtype=np.int64))
    return JudgedPairs(np.array(rows, dtype=np.int64).reshape(-1, 2), groups, full, index)


def _lookup(pairs: JudgedPairs, scores: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``scores`` of the pairs (first[...], second[...]) elementwise; NaN where a pair was not judged."""
    padded = np.concatenate([np.asarray(scores, dtype=np.float64), [np.nan]])
    at = np.vectorize(pairs.index, otypes=[np.int64])(first, second) if np.size(first) else np.zeros(0, np.int64)
    return padded[np.where(at < 0, len(padded) - 1, at)].reshape(np.shape(first))


#: what a judged pair without an answer (NaN) does to the trials that read it: ``lose`` (the default: the
#: trial counts and loses, as a tie does) or ``skip`` (the published protocol's NaN-aware metrics, spec
#: 6.4 / 12.7: no trial, so a judge that leaves the hard pairs unanswered loses nothing)
UNANSWERED = ("lose", "skip")


def fill_tables_from_judgments(
    plan: ImagePlan, pairs: JudgedPairs, scores: np.ndarray, *, unanswered: str = "lose"
) -> dict[str, SimilarityTable]:
    """The tables of :func:`fill_tables` from a pair scorer's judgments (``scores[p]`` of ``pairs.rows[p]``):
    ``pair`` and the diagonal of ``cross`` filled, every cell that was not judged NaN (the metrics never
    read the off-diagonal cells; the CSVs show them empty). With ``unanswered="lose"`` an unanswered true
    pair is ``-inf`` and an unanswered distractor pair ``+inf``: every trial that reads one has margin
    -inf, a lost trial (:func:`nearid.eval.metrics.discrimination` counts it in ``n_unanswered``)."""
    if unanswered not in UNANSWERED:
        raise NearIDError(f"unanswered '{unanswered}': use one of {', '.join(UNANSWERED)}")
    scores = np.asarray(scores, dtype=np.float64)
    lose = unanswered == "lose"
    positive = np.where(np.isnan(scores), -np.inf, scores) if lose else scores
    negative = np.where(np.isnan(scores), np.inf, scores) if lose else scores
    first = plan.views[:, _FIRST]
    pair = _lookup(pairs, positive, first, plan.views[:, _SECOND])
    tables = {}
    for source, rows in plan.distractors.items():
        cross = np.full((len(plan.views), 3, 3), np.nan)
        cross[:, np.arange(3), np.arange(3)] = _lookup(pairs, negative, plan.views, rows)
        tables[source] = SimilarityTable(source, list(plan.ids), pair.copy(), cross)
    return tables


def mtg_similarities_from_judgments(plan: ImagePlan, pairs: JudgedPairs, scores: np.ndarray) -> dict[str, np.ndarray]:
    """MTG's five similarities per sample from a pair scorer's judgments."""
    return {name: _lookup(pairs, scores, plan.mtg[:, a], plan.mtg[:, b]) for name, a, b in MTG_PAIRS}


def mtg_oracles(mtg) -> tuple[np.ndarray, np.ndarray]:
    """Per sample the oracles o1, o2 (the share of each object the edit left untouched; decodes masks)."""
    return (
        np.array([sample.oracle(0) for sample in mtg], dtype=np.float64),
        np.array([sample.oracle(1) for sample in mtg], dtype=np.float64),
    )


def source_groups(sources: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The paper's groups whose sources were all run, and ``all sources`` unless one of them is that."""
    sources = list(sources)
    groups = {name: members for name, members in SOURCE_GROUPS.items() if set(members) <= set(sources)}
    if len(sources) == 1 or not any(set(m) == set(sources) for m in groups.values()):
        groups["all sources"] = tuple(sources)
    return groups


def score_tables(tables: dict[str, SimilarityTable]) -> NearIDResult:
    """Per-source SSR / PA and every group's, pooled from the per-source counts."""
    per_source = {source: table.scores() for source, table in tables.items()}
    groups = {
        name: SourceGroup(list(members), DiscriminationScore.pool(*(per_source[m] for m in members)))
        for name, members in source_groups(list(tables)).items()
    }
    return NearIDResult(per_source, groups)


def calibration(tables: dict[str, SimilarityTable], *, split: str | None, split_file: str | None) -> Calibration:
    """The same/different cut between true pairs (each once: sources share views) and every source's
    own-background distractors, for ``nearid score --threshold calibrated`` (calibrate on a val split)."""
    positives = next(iter(tables.values())).pair.reshape(-1)
    distractors = np.concatenate([t.own_background.reshape(-1) for t in tables.values()])
    return Calibration(calibrate_threshold(positives, distractors), split=split, split_file=split_file)


def score_mtg(sims: dict[str, np.ndarray], oracles: tuple[np.ndarray, np.ndarray]):
    """MTG scores from :func:`mtg_similarities` and :func:`mtg_oracles`."""
    return mtg_scores(*(sims[name] for name, _, _ in MTG_PAIRS), *oracles)


def similarity_tables(
    encoder,
    bench,
    sources: Sequence[str],
    *,
    masks: bool = False,
    batch_size: int = 32,
    progress=None,
    num_workers: int | str = 0,
    fast_decode: bool = False,
) -> tuple[dict[str, SimilarityTable], int]:
    """Embed the unique images of ``bench`` and fill one table per source; returns (tables, #embedded).
    ``num_workers`` / ``fast_decode``: :func:`nearid.embed`'s."""
    from nearid.models.embedding import embed  # torch: only when embedding here, never to score

    plan = plan_images(bench, sources, masks=masks)
    vectors = embed(
        encoder,
        plan.images,
        plan.masks,
        batch_size=batch_size,
        progress=progress,
        num_workers=num_workers,
        fast_decode=fast_decode,
    )
    return fill_tables(plan, vectors.double().numpy()), len(plan)
