"""A training run's folder: what may happen to ``--out`` (new, resume, overwrite), what a run writes
there, its checkpoints, and the record of the inputs it trained on.

A checkpoint (``checkpoints/step-N``) holds the head as safetensors and the rest of the run's state
(optimizer, scheduler, step) as a tensors-only ``state.pt`` written last, so a folder with both files
is a complete checkpoint. ``inputs.json`` records what the run trained on, by content (each table's
fingerprint, and the token cache's trunk), so a resume onto other data is refused.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from nearid.io.atomic import write_text_atomic
from nearid.io.errors import NearIDError
from nearid.training.config import TrainConfig

#: What a run writes into its folder, and so all that ``--overwrite`` removes. The token cache stays: it is
#: keyed by content (the trunk's signature, and image keys versioned by the data's fingerprint), so an
#: overwritten run reads only tokens of exactly its own inputs and equals a run in a new folder, while a
#: re-run on real data does not pay hours of trunk passes again. A cache of another trunk is replaced
#: (:func:`replace_foreign_cache`).
RUN_FILES = ("checkpoints", "config.json", "inputs.json", "validation.jsonl")
TOKEN_CACHE = "token_cache"
#: What a run was trained on, by content: each table's fingerprint (and the token cache's trunk).
INPUTS_FILE = "inputs.json"
#: Settings a resumed run may change: they cannot change the head it trains (where the folder is, how
#: often it logs, saves or validates, and where it stops; the schedule spans all epochs whatever max_steps).
#: ``num_workers`` changes who decodes, not the pixels; ``token_cache`` changes the tokens by at most the
#: cache's fp16 rounding (none under fp16 mixed precision, where the trunk's own output is fp16), and a resumed
#: ``auto`` run keeps the mode it started in (:func:`streamed`).
RESUME_FREE = (
    "out",
    "log_steps",
    "save_steps",
    "eval_steps",
    "val_split",
    "max_steps",
    "token_cache",
    "num_workers",
)
_LOCAL_PATHS = ("data", "mtg", "backbone")


def checkpoint_step(folder: Path) -> int:
    """N of a ``step-N`` checkpoint folder."""
    return int(folder.name.split("-")[1])


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint of the run in ``out`` (its ``state.pt``, written last, exists)."""
    done = [
        p
        for p in (out / "checkpoints").glob("step-*")
        if (p / "state.pt").is_file() and (p / "head.safetensors").is_file()
    ]
    return max(done, key=checkpoint_step, default=None)


def _holds_run(out: Path) -> bool:
    return (out / "config.json").exists() or (out / "checkpoints").exists()


def _same(name: str, old, new) -> bool:
    """Equal settings; a local path given once relative and once absolute is the same setting."""
    if old == new:
        return True
    if name in _LOCAL_PATHS and isinstance(old, str) and isinstance(new, str):
        old_path, new_path = Path(old.removeprefix("nearid:")), Path(new.removeprefix("nearid:"))
        return (
            old.startswith("nearid:") == new.startswith("nearid:")
            and old_path.exists()
            and new_path.exists()
            and old_path.resolve() == new_path.resolve()
        )
    return False


