"""``nearid bench``: NearID-bench (and MTG) for one or more encoders, in one or many processes.

For each encoder: plan every image the tables need (views and distractors of every source, masked or
not, and the MTG images), skip those already in the on-disk store, split the rest across processes
(``accelerate launch`` / ``torchrun``; each embeds its own share and writes its own shards), wait,
then the main process fills the similarity tables from the store, writes them in the authors' CSV
layout, scores every source and the paper's source groups (pooled by concatenation), and writes
``results.json`` plus Markdown, CSV and LaTeX tables.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import load_mtg, load_nearid
from .data.schema import HEADLINE_SOURCES, TRAINING_SOURCES, UNSEEN_FILL_SOURCES
from .embedding import embed
from .encoders import load_encoder
from .evaluate import fill_tables, image_key, unique_images
from .io import write_text_atomic
from .metrics import calibrate_threshold, discrimination, mtg_scores, nearid_margins
from .simtables import write_mtg_csv, write_nearid_csv
from .store import EmbeddingStore, store_folder

#: The paper's pooled groups (spec 6.2); a group is reported when all its sources were evaluated.
SOURCE_GROUPS = {
    "training sources (4)": TRAINING_SOURCES,
    "unseen fill sources (3)": UNSEEN_FILL_SOURCES,
    "all 7 (headline)": HEADLINE_SOURCES,
    "canny sources (2)": ("FluxC", "FluxC_1024"),
}
CHUNK = 256


@dataclass
class BenchConfig:
    encoders: list[str]
    data: str
    sources: list[str]
    out: str
    split: str | None = "test"
    split_file: str | None = None
    masks: bool = False
    mtg: str | None = None
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    log: list[str] = field(default_factory=list)


def _state(device: str):
    """accelerate's process state; on a machine without CUDA it must be told to use gloo on the CPU."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def run_bench(config: BenchConfig) -> dict | None:
    """Run the benchmark; the main process returns the results (other processes return ``None``)."""
    state = _state(config.device)
    bench = load_nearid(config.data, config.sources, split=config.split, split_file=config.split_file)
    sources = bench.source_names
    mtg = load_mtg(config.mtg, split="test") if config.mtg else None
    condition = "foreground" if config.masks else "full"
    out = Path(config.out)
    say = _printer(state, config)
    say(f"NearID-bench: {bench.report.summary()}; sources: {', '.join(sources)}; {condition} images")
    results = {
        "benchmark": {
            "data": os.fspath(config.data),
            "split": config.split_file or config.split,
            "sources": sources,
            "condition": condition,
            "identities": len(bench),
            "load_report": bench.report.summary(),
            "mtg": config.mtg,
            "mtg_samples": len(mtg) if mtg is not None else 0,
        },
        "encoders": {},
    }
    for spec in config.encoders:
        device = state.device if config.device == "auto" else config.device
        encoder = load_encoder(spec, device=device, dtype=config.dtype, allow_pickle=config.allow_pickle)
        store = EmbeddingStore(store_folder(out / "embeddings", encoder.name, os.fspath(config.data)), encoder.name, encoder.dim)
        plan = unique_images(bench, sources, masks=config.masks)
        if mtg is not None:
            plan.update(_mtg_plan(mtg, config.masks))
        todo = sorted(set(plan) - store.keys())
        state.wait_for_everyone()  # every process must see the store as it was before anyone writes to it
        mine = todo[state.process_index :: state.num_processes]
        for start in range(0, len(mine), CHUNK):
            keys = mine[start : start + CHUNK]
            vectors = embed(encoder, [plan[k][0] for k in keys], [plan[k][1] for k in keys], batch_size=config.batch_size)
            store.add(keys, vectors, writer=str(state.process_index))
        say(f"[{encoder.name}] process {state.process_index}: embedded {len(mine)} images", every_process=True)
        state.wait_for_everyone()
        if state.is_main_process:
            say(f"[{encoder.name}] unique images: {len(plan)}; embeddings computed: {len(todo)}; "
                f"reused from the store: {len(plan) - len(todo)}; processes: {state.num_processes}")
            results["encoders"][encoder.name] = _score_encoder(encoder, spec, bench, mtg, store, config, out, len(plan), len(todo))
        state.wait_for_everyone()
    if not state.is_main_process:
        return None
    from .tables import write_tables

    results["log"] = config.log
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    write_tables(results, out)
    return results


