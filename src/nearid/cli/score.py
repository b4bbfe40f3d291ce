"""``nearid score`` (generated images against their references, with one model or several) and
``nearid report`` (a self-contained HTML page from bench or score results). ``report`` needs no torch
(tests/test_cli_light.py)."""

from __future__ import annotations

import sys

from nearid.cli.options import (
    add_judge_options,
    add_load_options,
    add_mask_options,
    add_model_option,
    add_option,
    add_read_options,
    add_shard_options,
    judge_options,
)
from nearid.io.errors import NearIDError


def cmd_score(args) -> int:
    from nearid.io.outputs import check_outputs
    from nearid.io.records import shard_option
    from nearid.score.run import (
        check_options,
        check_plan,
        output_files,
        output_format,
        plan_pairs,
        prepare,
        resolve_threshold,
        same_files,
        score_pairs,
        side_file,
        write_outputs,
    )
    from nearid.score.shards import run_score_shard

    # Everything that needs no model first: options, pairing, masks, image headers, output locations.
    specs = _score_specs(args)
    check_options(
        threshold=args.threshold, calibration=args.calibration, batch_size=args.batch_size, n_models=len(specs)
    )
    shard = shard_option(args.num_shards, args.shard_index)  # before anything is read
    if shard is not None and len(specs) > 1:
        raise NearIDError("--num-shards: score one --model per sharded run (nearid merge writes one metric's outputs)")
    plan = plan_pairs(args.refs, args.gens, args.pairing)
    prepare(plan, args.masks)
    check_outputs(
        output_files(args.out, plan.rule, specs), [args.refs, args.gens, args.masks, args.calibration, *plan.inputs()]
    )
    fmt = output_format(args.out, args.format)
    check_plan(plan, args.skip_errors)
    print(f"pairing: {plan.rule} ({plan.how}), {len(plan.pairs)} pairs")
    if same := same_files(plan):
        print(
            f"nearid score: warning: references and generated images are the same {same} files "
            f"({same} of {len(plan.pairs)} pairs score 1); check --refs and --gens",
            file=sys.stderr,
        )
    metrics = _score_metrics(args, specs)
    if shard is not None and _is_pair_scorer(metrics[0][1]):
        raise NearIDError(f"--num-shards: {specs[0]} is a pair scorer; shards split encoders' scoring only")
    if len(metrics) > 1 or _is_pair_scorer(metrics[0][1]):
        return _score_several(args, plan, fmt, metrics)
    encoder = metrics[0][1]
    threshold = resolve_threshold(args.threshold, encoder, args.calibration)  # by the encoder's fingerprint
    if shard is not None:  # one share of the pairs; `nearid merge OUT` writes the outputs
        options = _scoring_options(args)
        settings = {"refs": args.refs, "gens": args.gens, "pairing": args.pairing, "masks": args.masks}
        settings.update(format=fmt, threshold=threshold, **{k: v for k, v in options.items() if k != "num_workers"})
        path = run_score_shard(encoder, plan, shard, out=args.out, settings=settings, **options)
        print(f"{shard.name}: partial record {path}; when every shard is done: nearid merge {args.out}")
        return 0
    result = score_pairs(encoder, plan, **_scoring_options(args))
    summary = write_outputs(result, args.out, threshold=threshold, fmt=fmt)
    stats = summary.similarity or {}
    print(
        f"scored {summary.n_pairs} pairs ({plan.rule} pairing) with {encoder.name}; "
        f"{result.embedded} unique images embedded" + (f", {result.masked} with a mask" if plan.masks else "")
    )
    if stats:
        print("similarity: " + "  ".join(f"{k} {v:.4f}" for k, v in stats.items()))
    for subject, values in list(summary.per_subject.items())[:20]:
        print(f"  {subject:30s} n={values['n']:4d}  mean {values['mean']:.4f}  median {values['median']:.4f}")
    if summary.decisions:
        d, t = summary.decisions, summary.threshold
        print(f"threshold {t['value']:.4f} ({t['source']}): same {d['same']}, different {d['different']}")
    if summary.errors:
        print(f"skipped {summary.errors} failures, listed in {summary.errors_file}")
    print(f"wrote {args.out} and {side_file(args.out, 'summary.json').name}")
    if not summary.n_pairs:
        print("nearid score: error: no pair could be scored; see the errors file", file=sys.stderr)
        return 2
    return 0


def _score_specs(args) -> list[str]:
    """``score --model`` (repeatable): the specs, checked before anything is read; one spec keeps
    ``args.model`` a string, as before several metrics."""
    from nearid.score.run import check_metric_specs

    specs = args.model or ["nearid"]
    check_metric_specs(specs)
    if len(specs) == 1:
        args.model = specs[0]
    return specs


def _score_metrics(args, specs: list[str]) -> list[tuple[str, object]]:
    from nearid.judges.loading import load_metric

    judge = judge_options(args)
    return [
        (
            spec,
            load_metric(
                spec, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle, judge_options=judge
            ),
        )
        for spec in specs
    ]


def _is_pair_scorer(metric) -> bool:
    from nearid.models.pair_scorers import is_pair_scorer

    return is_pair_scorer(metric)


