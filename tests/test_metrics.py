"""NearID-bench SSR / PA against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from nearid.eval.metrics import DiscriminationScore, discrimination, nearid_margins, nearid_scores

nan = np.nan


def test_margins_by_hand():
    pair = np.array([[0.9, 0.5, 0.4]])  # s01, s02, s12
    cross = np.array([[0.6, 0.95, 0.1]])  # s(p0,n0), s(p1,n1), s(p2,n2)
    margins = nearid_margins(pair, cross)
    np.testing.assert_allclose(margins[0], [[0.3, -0.05], [-0.1, 0.4], [-0.55, 0.3]])


def test_three_view_identity_all_wins_and_one_loss():
    pair = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]])
    cross = np.array([[0.1, 0.2, 0.3], [0.1, 0.75, 0.3]])  # second: delta(1->2)=0.7-0.75 < 0
    score = nearid_scores(pair, cross)
    assert (score.n_samples, score.n_trials, score.n_wins) == (2, 12, 11)
    assert score.ssr == pytest.approx(50.0) and score.pa == pytest.approx(100 * 11 / 12)


def test_two_view_identity_has_two_trials():
    pair = np.array([[0.5, nan, nan]])
    cross = np.array([[0.4, 0.6, nan]])
    score = nearid_scores(pair, cross)
    assert (score.n_trials, score.n_wins, score.ssr, score.pa) == (2, 1, 0.0, 50.0)


def test_tie_is_a_loss():
    score = nearid_scores(np.array([[0.5, nan, nan]]), np.array([[0.5, 0.1, nan]]))
    assert (score.n_wins, score.n_trials) == (1, 2)


def test_missing_distractor_removes_only_its_trials():
    # view 1 has no distractor: the two margins that need s(p1, n1) are not trials, the other four are
    pair = np.array([[0.8, 0.7, 0.6]])
    cross = np.array([[0.1, nan, 0.2]])
    score = nearid_scores(pair, cross)
    assert score.n_trials == 4 and score.n_wins == 4 and score.ssr == 100.0


def test_identity_without_valid_trial_is_excluded():
    pair = np.array([[0.8, nan, nan], [nan, nan, nan]])
    cross = np.array([[0.1, 0.2, nan], [0.1, 0.1, 0.1]])
    score = nearid_scores(pair, cross)
    assert score.n_samples == 1 and score.ssr == 100.0


def test_nan_similarity_is_not_a_win():
    margins = np.array([[nan, 0.2], [-0.1, nan]])
    score = discrimination(margins)
    assert (score.n_trials, score.n_wins, score.ssr) == (2, 1, 50.0)


def test_pool_adds_counts_and_equals_concatenation_exactly():
    rng = np.random.default_rng(0)
    tables = []
    for n in (5, 17, 1, 9):
        pair, cross = rng.uniform(size=(n, 3)), rng.uniform(0.2, 1.0, size=(n, 3))
        pair[rng.uniform(size=(n, 3)) < 0.3] = nan  # missing views and distractors: supports differ per table
        cross[rng.uniform(size=(n, 3)) < 0.2] = nan
        tables.append((pair, cross))
    concatenated = nearid_scores(np.concatenate([t[0] for t in tables]), np.concatenate([t[1] for t in tables]))
    parts = [nearid_scores(*t) for t in tables]
    pooled = DiscriminationScore.pool(*parts)
    assert pooled == concatenated and pooled.as_dict() == concatenated.as_dict()  # exact, not approximately
    assert pooled == parts[0] + parts[1] + parts[2] + parts[3]
    assert pooled.n_trials == sum(p.n_trials for p in parts) and pooled.n_all_win == sum(p.n_all_win for p in parts)
    assert 0 < pooled.ssr < 100 and 0 < pooled.pa < 100
    mean_of_ssr = np.mean([p.ssr for p in parts if p.n_samples])
    assert pooled.ssr != pytest.approx(mean_of_ssr)  # micro-averaging, not the mean of the tables' figures


def test_score_counts_and_dict_layout_by_hand():
    score = DiscriminationScore(n_samples=4, n_all_win=1, n_trials=10, n_wins=7, n_mean_win=3)
    assert (score.ssr, score.pa, score.pa_published) == (25.0, 70.0, 100 * 10 / 14)
    assert score.as_dict() == {
        "ssr": 25.0,
        "pa": 70.0,
        "pa_published": 100 * 10 / 14,
        "n_samples": 4,
        "n_all_win": 1,
        "n_trials": 10,
        "n_wins": 7,
        "n_mean_win": 3,
    }
    assert DiscriminationScore.from_dict(score.as_dict()) == score
    assert np.isnan(DiscriminationScore.pool().ssr)  # nothing pooled: no identity, no figure


def test_empty():
    score = nearid_scores(np.zeros((0, 3)), np.zeros((0, 3)))
    assert score.n_samples == 0 and np.isnan(score.ssr) and np.isnan(score.pa) and np.isnan(score.pa_published)


# ------------------------------------------------------------------ PA as published (spec 12.1)
def test_pa_published_spec_example():
    # one identity, three valid trials +0.2, -0.1, +0.3: wins 2 of 3, mean +0.133 > 0 -> one more win
    score = discrimination(np.array([[0.2, -0.1, 0.3]]))
    assert (score.n_wins, score.n_trials, score.n_mean_win) == (2, 3, 1)
    assert score.pa == pytest.approx(100 * 2 / 3) and score.pa_published == pytest.approx(100 * 3 / 4)


def test_pa_published_mean_of_exactly_zero_loses():
    # margins +0.5, -0.5 (exact in binary): mean 0 is a tie, and a tie loses
    score = discrimination(np.array([[0.5, -0.5, nan]]))
    assert (score.n_wins, score.n_trials, score.n_samples, score.n_mean_win) == (1, 2, 1, 0)
    assert score.pa == 50.0 and score.pa_published == pytest.approx(100 * 1 / 3)


def test_pa_published_two_view_identity_and_a_losing_mean():
    # identity 1, two views: s01 = 0.5, s(p0,n0) = 0.25, s(p1,n1) = 0.875 -> margins +0.25, -0.375: mean < 0
    # identity 2, three views, all six margins win; identity 3 has no valid trial and counts nowhere
    pair = np.array([[0.5, nan, nan], [0.9, 0.8, 0.7], [nan, nan, nan]])
    cross = np.array([[0.25, 0.875, nan], [0.1, 0.2, 0.3], [0.1, 0.1, 0.1]])
    score = nearid_scores(pair, cross)
    assert (score.n_samples, score.n_trials, score.n_wins, score.n_mean_win) == (2, 8, 7, 1)
    assert score.pa == pytest.approx(100 * 7 / 8)
    assert score.pa_published == pytest.approx(100 * (7 + 1) / (8 + 2))


def test_pa_published_nan_trials_are_left_out_of_the_mean():
    # valid margins -0.1 and +0.3 (mean +0.1 > 0); a NaN trial must not drag the mean to NaN or 0
    score = discrimination(np.array([[nan, -0.1, 0.3, nan]]))
    assert (score.n_trials, score.n_wins, score.n_mean_win) == (2, 1, 1)
    assert score.pa_published == pytest.approx(100 * 2 / 3)


def test_pa_published_pools_exactly():
    rng = np.random.default_rng(3)
    tables = [(rng.uniform(size=(n, 3)), rng.uniform(0.2, 1.0, size=(n, 3))) for n in (4, 11, 7)]
    for pair, _cross in tables:
        pair[rng.uniform(size=pair.shape) < 0.3] = nan
    parts = [nearid_scores(*t) for t in tables]
    concatenated = nearid_scores(np.concatenate([t[0] for t in tables]), np.concatenate([t[1] for t in tables]))
    pooled = DiscriminationScore.pool(*parts)
    assert pooled.n_mean_win == concatenated.n_mean_win == sum(p.n_mean_win for p in parts)
    assert pooled.pa_published == concatenated.pa_published
    # an independent computation: per identity, mean of the finite margins
    margins = nearid_margins(np.concatenate([t[0] for t in tables]), np.concatenate([t[1] for t in tables]))
    flat = margins.reshape(len(margins), -1)
    means = [row[np.isfinite(row)].mean() for row in flat if np.isfinite(row).any()]
    wins = int(sum(int((row[np.isfinite(row)] > 0).sum()) for row in flat))
    trials = int(np.isfinite(flat).sum())
    assert pooled.pa_published == pytest.approx(100 * (wins + sum(m > 0 for m in means)) / (trials + len(means)))


def test_pearson_and_fisher_z_by_hand():
    from nearid.eval.metrics import fisher_z_mean, pearson

    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1])
    assert np.isnan(pearson([1, 1, 1], [1, 2, 3]))  # zero variance
    assert pearson([1, 2, nan, 4], [1, 2, 5, 4]) == pytest.approx(1.0)  # NaN pairs dropped
    assert fisher_z_mean([0.5, 0.9]) == pytest.approx(np.tanh((np.arctanh(0.5) + np.arctanh(0.9)) / 2))
    assert fisher_z_mean([1.0, 1.0]) == pytest.approx(0.999)  # clipped, not infinite
    assert fisher_z_mean([0.6, nan], nan_as_zero=True) == pytest.approx(np.tanh(np.arctanh(0.6) / 2))
    assert fisher_z_mean([0.6, nan]) == pytest.approx(0.6)


def test_mtg_scores_by_hand():
    from nearid.eval.metrics import mtg_scores

    s12 = np.array([0.9, 0.5, 0.7])
    s11p = np.array([0.8, 0.6, 0.7])  # margins 0.1 (win), -0.1, 0.0 (tie: loss)
    s22p = np.array([0.3, 0.4, 0.6])  # margins 0.6, 0.1, 0.1 (wins)
    o1, o2 = np.array([0.9, 0.5, 0.2]), np.array([0.1, 0.2, 0.3])
    s12p, s21p = np.array([0.2, 0.2, 0.2]), np.array([0.1, 0.5, 0.9])  # s12p constant: r undefined -> 0
    score = mtg_scores(s12, s11p, s12p, s22p, s21p, o1, o2)
    assert (score.n_samples, score.n_trials) == (3, 6)
    assert (score.discrimination.n_all_win, score.discrimination.n_wins) == (1, 4)
    assert score.ssr == pytest.approx(100 / 3) and score.pa == pytest.approx(400 / 6)
    r = [np.corrcoef(s11p, o1)[0, 1], np.corrcoef(s22p, o2)[0, 1], 0.0, np.corrcoef(s21p, o1)[0, 1]]
    z = np.arctanh(np.clip(r, -0.999, 0.999))
    assert score.m_o == pytest.approx(np.tanh(z.mean()))
    assert score.m_opair == pytest.approx(np.tanh(z[:2].mean()))
    assert np.isnan(score.correlations[2])


def test_calibrated_threshold_by_hand():
    from nearid.eval.metrics import calibrate_threshold

    t = calibrate_threshold([0.9, 0.8, 0.6], [0.7, 0.3, 0.2, 0.1])
    # cut 0.75: TPR 2/3, TNR 4/4 -> 0.833; cut 0.45: TPR 3/3, TNR 3/4 -> 0.875; cut 0.65: 2/3, 3/4 -> 0.708
    assert t.value == pytest.approx(0.45) and t.balanced_accuracy == pytest.approx(87.5)
    assert (t.true_positive_rate, t.true_negative_rate) == (pytest.approx(100.0), pytest.approx(75.0))
    tie = calibrate_threshold([0.9, 0.5], [0.7, 0.1])  # cuts 0.3 and 0.8 both give 75 %: the middle one of the two
    assert tie.value == pytest.approx(0.8) and tie.balanced_accuracy == pytest.approx(75.0)
    separable = calibrate_threshold([0.9, 0.95], [0.1, nan])
    assert separable.balanced_accuracy == 100.0 and 0.1 < separable.value < 0.9 and separable.n_negative == 1
    with pytest.raises(ValueError):
        calibrate_threshold([], [0.1])
