"""``make demo``: the whole NearID pipeline offline, end to end, on data it makes itself.

1. ``nearid synth``: a synthetic NearID-bench (objects on two or three backgrounds, and per view and
   source a near-identity distractor drawn into *that* background at the same place) with train / val
   / test splits. Sources: ``Instance`` — another object of the same kind, what the paper's inpainted
   distractors are — and four single-attribute edits (``Part``, ``Recolor``, ``Texture``, ``Shape``),
   harder, like the paper's MTG part edits.
2. A stand-in backbone (:mod:`nearid.tiny.standin`): a small SigLIP tower pretrained on the train
   views only, with generic objectives that never see a distractor (instance discrimination and dense
   foreground prediction), saved like a SigLIP checkpoint. It replaces
   ``google/siglip2-so400m-patch14-384``, which cannot be downloaded here.
3. Frozen baselines on the test split with ``nearid bench``: a colour histogram, the mean of the
   backbone's tokens (``siglip2-mean``) and its pretrained MAP head (``siglip2-map`` — the paper's
   "None (frozen)" row and the head NearID training starts from).
4. ``nearid train``: L_NearID with role-aware masking and AdamW + cosine on the frozen backbone, from
   the token cache, over all the demo's sources; then ``nearid export``.
5. The trained model on the same test split; ``results.json`` (``baseline`` = the frozen MAP head,
   ``trained`` = NearID, SSR / PA in percent on the headline source(s); the same pooled over every
   source and per source beside it), the bench tables and an HTML report with plots.

Nothing is trained on the test split. The numbers are what this small offline setup reaches, printed
as measured; they are not the paper's numbers (those need SigLIP2-SO400M and the real dataset).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from nearid.eval.metrics import DiscriminationScore
from nearid.eval.results import DemoSummary, EncoderResult
from nearid.io.errors import NearIDError
from nearid.io.ownership import create_owned, remove_owned, seal_owned


@dataclass(frozen=True)
class DemoConfig:
    identities: int = 1500
    test: int = 300
    val: int = 50
    image_size: int = 64
    standin_epochs: int = 8
    standin_foreground_weight: float = 10.0  # 0 = instance discrimination only (the ablation in docs/demo.md)
    train_epochs: int = 30
    train_batch_size: int = 64
    train_lr: float = 3e-3  # the paper's 1e-4 is set for ~3,300 steps of a large head; the demo has 540 small ones
    warmup_steps: int = 20
    eval_steps: int = 90  # validation SSR / PA (val split) during training, written to train/validation.jsonl
    seed: int = 0
    sources: tuple[str, ...] = ("Instance", "Part", "Recolor", "Texture", "Shape")
    #: what ``baseline`` / ``trained`` report: the paper's kind of distractor (its NearID-bench headline)
    headline_sources: tuple[str, ...] = ("Instance",)


def run_demo(out_dir: str | Path = "runs/demo", config: DemoConfig = DemoConfig(), *, log=print) -> DemoSummary:
    """Run the five steps into ``out_dir``; returns what ``results.json`` holds."""
    from nearid.data.synth import canonical_sources

    sources, headline = list(canonical_sources(config.sources)), list(canonical_sources(config.headline_sources))
    if not headline or not set(headline) <= set(sources):
        raise NearIDError(f"headline sources {headline} must be among the demo's sources {sources}")
    out = Path(out_dir)
    # a demo run starts clean, but deletes only an earlier demo output (nearid.io.ownership)
    remove_owned(out, "demo")
    create_owned(out, "demo")
    started = time.perf_counter()
    clock = lambda: f"[{time.perf_counter() - started:5.0f} s]"

    log(
        f"{clock()} 1/5 synthetic NearID-bench: {config.identities} identities x {len(sources)} distractor "
        f"sources at {config.image_size} px (test {config.test}, val {config.val})"
    )
    data = _synthesise(out / "data", config, sources)
    log(f"{clock()} 2/5 stand-in backbone (replaces SigLIP2 offline), train split only")
    backbone = _stand_in_backbone(data, out / "backbone", config, sources, log)
    log(f"{clock()} 3/5 frozen baselines on the test split")
    encoders = ["histogram", f"siglip2-mean:{backbone}", f"siglip2-map:{backbone}"]
    bench = _bench(encoders, data, sources, out / "bench")
    for r in bench.encoders.values():
        h, a = _pooled(r, headline), _pooled(r, sources)
        log(
            f"    {r.spec.split(':')[0]:14s} {', '.join(headline)}: SSR {h['ssr']:5.1f}  PA {h['pa']:5.1f}   "
            f"all sources: SSR {a['ssr']:5.1f}  PA {a['pa']:5.1f}"
        )
    log(f"{clock()} 4/5 NearID head training on the frozen backbone (token cache)")
    model = _train_head(data, out, backbone, config, sources)
    log(f"{clock()} 5/5 the trained model on the same test split")
    bench = _bench([*encoders, f"nearid:{model}"], data, sources, out / "bench")
    from nearid.report.html import write_report

    report = write_report(out / "bench" / "results.json", out / "report.html")
    results = _summary(bench, config, sources, headline, (f"siglip2-map:{backbone}", f"nearid:{model}"))
    results = dataclasses.replace(
        results,
        seconds=round(time.perf_counter() - started, 1),
        outputs={"tables": str(out / "bench" / "results.md"), "report": str(report), "model": str(model)},
    )
    results.write(out / "results.json")
    seal_owned(out, "demo")  # what it wrote; anything added later is not demo's to delete
    log("\n" + comparison_table(results))
    from nearid.score.explain import explain_example

    picture = explain_example(data / "MTG", f"nearid:{model}", out / "explain.png")
    log(f"where the trained model sees an identity change (nearid explain, docs/explain.md): {picture}")
    log(
        f"\n{clock()} done. results: {out / 'results.json'}   tables: {out / 'bench' / 'results.md'}   report: {report}"
    )
    return results


def _synthesise(data: Path, config: DemoConfig, sources: list[str]) -> Path:
    """Step 1: the synthetic NearID-bench (one MTG test sample: the demo benches NearID-bench only)."""
    from nearid.data.synth import SynthConfig, generate

    synth = SynthConfig(
        identities=config.identities,
        sources=tuple(sources),
        size=config.image_size,
        seed=config.seed,
        test=config.test,
        val=config.val,
        mtg_train=0,
        mtg_test=1,
    )
    generate(data, synth, progress=False)
    return data


def _stand_in_backbone(data: Path, folder: Path, config: DemoConfig, sources: list[str], log) -> Path:
    """Step 2: the offline stand-in for SigLIP2, pretrained on the train split only."""
    from nearid.data import load_nearid
    from nearid.tiny.standin import StandInConfig, pretrain_standin

    standin = StandInConfig(
        image_size=config.image_size,
        epochs=config.standin_epochs,
        seed=config.seed,
        foreground_weight=config.standin_foreground_weight,
    )
    return pretrain_standin(load_nearid(data, sources, split="train"), folder, standin, log=log)


def _bench(encoders: list[str], data: Path, sources: list[str], out: Path):
    """Steps 3 and 5: NearID-bench on the test split, in fp32 on the CPU (the same numbers everywhere)."""
    from nearid.bench.run import BenchConfig, run_bench

    return run_bench(
        BenchConfig(
            encoders=encoders, out=str(out), data=str(data), sources=sources, split="test", device="cpu", dtype="fp32"
        )
    )


def _train_head(data: Path, out: Path, backbone: Path, config: DemoConfig, sources: list[str]) -> Path:
    """Step 4: NearID's head retrained on the frozen stand-in (token cache), exported as a full model."""
    from nearid.training.config import TrainConfig
    from nearid.training.export import export
    from nearid.training.loop import train

    trained = train(
        TrainConfig(
            data=str(data),
            out=str(out / "train"),
            sources=sources,
            backbone=str(backbone),
            epochs=config.train_epochs,
            batch_size=config.train_batch_size,
            lr=config.train_lr,
            warmup_steps=config.warmup_steps,
            seed=config.seed,
            save_steps=10**9,
            log_steps=50,
            eval_steps=config.eval_steps,
        )
    )
    return export(trained["checkpoint"], out / "model")


