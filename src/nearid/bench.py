"""``nearid bench``: NearID-bench (and MTG) for one or more encoders, in one or many processes.

This module keeps only the store, the processes and the files; what is computed is
:mod:`nearid.evaluate`'s. The images are planned once for all encoders (views and distractors of
every source, masked or not, and the MTG images). For each encoder: skip the planned keys already in
the on-disk store, split the rest across processes (``accelerate launch`` / ``torchrun``; each embeds
its own share and writes its own shards), wait, then the main process builds the embedding matrix
from the store, fills and scores the tables, writes them in the authors' CSV layout, and at the end
writes ``results.json`` (:class:`~nearid.results.BenchResults`) plus Markdown, CSV and LaTeX tables.
``results.json`` is merged per encoder under a file lock: encoders run one after the other, or at the
same time, into one ``--out`` all stay; another benchmark into that ``--out`` is refused before embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import load_mtg, load_nearid
from .data.folder import is_folder_benchmark, load_folder
from .errors import NearIDError
from .evaluate import (
    ImagePlan,
    calibration,
    fill_tables,
    mtg_oracles,
    mtg_similarities,
    plan_images,
    score_mtg,
    score_tables,
)
from .results import BenchInfo, BenchResults, EncoderResult, check_mergeable, merge_bench_results, results_lock
from .simtables import write_mtg_csv, write_nearid_csv
from .store import EmbeddingStore, store_folder

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
    num_workers: int | str = 0  # input worker processes per bench process (nearid.input_pipeline)
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
    from .encoders import load_encoder
    from .input_pipeline import decoded_fingerprint

    check_config(config)
    state = _state(config.device)
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
    ctx = RunContext(config, state, bench, mtg, plan, Path(config.out))
    ctx.say(f"NearID-bench: {bench.report.summary()}; sources: {', '.join(ctx.plan.sources)}; {ctx.condition} images")
    # local inputs recorded absolute, so the report opens them from any working directory
    from .outputs import recorded_path

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
    for spec in config.encoders:
        device = state.device if config.device == "auto" else config.device
        encoder = load_encoder(spec, device=device, dtype=config.dtype, allow_pickle=config.allow_pickle)
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
            results.encoders[encoder.name] = _score_encoder(ctx, encoder, spec, store, computed)
        state.wait_for_everyone()
    if not state.is_main_process:
        return None
    from .tables import write_tables

    results.log = config.log
    with results_lock(ctx.out):  # runs into one --out at once merge one after the other
        merged = merge_bench_results(ctx.out / "results.json", results)
        write_tables(merged, ctx.out)
    return merged


def check_config(config: BenchConfig) -> None:
    """The settings' own errors, before any data is read or model loaded: every encoder spec (a typo
    in the second one must not wait for the first one's embeddings), the batch size, and ``--out``."""
    from .embedding import check_batch_size
    from .input_pipeline import resolve_num_workers
    from .outputs import check_writable
    from .specs import parse_encoder_spec

    for spec in config.encoders:
        parse_encoder_spec(spec)
    check_batch_size(config.batch_size, "batch size")
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
            from .data.nearid_bench import bench_locations, sources_beside

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


def _embed_missing(ctx: RunContext, encoder, store: EmbeddingStore) -> int:
    """Embed the planned keys not in ``store``, this process's share of them; returns how many in all."""
    from .embedding import embed

    state, plan = ctx.state, ctx.plan
    todo = sorted(set(plan.keys) - store.keys())
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


def _matrix(ctx: RunContext, store: EmbeddingStore) -> np.ndarray:
    """The planned keys' vectors from the store, in plan order, as one float64 matrix."""
    vectors = store.load()
    missing = [key for key in ctx.plan.keys if key not in vectors]
    if missing:
        raise RuntimeError(f"{len(missing)} planned images are not in the store {store.folder}, e.g. {missing[0]}")
    matrix = np.empty((len(ctx.plan), store.dim), dtype=np.float64)
    for r, key in enumerate(ctx.plan.keys):
        matrix[r] = vectors[key].double().numpy()
    return matrix


def _score_encoder(ctx: RunContext, encoder, spec: str, store: EmbeddingStore, computed: int) -> EncoderResult:
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
