"""How a benchmark's trials pair a view with a distractor when an image is missing (``--trials``).

* ``slot`` (our default): view j is compared with the distractor inpainted into view j's background,
  by slot; a missing view or distractor leaves its trials out. Every trial is what the paper defines:
  the cross-background positive against the distractor in the anchor's *own* background.
* ``authors``: the authors' evaluation (spec 12.10) loads the present views and the present
  distractors into two lists, skipping missing ones, and pairs them by list position: ``cross_ii`` is
  (i-th present view, i-th present distractor). When distractor slot 1 is missing but 2 and 3 exist,
  the first view is compared with slot 2's distractor, another background. Used by ``--preset table1``
  and ``table7`` so that "ours vs published" runs the same procedure. On a small masked table the two
  differ by one trial of 92 (PA 42.39 vs 43.48); with no missing image they are the same plan.

Compaction acts on the :class:`~nearid.eval.evaluate.ImagePlan` (which rows sit where), before anything is
embedded or judged: the tables, the metrics and a judge's pair plan (the diagonal of ``cross``) then
follow it unchanged, so embedding and judge runs form the same trials.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nearid.eval.evaluate import ImagePlan

TRIALS = ("slot", "authors")


def compact_rows(rows: np.ndarray) -> np.ndarray:
    """``[N, 3]`` rows (-1: missing) with each row's present entries moved to the front, in slot order."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full_like(rows, -1)
    for i, row in enumerate(rows):
        present = row[row >= 0]
        out[i, : len(present)] = present
    return out


def form_trials(plan: ImagePlan, trials: str) -> ImagePlan:
    """``plan`` as ``trials`` pairs it: unchanged for ``slot``; views and each source's distractors
    compacted (:func:`compact_rows`) for ``authors``."""
    if trials not in TRIALS:
        raise ValueError(f"trials '{trials}': use one of {', '.join(TRIALS)}")
    if trials == "slot":
        return plan
    return dataclasses.replace(
        plan,
        views=compact_rows(plan.views),
        distractors={source: compact_rows(rows) for source, rows in plan.distractors.items()},
    )


__all__ = ["TRIALS", "compact_rows", "form_trials"]
