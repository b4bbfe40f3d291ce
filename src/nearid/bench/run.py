"""``nearid bench``: NearID-bench (and MTG) for one or more encoders, in one or many processes.

This module keeps only the store, the processes and the files; what is computed is
:mod:`nearid.eval.evaluate`'s. The images are planned once for all encoders (views and distractors of
every source, masked or not, and the MTG images). For each encoder: skip the planned keys already in
the on-disk store, split the rest across processes (``accelerate launch`` / ``torchrun``; each embeds
its own share and writes its own shards), wait, then the main process builds the embedding matrix
from the store, fills and scores the tables, writes them in the authors' CSV layout, and at the end
writes ``results.json`` (:class:`~nearid.eval.results.BenchResults`) plus Markdown, CSV and LaTeX tables.
``results.json`` is merged per encoder under a file lock: encoders run one after the other, or at the
same time, into one ``--out`` all stay; another benchmark into that ``--out`` is refused before embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nearid.bench.shards import partial_entry, shard_option, shard_plan, write_record
from nearid.bench.store import EmbeddingStore, store_folder
from nearid.data import load_mtg, load_nearid
from nearid.data.folder import is_folder_benchmark, load_folder
from nearid.eval.evaluate import (
    ImagePlan,
    calibration,
    fill_tables,
    fill_tables_from_judgments,
    mtg_oracles,
    mtg_similarities,
    mtg_similarities_from_judgments,
    plan_images,
    plan_judged_pairs,
    score_mtg,
    score_tables,
)
from nearid.eval.results import (
    BenchInfo,
    BenchResults,
    EncoderResult,
    check_mergeable,
    merge_bench_results,
    results_lock,
)
from nearid.eval.simtables import write_mtg_csv, write_nearid_csv
from nearid.io.errors import NearIDError

CHUNK = 256


@dataclass
class BenchConfig:
    encoders: list[str]
    data: str
    sources: list[str] | None
    out: str
    split: str | None = "test"
    split_file: str | None = None
    masks: bool = False
    mask_cleaning: str = "authors"  # under masks: the authors' cleaning (spec 12.2) or "none"
    mask_dilate: int = 0
    mtg: str | None = None
    mtg_split: str = "test"  # MTG has train and test; the paper's benchmark is test
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    num_shards: int | None = None  # rendezvous-free shards (nearid.bench.shards): this run is one share
    shard_index: int | None = None
    judge_options: dict | None = None  # a pair scorer's options (a VLM judge's prompt file, readout, ...)
    num_workers: int | str = 0  # input worker processes per bench process (nearid.images.pipeline)
    fast_decode: bool = False  # JPEG draft decoding; its embeddings get a store of their own
    log: list[str] = field(default_factory=list)

    @property
    def split_name(self) -> str | None:
        """The split column value the rows came from; ``None`` when a split file chose them instead."""
        return None if self.split_file else self.split


@dataclass
class RunContext:
    """What every step of one bench run shares: settings, process state, data, the plan, the output."""

    config: BenchConfig
    state: object  # accelerate.PartialState
    bench: object  # NearIDBenchmark
    mtg: object | None  # MTGBenchmark
    plan: ImagePlan
    out: Path
    oracles: tuple | None = None  # MTG oracles, decoded from the masks once for all encoders
    judged_pairs: object | None = None  # evaluate.JudgedPairs: the pairs pair scorers are asked, planned once

    @property
    def condition(self) -> str:
        return "foreground" if self.config.masks else "full"

    def say(self, message: str, every_process: bool = False) -> None:
        if every_process or self.state.is_main_process:
            print(message, flush=True)
            self.config.log.append(message)


def _state(device: str):
    """accelerate's process state; on a machine without CUDA it must be told to use gloo on the CPU."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def run_bench(config: BenchConfig) -> BenchResults | None:
    """Run the benchmark; the main process returns the results as written, merged with the encoders already
    in ``results.json`` (other processes return ``None``)."""
    from nearid.images.pipeline import decoded_fingerprint
    from nearid.judges.loading import load_metric
    from nearid.models.pair_scorers import is_pair_scorer

    check_config(config)
    state = _state(config.device)
    bench, mtg, plan = plan_benchmark(config)
    ctx = RunContext(config, state, bench, mtg, plan, Path(config.out))
    ctx.say(f"NearID-bench: {bench.report.summary()}; sources: {', '.join(ctx.plan.sources)}; {ctx.condition} images")
    # local inputs recorded absolute, so the report opens them from any working directory
    from nearid.io.outputs import recorded_path

    results = BenchResults(
        BenchInfo(
            data=recorded_path(config.data),
            split=config.split_name,
            split_file=recorded_path(config.split_file),
            sources=ctx.plan.sources,
            condition=ctx.condition,
            identities=len(bench),
            load_report=bench.report.summary(),
            mtg=recorded_path(config.mtg),
            mtg_split=config.mtg_split if mtg is not None else None,
            mtg_samples=len(mtg) if mtg is not None else 0,
            mask_cleaning=config.mask_cleaning if config.masks else None,
            mask_dilate=config.mask_dilate if config.masks else 0,
            views_without_mask=bench.report.views_without_mask + plan.views_without_mask,
        )
    )
    check_mergeable(ctx.out / "results.json", results.benchmark)  # another benchmark in --out: refused before embedding
    shard, partial = _select_shard(ctx), []
    for spec in config.encoders:
        device = state.device if config.device == "auto" else config.device
        encoder = load_metric(
            spec,
            device=device,
            dtype=config.dtype,
            allow_pickle=config.allow_pickle,
            judge_options=config.judge_options,
        )
        if is_pair_scorer(encoder):
            result = _run_pair_scorer(ctx, encoder, spec)
            if result is not None and shard is None:
                results.encoders[encoder.name] = result
            elif result is not None:  # a shard fills the judgment store; an un-sharded run reuses it all
                ctx.say(
                    f"[{encoder.name}] {shard.name}: judgments stored; `nearid merge` finishes encoders only: "
                    f"finish a pair scorer with the same nearid bench run without --num-shards (it asks nothing stored)"
                )
            state.wait_for_everyone()
            continue
        fingerprint = decoded_fingerprint(getattr(encoder, "fingerprint", None), config.fast_decode)
        store = EmbeddingStore(
            store_folder(ctx.out / "embeddings", encoder.name, fingerprint), encoder.name, encoder.dim, fingerprint
        )
        computed = _embed_missing(ctx, encoder, store)
        if state.is_main_process:
            ctx.say(
                f"[{encoder.name}] unique images: {len(ctx.plan)}; embeddings computed: {computed}; "
                f"reused from the store: {len(ctx.plan) - computed}; processes: {state.num_processes}"
            )
            if shard is None:
                results.encoders[encoder.name] = score_encoder(ctx, encoder, spec, store, computed)
            else:
                partial.append(partial_entry(ctx.plan, encoder, spec, store, computed))
        state.wait_for_everyone()
    if not state.is_main_process:
        return None
    if shard is not None:  # a share: a partial record, never results.json (`nearid merge` finishes)
        path = write_record(ctx.out, shard, config, results.benchmark, partial, config.log)
        print(f"{shard.name}: partial record {path}; when every shard is done: nearid merge {ctx.out}", flush=True)
        return None
    from nearid.report.tables import write_tables

    results.log = config.log
    with results_lock(ctx.out):  # runs into one --out at once merge one after the other
        merged = merge_bench_results(ctx.out / "results.json", results)
        write_tables(merged, ctx.out)
    return merged


