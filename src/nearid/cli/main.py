"""Command-line front end. Each command parses arguments and calls the library; no logic lives here.

A :class:`~nearid.io.errors.NearIDError` (bad input, missing weights, ...) is printed as one line on
stderr with exit status 2 and no traceback; anything else is a bug and keeps its traceback. Ctrl-C
is one line and status 130; output cut short by a closed pipe ends quietly with 141.

Start-up is light: this module imports only the standard library and ``nearid.io.errors`` (building
the parser adds ``nearid.data.synth``, numpy and Pillow, for the synth options' defaults), and each
command imports what it needs inside its function, so ``nearid --help``, ``metrics``, ``dbpp`` and
``report`` never import torch or transformers (tests/test_cli_light.py checks ``sys.modules``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nearid.io.errors import NearIDError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``nearid CMD: error: ...`` and exit 2, like every other user
    error (argparse's default also prints the usage block, which buries the one line that matters)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (batch sizes, counts, step intervals)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give an integer of at least 1")
    return value


def _nonnegative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (0 = none / never)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: give an integer of at least 0")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None


def _workers(text: str) -> int | str:
    """An argparse type: ``auto`` or an integer >= 0 (input worker processes; 0 = in the main process)."""
    return text if text == "auto" else _nonnegative_int(text)


def _finite_float(text: str) -> float:
    """An argparse type: a finite number (nan and inf are refused: they silently poison every result)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text}: give a finite number")
    return value


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate)."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number greater than 0")
    return value


def _add_encoder_options(
    parser: argparse.ArgumentParser, default_model: str | None = "nearid", repeatable: bool = False
) -> None:
    if repeatable:  # score: several metrics in one run, a column each (a list; None: the default)
        parser.add_argument(
            "--model",
            action="append",
            help=f"encoder or pair-scorer (judge) spec (default: {default_model}); repeat to score with several "
            "metrics in one run, a column each; see `nearid encoders`",
        )
    else:
        parser.add_argument(
            "--model", default=default_model, help=f"encoder spec (default: {default_model}); see `nearid encoders`"
        )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument(
        "--dtype", default="auto", help="auto | float32 | bfloat16 | float16 (auto: bf16 on GPU, fp32 on CPU)"
    )
    parser.add_argument("--batch-size", type=_positive_int, default=32)
    parser.add_argument(
        "--allow-pickle", action="store_true", help="allow loading pickled .bin weights (runs code in them)"
    )
    _input_options(parser)


def _input_options(parser: argparse.ArgumentParser) -> None:
    """``--num-workers`` / ``--fast-decode``: how images are decoded (nearid.images.pipeline)."""
    parser.add_argument(
        "--num-workers",
        type=_workers,
        default="auto",
        metavar="N",
        help="processes decoding images (default auto: min(8, CPUs) on CUDA; 0 on the CPU, where workers "
        "would take the model's cores); 0 = in the main process",
    )
    parser.add_argument(
        "--fast-decode",
        action="store_true",
        help="decode JPEGs of at least twice the model's input size at reduced scale (faster; "
        "embeddings differ slightly from the exact default, see docs/input_pipeline.md)",
    )


def _mask_cleaning_options(p, bench: bool = False) -> None:
    """``--mask-cleaning`` / ``--mask-dilate`` of bench and score (they act only with ``--masks``)."""
    p.add_argument(
        "--mask-cleaning",
        default=None if bench else "authors",
        choices=["authors", "none"],
        help="with --masks: clean each mask as the authors do (blur, threshold, close/open, largest "
        "contour; default) or use it raw (none)",
    )
    p.add_argument(
        "--mask-dilate",
        type=int,
        default=0,
        metavar="K",
        help="with --masks: dilate the cleaned mask by an odd K x K max filter (default 0: off)",
    )


