"""``nearid explain``: where a generated image stops being its reference's identity, as a picture (one
pair -> one PNG; a pairs CSV or a folder pair -> one PNG per pair in a folder). The work is
:func:`nearid.score.explain.run_explain`; this module parses and builds its config."""

from __future__ import annotations

from nearid.cli.options import (
    add_load_options,
    add_model_option,
    add_option,
    add_read_options,
    load_options,
    read_options,
)


def cmd_explain(args) -> int:
    from nearid.score.explain import ExplainConfig, run_explain

    config = ExplainConfig(
        refs=args.reference,
        gens=args.generated,
        out=args.out,
        model=args.model,
        masks=tuple(args.masks) if args.masks else None,
        method=args.explain_method,
        threshold=args.threshold,
        calibration=args.calibration,
        read=read_options(args),
        load=load_options(args),
    )
    run_explain(config)
    return 0


def register(commands) -> None:
    p = commands.add_parser(
        "explain", help="show where a generated image differs in identity from its reference (a map per pair, as PNG)"
    )
    p.add_argument("reference", help="the reference image, a pairs CSV (reference,generated) or a reference folder")
    p.add_argument("generated", nargs="?", help="the generated image, or the generated folder (same relative paths)")
    add_option(p, "--out", required=True, help="output .png for one pair; a (new or empty) folder for a batch")
    add_option(
        p,
        "--masks",
        nargs=2,
        metavar=("REF_MASK", "GEN_MASK"),
        help="one pair: foreground masks (background blacked out)",
    )
    add_option(
        p,
        "--explain-method",
        default="tokens",
        choices=["tokens", "gradient"],
        help="tokens: read-out attention x (1 - best patch match), the default (docs/explain.md); gradient: "
        "gradient x (matched - own token), MAP-head models only",
    )
    add_option(p, "--threshold", help="a number, or 'calibrated' (with --calibration): the verdict in the title")
    add_option(p, "--calibration", help='a `nearid bench` results.json (validation split) or {"value": x}')
    add_model_option(p, "the encoder spec to explain")
    add_load_options(p)
    add_read_options(p)
    p.set_defaults(run=cmd_explain)


__all__ = ["cmd_explain", "register"]