def plan_benchmark(config: BenchConfig):
    """``(bench, mtg, plan)``: the identities, the MTG samples (or ``None``) and every (image, mask) the
    run embeds, as ``config`` selects them; a bench run and ``nearid merge`` plan through this one path."""
    bench = load_data(config)
    mtg = load_mtg(config.mtg, split=config.mtg_split) if config.mtg else None
    plan = plan_images(
        bench,
        bench.source_names,
        masks=config.masks,
        mtg=mtg,
        mask_cleaning=config.mask_cleaning,
        mask_dilate=config.mask_dilate,
    )
    return bench, mtg, plan


def check_config(config: BenchConfig) -> None:
    """The settings' own errors, before any data is read or model loaded: every encoder spec (a typo
    in the second one must not wait for the first one's embeddings), the batch size, and ``--out``."""
    from nearid.images.pipeline import resolve_num_workers
    from nearid.io.outputs import check_writable
    from nearid.models.embedding import check_batch_size
    from nearid.models.specs import parse_encoder_spec

    for spec in config.encoders:
        parse_encoder_spec(spec)
    check_batch_size(config.batch_size, "batch size")
    shard_option(config.num_shards, config.shard_index)  # a bad shard index fails here, before any work
    resolve_num_workers(config.num_workers)
    check_writable(config.out, folder=True)  # a writable folder (or one that can be made), before any work


