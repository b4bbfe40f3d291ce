"""The command line's vocabulary: argument types, and every option that more than one command takes,
declared once here with its name, parsing and help, and turned into the library's option value once.

One option name means one thing in every command that has it (tests/test_cli_options.py checks the
parsers): ``--model`` is the model a command embeds, scores or benchmarks, ``--num-workers`` the worker
processes, ``--masks`` one mask file per input image. A renamed option keeps its old spelling as a
hidden alias (:func:`add_option`'s ``old``: same destination, same parsing, named in the new option's
help), so scripts written for the old name keep working.

The value builders (:func:`read_options`, :func:`mask_options`, :func:`load_options`) give commands
the frozen option values the library takes (:class:`~nearid.images.options.ReadOptions`,
:class:`~nearid.images.options.MaskOptions`, :class:`~nearid.models.options.LoadOptions`) instead of
loose keyword lists. This module imports only the standard library at its top: ``nearid --help`` and
the light commands must not import torch.
"""

from __future__ import annotations

import argparse
import math

# ----------------------------------------------------------------------------- argument types


def integer(text: str) -> int:
    """An argparse type: an integer (its error names the text, not Python's ``invalid int value``)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (batch sizes, counts, step intervals)."""
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give an integer of at least 1")
    return value


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (0 = none / never)."""
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: give an integer of at least 0")
    return value


def workers(text: str) -> int | str:
    """An argparse type: ``auto`` or an integer >= 0 (input worker processes; 0 = in the main process)."""
    return text if text == "auto" else nonnegative_int(text)


def finite_float(text: str) -> float:
    """An argparse type: a finite number (nan and inf are refused: they silently poison every result)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text}: give a finite number")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number greater than 0")
    return value


# ----------------------------------------------------------------------------- declaring an option


