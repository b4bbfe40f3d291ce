"""``make demo``: the whole NearID pipeline offline, end to end, on data it makes itself.

1. ``nearid synth``: a synthetic NearID-bench (objects on two or three backgrounds, and per view a
   near-identical distractor drawn into *that* background) with train / val / test splits.
2. A stand-in backbone (:mod:`nearid.training.standin`): a small SigLIP tower pretrained on the train
   split with a generic, distractor-free contrastive objective, saved like a SigLIP checkpoint. It
   replaces ``google/siglip2-so400m-patch14-384``, which cannot be downloaded here.
3. Frozen baselines on the test split with ``nearid bench``: a colour histogram, the mean of the
   backbone's tokens (``siglip2-mean``) and its pretrained MAP head (``siglip2-map`` — the paper's
   "None (frozen)" row and the head NearID training starts from).
4. ``nearid train``: the paper's recipe (L_NearID, role-aware masking, AdamW + cosine) on the frozen
   backbone from the token cache, then ``nearid export``.
5. The trained model on the same test split; ``results.json`` (``baseline`` = the frozen MAP head,
   ``trained`` = NearID, SSR / PA in percent), the bench tables and an HTML report with plots.

Nothing is trained on the test split. The numbers are what this small offline setup reaches, printed
as measured; they are not the paper's numbers (those need SigLIP2-SO400M and the real dataset).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .io import write_text_atomic


@dataclass(frozen=True)
class DemoConfig:
    identities: int = 1500
    test: int = 300
    val: int = 50
    image_size: int = 64
    standin_epochs: int = 12
    train_epochs: int = 20
    train_batch_size: int = 64
    train_lr: float = 1e-3  # the paper's 1e-4 is set for ~3,300 steps of a large head; the demo has 360 small ones
    warmup_steps: int = 20
    seed: int = 0
    sources: tuple[str, ...] = field(default_factory=lambda: ("Part", "Recolor", "Texture", "Shape"))


def run_demo(out_dir: str | Path = "runs/demo", config: DemoConfig = DemoConfig(), *, log=print) -> dict:
    """Run the five steps into ``out_dir``; returns what ``results.json`` holds."""
    from .bench import BenchConfig, run_bench
    from .data import load_nearid
    from .data.synth import SynthConfig, generate
    from .report import write_report
    from .training.standin import StandInConfig, pretrain_standin
    from .training.trainer import TrainConfig, export, train

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)  # a demo run starts clean; its outputs are all regenerated
    out.mkdir(parents=True)
    started = time.perf_counter()
    clock = lambda: f"[{time.perf_counter() - started:5.0f} s]"  # noqa: E731
    sources = list(config.sources)

    log(f"{clock()} 1/5 synthetic NearID-bench: {config.identities} identities x {len(sources)} distractor "
        f"sources at {config.image_size} px (test {config.test}, val {config.val})")
    data = out / "data"
    generate(data, SynthConfig(identities=config.identities, sources=tuple(sources), size=config.image_size,
                               seed=config.seed, test=config.test, val=config.val, mtg_train=0, mtg_test=1),
             progress=False)

    log(f"{clock()} 2/5 stand-in backbone (replaces SigLIP2 offline), train split only")
    backbone = pretrain_standin(load_nearid(data, sources, split="train"), out / "backbone",
                                StandInConfig(image_size=config.image_size, epochs=config.standin_epochs, seed=config.seed),
                                log=log)

    log(f"{clock()} 3/5 frozen baselines on the test split")
    encoders = ["histogram", f"siglip2-mean:{backbone}", f"siglip2-map:{backbone}"]
    bench_config = dict(data=str(data), sources=sources, split="test", device="cpu", dtype="fp32")
    frozen = run_bench(BenchConfig(encoders=encoders, out=str(out / "bench"), **bench_config))
    for r in frozen["encoders"].values():
        log(f"    {r['spec'].split(':')[0]:14s} SSR {_pooled(r)['ssr']:5.1f}  PA {_pooled(r)['pa']:5.1f}")

    log(f"{clock()} 4/5 NearID head training on the frozen backbone (token cache)")
    run = out / "train"
    trained = train(TrainConfig(data=str(data), out=str(run), sources=sources, backbone=str(backbone),
                                epochs=config.train_epochs, batch_size=config.train_batch_size, lr=config.train_lr,
                                warmup_steps=config.warmup_steps, seed=config.seed, save_steps=10**9,
                                log_steps=50))
    model = export(trained["checkpoint"], out / "model")

    log(f"{clock()} 5/5 the trained model on the same test split")
    results_bench = run_bench(BenchConfig(encoders=[*encoders, f"nearid:{model}"], out=str(out / "bench"), **bench_config))
    report = write_report(out / "bench" / "results.json", out / "report.html")

    scores = {r["spec"]: _pooled(r) for r in results_bench["encoders"].values()}
    baseline_name, trained_name = f"siglip2-map:{backbone}", f"nearid:{model}"
    results = {
        "baseline": scores[baseline_name],
        "trained": scores[trained_name],
        "gain": {k: scores[trained_name][k] - scores[baseline_name][k] for k in ("ssr", "pa")},
        "encoders": scores,
        "per_source": {r["spec"]: {s: _percent(v) for s, v in r["nearid"]["per_source"].items()}
                       for r in results_bench["encoders"].values()},
        "setup": {**config.__dict__, "sources": sources, "test_identities": results_bench["benchmark"]["identities"],
                  "baseline": "frozen stand-in backbone with its pretrained MAP head (siglip2-map)",
                  "trained": "the same frozen backbone, MAP head retrained with L_NearID"},
        "seconds": round(time.perf_counter() - started, 1),
        "outputs": {"tables": str(out / "bench" / "results.md"), "report": str(report), "model": str(model)},
    }
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    log("\n" + comparison_table(results))
    log(f"\n{clock()} done. results: {out / 'results.json'}   tables: {out / 'bench' / 'results.md'}   "
        f"report: {report}")
    return results


def _percent(scores: dict) -> dict:
    return {"ssr": float(scores["ssr"]), "pa": float(scores["pa"])}


def _pooled(result: dict) -> dict:
    """SSR / PA (percent) over all sources, pooled by concatenation."""
    groups = result["nearid"]["groups"]
    return _percent(groups.get("all sources") or next(iter(groups.values())))


def comparison_table(results: dict) -> str:
    """The printed summary: every encoder's pooled SSR / PA, baseline and trained marked, and the gain."""
    rows = ["| encoder | SSR | PA |", "|---|---:|---:|"]
    for name, s in results["encoders"].items():
        rows.append(f"| {name.split(':')[0]} | {s['ssr']:.1f} | {s['pa']:.1f} |")
    gain = results["gain"]
    rows.append(f"\nNearID head vs frozen MAP head (baseline): SSR {results['baseline']['ssr']:.1f} -> "
                f"{results['trained']['ssr']:.1f} ({gain['ssr']:+.1f}), PA {results['baseline']['pa']:.1f} -> "
                f"{results['trained']['pa']:.1f} ({gain['pa']:+.1f})")
    return "\n".join(rows)
