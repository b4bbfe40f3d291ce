"""Losses against independent loop-based computations, with masks, and gradient checks."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nearid.io.errors import NearIDError
from nearid.training.losses import (
    CircleExtLoss,
    CohesionLoss,
    CombinedLoss,
    InfoNCELoss,
    NearIDLoss,
    OracleRankLoss,
    SigLIPExtLoss,
)


def batch(b=4, p=2, k=3, d=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    anchor = torch.randn(b, d, generator=g, dtype=dtype)
    positives = torch.randn(b, p, d, generator=g, dtype=dtype)
    distractors = torch.randn(b, k, d, generator=g, dtype=dtype)
    pos_mask = torch.ones(b, p, dtype=torch.bool)
    neg_mask = torch.ones(b, k, dtype=torch.bool)
    pos_mask[1, 1] = False  # a 2-view identity: one positive
    neg_mask[1, 1:] = False
    neg_mask[2, 0] = False  # a missing distractor
    return anchor, positives, distractors, pos_mask, neg_mask


def nearid_by_loops(anchor, positives, distractors, pos_mask, neg_mask, tau=0.07, alpha=0.5):
    """Paper Eq. 1-3 written out one anchor, one positive and one distractor at a time."""
    unit = lambda v: v / v.norm()
    b, p_count, _ = positives.shape
    pool = [(j, q, unit(positives[j, q])) for j in range(b) for q in range(p_count) if pos_mask[j, q]]
    per_index = []
    for p in range(p_count):
        terms = []
        for i in range(b):
            if not pos_mask[i, p]:
                continue
            a = unit(anchor[i])
            denominator = sum(math.exp(float(a @ g) / tau) for _, _, g in pool)
            denominator += sum(
                math.exp(float(a @ unit(distractors[i, k])) / tau)
                for k in range(distractors.shape[1])
                if neg_mask[i, k]
            )
            terms.append(-float(a @ unit(positives[i, p])) / tau + math.log(denominator))
        if terms:
            per_index.append(sum(terms) / len(terms))
    disc = sum(per_index) / len(per_index)
    ranks = []
    for i in range(b):
        a = unit(anchor[i])
        negatives = [math.exp(float(a @ g) / tau) for j, _, g in pool if j != i]
        lse = math.log(sum(negatives)) if negatives else -math.inf
        for k in range(distractors.shape[1]):
            if neg_mask[i, k]:
                logit = float(a @ unit(distractors[i, k])) / tau
                ranks.append(math.log1p(math.exp(lse - logit)) if lse > -math.inf else 0.0)
    return disc + alpha * sum(ranks) / len(ranks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nearid_loss_matches_loops(seed):
    inputs = batch(seed=seed)
    ours = NearIDLoss()(*inputs)
    assert float(ours) == pytest.approx(nearid_by_loops(*inputs), rel=1e-9)


def test_padded_slots_do_not_matter():
    anchor, positives, distractors, pos_mask, neg_mask = batch()
    base = NearIDLoss()(anchor, positives, distractors, pos_mask, neg_mask)
    garbage_p, garbage_r = positives.clone(), distractors.clone()
    garbage_p[1, 1] = 100.0  # invalid slots: any content (the code's grey padding images)
    garbage_r[1, 2] = -7.0
    assert float(NearIDLoss()(anchor, garbage_p, garbage_r, pos_mask, neg_mask)) == pytest.approx(
        float(base), rel=1e-12
    )


def test_alpha_zero_is_the_discrimination_term_only():
    inputs = batch()
    assert float(NearIDLoss(alpha=0.0)(*inputs)) == pytest.approx(nearid_by_loops(*inputs, alpha=0.0), rel=1e-9)


def test_nearid_gradients():
    anchor, positives, distractors, pos_mask, neg_mask = batch(b=3, d=4)
    loss = lambda a, p, r: NearIDLoss(temperature=0.5)(a, p, r, pos_mask, neg_mask)
    params = tuple(t.clone().requires_grad_(True) for t in (anchor, positives, distractors))
    assert torch.autograd.gradcheck(loss, params)


def test_infonce_is_symmetric_clip_loss_with_one_positive():
    anchor, positives, distractors, _, _ = batch()
    pos_mask = torch.tensor([[True, False]] * 4)  # the chosen positive is then slot 0 for everyone
    neg_mask = torch.ones(4, 3, dtype=torch.bool)
    a, g = F.normalize(anchor, dim=-1), F.normalize(positives[:, 0], dim=-1)
    logits = a @ g.T / 0.07
    target = torch.arange(4)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert float(InfoNCELoss()(anchor, positives, distractors, pos_mask, neg_mask)) == pytest.approx(float(expected))
    with_negatives = InfoNCELoss(include_negatives=True)(anchor, positives, distractors, pos_mask, neg_mask)
    assert float(with_negatives) > float(expected)  # more terms in every denominator


def test_cohesion_by_hand():
    """Table 9's beta term as the authors normalise it (spec 12.4): the sum over rows with >= 2 valid
    positives, divided by the valid positives of the whole batch, padded rows' included."""
    positives = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 1.0]],  # 90 degrees apart: prototype at 45, each 1 - cos 45
            [[1.0, 0.0], [5.0, 5.0]],  # one valid positive: adds 0, counts 1
            [[2.0, 0.0], [1.0, 3**0.5]],  # 60 degrees apart: prototype at 30, each 1 - cos 30
            [[9.0, 9.0], [1.0, 2.0]],  # no valid positive: adds 0, counts 0
        ]
    )
    pos_mask = torch.tensor([[True, True], [True, False], [True, True], [False, False]])
    expected = (2 * (1 - math.cos(math.pi / 4)) + 2 * (1 - math.cos(math.pi / 6))) / 5
    assert float(CohesionLoss()(None, positives, None, pos_mask, None)) == pytest.approx(expected, rel=1e-6)
    lonely = CohesionLoss()(
        None, positives.double().requires_grad_(True), None, torch.tensor([[True, False]] * 4), None
    )
    assert float(lonely.detach()) == 0.0  # no row with two positives
    lonely.backward()  # still a graph: a run whose batch has none does not fail