def _resume_differences(out: Path, config: TrainConfig) -> list[str]:
    """``name: old -> new`` for each setting that differs from the run's ``config.json`` and may not."""
    try:
        saved = json.loads((out / "config.json").read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise NearIDError(
            f"{out}: holds checkpoints but no config.json, so a resume cannot be checked against "
            "the run's settings; start a new run in another --out"
        ) from None
    except (OSError, ValueError) as exc:
        raise NearIDError(f"{out}/config.json: not readable ({exc}); start a new run in another --out") from None
    now = json.loads(json.dumps(dataclasses.asdict(config)))  # as config.json holds it (tuples as lists)
    default = json.loads(json.dumps(dataclasses.asdict(TrainConfig(data="-", out="-"))))
    return [
        f"{name}: {saved.get(name, default[name])!r} -> {value!r}"
        for name, value in now.items()
        if name not in RESUME_FREE and not _same(name, saved.get(name, default[name]), value)
    ]


def _check_resume(out: Path, config: TrainConfig) -> None:
    """A resume keeps every setting outside :data:`RESUME_FREE` and does not stop before where the run is."""
    differences = _resume_differences(out, config)
    if differences:
        raise NearIDError(
            f"{out}: --resume with settings that differ from the run's config.json "
            f"({'; '.join(differences)}); resume with the run's settings, or train into "
            "another --out (or --overwrite)"
        )
    latest = latest_checkpoint(out)
    at = checkpoint_step(latest) if latest is not None else 0
    if config.max_steps is not None and config.max_steps < at:
        raise NearIDError(
            f"{out}: the run is at step {at}, past --max-steps {config.max_steps}; pass a --max-steps of at least {at}"
        )


def check_run_folder(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> str:
    """What this run may do with ``config.out``: ``"new"``, ``"resume"`` or ``"overwrite"``; reads only.

    A folder holding a run (``config.json`` or ``checkpoints/``) is refused unless ``resume`` (every
    setting outside :data:`RESUME_FREE` as the run's ``config.json`` has it) or ``overwrite`` (only a
    folder a ``nearid train`` made, by its marker). Any other non-empty folder is refused. Every process
    calls this before any process changes the folder.
    """
    from nearid.io.ownership import MARKER, check_removable, owned_by

    out = Path(config.out)
    if resume and overwrite:
        raise NearIDError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise NearIDError(f"{out}: exists and is not a folder; choose another --out")
    contents = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    holds_run, ours = _holds_run(out), owned_by(out) == "train"
    if overwrite:
        if contents and not ours:
            check_removable(out)  # a folder without nearid's marker: its one-line refusal
            raise NearIDError(
                f"{out}: made by `nearid {owned_by(out)}`, not by `nearid train`, so --overwrite "
                "will not delete it; choose another --out"
            )
        return "overwrite"
    if resume and holds_run:
        _check_resume(out, config)
        return "resume"
    if holds_run:
        raise NearIDError(
            f"{out}: holds a training run (config.json, checkpoints/); pass --resume to continue "
            "it, --overwrite to replace it, or choose another --out"
        )
    if contents and not (ours and contents == [MARKER]):
        raise NearIDError(f"{out}: not empty and not a run folder made by nearid; choose a new or empty --out")
    return "new"


def prepare_run_folder(config: TrainConfig, action: str) -> None:
    """The main process's side of :func:`check_run_folder`: mark a new folder, or remove what an
    earlier run made (:data:`RUN_FILES`, nothing else), then write this run's ``config.json``."""
    from nearid.io.ownership import create_owned, owned_by

    out = Path(config.out)
    if action == "overwrite":
        for name in RUN_FILES:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    if owned_by(out) is None and (action != "resume" or not _holds_run(out)):
        create_owned(out, "train")  # a missing or empty folder (checked); an unmarked earlier run stays unmarked
    write_text_atomic(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def replace_foreign_cache(folder: Path, signature: str) -> None:
    """Under ``--overwrite``, remove the run's token cache when it holds another trunk's tokens (the run
    folder is nearid train's, checked before): a cache of this trunk is kept, since it is content-keyed."""
    manifest = folder / "manifest.json"
    if not folder.is_dir() or folder.is_symlink():
        return
    try:
        same = json.loads(manifest.read_text()).get("signature") == signature
    except (OSError, ValueError, AttributeError):
        same = False
    if not same:
        shutil.rmtree(folder)


# ------------------------------------------------------------------------------ inputs.json
def run_inputs(bench, mtg) -> dict:
    """The data fingerprints of a run (:attr:`nearid.data.loading.Table.fingerprint`): ``positives``,
    each source by name, and ``MTG`` (the token cache's ``trunk`` signature is added when tokens are
    cached). Recorded in ``inputs.json`` beside ``config.json``."""
    data = {"positives": bench.positives.fingerprint, **{name: t.fingerprint for name, t in bench.sources.items()}}
    if mtg is not None:
        data["MTG"] = mtg.table.fingerprint
    return {"data": data, "trunk": None}


def check_same_inputs(out: Path, inputs: dict) -> None:
    """A resumed run continues on the data it started on: a checkpoint trained on other data is refused."""
    path = out / INPUTS_FILE
    if not path.is_file():
        return  # a run from before inputs were recorded: nothing to compare
    before = json.loads(path.read_text()).get("data", {})
    changed = sorted(name for name in set(before) | set(inputs["data"]) if before.get(name) != inputs["data"].get(name))
    if changed:
        raise NearIDError(
            f"{out}: --resume onto other data than the run started on ({', '.join(changed)} changed "
            f"since, see {INPUTS_FILE}); start a new run in another --out"
        )


def streamed(out: Path) -> bool:
    """The run in ``out`` trained without a token cache (its ``inputs.json`` records no trunk)."""
    try:
        recorded = json.loads((out / INPUTS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and "trunk" in recorded and recorded["trunk"] is None


__all__ = [
    "INPUTS_FILE",
    "RESUME_FREE",
    "RUN_FILES",
    "TOKEN_CACHE",
    "check_run_folder",
    "check_same_inputs",
    "checkpoint_step",
    "latest_checkpoint",
    "prepare_run_folder",
    "replace_foreign_cache",
    "run_inputs",
    "streamed",
]
