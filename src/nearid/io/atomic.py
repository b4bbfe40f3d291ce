"""Atomic file output: a crash never leaves a half-written file that looks complete."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path beside ``target``; on success rename it over ``target``, else delete it.

    The temporary file (``.NAME.<8 hex>.part``, made 0600 as ``mkstemp`` would) is named first and made
    inside the ``try``: a Ctrl-C that lands while it is being made (``mkstemp`` made it outside) leaves
    no ``.part`` file behind."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        while True:
            tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
            try:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                break
            except FileExistsError:  # another writer's temporary file has this name: draw another
                tmp = None
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # made 0600 above; outputs are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def copy_atomic(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """``target`` becomes a byte-for-byte copy of ``source``: copied to a temporary name beside it, then
    renamed, so a reader never sees half a copy (``nearid rank`` copies its selections so)."""
    import shutil

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def link_atomic(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """``target`` becomes a symbolic link to ``source`` (its absolute path, so the link does not depend on
    where ``target`` lies): made under a temporary name and renamed over ``target``, which replaces a
    file or an older link there in one step."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
        try:
            os.symlink(os.path.abspath(source), tmp)
            break
        except FileExistsError:
            continue
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
