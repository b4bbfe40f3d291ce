"""Command-line front end: the parser, assembled from one module per command family, and :func:`main`,
which runs one command. Commands parse and print; the library does the work.

A :class:`~nearid.io.errors.NearIDError` (bad input, missing weights, ...) is printed as one line on
stderr with exit status 2 and no traceback; anything else is a bug and keeps its traceback. Ctrl-C
is one line and status 130; output cut short by a closed pipe ends quietly with 141.

Start-up is light: the command modules import only the standard library, ``nearid.io.errors`` and
:mod:`nearid.cli.options` at their top (building the parser adds ``nearid.data.synth``, numpy and
Pillow, for the synth options' defaults), and each command imports what it needs inside its function,
so ``nearid --help``, ``metrics``, ``dbpp``, ``report`` and ``encoders`` never import torch or
transformers (tests/test_cli_light.py checks ``sys.modules``).
"""

from __future__ import annotations

import argparse
import os
import sys

from nearid.cli import bench, data, demo, embed, explain, rank, score, train
from nearid.cli.bench import cmd_bench, cmd_dbpp, cmd_merge, cmd_metrics
from nearid.cli.data import cmd_distract, cmd_mask, cmd_synth
from nearid.cli.demo import cmd_demo
from nearid.cli.embed import cmd_compare, cmd_embed, cmd_encoders
from nearid.cli.options import add_judge_options, judge_options
from nearid.cli.rank import cmd_rank
from nearid.cli.score import cmd_report, cmd_score
from nearid.cli.train import cmd_export, cmd_train
from nearid.io.errors import NearIDError

#: The command families, in the order ``nearid --help`` lists their commands.
FAMILIES = (embed, data, bench, score, rank, explain, train, demo)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``nearid CMD: error: ...`` and exit 2, like every other user
    error (argparse's default also prints the usage block, which buries the one line that matters)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def build_parser() -> argparse.ArgumentParser:
    """``nearid`` and its subcommands; each family module registers its own (``register(commands)``)."""
    parser = _Parser(prog="nearid", description="Identity-aware image embeddings (NearID).")
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in FAMILIES:
        family.register(commands)
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


# The commands stay importable from here, where they were before the command modules.
__all__ = [
    "FAMILIES",
    "add_judge_options",
    "build_parser",
    "cmd_bench",
    "cmd_compare",
    "cmd_dbpp",
    "cmd_demo",
    "cmd_distract",
    "cmd_embed",
    "cmd_encoders",
    "cmd_export",
    "cmd_mask",
    "cmd_merge",
    "cmd_metrics",
    "cmd_rank",
    "cmd_report",
    "cmd_score",
    "cmd_synth",
    "cmd_train",
    "judge_options",
    "main",
]
