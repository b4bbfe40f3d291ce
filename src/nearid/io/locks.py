"""One run at a time per output: the second is refused with one line, not left to race the first.

A command that builds its output beside it and then swaps it in (``nearid distract`` assembles
``<out>.partial`` and renames it to ``<out>``) cannot share that output with a second run of itself:
each would delete or rename the other's half-built folder (a ``FileNotFoundError`` traceback and a
stray folder). :func:`output_lock` holds an exclusive lock on ``.<out>.lock`` beside the output for the
whole run and refuses at once, before any work, when another run holds it. Waiting instead would only
redo the same work (the outputs are content-keyed), so refusing loses nothing.

The lock file stays after the run (a few bytes): deleting it while another process may be about to lock
it would let two runs hold two different files. The lock is the operating system's (``filelock``), so
a killed run releases it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nearid.io.errors import NearIDError


class OutputBusyError(NearIDError):
    """Another run of the same command is writing the same output right now."""


def lock_path(out: str | os.PathLike) -> Path:
    """``.<name>.lock`` beside ``out`` (not inside it: the output folder is replaced at the end)."""
    out = Path(os.path.abspath(os.path.expanduser(os.fspath(out))))
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, command: str):
    """Hold the lock of ``out`` for the ``with`` block; :class:`OutputBusyError` (one line naming
    ``command`` and the lock file) when another run holds it."""
    from filelock import FileLock, Timeout

    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(path, timeout=0):
            yield path
    except Timeout:
        raise OutputBusyError(
            f"{out}: another {command} is writing it now (lock {path}); wait for it to finish, or choose another --out"
        ) from None