def load_data(config: BenchConfig):
    """The benchmark's identities: a dataset (hub id, ``save_to_disk``, parquet, a ``nearid synth`` root)
    through :func:`~nearid.data.load_nearid`, or a folder in :mod:`nearid.data.folder`'s layout, whose
    split comes from each identity's ``meta.json`` and whose sources default to all found. An empty
    selection is an error here, not a ``nan`` score later."""
    if is_folder_benchmark(config.data):
        if config.split_file:
            raise NearIDError(
                f"--split-file: {config.data} is a folder benchmark; its split is each identity's "
                'meta.json "split" (default test): pass --split NAME or --split all'
            )
        bench = load_folder(config.data, config.sources or None, split=config.split)
    else:
        if not config.sources:
            from nearid.data.nearid_bench import bench_locations, sources_beside

            there = sources_beside(bench_locations(config.data, [])[0])
            raise NearIDError(
                f"--sources is required for {config.data}: name its distractor sources "
                "(<data>-<Source>, or NAME=LOCATION)" + (f"; the sources there are {', '.join(there)}" if there else "")
            )
        bench = load_nearid(
            config.data, config.sources, split=config.split, split_file=config.split_file, masks=config.masks
        )
    if not len(bench):
        which = f"the rows of {config.split_file}" if config.split_file else f"split '{config.split}'"
        raise NearIDError(
            f"{config.data}: no identity with 2 or more views in {which} ({bench.report.summary()}); "
            "choose another --split (or --split all)"
        )
    return bench


def _select_shard(ctx: RunContext):
    """With ``--num-shards``: keep this shard's share of the plan (identities and MTG samples)."""
    shard = shard_option(ctx.config.num_shards, ctx.config.shard_index)
    if shard is not None:
        identities = len(ctx.plan.ids)
        ctx.plan, ctx.mtg = shard_plan(ctx.plan, ctx.mtg, shard)
        ctx.say(f"{shard.name}: identities {len(ctx.plan.ids)} of {identities}, images {len(ctx.plan)}")
    return shard


def _embed_missing(ctx: RunContext, encoder, store: EmbeddingStore) -> int:
    """Embed the planned keys not in ``store``, this process's share of them; returns how many in all."""
    from nearid.models.embedding import embed

    state, plan = ctx.state, ctx.plan
    todo = sorted(store.missing(plan.keys))
    state.wait_for_everyone()  # every process must see the store as it was before anyone writes to it
    row = {key: r for r, key in enumerate(plan.keys)}
    mine = todo[state.process_index :: state.num_processes]
    for start in range(0, len(mine), CHUNK):
        rows = [row[key] for key in mine[start : start + CHUNK]]
        vectors = embed(
            encoder,
            [plan.images[r] for r in rows],
            [plan.masks[r] for r in rows],
            batch_size=ctx.config.batch_size,
            num_workers=ctx.config.num_workers,
            fast_decode=ctx.config.fast_decode,
        )
        store.add([plan.keys[r] for r in rows], vectors, writer=str(state.process_index))
    ctx.say(f"[{encoder.name}] process {state.process_index}: embedded {len(mine)} images", every_process=True)
    state.wait_for_everyone()
    return len(todo)


