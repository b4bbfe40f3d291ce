"""Find model files locally or on the Hugging Face hub, safely and fast.

Two rules the authors' release breaks and we keep:

* **No code from beside the weights ever runs.** We never pass ``trust_remote_code``; when we
  download, we fetch only configs and weights, never ``*.py`` files.
* **No unpickling unless asked.** A folder that holds only ``pytorch_model.bin`` is refused unless
  the caller opts in (``allow_pickle=True`` / ``--allow-pickle``).

Offline (``HF_HUB_OFFLINE=1``, or no network) a hub id that is not in the local cache fails at once
with a message saying how to point at a local copy, instead of retrying connections.
"""

from __future__ import annotations

import os
from pathlib import Path

from nearid.io.errors import ModelNotAvailableError, UnsafeCheckpointError

#: Files a model folder may need. Python files are deliberately absent.
MODEL_FILE_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
_PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth"]


def looks_like_local_path(name: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else is a local path.

    Local: an existing path; one that starts with ``.``, ``/`` or ``~``; one with a backslash or more
    than one ``/``; and an ``owner/name`` whose ``owner`` is an existing local folder (``runs/modl``
    is a mistyped folder, not a hub repository). A missing local path is reported as a missing
    folder, never as a download to make.
    """
    path = Path(name).expanduser()
    if path.exists():
        return True
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return True
    return "/" in name and path.parent.is_dir()


def close_matches(path: str | os.PathLike) -> list[str]:
    """Existing paths that ``path`` (which does not exist) was probably meant to be: the first missing
    part of it replaced by its closest names in the folder above (``data/NearId`` -> ``data/NearID``)."""
    import difflib

    path = Path(path).expanduser()
    parts = path.parts
    for depth in range(len(parts)):
        here = Path(*parts[:depth]) if depth else Path(".")
        if depth and not here.is_dir():
            return []
        if not (here / parts[depth]).exists():
            break
    else:
        return []
    try:
        names = [p.name for p in here.iterdir() if not p.name.startswith(".")]
    except OSError:
        return []
    rest = parts[depth + 1 :]
    found = []
    for match in difflib.get_close_matches(parts[depth], names, n=3, cutoff=0.6):
        candidate = (here / match).joinpath(*rest) if depth else Path(match).joinpath(*rest)
        found.append(str(candidate if candidate.exists() else (here / match if depth else Path(match))))
    return list(dict.fromkeys(found))


def missing_path_hint(path: str | os.PathLike) -> str:
    """``"; did you mean 'a' or 'b'?"`` for a missing local path, or ``""`` when nothing is close."""
    matches = close_matches(path)
    return f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""


def local_hint_for_hub_id(name: str) -> str:
    """For a hub-looking ``name`` that failed: a sentence naming a close local folder, if one exists
    (``--data dta`` beside ``data/`` may be a typo rather than a repository; we cannot tell, so say both)."""
    matches = close_matches(name)
    return f" There is no local folder '{name}' either{missing_path_hint(name)}" if matches else ""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _not_available(repo_id: str, reason: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"model '{repo_id}': the weights are not on this machine ({reason}). "
        f"Download them where there is network (`hf download {repo_id} --local-dir DIR`), "
        f"copy DIR here and pass the folder instead of the hub id.{local_hint_for_hub_id(repo_id)}"
    )


def resolve_model_dir(name_or_path: str | os.PathLike, *, allow_pickle: bool = False) -> Path:
    """Return a local folder holding ``name_or_path``'s config and weights.

    Local folders are used as they are; hub ids are looked up in the cache first and downloaded
    only when the hub is reachable.
    """
    name = os.fspath(name_or_path)
    if looks_like_local_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise ModelNotAvailableError(
                f"model folder '{folder}' does not exist{missing_path_hint(folder)}: "
                "pass an existing folder or a hub id like owner/name"
            )
        check_model_folder(folder)
        check_weights_are_safe(folder, allow_pickle=allow_pickle)
        return folder
    return _snapshot(name, allow_pickle=allow_pickle)


def check_model_folder(folder: Path) -> None:
    """Say what a local folder that is not a model folder *is*, and what to pass instead.

    Without this, transformers builds a default-sized model when ``config.json`` is missing and then
    reports "weights of the wrong shape", and a training run or a head-only checkpoint fails with
    "no model.safetensors": true, but not the cause. A model folder (``save_pretrained``) holds
    ``config.json`` beside its weights.
    """
    if (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("step-*")):
        steps = sorted(
            (p for p in (folder / "checkpoints").glob("step-*") if p.name[5:].isdigit()), key=lambda p: int(p.name[5:])
        )
        newest = steps[-1] if steps else folder / "checkpoints" / "step-N"
        raise ModelNotAvailableError(
            f"'{folder}' is a training run folder, not a model; export a checkpoint first "
            f"(`nearid export {newest} DIR`) and pass DIR"
        )
    if (folder / "head.safetensors").is_file() and not (folder / "config.json").is_file():
        raise ModelNotAvailableError(
            f"'{folder}' is a head-only training checkpoint, not a model; export it first "
            f"(`nearid export {folder} DIR`) and pass DIR"
        )
    if (folder / "config.json").is_file():
        return
    weights = sorted(p.name for pattern in ("*.safetensors", *_PICKLE_PATTERNS) for p in folder.glob(pattern))
    if weights:
        raise ModelNotAvailableError(
            f"'{folder}' has weights ({', '.join(weights[:3])}) but no config.json; a model folder holds the "
            "config.json that save_pretrained writes beside the weights: copy it from where the weights came from"
        )
    raise ModelNotAvailableError(
        f"'{folder}' is not a model folder (no config.json, no weights); pass the folder that save_pretrained "
        "wrote, or a hub id like owner/name"
    )


def _snapshot(repo_id: str, *, allow_pickle: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    patterns = MODEL_FILE_PATTERNS + (_PICKLE_PATTERNS if allow_pickle else [])
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except HFValidationError as exc:
        raise ModelNotAvailableError(f"'{repo_id}' is neither an existing folder nor a valid hub id ({exc})") from None
    except Exception:  # not in the cache: LocalEntryNotFoundError and friends
        if offline():
            raise _not_available(repo_id, "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache") from None
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception as exc:  # network refused, unknown repo, gated repo, ...
            raise _not_available(repo_id, f"download failed: {type(exc).__name__}") from None
    check_weights_are_safe(folder, allow_pickle=allow_pickle)
    return folder


def check_weights_are_safe(folder: Path, *, allow_pickle: bool) -> None:
    """Refuse a folder whose only weights are pickles, unless the caller opted in."""
    if any(folder.glob("*.safetensors")) or not (folder / "config.json").exists():
        return  # safetensors present, or not a model folder at all (the loader will say so)
    pickles = sorted(p.name for pattern in _PICKLE_PATTERNS for p in folder.glob(pattern))
    if pickles and not allow_pickle:
        raise UnsafeCheckpointError(
            f"'{folder}' holds only pickled weights ({', '.join(pickles)}); unpickling can run arbitrary code. "
            f"Convert them to safetensors, or pass --allow-pickle (allow_pickle=True) if you trust the file."
        )
