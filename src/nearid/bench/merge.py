"""``nearid merge OUT``: finish a run that was split into rendezvous-free shards (:mod:`nearid.bench.shards`).

Bench shards (``OUT/shards/shard-I-of-S.json``): the records are checked (every shard of one run,
same settings, same encoders and fingerprints; :func:`nearid.bench.shards.read_records`), the benchmark is
planned whole again from the recorded settings (no model is loaded), each encoder's vectors are read
from the shared store, and the tables are filled and scored by bench's own
:func:`nearid.bench.run.score_encoder`: the merged ``results.json``, tables and sims CSVs are those of a
one-process run over the same vectors, not a sum of rounded shares. ``embeddings_computed`` is the
shards' sum. Score shards (``<out>.shard-I-of-S.json`` of ``nearid score``) are concatenated in pair
order and written by score's own writer (:func:`nearid.score.shards.merge_score_shards`); ``nearid merge`` decides which.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from nearid.bench.shards import ShardError, read_records
from nearid.io.errors import NearIDError


def merge_bench(out: str | os.PathLike):
    """The merged :class:`~nearid.eval.results.BenchResults`, written to ``out`` as a one-process run writes them."""
    from nearid.bench.run import BenchConfig, RunContext, plan_benchmark, score_encoder
    from nearid.bench.store import EmbeddingStore
    from nearid.eval.results import BenchInfo, BenchResults, merge_bench_results, results_lock
    from nearid.report.tables import write_tables

    out = Path(out)
    records = read_records(out)
    first = records[0]
    config = BenchConfig(encoders=[e["spec"] for e in first["encoders"]], out=str(out), **first["settings"])
    bench, mtg, plan = plan_benchmark(config)
    benchmark = BenchInfo.from_dict(first["benchmark"])
    if len(bench) != benchmark.identities or len(plan.ids) != benchmark.identities:
        raise ShardError(
            f"{config.data}: has {len(bench)} identities now, the shards planned {benchmark.identities}; "
            "the data changed since the shards ran: run them again"
        )
    ctx = RunContext(config, None, bench, mtg, plan, out)
    results = BenchResults(benchmark)
    log = [line for record in records for line in record.get("log", [])]
    for index, entry in enumerate(first["encoders"]):
        store = EmbeddingStore(out / "embeddings" / entry["store"], entry["name"], entry["dim"], entry["fingerprint"])
        missing = store.missing(plan.keys)
        if missing:
            raise NearIDError(
                f"{store.folder}: {len(missing)} of the {len(plan)} images of {entry['name']} are not in the "
                f"store (e.g. {missing[0]}); a shard did not finish or wrote elsewhere: run it again, then merge"
            )
        computed = sum(record["encoders"][index]["embeddings_computed"] for record in records)
        line = (
            f"[{entry['name']}] merged {len(records)} shards: unique images {len(plan)}; "
            f"embeddings computed by the shards: {computed}"
        )
        print(line, flush=True)
        log.append(line)
        encoder = SimpleNamespace(name=entry["name"], untrained=entry["untrained"])
        results.encoders[entry["name"]] = score_encoder(ctx, encoder, entry["spec"], store, computed)
    results.log = log
    with results_lock(out):
        merged = merge_bench_results(out / "results.json", results)
        write_tables(merged, out)
    return merged
