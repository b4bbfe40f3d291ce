"""The options of ``nearid score`` that mean nothing, refused before anything is read or loaded."""

from __future__ import annotations

import os

import numpy as np

from nearid.io.errors import NearIDError
from nearid.models.embedding import check_batch_size


def check_options(
    *,
    threshold: str | None = None,
    calibration: str | os.PathLike | None = None,
    batch_size: int = 32,
    n_models: int = 1,
) -> None:
    """The score options that mean nothing, refused before anything is read or loaded."""
    check_batch_size(batch_size, "--batch-size")
    if n_models > 1 and threshold is not None and threshold != "calibrated":
        raise NearIDError(
            f"--threshold {threshold}: one number cannot cut {n_models} metrics on their different scales; "
            "use --threshold calibrated (each metric's own cut from a bench results.json) or one --model"
        )
    if threshold is not None and threshold != "calibrated":
        try:
            value = float(threshold)
        except ValueError:
            raise NearIDError(f"--threshold {threshold}: give a number or 'calibrated'") from None
        if not np.isfinite(value):
            raise NearIDError(
                f"--threshold {threshold}: not a finite number; give a number such as 0.5, or 'calibrated'"
            )
    if calibration is not None and threshold != "calibrated":
        raise NearIDError(
            f"--calibration {calibration} is only read with --threshold calibrated; add it or drop --calibration"
        )


def check_metric_specs(specs: list[str]) -> None:
    """Every ``--model`` spec parses, and none is given twice (its column would be written twice)."""
    from nearid.models.specs import check_distinct_specs

    check_distinct_specs(specs)
