"""``nearid train`` and ``nearid export``, as they were imported before training was split in steps.

The trainer is now its parts: the settings (:mod:`nearid.training.config`), the run folder
(:mod:`nearid.training.run_folder`), a run up to its first step (:mod:`nearid.training.run`), the
step and the loop (:mod:`nearid.training.loop`), mixed precision (:mod:`nearid.training.precision`)
and export (:mod:`nearid.training.export`). This module keeps every name it gave, from where it is now.
"""

from __future__ import annotations

from nearid.training.config import TrainConfig
from nearid.training.export import export
from nearid.training.loop import train
from nearid.training.precision import half_trunk, mixed_precision
from nearid.training.run_folder import INPUTS_FILE, RESUME_FREE, RUN_FILES, TOKEN_CACHE, check_run_folder

__all__ = [
    "INPUTS_FILE",
    "RESUME_FREE",
    "RUN_FILES",
    "TOKEN_CACHE",
    "TrainConfig",
    "check_run_folder",
    "export",
    "half_trunk",
    "mixed_precision",
    "train",
]