# ------------------------------------------------------------------- pair scorers (a VLM judge)
#: Judgments are flushed to the store every this many pairs, or after FLUSH_SECONDS, whichever comes
#: first: a judge takes seconds per pair, so an interrupted run must lose little.
JUDGE_CHUNK = 64
FLUSH_SECONDS = 60.0


def _run_pair_scorer(ctx: RunContext, scorer, spec: str) -> EncoderResult | None:
    """A pair scorer's part of the run: plan the pairs the metrics read, judge those not in its store
    (this process's share of the identities), then, on the main process, fill the tables and score."""
    from nearid.bench.judgments import JudgmentStore

    pairs = ctx.judged_pairs
    if pairs is None:
        pairs = ctx.judged_pairs = plan_judged_pairs(ctx.plan)
    store = JudgmentStore(
        store_folder(ctx.out / "judgments", scorer.name, scorer.fingerprint), scorer.name, scorer.fingerprint
    )
    keys = _pair_keys(ctx, pairs)
    computed = _judge_missing(ctx, scorer, store, pairs, keys)
    if not ctx.state.is_main_process:
        return None
    ctx.say(
        f"[{scorer.name}] pairs the metrics read: {len(pairs)} (a full table would take {pairs.full_table}); "
        f"judged now: {computed}; reused from the store: {len(pairs) - computed}; processes: {ctx.state.num_processes}"
    )
    return _score_pair_scorer(ctx, scorer, spec, store, pairs, keys, computed)


def _pair_keys(ctx: RunContext, pairs) -> list[str]:
    from nearid.bench.judgments import pair_key

    keys = ctx.plan.keys
    return [pair_key(keys[a], keys[b]) for a, b in pairs.rows]


def _judge_missing(ctx: RunContext, scorer, store, pairs, keys: list[str]) -> int:
    """Judge the planned pairs not in ``store`` (``keys``: each planned pair's store key): whole
    identities (their missing pairs in one ``score_pairs`` call), split over processes by identity;
    returns how many pairs in all."""
    import time

    from nearid.models.pair_scorers import ask

    state, plan = ctx.state, ctx.plan
    stored = store.keys()
    state.wait_for_everyone()  # every process must see the store as it was before anyone writes to it
    todo: list[list[int]] = []
    asked: set[int] = set()  # a pair shared by two groups (e.g. the same distractor image twice) once
    for group in pairs.groups:
        missing = [int(p) for p in group if keys[p] not in stored and int(p) not in asked]
        asked.update(missing)
        if missing:
            todo.append(missing)
    mine = todo[state.process_index :: state.num_processes]
    pending_keys: list[str] = []
    pending: list[np.ndarray] = []
    flushed = time.monotonic()
    done = 0
    try:
        for group in mine:
            rows = pairs.rows[group]
            scores = ask(
                scorer,
                [(plan.images[a], plan.images[b]) for a, b in rows],
                [(plan.masks[a], plan.masks[b]) for a, b in rows],
            )
            pending_keys += [keys[p] for p in group]
            pending.append(scores)
            done += len(group)
            if len(pending_keys) >= JUDGE_CHUNK or time.monotonic() - flushed > FLUSH_SECONDS:
                store.add(pending_keys, np.concatenate(pending), writer=str(state.process_index))
                pending_keys, pending, flushed = [], [], time.monotonic()
    finally:  # also on Ctrl-C or an error: the identities judged so far are kept (each one is complete)
        if pending_keys:
            store.add(pending_keys, np.concatenate(pending), writer=str(state.process_index))
    stats = getattr(scorer, "stats", None)  # a VLM judge times itself (JudgeStats)
    timing = f" ({stats.seconds_per_pair:.3g} s per pair)" if done and stats is not None and stats.pairs else ""
    ctx.say(f"[{scorer.name}] process {state.process_index}: judged {done} pairs{timing}", every_process=True)
    state.wait_for_everyone()
    return sum(len(group) for group in todo)