def test_oracle_rank_prefers_the_milder_edit():
    anchor = torch.tensor([[1.0, 0.0]])
    distractors = torch.tensor([[[1.0, 0.2], [1.0, 1.0]]])  # slot 0 is more similar
    neg_mask = torch.ones(1, 2, dtype=torch.bool)
    right = OracleRankLoss()(anchor, None, distractors, None, neg_mask, oracle=torch.tensor([[0.9, 0.5]]))
    wrong = OracleRankLoss()(anchor, None, distractors, None, neg_mask, oracle=torch.tensor([[0.5, 0.9]]))
    s0, s1 = F.cosine_similarity(anchor, distractors[0, 0:1]), F.cosine_similarity(anchor, distractors[0, 1:2])
    assert float(right) == pytest.approx(float(F.softplus(-(s0 - s1 - 0.05))))
    assert float(wrong) > float(right)
    with pytest.raises(ValueError, match="needs the per-distractor oracle"):
        OracleRankLoss()(anchor, None, distractors, None, neg_mask)


def siglip_ext_by_loops(anchor, positives, distractors, pos_mask, neg_mask, tau=0.07, bias=-10.0, alpha=0.5):
    """Spec 5.2's extended SigLIP one logit at a time: BCE over anchor x valid pool, BCE of the valid
    distractors towards 0, alpha x -log sigma(l_r - LSE of the anchor's valid batch negatives)."""
    unit = lambda v: v / v.norm()
    logit = lambda u, v: float(unit(u) @ unit(v)) / tau + bias
    bce = lambda x, y: -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))
    b, p_count, _ = positives.shape
    pool = [(j, q) for j in range(b) for q in range(p_count) if pos_mask[j, q]]
    pairs = [bce(logit(anchor[i], positives[j, q]), 1.0 if j == i else 0.0) for i in range(b) for j, q in pool]
    distractor_bce, ranks = [], []
    for i in range(b):
        negatives = [logit(anchor[i], positives[j, q]) for j, q in pool if j != i]
        lse = math.log(sum(math.exp(n) for n in negatives)) if negatives else -math.inf
        for k in range(distractors.shape[1]):
            if neg_mask[i, k]:
                l_r = logit(anchor[i], distractors[i, k])
                distractor_bce.append(bce(l_r, 0.0))
                ranks.append(-math.log(1 / (1 + math.exp(lse - l_r))))
    return sum(pairs) / len(pairs) + sum(distractor_bce) / len(distractor_bce) + alpha * sum(ranks) / len(ranks)