def add_judge_options(parser: argparse.ArgumentParser) -> None:
    """The options of a ``vlm:`` judge (nearid.judges.vlm); they act only on ``vlm:`` specs."""
    group = parser.add_argument_group("VLM judge (vlm:<model>) options")
    group.add_argument(
        "--prompt-file", help="the judge's rubric text instead of ours (e.g. the authors' vl_template_v2.txt)"
    )
    group.add_argument(
        "--judge-readout",
        default="generate",
        choices=["generate", "expected"],
        help="generate: parse the written score (the paper's); expected: probability-weighted 0-10 score "
        "of an answer forced up to the number (one forward pass, no ties) (default: generate)",
    )
    group.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=512,
        help="generate: answer length limit (default 512; the authors' 128 cut ~260-token answers)",
    )
    group.add_argument(
        "--judge-batch-size", type=_positive_int, default=8, help="at most this many pairs per model call (default 8)"
    )


def judge_options(args) -> dict:
    """``add_judge_options``' values as ``load_metric(..., judge_options=...)`` takes them."""
    return {
        "prompt_file": args.prompt_file,
        "readout": args.judge_readout,
        "max_new_tokens": args.max_new_tokens,
        "judge_batch_size": args.judge_batch_size,
    }


def _encoder(args):
    from nearid.models.encoders import load_encoder

    return load_encoder(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)


def cmd_embed(args) -> int:
    from nearid.io.outputs import check_outputs
    from nearid.models.embedding import check_inputs, embed, embedding_format, image_files, save_embeddings

    images, masks = image_files(args.images), args.masks and image_files(args.masks, masks=True)
    check_outputs([args.out], [*args.images, *(args.masks or [])])  # input errors before any model is loaded
    embedding_format(args.out)
    check_inputs(images, masks, args.batch_size)
    vectors = embed(
        _encoder(args),
        images,
        masks,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        fast_decode=args.fast_decode,
    )
    save_embeddings(args.out, vectors, images, model=args.model)
    print(f"wrote {len(vectors)} embeddings of width {vectors.shape[1]} to {args.out}")
    return 0


def cmd_compare(args) -> int:
    from nearid.models.embedding import check_inputs, embed, image_files, similarity

    images, masks = image_files(args.images), args.masks and image_files(args.masks, masks=True)
    check_inputs(images, masks, args.batch_size)
    encoder = _encoder(args)
    vectors = embed(
        encoder, images, masks, batch_size=args.batch_size, num_workers=args.num_workers, fast_decode=args.fast_decode
    )
    sims = similarity(vectors).numpy()
    names = [Path(p).name for p in images]
    width = max(8, *(len(n) for n in names))
    print(f"cosine similarity [{encoder.name}]")
    print(" " * width + "".join(f"{i:>9d}" for i in range(len(names))))
    for i, (name, row) in enumerate(zip(names, sims)):
        print(f"{name:>{width}}" + "".join(f"{v:9.4f}" for v in row) + f"   [{i}]")
    return 0


def cmd_encoders(args) -> int:
    from nearid.models.specs import available_encoders

    for spec, description in available_encoders().items():
        print(f"{spec:50s} {description}")
    return 0


def cmd_synth(args) -> int:
    from nearid.data.synth import SynthConfig, generate
    from nearid.io.outputs import check_outputs

    check_outputs([], [], folders=[args.out])
    config = SynthConfig(
        identities=args.identities,
        sources=tuple(args.sources),
        size=args.size,
        seed=args.seed,
        val=args.val,
        test=args.test,
        mtg_train=args.mtg_train,
        mtg_test=args.mtg_test,
        image_format=args.image_format,
        output_format=args.format,
        workers=args.workers,
    )
    summary = generate(args.out, config, overwrite=args.overwrite)
    splits = summary["splits"]
    print(
        f"wrote {summary['identities']} identities ({summary['views']} views; train/val/test "
        f"{splits['train']}/{splits['val']}/{splits['test']}), sources {', '.join(summary['config']['sources'])}, "
        f"MTG {summary['mtg']['train']}+{summary['mtg']['test']} to {args.out} in {summary['seconds']['total']:.1f} s"
    )
    return 0


