"""``nearid rank`` (best-of-N): rank each reference's or subject's generations by identity similarity,
write ``OUT/ranking.csv`` and copy or link the best ``--top`` into ``OUT``. The work is
:func:`nearid.score.rank.rank_generations`; this module parses and builds its config (the options it
shares with ``nearid score`` come from :mod:`nearid.cli.options`)."""

from __future__ import annotations

from nearid.cli.options import (
    add_judge_options,
    add_load_options,
    add_model_option,
    add_option,
    add_pair_options,
    add_read_options,
    add_verdict_options,
    pair_options,
    positive_int,
)


def cmd_rank(args) -> int:
    from nearid.score.rank import RankConfig, rank_generations

    config = RankConfig(**pair_options(args), out=args.out, model=args.model, top=args.top, link=args.link)
    rank_generations(config)
    return 0


def register(commands) -> None:
    p = commands.add_parser(
        "rank", help="best-of-N: rank each reference's generations by identity and keep the best --top"
    )
    add_pair_options(
        p,
        refs_help="reference folder or a pairs CSV (as nearid score takes them)",
        pairing_help="how references meet generated images, as in nearid score (default auto); generations are "
        "ranked per subject (subjects, or a pairs CSV's subject column), else per reference",
    )
    add_option(
        p,
        "--out",
        default="ranked",
        help="output folder: ranking.csv and the selected generations as <group>/<rank>_<file name> "
        "(default ranked); a re-run updates it and deletes only selections rank wrote",
    )
    add_option(p, "--top", type=positive_int, default=1, metavar="K", help="generations kept per group (default 1)")
    add_option(
        p,
        "--link",
        action="store_true",
        help="symbolic links to the generated images instead of copies (no extra disk space; a link "
        "points at the source's absolute path, so it breaks when the source is moved or deleted: run "
        "rank again)",
    )
    add_verdict_options(p, "a same/different column")
    add_option(
        p, "--skip-errors", action="store_true", help="rank what can be scored; unreadable images are left unranked"
    )
    add_model_option(p, "the encoder or pair-scorer (judge) spec to rank by")
    add_load_options(p)
    add_read_options(p)
    add_judge_options(p)
    p.set_defaults(run=cmd_rank)


__all__ = ["cmd_rank", "register"]