def _score_pair_scorer(ctx: RunContext, scorer, spec: str, store, pairs, keys, computed: int) -> EncoderResult:
    """The tables, CSVs and scores of a pair scorer, from its store (the same outputs as an encoder's)."""
    from nearid.eval.results import JudgmentCounts

    stored = store.load()
    missing = [key for key in keys if key not in stored]
    if missing:
        raise RuntimeError(f"{len(missing)} planned pairs are not in the store {store.folder}, e.g. {missing[0]}")
    scores = np.array([stored[key] for key in keys], dtype=np.float64)
    tables = fill_tables_from_judgments(ctx.plan, pairs, scores)
    folder = ctx.out / "sims" / store.folder.name
    for source, table in tables.items():
        write_nearid_csv(folder / f"{source}_{ctx.condition}.csv", table, ctx.plan.categories)
    no_answer = int(np.isnan(scores).sum())
    if no_answer:
        ctx.say(f"[{scorer.name}] no answer (NaN) for {no_answer} of {len(scores)} pairs: their trials do not count")
    result = EncoderResult(
        spec=spec,
        fingerprint=store.fingerprint,
        nearid=score_tables(tables),
        untrained=bool(getattr(scorer, "untrained", False)),
        unique_images=len(np.unique(pairs.rows)) if len(pairs) else 0,
        embeddings_computed=0,
        sims_folder=str(folder.relative_to(ctx.out)),
        calibration=_calibration_or_none(tables, ctx),
        judgments=JudgmentCounts(pairs=len(pairs), computed=computed, no_answer=no_answer, full_table=pairs.full_table),
    )
    if ctx.mtg is not None:
        if ctx.oracles is None:
            ctx.oracles = mtg_oracles(ctx.mtg)
        sims = mtg_similarities_from_judgments(ctx.plan, pairs, scores)
        write_mtg_csv(folder / f"mtg_{ctx.condition}.csv", sims, ctx.oracles)
        result.mtg = score_mtg(sims, ctx.oracles)
    return result


def _calibration_or_none(tables, ctx: RunContext):
    """The calibrated threshold, or ``None`` when a judge answered no true pair or no distractor pair."""
    try:
        return calibration(tables, split=ctx.config.split_name, split_file=ctx.config.split_file)
    except ValueError:
        return None


def _matrix(ctx: RunContext, store: EmbeddingStore) -> np.ndarray:
    """The planned keys' vectors from the store, in plan order, as one float64 matrix (memory-mapped:
    the store is never loaded whole)."""
    return store.matrix(ctx.plan.keys, dtype=np.float64)


def score_encoder(ctx: RunContext, encoder, spec: str, store: EmbeddingStore, computed: int) -> EncoderResult:
    matrix = _matrix(ctx, store)
    tables = fill_tables(ctx.plan, matrix)
    folder = ctx.out / "sims" / store.folder.name
    for source, table in tables.items():
        write_nearid_csv(folder / f"{source}_{ctx.condition}.csv", table, ctx.plan.categories)
    result = EncoderResult(
        spec=spec,
        fingerprint=store.fingerprint,
        nearid=score_tables(tables),
        untrained=bool(getattr(encoder, "untrained", False)),
        unique_images=len(ctx.plan),
        embeddings_computed=computed,
        sims_folder=str(folder.relative_to(ctx.out)),
        calibration=calibration(tables, split=ctx.config.split_name, split_file=ctx.config.split_file),
    )
    if ctx.mtg is not None:
        if ctx.oracles is None:
            ctx.oracles = mtg_oracles(ctx.mtg)
        sims = mtg_similarities(ctx.plan, matrix)
        write_mtg_csv(folder / f"mtg_{ctx.condition}.csv", sims, ctx.oracles)
        result.mtg = score_mtg(sims, ctx.oracles)
    return result