def cmd_bench(args) -> int:
    from nearid.bench.run import BenchConfig, run_bench
    from nearid.io.outputs import check_outputs
    from nearid.report.tables import markdown

    values = {
        "encoders": args.encoder,
        "data": args.data,
        "sources": args.sources,
        "split": args.split,
        "masks": args.masks,
        "mask_cleaning": args.mask_cleaning,
        "mtg": args.mtg,
        "mtg_split": args.mtg_split,
    }
    if args.preset:
        from nearid.bench.presets import check_available, resolve

        values = resolve(args.preset, values)  # explicit options override the preset's
        check_available(values)  # offline: a missing hub dataset or model fails here, before anything loads
    for option, name in (("--encoder", "encoders"), ("--data", "data")):
        if not values[name]:
            raise NearIDError(f"{option} is required (or --preset table1 / table7)")
    defaults = {"split": "test", "masks": False, "mask_cleaning": "authors", "mtg_split": "test"}
    values = {k: defaults[k] if v is None and k in defaults else v for k, v in values.items()}
    named = [s.split("=", 1)[1] for s in values["sources"] or [] if "=" in s]
    check_outputs([], [values["data"], args.split_file, values["mtg"], *named], folders=[args.out])
    config = BenchConfig(
        **values,
        out=args.out,
        split_file=args.split_file,
        mask_dilate=args.mask_dilate,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        allow_pickle=args.allow_pickle,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        judge_options=getattr(args, "judge_options", None),
        num_workers=args.num_workers,
        fast_decode=args.fast_decode,
    )
    results = run_bench(config)
    if results is not None:
        print("\n" + markdown(results))
        print(f"results: {Path(args.out) / 'results.json'} (+ results.md, results.csv, results.tex, sims/)")
        if args.preset:
            from nearid.bench.presets import comparison_markdown, get_preset, write_comparison

            preset = get_preset(args.preset)
            print("\n" + comparison_markdown(results, preset))
            print(f"comparison with the published values: {write_comparison(results, preset, args.out)} (+ .csv)")
    return 0


def cmd_metrics(args) -> int:
    from nearid.eval.simtables import score_tables

    kind, score = score_tables(args.tables)
    pooled = f"{len(args.tables)} table{'s' if len(args.tables) > 1 else ''} pooled"
    if args.json:
        extra = {"m_o": score.m_o, "m_opair": score.m_opair} if kind == "mtg" else {}
        print(
            json.dumps(
                {
                    **extra,
                    "ssr": score.ssr,
                    "pa": score.pa,
                    "pa_published": score.pa_published,
                    "n_samples": score.n_samples,
                    "n_trials": score.n_trials,
                }
            )
        )
    elif kind == "mtg":
        print(
            f"MTG  M-O {score.m_o:.4f}  M-Opair {score.m_opair:.4f}  SSR {score.ssr:.2f}  PA {score.pa:.2f}  "
            f"PA as published {score.pa_published:.2f}  ({score.n_samples} samples, {score.n_trials} trials, {pooled})"
        )
    else:
        print(
            f"SSR {score.ssr:.2f}  PA {score.pa:.2f}  PA as published {score.pa_published:.2f}  "
            f"({score.n_samples} identities, {score.n_trials} trials, {pooled})"
        )
    return 0