def add_option(parser, name: str, *, old: tuple[str, ...] = (), **settings) -> argparse.Action:
    """Declare option ``name``; each ``old`` spelling becomes a hidden alias of it (same destination and
    parsing, left out of ``--help``), and the new option's help names it, so old scripts keep working
    while the help shows one name per meaning."""
    if old:
        settings["help"] = f"{settings['help']} (formerly {', '.join(old)})"
    action = parser.add_argument(name, **settings)
    hidden = {**settings, "dest": action.dest, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
    for spelling in old:
        parser.add_argument(spelling, **hidden)
    return action


# ----------------------------------------------------------------------------- the model and how it loads


def add_model_option(
    parser,
    what: str,
    *,
    default: str | None = "nearid",
    several: str | None = None,
    old: tuple[str, ...] = (),
) -> None:
    """``--model``: the model a command embeds, scores or benchmarks (an encoder spec, or for commands
    that accept them a pair scorer's). ``several``: the option repeats (a list, ``None`` when not
    given), and says what several give."""
    default_text = f"default: {default}" if default else "required without --preset"
    repeat = f"; repeat for {several}" if several else ""
    add_option(
        parser,
        "--model",
        old=old,
        action="append" if several else "store",
        default=None if several else default,
        metavar="SPEC",
        help=f"{what} ({default_text}; see `nearid encoders`){repeat}",
    )


def add_device_options(parser, *, dtype: bool = True) -> None:
    """``--device`` / ``--dtype``: where the models run and in which precision."""
    add_option(
        parser, "--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: CUDA when there is one)"
    )
    if dtype:
        add_option(
            parser,
            "--dtype",
            default="auto",
            help="auto | float32 | bfloat16 | float16 (auto: float32 on the CPU; on CUDA float16 for NearID, "
            "SigLIP2, CLIP, DINOv2 and the inpainting generators, bfloat16 for other encoders)",
        )


def add_load_options(parser) -> None:
    """How a model is loaded: ``--device``, ``--dtype``, ``--allow-pickle`` (:func:`load_options`)."""
    add_device_options(parser)
    add_option(
        parser, "--allow-pickle", action="store_true", help="allow loading pickled .bin weights (runs code in them)"
    )


def add_judge_options(parser) -> None:
    """The options of a ``vlm:`` judge (nearid.judges.vlm); they act only on ``vlm:`` specs."""
    group = parser.add_argument_group("VLM judge (vlm:<model>) options")
    add_option(
        group, "--prompt-file", help="the judge's rubric text instead of ours (e.g. the authors' vl_template_v2.txt)"
    )
    add_option(
        group,
        "--judge-readout",
        default="generate",
        choices=["generate", "expected"],
        help="generate: parse the written score (the paper's); expected: probability-weighted 0-10 score "
        "of an answer forced up to the number (one forward pass, no ties) (default: generate)",
    )
    add_option(
        group,
        "--judge-parser",
        default="authors",
        choices=["authors", "lenient"],
        help="authors: their parse exactly (JSON repair, score keys, a score regex; the published numbers); "
        "lenient: ours, which also reads a bare number or 7/10 (default: authors)",
    )
    add_option(
        group,
        "--judge-pixels",
        default="fast",
        choices=["fast", "pil"],
        help="fast: Qwen's fast image processor's pixels, as the authors ran it (torch antialiased bicubic); "
        "pil: transformers' PIL processor (default: fast)",
    )
    add_option(
        group,
        "--max-new-tokens",
        type=positive_int,
        default=512,
        help="generate: answer length limit (default 512; the authors' 128 cut ~260-token answers)",
    )
    add_option(
        group,
        "--judge-batch-size",
        type=positive_int,
        default=8,
        help="at most this many pairs per model call (default 8)",
    )


def judge_options(args) -> dict:
    """``add_judge_options``' values as ``load_metric(..., judge_options=...)`` and ``BenchConfig`` take them."""
    return _judge(args).as_kwargs()


def _judge(args):
    from nearid.models.options import JudgeOptions

    if not hasattr(args, "judge_readout"):  # a command without the judge options: the defaults
        return JudgeOptions()
    return JudgeOptions(
        prompt_file=args.prompt_file,
        readout=args.judge_readout,
        max_new_tokens=args.max_new_tokens,
        judge_batch_size=args.judge_batch_size,
        parser=args.judge_parser,
        pixels=args.judge_pixels,
    )


def load_options(args):
    """The :class:`~nearid.models.options.LoadOptions` of :func:`add_load_options` (and the judge's, when
    the command has :func:`add_judge_options`), for ``load_encoder(spec, options)`` and ``load_metric``."""
    from nearid.models.options import LoadOptions

    return LoadOptions(device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle, judge=_judge(args))


# ----------------------------------------------------------------------------- reading images


def add_batch_size(parser, *, default: int | None = 32, help: str = "images per forward pass (default 32)") -> None:
    """``--batch-size``: how many items go through the model at once."""
    add_option(parser, "--batch-size", type=positive_int, default=default, help=help)


def add_num_workers(parser, *, help: str, default: int | str | None = "auto", type=workers, old=()) -> None:
    """``--num-workers``: how many worker processes a command runs beside its main one."""
    add_option(parser, "--num-workers", type=type, default=default, metavar="N", old=old, help=help)


DECODING_WORKERS = (
    "processes decoding images (default auto: min(8, CPUs) on CUDA; 0 on the CPU, where workers would take "
    "the model's cores); 0 = in the main process"
)


def add_read_options(parser) -> None:
    """How images reach the model: ``--batch-size``, ``--num-workers``, ``--fast-decode`` (:func:`read_options`)."""
    add_batch_size(parser)
    add_num_workers(parser, help=DECODING_WORKERS)
    add_option(
        parser,
        "--fast-decode",
        action="store_true",
        help="decode JPEGs of at least twice the model's input size at reduced scale (faster; "
        "embeddings differ slightly from the exact default, see docs/input_pipeline.md)",
    )


def read_options(args):
    """The :class:`~nearid.images.options.ReadOptions` of :func:`add_read_options` (``.as_kwargs()`` is
    what :func:`nearid.embed` takes)."""
    from nearid.images.options import ReadOptions

    return ReadOptions(batch_size=args.batch_size, num_workers=args.num_workers, fast_decode=args.fast_decode)


# ----------------------------------------------------------------------------- masks


def add_mask_files(parser) -> None:
    """``--masks``: one mask file per input image (embed, compare)."""
    add_option(
        parser, "--masks", nargs="+", metavar="MASK", help="one foreground mask per image (background is blacked out)"
    )


def add_mask_options(parser, masks_option: str, *, cleaning_default: str | None = "authors") -> None:
    """``--mask-cleaning`` / ``--mask-dilate``: how masks are treated once ``masks_option`` (the option
    that brings masks in: bench ``--foreground``, score ``--mask-folder``) is given (:func:`mask_options`).
    ``cleaning_default`` None: bench, whose ``--preset`` may choose."""
    add_option(
        parser,
        "--mask-cleaning",
        default=cleaning_default,
        choices=["authors", "none"],
        help=f"with {masks_option}: clean each mask as the authors do (blur, threshold, close/open, largest "
        "contour; default) or use it raw (none)",
    )
    add_option(
        parser,
        "--mask-dilate",
        type=nonnegative_int,
        default=0,
        metavar="K",
        help=f"with {masks_option}: dilate the cleaned mask by an odd K x K max filter (default 0: off)",
    )


def mask_options(args):
    """The :class:`~nearid.images.options.MaskOptions` of :func:`add_mask_options` (a cleaning left unset,
    as bench leaves it for a preset, is the default one)."""
    from nearid.images.options import MaskOptions

    cleaning = args.mask_cleaning if args.mask_cleaning is not None else MaskOptions.cleaning
    return MaskOptions(cleaning=cleaning, dilate=args.mask_dilate)


# ----------------------------------------------------------------------------- references and generations
#: how references meet generated images (nearid.score.plan), for every command that takes such pairs
PAIRINGS = ("auto", "csv", "paths", "subjects", "dreambench")


def add_pair_options(parser, *, refs_help: str, pairing_help: str, old_masks: tuple[str, ...] = ()) -> None:
    """``--refs`` / ``--gens`` / ``--pairing`` / ``--mask-folder`` (with its cleaning and dilation): the
    inputs of the commands that take generated images against their references (``score``, ``rank``),
    so both read pairs, masks and their options the same way (:func:`pair_options`). ``old_masks``: the
    mask folder's old spellings, for a command that had them (score's ``--masks``)."""
    add_option(parser, "--refs", required=True, help=refs_help)
    add_option(parser, "--gens", help="generated-image folder (paths or subjects pairing)")
    add_option(parser, "--pairing", default="auto", choices=list(PAIRINGS), help=pairing_help)
    add_option(
        parser,
        "--mask-folder",
        old=old_masks,
        dest="masks",
        metavar="FOLDER",
        help="foreground masks: FOLDER/refs/<relative path>, FOLDER/gens/<relative path> (nearid mask writes them)",
    )
    add_mask_options(parser, "--mask-folder")


def add_verdict_options(parser, what: str) -> None:
    """``--threshold`` / ``--calibration``: same/different decisions from a number or a calibrated threshold."""
    add_option(parser, "--threshold", help=f"a number, or 'calibrated' (with --calibration): {what}")
    add_option(parser, "--calibration", help='a `nearid bench` results.json (validation split) or {"value": x}')


def pair_options(args) -> dict:
    """The config fields of :func:`add_pair_options`, :func:`add_verdict_options` and the load / read
    groups, as ``ScoreConfig`` and ``RankConfig`` name them."""
    return {
        "refs": args.refs,
        "gens": args.gens,
        "pairing": args.pairing,
        "masks": args.masks,
        "mask": mask_options(args),
        "read": read_options(args),
        "load": load_options(args),
        "threshold": args.threshold,
        "calibration": args.calibration,
        "skip_errors": args.skip_errors,
    }


# ----------------------------------------------------------------------------- shards, outputs, runs


def add_shard_options(parser, what: str) -> None:
    """``--num-shards`` / ``--shard-index`` of bench and score (nearid.io.records; finished by ``nearid merge``)."""
    add_option(
        parser,
        "--num-shards",
        type=positive_int,
        help=f"split the work into this many independent jobs by {what} (SLURM arrays, Kubernetes jobs); "
        "each writes a partial record, `nearid merge` finishes",
    )
    add_option(parser, "--shard-index", type=nonnegative_int, help="this job's shard, 0 .. --num-shards - 1")


def add_overwrite(parser, what: str) -> None:
    """``--overwrite``: replace an output that an earlier run of the same command wrote (never a folder
    nearid did not make: nearid.io.ownership)."""
    add_option(parser, "--overwrite", action="store_true", help=f"replace {what}")


def add_seed(parser, what: str, *, default: int | None = None) -> None:
    """``--seed``: the random seed; the same seed gives the same result."""
    add_option(parser, "--seed", type=int, default=default, help=f"random seed of {what}")


__all__ = [
    "DECODING_WORKERS",
    "PAIRINGS",
    "add_batch_size",
    "add_device_options",
    "add_judge_options",
    "add_load_options",
    "add_mask_files",
    "add_mask_options",
    "add_model_option",
    "add_num_workers",
    "add_option",
    "add_overwrite",
    "add_pair_options",
    "add_read_options",
    "add_seed",
    "add_shard_options",
    "add_verdict_options",
    "finite_float",
    "integer",
    "judge_options",
    "load_options",
    "mask_options",
    "nonnegative_int",
    "pair_options",
    "positive_float",
    "positive_int",
    "read_options",
    "workers",
]