def _summary(bench, config: DemoConfig, sources: list[str], headline: list[str], compared: tuple[str, str]):
    """What ``results.json`` holds: the headline and all-source figures of every encoder, pooled."""
    encoders_run = bench.encoders.values()
    scores = {r.spec: _pooled(r, headline) for r in encoders_run}
    everything = {r.spec: _pooled(r, sources) for r in encoders_run}
    baseline_name, trained_name = compared
    return DemoSummary(
        baseline=scores[baseline_name],
        trained=scores[trained_name],
        gain=_gain(scores[baseline_name], scores[trained_name]),
        headline_sources=headline,
        all_sources={
            "baseline": everything[baseline_name],
            "trained": everything[trained_name],
            "gain": _gain(everything[baseline_name], everything[trained_name]),
            "sources": sources,
        },
        encoders=scores,
        encoders_all_sources=everything,
        per_source={r.spec: {s: _percent(v) for s, v in r.nearid.per_source.items()} for r in encoders_run},
        setup={
            **config.__dict__,
            "sources": sources,
            "headline_sources": headline,
            "test_identities": bench.benchmark.identities,
            "baseline": "frozen stand-in backbone with its pretrained MAP head (siglip2-map)",
            "trained": "the same frozen backbone, MAP head retrained with L_NearID",
        },
        seconds=0.0,  # set by run_demo once the report is written
        outputs={},
    )


