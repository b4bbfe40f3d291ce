"""Output folders nearid made, and the rule that it deletes no other.

People re-run into the same folder, mistype ``--out``, or point it at a folder of their own. A command
that starts clean (``nearid synth --overwrite``, ``nearid demo``) may therefore delete only what it can
prove it made: a folder is *owned* when it holds the marker file ``.nearid-output.json``, written by
:func:`create_owned` when nearid created the folder (which command, when, which version). A folder
without the marker is never deleted; a nonexistent or empty folder is free to use. The check is by
marker, not by contents that look like ours, because a user's folder can look like anything.

Ownership is "*this* command made it": the marker names the command, and a command deletes only a
folder its own kind made (``synth --overwrite`` never deletes a ``train`` run folder, with its
checkpoints and exported model). When the command finishes it *seals* the folder: the marker lists
the names it wrote at the top level. Anything found there later that is not in the list (a user's
notes) makes the folder non-removable: the command refuses, naming those files, instead of deleting
them. (A folder marked but not sealed, e.g. left by a crashed run, is entirely the command's.)
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from nearid.io.atomic import write_text_atomic
from nearid.io.errors import NearIDError

#: The file that says "nearid created this folder and may delete it".
MARKER = ".nearid-output.json"


class OutputFolderError(NearIDError):
    """An output folder nearid may not use or delete: not made by it and not empty, a file, a link."""


def _refusal(folder: Path, why: str) -> OutputFolderError:
    return OutputFolderError(
        f"{folder}: {why}, so nearid will not delete it; choose a new or empty folder, or delete it yourself"
    )


def is_owned(folder: str | os.PathLike) -> bool:
    """``folder`` is a real folder (not a link) holding a nearid marker."""
    folder = Path(folder)
    marker = folder / MARKER
    if folder.is_symlink() or not folder.is_dir() or marker.is_symlink() or not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("created_by") == "nearid"
    except (OSError, ValueError, AttributeError):
        return False


def owned_by(folder: str | os.PathLike) -> str | None:
    """The command that made ``folder`` (its marker's ``command``, e.g. ``"train"``); ``None`` when it is
    not owned. A command that reuses its own folder (``train --overwrite``) checks that it was its own."""
    if not is_owned(folder):
        return None
    try:
        return str(json.loads((Path(folder) / MARKER).read_text(encoding="utf-8")).get("command", ""))
    except (OSError, ValueError, AttributeError):
        return None


def _marker(folder: Path) -> dict:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_removable(folder: str | os.PathLike, command: str | None = None) -> None:
    """Raise :class:`OutputFolderError` unless :func:`remove_owned` would succeed on ``folder``.

    With ``command``, a folder made by another command is refused, and so is a sealed folder holding
    names the command did not write (named in the refusal). Commands call this before long work, so a
    refusal comes at once and not after an hour.
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise _refusal(folder, "is a symbolic link, not a folder nearid made")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise _refusal(folder, "is a file, not a folder")
    if not is_owned(folder):
        if any(folder.iterdir()):
            raise _refusal(folder, f"not made by nearid (no {MARKER}) and not empty")
        return
    if command is not None and owned_by(folder) != command:
        raise OutputFolderError(
            f"{folder}: made by `nearid {owned_by(folder)}`, not by `nearid {command}`, so nearid {command} will "
            "not delete it; choose another folder"
        )
    written = _marker(folder).get("contents")
    if command is not None and isinstance(written, list):
        foreign = sorted(p.name for p in folder.iterdir() if p.name != MARKER and p.name not in written)
        if foreign:
            raise OutputFolderError(
                f"{folder}: holds {', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}, which nearid "
                f"{command} did not write, so it will not delete the folder; move them out or choose another folder"
            )


def remove_owned(folder: str | os.PathLike, command: str | None = None) -> None:
    """Delete ``folder`` if nearid made it (it holds the marker) or it is empty; a missing one is fine.

    With ``command``, only a folder that command made, and holding nothing but what it wrote (see
    :func:`check_removable`). Anything else — a user's folder, another command's output, a file, a
    symbolic link — raises :class:`OutputFolderError` and nothing is deleted.
    """
    folder = Path(folder)
    check_removable(folder, command)
    if not folder.exists():
        return
    if is_owned(folder):
        shutil.rmtree(folder)
    else:
        folder.rmdir()  # empty (checked above); rmdir cannot delete anything that appeared since


def seal_owned(folder: str | os.PathLike, command: str) -> None:
    """Record in the marker of ``folder`` (made by ``command``) the top-level names it holds now, when
    ``command`` has finished writing: whatever appears there later is not the command's to delete."""
    folder = Path(folder)
    contents = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
    mark(folder, command, contents=contents)


def record_files(folder: str | os.PathLike, command: str, files: list[str]) -> None:
    """Record in the marker of ``folder`` (made by ``command``) the files it wrote anywhere inside it,
    as ``/``-separated paths relative to the folder. A command that updates its folder in place
    (``nearid rank``) deletes only recorded files that it no longer writes, so a file a user adds is
    never touched; the marker's other fields (who made the folder, when) are kept."""
    folder = Path(folder)
    if owned_by(folder) != command:
        raise OutputFolderError(f"{folder}: not made by `nearid {command}`; it records no files of it")
    marker = _marker(folder)
    marker["files"] = sorted(set(files))
    write_text_atomic(folder / MARKER, json.dumps(marker, indent=2) + "\n")


def recorded_files(folder: str | os.PathLike, command: str) -> set[str]:
    """The files :func:`record_files` recorded in ``folder`` for ``command`` (empty when it is not that
    command's folder or records none): only these may be replaced or deleted by it."""
    if owned_by(folder) != command:
        return set()
    files = _marker(Path(folder)).get("files")
    return {f for f in files if isinstance(f, str)} if isinstance(files, list) else set()


def create_owned(folder: str | os.PathLike, command: str) -> Path:
    """Create ``folder`` (and its parents) as nearid's output of ``command`` and mark it.

    An existing empty folder is taken over; an existing folder with contents is refused (call
    :func:`remove_owned` first when the command starts clean).
    """
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise OutputFolderError(f"{folder}: exists and is not a folder; choose another output folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise OutputFolderError(f"{folder}: already exists and is not empty; choose a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    mark(folder, command)
    return folder


def mark(folder: str | os.PathLike, command: str, *, contents: list[str] | None = None) -> None:
    """Write the marker into ``folder``, which nearid has just created (``contents``: see :func:`seal_owned`)."""
    from nearid import __version__

    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    marker = {"created_by": "nearid", "command": command, "created": created, "version": __version__}
    if contents is not None:
        marker["contents"] = contents
    write_text_atomic(Path(folder) / MARKER, json.dumps(marker, indent=2) + "\n")
