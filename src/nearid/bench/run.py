"""``nearid bench``: NearID-bench (and MTG) for one or more encoders or judges, in one or many processes.

This module keeps only the work of one run: the images are planned once for all metrics
(:mod:`nearid.bench.planning`: views and distractors of every source, masked or not, and the MTG
images). For each encoder: skip the planned keys already in the on-disk store, split the rest across
processes (``accelerate launch`` / ``torchrun``; each embeds its own share and writes its own store
files), wait; a pair scorer judges the pairs not in its judgment store the same way. The main process
then writes one record per metric and hands them to the one merge (:func:`nearid.io.records.merge`,
:mod:`nearid.bench.merge`), which scores each from its store (:func:`~nearid.bench.scoring.score_metric`)
and writes ``results.json`` plus Markdown, CSV and LaTeX tables, merged per metric under a file lock:
metrics run one after the other, or at the same time, into one ``--out`` all stay. A shard
(``--num-shards``) writes its records and merges nothing (``nearid merge`` finishes it). A run into an
``--out`` holding results of another benchmark is refused before anything is embedded; results made
on other data (the data regenerated since) are moved aside by its merge, never shown beside its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nearid.bench.merge import record_of
from nearid.bench.planning import BenchConfig, PlannedBench, load_data, plan_benchmark, planned  # noqa: F401
from nearid.bench.scoring import ENCODER, JUDGE, MetricInfo, judge_entry_name
from nearid.bench.shards import partial_entry, shard_option, shard_plan
from nearid.bench.store import EmbeddingStore, store_folder
from nearid.eval.evaluate import ImagePlan, plan_judged_pairs
from nearid.eval.results import BenchResults, check_mergeable
from nearid.io import records
from nearid.io.records import WHOLE

CHUNK = 256


@dataclass
class RunContext:
    """What every step of one bench run shares: settings, process state, data, the plan (this run's
    share of it under ``--num-shards``), the output."""

    config: BenchConfig
    state: object  # accelerate.PartialState
    bench: object  # NearIDBenchmark
    mtg: object | None  # MTGBenchmark
    plan: ImagePlan
    out: Path
    judged_pairs: object | None = None  # evaluate.JudgedPairs of this run's plan, planned once

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
    """Run the benchmark; the main process returns the results as written, merged with the metrics already
    in ``results.json`` (other processes, and shards, return ``None``)."""
    from nearid.judges.loading import load_metric
    from nearid.models.pair_scorers import is_pair_scorer

    check_config(config)
    state = _state(config.device)
    whole = planned(config)
    ctx = RunContext(config, state, whole.bench, whole.mtg, whole.plan, Path(config.out))
    summary, sources = whole.bench.report.summary(), ", ".join(whole.plan.sources)
    ctx.say(f"NearID-bench: {summary}; sources: {sources}; {ctx.condition} images")
    shard = _select_shard(ctx)
    _check_out(ctx, whole, shard)  # another benchmark in --out: refused before any model loads
    options = _load_options(config, state)
    made: list[tuple[MetricInfo, dict]] = []
    for spec in config.encoders:
        metric = load_metric(spec, options)
        made.append((_judge if is_pair_scorer(metric) else _embed)(ctx, metric, spec, shard))
        state.wait_for_everyone()
    if not state.is_main_process:
        return None
    run = records.run_id()
    new = [record_of(whole, info, shard or WHOLE, payload, run, config.log) for info, payload in made]
    if shard is not None:  # a share: its records, never results.json (`nearid merge` finishes)
        for record in new:
            records.write(ctx.out, record)
        folder = ctx.out / records.RECORDS_FOLDER
        print(f"{shard.name}: records in {folder}; when every shard is done: nearid merge {ctx.out}", flush=True)
        return None
    return records.merge(ctx.out, new, context=whole)


def _check_out(ctx: RunContext, whole: PlannedBench, shard) -> None:
    """Before any work: ``--out``'s results must be of this benchmark (a shard is checked against
    ``results.json`` only: the merge decides about the other shards' records); results made on other
    data are said now and moved aside by the merge."""
    if shard is None:
        probe = record_of(whole, MetricInfo("", "", "", ENCODER, ""), WHOLE, {}, "", [])
        if records.check(ctx.out, probe):
            ctx.say(
                f"{ctx.out}: holds results made on other data (the data changed since); this run's merge moves them aside"
            )
    check_mergeable(ctx.out / "results.json", whole.info())


def _load_options(config: BenchConfig, state):
    from nearid.models.options import JudgeOptions, LoadOptions

    device = state.device if config.device == "auto" else config.device
    judge = JudgeOptions(**(config.judge_options or {}))
    return LoadOptions(device=device, dtype=config.dtype, allow_pickle=config.allow_pickle, judge=judge)


def check_config(config: BenchConfig) -> None:
    """The settings' own errors, before any data is read or model loaded: every encoder spec (a typo
    in the second one must not wait for the first one's embeddings), the batch size, and ``--out``."""
    from nearid.eval.evaluate import UNANSWERED
    from nearid.images.pipeline import resolve_num_workers
    from nearid.io.errors import NearIDError
    from nearid.io.outputs import check_writable
    from nearid.models.embedding import check_batch_size
    from nearid.models.specs import parse_encoder_spec

    for spec in config.encoders:
        parse_encoder_spec(spec)
    if config.judge_unanswered not in UNANSWERED:
        raise NearIDError(f"--judge-unanswered '{config.judge_unanswered}': use one of {', '.join(UNANSWERED)}")
    check_batch_size(config.batch_size, "batch size")
    shard_option(config.num_shards, config.shard_index)  # a bad shard index fails here, before any work
    resolve_num_workers(config.num_workers)
    check_writable(config.out, folder=True)  # a writable folder (or one that can be made), before any work