def _percent(score: DiscriminationScore) -> dict:
    return {"ssr": float(score.ssr), "pa": float(score.pa)}


def _gain(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in ("ssr", "pa")}


def _pooled(result: EncoderResult, sources: list[str]) -> dict:
    """SSR / PA (percent) over ``sources``, pooled as the bench pools its groups."""
    return _percent(DiscriminationScore.pool(*(result.nearid.per_source[s] for s in sources)))


def comparison_table(results: DemoSummary) -> str:
    """The printed summary: every encoder on the headline source(s) and on all sources, per source for
    the baseline and the trained head, and the gain."""
    headline = ", ".join(results.headline_sources)
    rows = [
        f"| encoder | SSR ({headline}) | PA ({headline}) | SSR (all sources) | PA (all sources) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in results.encoders.items():
        a = results.encoders_all_sources[name]
        rows.append(f"| {name.split(':')[0]} | {s['ssr']:.1f} | {s['pa']:.1f} | {a['ssr']:.1f} | {a['pa']:.1f} |")
    sources = results.all_sources["sources"]
    rows += ["", "| SSR / PA per source | " + " | ".join(sources) + " |", "|---|" + "---:|" * len(sources)]
    for name, s in results.per_source.items():
        if name.startswith(("siglip2-map", "nearid")):
            rows.append(
                f"| {name.split(':')[0]} | "
                + " | ".join(f"{s[x]['ssr']:.1f} / {s[x]['pa']:.1f}" for x in sources)
                + " |"
            )
    gain, b, t = results.gain, results.baseline, results.trained
    rows.append(
        f"\nNearID head vs frozen MAP head (baseline), {headline}: SSR {b['ssr']:.1f} -> {t['ssr']:.1f} "
        f"({gain['ssr']:+.1f}), PA {b['pa']:.1f} -> {t['pa']:.1f} ({gain['pa']:+.1f}); all sources: SSR "
        f"{results.all_sources['gain']['ssr']:+.1f}, PA {results.all_sources['gain']['pa']:+.1f}"
    )
    return "\n".join(rows)
