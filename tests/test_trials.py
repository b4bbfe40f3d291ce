"""``--trials``: slot-keyed trials (default) and the authors' compacted lists (spec 12.10), checked
against the authors' procedure written here from the spec, on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from nearid.eval.evaluate import ImagePlan, fill_tables, plan_judged_pairs
from nearid.eval.metrics import nearid_scores
from nearid.eval.trials import compact_rows, form_trials


def authors_margins(view_vectors: list, distractor_vectors: list) -> list[float]:
    """The authors' trials of one identity: the present views and the present distractors as two lists;
    for every pair a < b of view positions, s(p_a, p_b) - s(p_a, n_a) and s(p_a, p_b) - s(p_b, n_b),
    where n_i is the i-th *present* distractor (a trial without one is left out)."""
    margins = []
    for a in range(len(view_vectors)):
        for b in range(a + 1, len(view_vectors)):
            positive = float(view_vectors[a] @ view_vectors[b])
            for anchor in (a, b):
                if anchor < len(distractor_vectors):
                    margins.append(positive - float(view_vectors[anchor] @ distractor_vectors[anchor]))
    return margins


def unit(*values):
    v = np.asarray(values, dtype=np.float64)
    return v / np.linalg.norm(v)


# identity 0: 3 views, distractor slot 0 missing (slots 1 and 2 present)
# identity 1: view slot 1 missing, distractors 0 and 2 present
# identity 2: everything present (both formations agree)
VECTORS = [
    unit(1, 0, 0),
    unit(0.9, 0.3, 0),
    unit(0.8, 0, 0.5),  # id 0 views, rows 0-2
    unit(0.95, 0.1, 0.1),
    unit(0.2, 1, 0),  # id 0 distractors in slots 1, 2: rows 3, 4
    unit(0, 1, 0),
    unit(0.3, 0.9, 0.2),  # id 1 views in slots 0, 2: rows 5, 6
    unit(0.1, 0.95, 0.3),
    unit(0, 0.2, 1),  # id 1 distractors in slots 0, 2: rows 7, 8
    unit(0, 0, 1),
    unit(0.1, 0.2, 1),
    unit(0.3, 0, 1),  # id 2 views: rows 9-11
    unit(0.2, 0.1, 1),
    unit(1, 1, 1),
    unit(0.3, 0.05, 1),  # id 2 distractors: rows 12-14
]
VIEWS = np.array([[0, 1, 2], [5, -1, 6], [9, 10, 11]])
DISTRACTORS = np.array([[-1, 3, 4], [7, -1, 8], [12, 13, 14]])


def _plan():
    plan = ImagePlan(ids=["a", "b", "c"], categories=["x"] * 3)
    plan.keys = [str(r) for r in range(len(VECTORS))]
    plan.views, plan.distractors = VIEWS.copy(), {"Flux": DISTRACTORS.copy()}
    return plan


def test_compact_rows_moves_present_entries_to_the_front():
    assert compact_rows(np.array([[-1, 3, 4], [7, -1, 8], [-1, -1, 2]])).tolist() == [
        [3, 4, -1],
        [7, 8, -1],
        [2, -1, -1],
    ]


@pytest.mark.parametrize("trials", ["slot", "authors"])
def test_trials_match_the_procedure_they_name(trials):
    matrix = np.stack(VECTORS)
    tables = fill_tables(form_trials(_plan(), trials), matrix)
    got = nearid_scores(tables["Flux"].pair, tables["Flux"].own_background)
    margins = []
    for views, distractors in zip(VIEWS, DISTRACTORS):
        if trials == "authors":
            margins += authors_margins([matrix[r] for r in views if r >= 0], [matrix[r] for r in distractors if r >= 0])
        else:  # by slot: a view's own background only
            for a in range(3):
                for b in range(a + 1, 3):
                    if views[a] < 0 or views[b] < 0:
                        continue
                    positive = matrix[views[a]] @ matrix[views[b]]
                    for anchor in (a, b):
                        if distractors[anchor] >= 0:
                            margins.append(positive - matrix[views[anchor]] @ matrix[distractors[anchor]])
    margins = np.array(margins)
    assert got.n_trials == len(margins)
    assert got.pa == pytest.approx(100 * (margins > 0).mean())


def test_the_two_formations_differ_only_where_a_slot_is_missing():
    matrix = np.stack(VECTORS)
    slot = fill_tables(_plan(), matrix)["Flux"]
    authors = fill_tables(form_trials(_plan(), "authors"), matrix)["Flux"]
    np.testing.assert_array_equal(slot.own_background[2], authors.own_background[2])
    # identity 0 by slot: view 0 has no own-background distractor; the authors compare it with slot 1's
    assert np.isnan(slot.own_background[0, 0]) and authors.own_background[0, 0] == pytest.approx(matrix[0] @ matrix[3])
    # by hand: identity 0 has 4 trials either way (slot: view 0 anchors none; authors: the third view
    # anchors none), identity 1 has 2 (one view pair), identity 2 has 6; the trials differ, not their count
    assert nearid_scores(slot.pair, slot.own_background).n_trials == 4 + 2 + 6
    assert nearid_scores(authors.pair, authors.own_background).n_trials == 4 + 2 + 6
    assert np.isnan(authors.own_background[0, 2]) and not np.isnan(slot.own_background[0, 2])


def test_a_judge_is_asked_the_pairs_the_authors_formation_needs():
    pairs = plan_judged_pairs(form_trials(_plan(), "authors"))
    asked = {tuple(map(int, p)) for p in pairs.rows}
    assert (0, 3) in asked and (1, 4) in asked and (5, 7) in asked and (6, 8) in asked
    slot_asked = {tuple(map(int, p)) for p in plan_judged_pairs(_plan()).rows}
    assert (0, 3) not in slot_asked and (1, 3) in slot_asked