def _scoring_options(args) -> dict:
    """``nearid score``'s options for the library's scoring functions (one model, several, or a shard)."""
    return {
        "batch_size": args.batch_size,
        "skip_errors": args.skip_errors,
        "mask_cleaning": args.mask_cleaning,
        "mask_dilate": args.mask_dilate,
        "num_workers": args.num_workers,
        "fast_decode": args.fast_decode,
    }


def _score_several(args, plan, fmt, metrics) -> int:
    """``nearid score`` with several metrics (or one pair scorer): a column per metric, a summary per metric,
    each metric's calibrated decision when its bench results have one."""
    from nearid.score.run import resolve_thresholds, score_metrics, side_file, write_metric_outputs

    thresholds, problems = resolve_thresholds(args.threshold, metrics, args.calibration)
    for problem in problems:
        print(f"nearid score: warning: no decision for this metric: {problem}", file=sys.stderr)
    result = score_metrics(metrics, plan, **_scoring_options(args))
    summary = write_metric_outputs(result, args.out, thresholds=thresholds, fmt=fmt)
    print(f"scored {len(plan.pairs)} pairs ({plan.rule} pairing) with {len(metrics)} metric(s)")
    for metric in result.metrics:
        section = (summary.metrics or {}).get(metric.spec) or {
            "n_pairs": summary.n_pairs,
            "similarity": summary.similarity,
            "decisions": summary.decisions,
        }
        stats = section["similarity"] or {}
        line = f"  {metric.spec}: {section['n_pairs']} pairs" + (
            "  " + "  ".join(f"{k} {v:.4f}" for k, v in stats.items()) if stats else ""
        )
        if metric.no_answer:
            line += f"  no answer {metric.no_answer}"
        judge_stats = getattr(dict(metrics).get(metric.spec), "stats", None)  # a VLM judge times itself
        if judge_stats is not None and judge_stats.pairs:
            line += f"  {judge_stats.seconds_per_pair:.3g} s per pair"
        if section.get("decisions"):
            line += f"  same {section['decisions']['same']}, different {section['decisions']['different']}"
        print(line)
    for values in (summary.correlations or {}).values():
        r, rho = values["pearson"], values["spearman"]
        print(
            f"  {values['a']} vs {values['b']}: Pearson {'n/a' if r is None else f'{r:.3f}'}, "
            f"Spearman {'n/a' if rho is None else f'{rho:.3f}'} ({values['n']} pairs)"
        )
    if summary.errors:
        print(f"skipped {summary.errors} failures, listed in {summary.errors_file}")
    print(f"wrote {args.out} and {side_file(args.out, 'summary.json').name}")
    if not result.scored_any:
        print("nearid score: error: no pair could be scored; see the errors file", file=sys.stderr)
        return 2
    return 0


def cmd_report(args) -> int:
    from nearid.report.html import write_report

    print(f"wrote {write_report(args.results, args.out)}")
    return 0


def _add_score(commands) -> None:
    p = commands.add_parser("score", help="score generated images against references (identity preservation)")
    add_option(p, "--refs", required=True, help="reference folder, a pairs CSV, or a DreamBench++ samples folder")
    add_option(p, "--gens", help="generated-image folder (paths or subjects pairing)")
    add_option(
        p,
        "--pairing",
        default="auto",
        choices=["auto", "csv", "paths", "subjects", "dreambench"],
        help="how references meet generated images: csv (a pairs file), paths (same relative path), subjects "
        "(every image of a subject folder against its references), dreambench (DreamBench++ samples) or "
        "auto (chosen from the inputs' shape and printed; default)",
    )
    add_option(
        p,
        "--mask-folder",
        old=("--masks",),
        dest="masks",
        metavar="FOLDER",
        help="foreground masks: FOLDER/refs/<relative path>, FOLDER/gens/<relative path> (nearid mask writes them)",
    )
    add_mask_options(p, "--mask-folder")
    add_option(
        p,
        "--out",
        default="scores.csv",
        help="per-pair output (.csv or .jsonl); side files are <out>.summary.json, ...",
    )
    add_option(p, "--format", choices=["csv", "jsonl"], help="per-pair format (default: from the --out extension)")
    add_option(p, "--threshold", help="a number, or 'calibrated' (with --calibration) for same/different decisions")
    add_option(p, "--calibration", help='a `nearid bench` results.json (validation split) or {"value": x}')
    add_option(
        p, "--skip-errors", action="store_true", help="score what can be scored; list failures in <out>.errors.csv"
    )
    add_model_option(
        p,
        "an encoder or pair-scorer (judge) spec to score with",
        several="several metrics in one run, a column each",
    )
    add_load_options(p)
    add_read_options(p)
    add_shard_options(p, "pair")
    add_judge_options(p)
    p.set_defaults(run=cmd_score)


def register(commands) -> None:
    _add_score(commands)

    p = commands.add_parser("report", help="a self-contained HTML report from bench or score results")
    p.add_argument("results", help="results.json of `nearid bench`, or <out>.summary.json of `nearid score`")
    add_option(p, "--out", help="output HTML (default: report.html beside the results)")
    p.set_defaults(run=cmd_report)


__all__ = ["cmd_report", "cmd_score", "register"]