def _select_shard(ctx: RunContext):
    """With ``--num-shards``: keep this shard's share of the plan (identities and MTG samples)."""
    shard = shard_option(ctx.config.num_shards, ctx.config.shard_index)
    if shard is not None:
        identities = len(ctx.plan.ids)
        ctx.plan, ctx.mtg = shard_plan(ctx.plan, ctx.mtg, shard)
        ctx.say(f"{shard.name}: identities {len(ctx.plan.ids)} of {identities}, images {len(ctx.plan)}")
    return shard


def _embed(ctx: RunContext, encoder, spec: str, shard) -> tuple[MetricInfo, dict]:
    """An encoder's part of the run: embed the planned images not in its store (this process's share);
    what its record says of it (the main process adds a share's partial counts)."""
    from nearid.images.pipeline import decoded_fingerprint

    fingerprint = decoded_fingerprint(getattr(encoder, "fingerprint", None), ctx.config.fast_decode)
    folder = store_folder(ctx.out / "embeddings", encoder.name, fingerprint)
    store = EmbeddingStore(folder, encoder.name, encoder.dim, fingerprint)
    computed = _embed_missing(ctx, encoder, store)
    ctx.say(
        f"[{encoder.name}] unique images: {len(ctx.plan)}; embeddings computed: {computed}; "
        f"reused from the store: {len(ctx.plan) - computed}; processes: {ctx.state.num_processes}"
    )
    info = MetricInfo(
        spec=spec,
        name=encoder.name,
        fingerprint=fingerprint,
        kind=ENCODER,
        store=folder.relative_to(ctx.out).as_posix(),
        untrained=bool(getattr(encoder, "untrained", False)),
        dim=int(encoder.dim),
    )
    payload = {"computed": computed, "unique_images": len(ctx.plan)}
    if shard is not None and ctx.state.is_main_process:
        payload = partial_entry(ctx.plan, store, computed)
    return info, payload


def _embed_missing(ctx: RunContext, encoder, store: EmbeddingStore) -> int:
    """Embed the planned keys not in ``store``, this process's share of them; returns how many in all."""
    from nearid.images.options import ReadOptions
    from nearid.models.embedding import embed

    state, plan, config = ctx.state, ctx.plan, ctx.config
    reading = ReadOptions(config.batch_size, config.num_workers, config.fast_decode)
    todo = sorted(store.missing(plan.keys))
    state.wait_for_everyone()  # every process must see the store as it was before anyone writes to it
    row = {key: r for r, key in enumerate(plan.keys)}
    mine = todo[state.process_index :: state.num_processes]
    for start in range(0, len(mine), CHUNK):
        rows = [row[key] for key in mine[start : start + CHUNK]]
        vectors = embed(encoder, [plan.images[r] for r in rows], [plan.masks[r] for r in rows], **reading.as_kwargs())
        store.add([plan.keys[r] for r in rows], vectors, writer=str(state.process_index))
    ctx.say(f"[{encoder.name}] process {state.process_index}: embedded {len(mine)} images", every_process=True)
    state.wait_for_everyone()
    return len(todo)


# ------------------------------------------------------------------- pair scorers (a VLM judge)
#: Judgments are flushed to the store every this many pairs, or after FLUSH_SECONDS, whichever comes
#: first: a judge takes seconds per pair, so an interrupted run must lose little.
JUDGE_CHUNK = 64
FLUSH_SECONDS = 60.0


def _judge(ctx: RunContext, scorer, spec: str, shard) -> tuple[MetricInfo, dict]:
    """A pair scorer's part of the run: plan the pairs the metrics read, judge those not in its store
    (this process's share of the identities); what its record says of it."""
    from nearid.bench.judgments import JudgmentStore, pair_key

    pairs = ctx.judged_pairs
    if pairs is None:
        pairs = ctx.judged_pairs = plan_judged_pairs(ctx.plan)
    folder = store_folder(ctx.out / "judgments", scorer.name, scorer.fingerprint)
    store = JudgmentStore(folder, scorer.name, scorer.fingerprint)
    keys = [pair_key(ctx.plan.keys[a], ctx.plan.keys[b]) for a, b in pairs.rows]
    computed = _judge_missing(ctx, scorer, store, pairs, keys)
    ctx.say(
        f"[{scorer.name}] pairs the metrics read: {len(pairs)} (a full table would take {pairs.full_table}); "
        f"judged now: {computed}; reused from the store: {len(pairs) - computed}; processes: {ctx.state.num_processes}"
    )
    if shard is not None:
        ctx.say(f"[{scorer.name}] {shard.name}: judgments stored; `nearid merge {ctx.out}` finishes it with the others")
    info = MetricInfo(
        spec=spec,
        name=judge_entry_name(scorer.name, ctx.config.judge_unanswered),
        fingerprint=scorer.fingerprint,
        kind=JUDGE,
        store=folder.relative_to(ctx.out).as_posix(),
        untrained=bool(getattr(scorer, "untrained", False)),
        unanswered=ctx.config.judge_unanswered,
    )
    return info, {"computed": computed, "pairs": len(pairs)}


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