def cmd_dbpp(args) -> int:
    from nearid.eval.dbpp import alignment, alignment_json, format_table

    if args.scores and not args.name:
        raise NearIDError("--scores needs --name: the name your metric gets in the table")
    result = alignment(args.ratings, args.scores, args.name)
    if args.json:
        print(json.dumps(alignment_json(result)))
    else:
        print(format_table(result))
    if args.scores:
        info = result["_details"]["scorers"][args.name]
        print(
            f"{args.name}: {info['keys_paired']} of {info['keys_total']} keys paired with human ratings",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


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


def cmd_merge(args) -> int:
    from nearid.eval.results import BenchResults
    from nearid.io import records

    merged = records.merge(Path(args.out))  # the one merge: bench shards (judges too) or score shards
    if isinstance(merged, BenchResults):
        from nearid.report.tables import markdown

        print("\n" + markdown(merged))
        print(f"results: {Path(args.out) / 'results.json'} (+ results.md, results.csv, results.tex, sims/)")
    else:
        print(f"merged {merged.n_pairs} pairs into {args.out} and its side files")
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

    judge_options = getattr(args, "judge_options", None)
    return [
        (
            spec,
            load_metric(
                spec, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle, judge_options=judge_options
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


def cmd_train(args) -> int:
    from nearid.training.trainer import TrainConfig, train

    config = TrainConfig.from_options(args.config, **vars(args))
    from nearid.io.outputs import check_outputs

    check_outputs([], [config.data, config.mtg, args.config], folders=[config.out])
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    print(f"done: step {result['step']}, loss {result['loss']:.4f}, checkpoint {result['checkpoint']}")
    return 0


def cmd_export(args) -> int:
    from nearid.io.outputs import check_outputs
    from nearid.training.trainer import export

    check_outputs([], [args.checkpoint], folders=[args.out])
    print(
        f"wrote {export(args.checkpoint, args.out, args.backbone)} (load with NearIDModel.from_pretrained or nearid:DIR)"
    )
    return 0


def cmd_demo(args) -> int:
    from nearid.demo import DemoConfig, run_demo
    from nearid.io.outputs import check_outputs

    check_outputs([], [], folders=[args.out])
    overrides = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in vars(args).items()
        if k in DemoConfig.__dataclass_fields__ and v is not None
    }
    run_demo(args.out, DemoConfig(**overrides))
    return 0


def cmd_distract(args) -> int:
    from nearid.distract import DistractConfig, distract
    from nearid.distract.generators import GENERATORS

    if args.list:
        for name, spec in GENERATORS.items():
            print(f"{name:18s} {spec.pipeline} ({spec.model}): {spec.needs}")
        return 0
    missing = [name for name in ("data", "generator", "source") if getattr(args, name) is None]
    if missing:
        raise NearIDError(f"--{missing[0]} is required (see nearid distract --help; --list shows the generators)")
    fields = DistractConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    values["band"] = tuple(values.get("band", DistractConfig.band))
    summary = distract(DistractConfig(**values))
    if summary is not None:
        m = summary["measurements"]
        untrained = " (untrained)" if summary["untrained"] else ""
        print(
            f"wrote {summary['distractors']} distractors of {summary['identities']} identities "
            f"({summary['generator']}{untrained}; kept {summary['kept']}, filtered {summary['filtered']}; "
            f"resumed {summary['resumed_identities']}) to {summary['out']}"
        )
        print(
            f"quality: {summary['quality']}; outside-mask mean abs difference {m['outside_mean_abs']}; "
            f"{summary['seconds']['per_image']} s per image"
        )
    return 0


def cmd_mask(args) -> int:
    from nearid.distract.masking import MaskConfig, make_masks

    fields = MaskConfig.__dataclass_fields__
    config = MaskConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    result = make_masks(config)
    print(f"wrote {len(result)} masks to {args.out}")
    for image, why in result.failures.items():
        print(f"  no mask for {image}: {why}", file=sys.stderr)
    if not result.written:
        print("nearid mask: error: no mask was written", file=sys.stderr)
        return 2
    return 0


class _Version(argparse.Action):
    """``--version``: argparse's own action needs the string when the parser is built; this looks the
    installed version up (importlib.metadata, ~50 ms) only when asked."""

    def __init__(
        self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help="print the version and exit"
    ):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from nearid import __version__

        print(f"nearid {__version__}")
        parser.exit()


def _shard_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--num-shards`` / ``--shard-index`` of bench and score (nearid.bench.shards; finished by ``nearid merge``)."""
    parser.add_argument(
        "--num-shards",
        type=_positive_int,
        help=f"split the work into this many independent jobs by {what} (SLURM arrays, Kubernetes jobs); "
        "each writes a partial record, `nearid merge` finishes",
    )
    parser.add_argument("--shard-index", type=_nonnegative_int, help="this job's shard, 0 .. --num-shards - 1")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nearid", description="Identity-aware image embeddings (NearID).")
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("embed", help="embed images and save the vectors")
    p.add_argument("images", nargs="+", help="image files or folders (the images below a folder)")
    p.add_argument("--masks", nargs="+", help="one foreground mask per image (background is blacked out)")
    p.add_argument("--out", required=True, help="output .npz (embeddings, paths) or .safetensors")
    _add_encoder_options(p)
    p.set_defaults(run=cmd_embed)

    p = commands.add_parser("compare", help="print the cosine-similarity matrix of some images")
    p.add_argument("images", nargs="+", help="image files or folders (the images below a folder)")
    p.add_argument("--masks", nargs="+")
    _add_encoder_options(p)
    p.set_defaults(run=cmd_compare)

    from nearid.data.synth import SOURCES, SynthConfig

    defaults = SynthConfig()
    p = commands.add_parser("synth", help="write a synthetic matched-context benchmark in the hub schemas")
    p.add_argument("out", help="output folder (NearID/, NearID-<Source>/, MTG/, splits/)")
    p.add_argument("--identities", type=_positive_int, default=defaults.identities)
    p.add_argument(
        "--sources", nargs="+", default=list(SOURCES), help=f"distractor rules (default: {' '.join(SOURCES)})"
    )
    p.add_argument("--size", type=_positive_int, default=defaults.size, help="image side in pixels")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--val", type=_nonnegative_int, help="validation identities (default: 5%%, at most 100)")
    p.add_argument("--test", type=_positive_int, help="test identities (default: 25%%, at most 500)")
    p.add_argument("--mtg-train", type=_nonnegative_int, default=defaults.mtg_train)
    p.add_argument("--mtg-test", type=_nonnegative_int, default=defaults.mtg_test)
    p.add_argument("--image-format", choices=["jpeg", "png"], default=defaults.image_format)
    p.add_argument("--format", choices=["arrow", "parquet"], default=defaults.output_format)
    p.add_argument("--workers", type=_positive_int, default=defaults.workers)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=cmd_synth)

    p = commands.add_parser("bench", help="NearID-bench (+ MTG) for one or more encoders")
    p.add_argument(
        "--preset",
        choices=["table1", "table7"],
        help="the paper's Table 1 (or Table 7, foreground only) in one run, printed beside the published "
        "values; the options below override the preset's",
    )
    p.add_argument(
        "--encoder",
        action="append",
        help="encoder or pair-scorer (judge) spec; repeat for a comparison table (required without --preset)",
    )
    p.add_argument(
        "--data",
        help="positives: hub id, save_to_disk folder, parquet, a `nearid synth` folder, "
        "or a folder of <identity>/view1.png ... (nearid.data.folder); required without --preset",
    )
    p.add_argument(
        "--sources",
        nargs="+",
        help="distractor sources (<data>-<Source>, or NAME=LOCATION; "
        "default for a folder benchmark: every source in it)",
    )
    p.add_argument("--split", help="value of the split column, or 'all' (default: test)")
    p.add_argument("--split-file", help="JSON list of row positions (overrides --split)")
    p.add_argument(
        "--masks",
        action="store_true",
        default=None,
        help="foreground only: black out backgrounds with the views' masks",
    )
    _mask_cleaning_options(p, bench=True)
    p.add_argument("--mtg", help="MTG dataset (hub id or folder) to add the MTG benchmark")
    p.add_argument("--mtg-split", help="MTG split to score (default: test, the paper's benchmark)")
    p.add_argument("--out", required=True, help="output folder (embedding store, sims/, results.*)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--allow-pickle", action="store_true")
    _shard_options(p, "identity")
    add_judge_options(p)
    _input_options(p)
    p.set_defaults(run=cmd_bench)

    p = commands.add_parser(
        "metrics", help="SSR and PA (MTG: also M-O, M-Opair) from similarity tables in the authors' CSV layout"
    )
    p.add_argument(
        "tables",
        nargs="+",
        help="CSV files: NearID-bench (sample_id, sim_01, sim_02, sim_12, cross_ij) "
        "or MTG (mtg_*.csv of nearid bench --mtg); pooled",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"ssr", "pa", "pa_published", "n_samples", "n_trials"} (MTG: also "m_o", "m_opair")',
    )
    p.set_defaults(run=cmd_metrics)

    p = commands.add_parser("dbpp", help="DreamBench++ metric-to-human alignment (M-H) per category")
    p.add_argument("--ratings", required=True, help="ratings folder (data_<scorer>_rating/, data_human_rating/)")
    p.add_argument("--scores", help="your metric's scores on the DreamBench++ images: <method>.json files")
    p.add_argument("--name", help="name of your metric in the table (with --scores)")
    p.add_argument("--json", action="store_true", help="print {category: {scorer: r}} as JSON")
    p.set_defaults(run=cmd_dbpp)

    p = commands.add_parser("score", help="score generated images against references (identity preservation)")
    p.add_argument("--refs", required=True, help="reference folder, a pairs CSV, or a DreamBench++ samples folder")
    p.add_argument("--gens", help="generated-image folder (paths or subjects pairing)")
    p.add_argument("--pairing", default="auto", choices=["auto", "csv", "paths", "subjects", "dreambench"])
    p.add_argument("--masks", help="foreground masks: MASKS/refs/<relative path>, MASKS/gens/<relative path>")
    _mask_cleaning_options(p)
    p.add_argument(
        "--out", default="scores.csv", help="per-pair output (.csv or .jsonl); side files are <out>.summary.json, ..."
    )
    p.add_argument("--format", choices=["csv", "jsonl"], help="per-pair format (default: from the --out extension)")
    p.add_argument("--threshold", help="a number, or 'calibrated' (with --calibration) for same/different decisions")
    p.add_argument("--calibration", help='a `nearid bench` results.json (validation split) or {"value": x}')
    p.add_argument(
        "--skip-errors", action="store_true", help="score what can be scored; list failures in <out>.errors.csv"
    )
    _add_encoder_options(p, default_model="nearid", repeatable=True)
    _shard_options(p, "pair")
    add_judge_options(p)
    p.set_defaults(run=cmd_score)

    p = commands.add_parser("report", help="a self-contained HTML report from bench or score results")
    p.add_argument("results", help="results.json of `nearid bench`, or <out>.summary.json of `nearid score`")
    p.add_argument("--out", help="output HTML (default: report.html beside the results)")
    p.set_defaults(run=cmd_report)

    p = commands.add_parser("merge", help="finish a run split with --num-shards: the tables of a one-process run")
    p.add_argument("out", help="the --out of the sharded `nearid bench` (a folder) or `nearid score` (a file)")
    p.set_defaults(run=cmd_merge)

    p = commands.add_parser(
        "train", help="train the NearID head on a frozen backbone (accelerate launch for N processes)"
    )
    p.add_argument("--config", help="JSON training config; the options below override it")
    p.add_argument("--data", help="positives (hub id, folder, or a `nearid synth` folder)")
    p.add_argument("--sources", nargs="+", help="distractor sources (default: Flux Flux_1024 Qwen Qwen_1328)")
    p.add_argument("--mtg", help="MTG dataset mixed in (train split, repeated)")
    p.add_argument("--out", help="run folder: token_cache/, checkpoints/step-N/, config.json")
    p.add_argument(
        "--backbone", help="SigLIP checkpoint (default google/siglip2-so400m-patch14-384), tiny[:seed] or nearid:DIR"
    )
    p.add_argument("--loss", help="loss spec, e.g. nearid:1.0+cohesion:0.1 (default nearid:1.0)")
    p.add_argument("--lr", type=_positive_float)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=_positive_int, help="global batch (default 128)")
    p.add_argument("--warmup-steps", type=_nonnegative_int)
    p.add_argument("--seed", type=int)
    p.add_argument("--save-steps", type=_positive_int)
    p.add_argument("--log-steps", type=_positive_int)
    p.add_argument("--max-steps", type=_positive_int)
    p.add_argument(
        "--mixed-precision",
        choices=["auto", "no", "fp16", "bf16"],
        help="auto (default): fp16 on CUDA as the authors trained, no on the CPU; the frozen trunk then runs in half",
    )
    p.add_argument(
        "--jitter-prob", type=float, help="per-slot colour jitter probability (default 0, as the authors' code)"
    )
    p.add_argument("--affine-prob", type=float, help="per-slot translate + scale disalignment probability (default 0)")
    p.add_argument(
        "--eval-steps", type=_nonnegative_int, help="validation SSR/PA every N steps on --val-split (default: never)"
    )
    p.add_argument("--val-split", help="split validated on (default val)")
    p.add_argument(
        "--token-cache",
        choices=["auto", "on", "off"],
        help="auto (default): cache the trunk's tokens when the estimate fits the disk (keeping 10%% + 1 GiB free), "
        "else stream; on: cache or refuse; off: stream (run the trunk every step)",
    )
    p.add_argument("--uncached", dest="token_cache", action="store_const", const="off", help="--token-cache off")
    p.add_argument(
        "--num-workers",
        type=lambda text: text if text == "auto" else _nonnegative_int(text),
        help="processes decoding the trunk's inputs while it runs (default auto: min(8, CPUs) on CUDA, 0 on CPU)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (one nearid train made)")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("export", help="write a full NearIDModel from a head-only checkpoint")
    p.add_argument("checkpoint", help="RUN/checkpoints/step-N")
    p.add_argument("out", help="output folder (save_pretrained layout)")
    p.add_argument("--backbone", help="override the run's backbone")
    p.set_defaults(run=cmd_export)

    p = commands.add_parser("encoders", help="list the encoder specs")
    p.set_defaults(run=cmd_encoders)

    p = commands.add_parser(
        "demo", help="offline end-to-end run: synth data, stand-in backbone, baselines, NearID training (make demo)"
    )
    p.add_argument("--out", default="runs/demo", help="output folder (emptied first)")
    from nearid.demo import DemoConfig

    d = DemoConfig()
    p.add_argument("--identities", type=int, help=f"synthetic identities (default {d.identities})")
    p.add_argument("--test", type=int, help=f"test identities (default {d.test})")
    p.add_argument("--val", type=int, help=f"validation identities (default {d.val})")
    p.add_argument(
        "--standin-epochs", type=int, help=f"stand-in backbone pretraining epochs (default {d.standin_epochs})"
    )
    p.add_argument(
        "--standin-foreground-weight",
        type=float,
        help=f"weight of the stand-in's dense foreground term; 0 = contrastive only (default {d.standin_foreground_weight})",
    )
    p.add_argument("--train-epochs", type=int, help=f"NearID head training epochs (default {d.train_epochs})")
    p.add_argument(
        "--sources", nargs="+", type=str, help=f"synthetic distractor sources (default {' '.join(d.sources)})"
    )
    p.add_argument(
        "--headline-sources",
        nargs="+",
        type=str,
        help=f"sources that results.json's baseline/trained report (default {' '.join(d.headline_sources)})",
    )
    p.add_argument("--seed", type=int)
    p.set_defaults(run=cmd_demo)

    p = commands.add_parser(
        "distract", help="inpaint near-identity distractors into each view's background (diffusers)"
    )
    p.add_argument("--list", action="store_true", help="list the generators, what they need and their licences")
    p.add_argument(
        "--data", help="positives: hub id, save_to_disk/parquet folder, a `nearid synth` root, or a folder layout"
    )
    p.add_argument("--generator", help="flux-fill | sdxl-inpaint | qwen-image | tiny-flux-fill | tiny-sdxl-inpaint")
    p.add_argument("--source", help="name of the new source (bench --sources NAME reads <data>-NAME)")
    p.add_argument("--out", help="output (default: <data>-<source>; for a folder layout <folder>-nearid/)")
    p.add_argument("--split", help="rows to generate: a split name or 'all' (default: all); other rows stay empty")
    p.add_argument("--split-file", help="JSON list of row positions to generate")
    p.add_argument("--model", help="model folder or hub id (default: the generator's checkpoint)")
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--strength", type=float)
    p.add_argument("--negative-prompt")
    p.add_argument("--true-cfg", type=float)
    p.add_argument("--resolution", type=int, help="longer side of the generation canvas (paper: 512 or native)")
    p.add_argument("--dilate", type=int, help="mask dilation in pixels (default 8)")
    p.add_argument("--feather", type=int, help="blend ramp inside the dilated mask, pixels, <= --dilate (default 6)")
    p.add_argument(
        "--no-paste-back",
        dest="paste_back",
        action="store_const",
        const=False,
        help="keep the pipeline's pixels outside the mask (VAE round trip) instead of the original's",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--prompts", help='JSON {"<id>": "prompt" or ["view 1", "view 2", ...]} instead of retrieval')
    p.add_argument("--template", help="prompt template with {description} and {category} (default {description})")
    p.add_argument(
        "--band", nargs=2, type=float, metavar=("LOW", "HIGH"), help="TF-IDF similarity band (default 0.1 0.8)"
    )
    p.add_argument("--quality-encoder", help="encoder spec judging 'not the same object' (default: none)")
    p.add_argument("--change-threshold", type=float, help="least mean abs change inside the mask, 0-255 (default 2)")
    p.add_argument("--filter", action="store_true", help="drop distractors that fail the quality checks (slots kept)")
    p.add_argument("--limit", type=int, help="only the first N selected identities")
    p.add_argument("--device")
    p.add_argument("--dtype")
    p.add_argument("--offload", action="store_true", help="model CPU offload (GPUs too small for the model)")
    p.add_argument("--controlnet", help="qwen-image: the inpainting ControlNet (folder or hub id)")
    p.add_argument("--lora", help="qwen-image: a LoRA such as the Lightning 8-step one (needs peft)")
    p.add_argument("--keep-shards", action="store_true", help="keep the per-identity shards after assembling")
    p.add_argument("--overwrite", action="store_true", help="replace an output an earlier distract run wrote")
    p.set_defaults(run=cmd_distract)

    p = commands.add_parser("mask", help="foreground masks for your photos (text or box -> detector -> SAM)")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--prompt", help='what to segment, e.g. "a red mug" (zero-shot detector)')
    p.add_argument("--box", help="x0,y0,x1,y1 in pixels, the same for every image (instead of --prompt)")
    p.add_argument("--out", required=True, help="output folder: <name>_mask.png per image (folder layout beside views)")
    p.add_argument("--detector", help="OWLv2 or Grounding DINO checkpoint (default google/owlv2-base-patch16-ensemble)")
    p.add_argument("--sam", help="SAM checkpoint (default facebook/sam-vit-base)")
    p.add_argument("--threshold", type=float, help="detector score threshold (default 0.1)")
    p.add_argument(
        "--layout",
        choices=["score", "folder"],
        help="score: OUT/<relative path>.png (score --masks); folder: OUT/<dir>/<stem>_mask.png (default score)",
    )
    p.add_argument("--device")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=cmd_mask)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is returned (0 ok, 2 user error, 130 Ctrl-C, 141 closed pipe).

    Everything, including building the parser and each command's imports, runs inside the handlers,
    so Ctrl-C at any moment is one line and status 130 (128 + SIGINT, as a shell reports it), never a
    traceback. Output piped into a reader that quits early (``nearid encoders | head -3``) ends
    quietly with 141 (128 + SIGPIPE), the status coreutils report in the same pipe, so a script with
    ``set -o pipefail`` can still tell that the output was cut short.
    """
    command = None
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version (0) or an argument error (2, its one line printed)
            return exc.code or 0
        finally:
            sys.stdout.flush()  # a closed pipe must show here
        command = args.command
        if hasattr(args, "judge_readout"):  # bench, score: the judge options as load_metric takes them
            args.judge_options = judge_options(args)
        status = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not as a warning at interpreter exit
        return status
    except NearIDError as exc:
        print(f"nearid {command or ''}".rstrip() + f": error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nearid: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Python's recipe (docs: signal, "Note on SIGPIPE"): point stdout at devnull so the flush at exit
        # does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
