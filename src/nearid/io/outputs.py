"""Where a command may write: never over its own inputs, and only where writing can succeed.

Every command that writes calls :func:`check_outputs` with everything it will write and everything it
reads, *before* it loads a model or does any heavy work. Two kinds of mistake are caught there:

* an output that is an input (``nearid score --refs pairs.csv --out pairs.csv``), the same file by
  another name (a link, ``./x`` against ``x``), or lies inside an input folder being read
  (``--out refs/cat.png``): writing would destroy or change what is being measured;
* an output that cannot be written: an existing folder where a file is needed (or a file where a
  folder is), a parent that is a file or not writable, a name longer than the file system allows.
  Found after an hour of embedding, any of these would lose the hour and could leave half the outputs.

Inputs are compared as resolved paths (links followed) and, for files that exist, with ``samefile``
(hard links, case-insensitive file systems). An input that is not a local path (a hub id) is skipped.
Each refusal is one :class:`OutputError` line naming the path and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from nearid.io.errors import NearIDError

#: Characters :func:`nearid.io.atomic.atomic_path` adds around a name for its temporary file
#: (``.<name>.<8 random>.part``), so an output name must leave room for them.
ATOMIC_EXTRA = len(".") + len(".") + 8 + len(".part")

PathLike = str | os.PathLike


class OutputError(NearIDError):
    """An output location that is an input, lies inside an input folder, or cannot be written."""


def _resolve(path: PathLike) -> Path:
    absolute = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    try:
        return absolute.resolve()
    except OSError:  # e.g. a name too long to look up: check_writable reports it
        return absolute


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing path: the same file under two names (hard link, case-insensitive
    file system) has one identity; ``None`` when it does not exist."""
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or "/")


def check_writable(path: PathLike, *, folder: bool = False) -> None:
    """Raise :class:`OutputError` unless ``path`` can be written: a file (``folder=False``) written
    atomically, or a folder created (or reused) with files inside.

    Checks, in order: a file output is not an existing folder, a folder output not an existing file;
    no name on the way is longer than the file system's limit (for a file, with room for the atomic
    temporary name); the nearest existing folder above is a folder and writable.
    """
    given = Path(path)
    spelled = os.fspath(path).replace(os.sep, "/").rstrip("/").rsplit("/", 1)[-1]
    if folder and spelled in {"", ".", ".."}:
        # `synth .` would build `..partial` beside the working folder and replace it whole: a folder
        # output is named, so the name is what the command makes, replaces or deletes
        raise OutputError(
            f"{os.fspath(path) or '(empty)'}: name the folder to write (e.g. {os.path.abspath(path)}), not '.' or '..'"
        )
    target = _resolve(path)
    existing = _existing_ancestor(target)
    limit = _name_max(existing if existing.is_dir() else existing.parent)
    for part in target.relative_to(existing).parts if target != existing else ():
        extra = ATOMIC_EXTRA if (not folder and part == target.name) else 0
        if len(part.encode()) + extra > limit:
            raise OutputError(
                f"{given}: the name '{part[:40]}…' is {len(part.encode())} bytes, longer than the "
                f"{limit - extra} this file system allows here; choose a shorter name"
            )
    if not folder and target.is_dir():
        raise OutputError(f"{given}: is a folder, but a file is written here; give a file name (e.g. {given / 'out'}…)")
    if folder and target.exists() and not target.is_dir():
        raise OutputError(f"{given}: is a file, but a folder is written here; give a folder name or move the file")
    if target != existing or not folder:
        parent = existing if target != existing else existing.parent
        if not parent.is_dir():
            raise OutputError(
                f"{given}: {parent} is a file, so nothing can be created inside it; choose another location"
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(
                f"{given}: the folder {parent} is not writable; choose another location or fix its permissions"
            )
    elif not os.access(target, os.W_OK | os.X_OK):
        raise OutputError(f"{given}: the folder is not writable; choose another location or fix its permissions")


def check_outputs(
    outputs: Iterable[PathLike | None],
    inputs: Iterable[PathLike | None],
    *,
    folders: Iterable[PathLike | None] = (),
    replaced: Iterable[PathLike | None] = (),
) -> None:
    """Refuse outputs that are, or lie inside, an input; then check each is writable.

    ``outputs`` are files the command writes, ``folders`` output folders it creates or writes into,
    ``replaced`` output folders whose earlier contents it may delete or replace (``rank``'s stale
    selections): these must not hold an input either. ``inputs`` every file or folder it reads (``None``
    and names that are not local paths are skipped). Call it before loading a model: every problem it
    finds would otherwise show only at the end.
    """
    read, identities, folders_read = {}, {}, []
    for order, item in enumerate(inputs):
        if item is None or str(item) == "":
            continue
        resolved = _resolve(item)
        if not os.path.lexists(resolved):
            continue
        read.setdefault(resolved, (order, Path(item)))
        identity = _identity(resolved)
        if identity is not None:
            identities.setdefault(identity, (order, Path(item)))
        if resolved.is_dir():
            folders_read.append((order, Path(item), resolved))
    replaced = [Path(p) for p in replaced if p is not None]
    wanted = [(Path(p), False) for p in outputs if p is not None]
    wanted += [(Path(p), True) for p in [*folders, *replaced] if p is not None]
    for given, is_folder in wanted:
        target = _resolve(given)
        # one dictionary look-up per output (by path, then by device and inode for links and hard links),
        # so a command writing one file per input image checks thousands of outputs at once; the first
        # input (in the order given) that the output is or contains names the refusal
        found = [hit for hit in (read.get(target), identities.get(_identity(target) or (-1, -1))) if hit]
        found += [(order, name, "inside") for order, name, source in folders_read if target.is_relative_to(source)]
        if found:
            _, name, *inside = min(found, key=lambda hit: (hit[0], len(hit)))
            if inside:
                raise OutputError(
                    f"{given}: lies inside the input folder {name}, which is being read; choose an output outside it"
                )
            raise OutputError(
                f"{given}: is also an input of this command ({name}); writing would replace it, choose another output"
            )
        check_writable(given, folder=is_folder)
    for given in replaced:
        target = _resolve(given)
        held = [(order, name) for resolved, (order, name) in read.items() if resolved.is_relative_to(target)]
        if held:
            raise OutputError(f"{given}: holds the input {min(held)[1]}; choose an output outside the inputs")


def recorded_path(value: PathLike | None) -> str | None:
    """How a results file records an input: the absolute path when ``value`` names a local file or
    folder (so the file resolves from any working directory), else the text as given (a hub id)."""
    if value is None:
        return None
    return os.path.abspath(value) if os.path.exists(value) else os.fspath(value)