def _printer(state, config: BenchConfig):
    def say(message: str, every_process: bool = False) -> None:
        if every_process or state.is_main_process:
            print(message, flush=True)
            config.log.append(message)

    return say


def _mtg_plan(mtg, masks: bool) -> dict:
    plan = {}
    for sample in mtg:
        for k in (0, 1):
            mask = sample.object_masks[k] if masks else None
            for image in (sample.originals[k], sample.edited[k]):
                plan[image_key(image, mask)] = (image, mask)
    return plan


def _score_encoder(encoder, spec, bench, mtg, store, config, out: Path, unique: int, computed: int) -> dict:
    vectors = store.load()
    missing = [key for key in unique_images(bench, bench.source_names, masks=config.masks) if key not in vectors]
    if missing:
        raise RuntimeError(f"{len(missing)} planned images are not in the store {store.folder}, e.g. {missing[0]}")
    # similarities in float64: a float32 dot product's last bit depends on memory alignment (which shard
    # a row came from), and MTG correlates similarities that can differ only in the fourth decimal
    lookup = lambda image, mask: vectors[image_key(image, mask)].double()  # noqa: E731
    tables = fill_tables(bench, bench.source_names, lookup, masks=config.masks)
    folder = out / "sims" / store.folder.name
    condition = "foreground" if config.masks else "full"
    categories = [bench[i].category for i in range(len(bench))]
    margins = {}
    per_source = {}
    for source, table in tables.items():
        write_nearid_csv(folder / f"{source}_{condition}.csv", table, categories)
        margins[source] = nearid_margins(table.pair, table.own_background)
        per_source[source] = discrimination(margins[source]).as_dict()
    groups = {}
    for name, members in _groups(list(tables)).items():
        groups[name] = {**discrimination(np.concatenate([margins[m] for m in members])).as_dict(), "sources": list(members)}
    positives = next(iter(tables.values())).pair.reshape(-1)  # the view pairs are the same in every source
    distractors = np.concatenate([t.own_background.reshape(-1) for t in tables.values()])
    result = {
        "spec": spec,
        "untrained": bool(getattr(encoder, "untrained", False)),
        "unique_images": unique,
        "embeddings_computed": computed,
        "sims_folder": str(folder.relative_to(out)),
        "nearid": {"per_source": per_source, "groups": groups},
        # same/different cut for `nearid score --threshold calibrated` (calibrate on a val split)
        "calibration": {**calibrate_threshold(positives, distractors).as_dict(), "split": config.split_file or config.split},
    }
    if mtg is not None:
        result["mtg"] = _score_mtg(mtg, lookup, config.masks, folder / f"mtg_{condition}.csv")
    return result


def _groups(sources: list[str]) -> dict[str, tuple[str, ...]]:
    groups = {name: members for name, members in SOURCE_GROUPS.items() if set(members) <= set(sources)}
    if len(sources) > 1 and not any(set(m) == set(sources) for m in groups.values()):
        groups["all sources"] = tuple(sources)
    if len(sources) == 1:
        groups["all sources"] = tuple(sources)
    return groups


def _score_mtg(mtg, lookup, masks: bool, csv_path: Path) -> dict:
    names = ("mtg_sim_1_2", "mtg_sim_1_1p", "mtg_sim_1_2p", "mtg_sim_2_2p", "mtg_sim_2_1p")
    sims = {name: np.full(len(mtg), np.nan) for name in names}
    oracles = (np.zeros(len(mtg)), np.zeros(len(mtg)))
    for i, sample in enumerate(mtg):
        m1, m2 = (sample.object_masks[k] if masks else None for k in (0, 1))
        v1, v2 = lookup(sample.originals[0], m1), lookup(sample.originals[1], m2)
        v1p, v2p = lookup(sample.edited[0], m1), lookup(sample.edited[1], m2)
        for name, (a, b) in zip(names, ((v1, v2), (v1, v1p), (v1, v2p), (v2, v2p), (v2, v1p))):
            sims[name][i] = float(a @ b)
        oracles[0][i], oracles[1][i] = sample.oracle(0), sample.oracle(1)
    write_mtg_csv(csv_path, sims, oracles)
    return mtg_scores(*(sims[n] for n in names), *oracles).as_dict()