def circle_ext_by_loops(
    anchor, positives, distractors, pos_mask, neg_mask, m=0.25, gamma=64.0, rank_weight=0.5, rank_margin=0.25
):
    """Spec 5.2's extended Circle loss one similarity at a time. Padded entries are left out of the circle
    term; the rank hinge of a distractor is averaged over all M = B x P pool columns (own and padded
    columns add 0 but count), as the authors' code does (spec 12.10), then over the valid distractors."""
    unit = lambda v: v / v.norm()
    cos = lambda u, v: float(unit(u) @ unit(v))
    b, p_count, _ = positives.shape
    circles, hinges = [], []
    for i in range(b):
        s_p = [cos(anchor[i], positives[i, q]) for q in range(p_count) if pos_mask[i, q]]
        s_b = [cos(anchor[i], positives[j, q]) for j in range(b) for q in range(p_count) if j != i and pos_mask[j, q]]
        s_r = [cos(anchor[i], distractors[i, k]) for k in range(distractors.shape[1]) if neg_mask[i, k]]
        if s_p and s_b + s_r:
            lse_p = math.log(sum(math.exp(-max(1 + m - s, 0) * (s - (1 - m)) * gamma) for s in s_p))
            lse_n = math.log(sum(math.exp(max(s + m, 0) * (s - m) * gamma) for s in s_b + s_r))
            circles.append(math.log1p(math.exp(lse_p + lse_n)))
        for r in s_r:
            hinges.append(sum(max(s - r + rank_margin, 0.0) for s in s_b) / (b * p_count))
    return sum(circles) / len(circles) + rank_weight * sum(hinges) / len(hinges)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_siglip_ext_matches_loops(seed):
    inputs = batch(seed=seed, d=3)  # few dimensions: logits far from the -10 bias, every part matters
    assert float(SigLIPExtLoss()(*inputs)) == pytest.approx(siglip_ext_by_loops(*inputs), rel=1e-9)
    assert float(SigLIPExtLoss(alpha=2.0, bias=-3.0)(*inputs)) == pytest.approx(
        siglip_ext_by_loops(*inputs, alpha=2.0, bias=-3.0), rel=1e-9
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_circle_ext_matches_loops(seed):
    inputs = batch(seed=seed)
    assert float(CircleExtLoss()(*inputs)) == pytest.approx(circle_ext_by_loops(*inputs), rel=1e-9)
    gentle = dict(m=0.4, gamma=8.0, rank_weight=1.5, rank_margin=0.6)
    assert float(CircleExtLoss(**gentle)(*inputs)) == pytest.approx(circle_ext_by_loops(*inputs, **gentle), rel=1e-9)


@pytest.mark.parametrize("loss", [SigLIPExtLoss(), CircleExtLoss()])
def test_extended_losses_reward_separation(loss):
    anchor, positives, distractors, pos_mask, neg_mask = batch()
    value = loss(anchor, positives, distractors, pos_mask, neg_mask)
    assert torch.isfinite(value)
    # move every positive onto its anchor: the loss must drop (tier 2 deliberately keeps distractors
    # *above* the batch negatives, so pushing distractors to the antipode would not be "better")
    better_p = anchor[:, None, :].expand_as(positives).clone()
    assert float(loss(anchor, better_p, distractors, pos_mask, neg_mask)) < float(value)
    garbage = positives.clone()
    garbage[1, 1] = 50.0
    assert float(loss(anchor, garbage, distractors, pos_mask, neg_mask)) == pytest.approx(float(value), rel=1e-9)


def test_combined_spec():
    inputs = batch()
    combined = CombinedLoss("nearid:1.0+cohesion:0.1")
    expected = NearIDLoss()(*inputs) + 0.1 * CohesionLoss()(*inputs)
    assert float(combined(*inputs)) == pytest.approx(float(expected))
    tuned = CombinedLoss("nearid:1:alpha=0.0")
    assert float(tuned(*inputs)) == pytest.approx(nearid_by_loops(*inputs, alpha=0.0), rel=1e-9)
    with pytest.raises(NearIDError, match="unknown loss 'triplet'; known: nearid"):
        CombinedLoss("triplet:1")
    with pytest.raises(NearIDError, match="bad option for 'nearid'"):
        CombinedLoss("nearid:1:beta=2")
    with pytest.raises(NearIDError, match="every weight is 0"):
        CombinedLoss("nearid:0+cohesion:0.0")
    assert float(CombinedLoss("nearid:1+cohesion:0")(*inputs)) == float(NearIDLoss()(*inputs))  # a 0 term adds nothing


TWO_PROCESS_SPECS = [
    "nearid:1.0",
    "nearid:1:alpha=0.0",
    "infonce:1",
    "infonce_rneg:1",
    "oracle_rank:1",
    "siglip_ext:1",
    "circle_ext:1",
    "cohesion:1",
    "nearid:1.0+cohesion:0.1",
]
TWO_PROCESS_SIZES = [6, 5]  # equal shares (3 + 3) and the trainer's unequal ones (3 + 2)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """One torchrun launch (2 processes, gloo) for every loss; see tests/losses_torchrun.py."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path_factory.mktemp("losses_torchrun") / "results.json"
    done = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            str(Path(__file__).with_name("losses_torchrun.py")),
            str(out),
            json.dumps(TWO_PROCESS_SPECS),
            json.dumps(TWO_PROCESS_SIZES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("size", TWO_PROCESS_SIZES)
@pytest.mark.parametrize("spec", TWO_PROCESS_SPECS)
def test_two_processes_match_one(two_process_runs, spec, size):
    """DDP's averaged gradient on 2 processes (contiguous shares, padded slots on both) is the 1-process gradient."""
    run = two_process_runs[f"{spec}@{size}"]
    assert "error" not in run, run.get("error")
    assert run["two"] == pytest.approx(run["one"], rel=1e-12)
    grad_one, grad_two = torch.tensor(run["grad_one"]), torch.tensor(run["grad_two"])
    assert grad_one.abs().max() > 1e-6  # the head gets a gradient: the comparison means something
    torch.testing.assert_close(grad_two, grad_one, rtol=1e-10, atol=1e-12)
