"""The NearID loss and the ablation losses of the paper's Table 3, with one signature for all:

    loss_fn(anchor[B, D], positives[B, P, D], distractors[B, K, D], pos_mask[B, P], neg_mask[B, K],
            oracle=None) -> scalar

Embeddings are L2-normalised inside (eps 1e-7). ``pos_mask`` / ``neg_mask`` mark the valid slots;
padded (invalid) positives and distractors are removed from *every* denominator, as the paper states
(the authors' code leaves them in; spec section 5.1). In a multi-process run the batch's positives
are gathered from all processes with gradients, so the pool of batch negatives is the global batch.
``oracle[B, K]`` (edit severity per distractor: higher = less edited) is read only by ``oracle_rank``.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

EPS = 1e-7
NEG_INF = float("-inf")


def _unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise in at least float32 (half-precision logits / 0.07 overflow)."""
    return F.normalize(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=-1, eps=EPS)


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' ``x`` concatenated (gradients flow back to each), and this process's offset."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(x.contiguous())
    return torch.cat(parts), dist.get_rank() * x.shape[0]


def global_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean over every process's ``values``, shaped so that DDP's gradient *averaging* yields the
    gradient of that global mean: local sum x world size / global count. One process: a plain mean."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values.mean() if values.numel() else values.new_zeros(())
    count = torch.tensor([values.numel()], dtype=torch.float64, device=values.device)
    dist.all_reduce(count)
    if count.item() == 0:
        return values.sum() * 0.0
    return values.sum() * dist.get_world_size() / count.to(values.dtype)


def _pool(positives: torch.Tensor, pos_mask: torch.Tensor):
    """Flattened global pool of positives ``[M, D]``, its validity ``[M]``, and each local anchor's own columns."""
    batch, n_pos, _ = positives.shape
    pool, offset = gather_with_grad(positives)
    valid, _ = gather_with_grad(pos_mask.to(positives.dtype))
    own = offset * n_pos + torch.arange(batch, device=positives.device)[:, None] * n_pos + torch.arange(n_pos, device=positives.device)
    return pool.flatten(0, 1), valid.flatten().bool(), own  # own[i, p] = column of g_{i,p}


def _anywhere(mask: torch.Tensor) -> bool:
    """Whether any process has a True in ``mask`` (every process must take the same branches)."""
    import torch.distributed as dist

    flag = mask.any()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flag = flag.to(torch.int64)
        dist.all_reduce(flag)
    return bool(flag)


class NearIDLoss:
    """L_NearID = L_disc + alpha * L_rank (paper Eq. 1-3; tau = 0.07 fixed, alpha = 0.5).

    L_disc: for each positive index p, cross-entropy of the anchor's logits over all valid positives of
    the (global) batch plus its own valid distractors, target its p-th positive, averaged over anchors
    whose p-th positive is valid, then over p. L_rank: softplus(LSE over the batch negatives (other
    samples' positives) - distractor logit), averaged over valid distractors.
    """

    def __init__(self, temperature: float = 0.07, alpha: float = 0.5):
        self.temperature, self.alpha = float(temperature), float(alpha)

    def __call__(self, anchor, positives, distractors, pos_mask, neg_mask, oracle=None):
        anchor, positives, distractors = _unit(anchor), _unit(positives), _unit(distractors)
        pool, pool_valid, own = _pool(positives, pos_mask)
        batch_logits = (anchor @ pool.T / self.temperature).masked_fill(~pool_valid, NEG_INF)  # [B, M]
        distractor_logits = torch.einsum("bd,bkd->bk", anchor, distractors) / self.temperature
        distractor_logits = distractor_logits.masked_fill(~neg_mask.bool(), NEG_INF)  # [B, K]
        logits = torch.cat([batch_logits, distractor_logits], dim=1)
        log_denominator = torch.logsumexp(logits, dim=1)  # [B]
        per_index = []
        for p in range(positives.shape[1]):
            rows = pos_mask[:, p].bool()
            if _anywhere(rows):
                target = batch_logits.gather(1, own[:, p : p + 1]).squeeze(1)
                per_index.append(global_mean((log_denominator - target)[rows]))
        disc = torch.stack(per_index).mean() if per_index else logits.sum() * 0.0
        own_columns = torch.zeros_like(batch_logits, dtype=torch.bool).scatter_(1, own, True)
        lse_negatives = torch.logsumexp(batch_logits.masked_fill(own_columns, NEG_INF), dim=1, keepdim=True)
        valid_distractors = neg_mask.bool()
        if self.alpha == 0 or not _anywhere(valid_distractors):
            return disc
        rank = F.softplus(lse_negatives - distractor_logits)[valid_distractors]
        return disc + self.alpha * global_mean(rank)


class InfoNCELoss:
    """Symmetric single-positive InfoNCE (CLIP-style), one random valid positive per anchor; with
    ``include_negatives`` each row also holds its own distractors ("+ R neg" in Table 3)."""

    def __init__(self, temperature: float = 0.07, include_negatives: bool = False):
        self.temperature, self.include_negatives = float(temperature), bool(include_negatives)

    def __call__(self, anchor, positives, distractors, pos_mask, neg_mask, oracle=None):
        rows = pos_mask.bool().any(dim=1)
        choice = torch.multinomial(pos_mask[rows].float(), 1).squeeze(1)
        anchor, positive = _unit(anchor[rows]), _unit(positives[rows, choice])
        all_anchors, offset = gather_with_grad(anchor)
        all_positives, _ = gather_with_grad(positive)
        target = offset + torch.arange(len(anchor), device=anchor.device)
        forward = anchor @ all_positives.T / self.temperature
        backward = positive @ all_anchors.T / self.temperature
        if self.include_negatives:
            extra = torch.einsum("bd,bkd->bk", anchor, _unit(distractors[rows])) / self.temperature
            extra = extra.masked_fill(~neg_mask[rows].bool(), NEG_INF)
            extra_back = torch.einsum("bd,bkd->bk", positive, _unit(distractors[rows])) / self.temperature
            extra_back = extra_back.masked_fill(~neg_mask[rows].bool(), NEG_INF)
            forward, backward = torch.cat([forward, extra], 1), torch.cat([backward, extra_back], 1)
        return (F.cross_entropy(forward, target) + F.cross_entropy(backward, target)) / 2


class OracleRankLoss:
    """RankNet within a sample: the less edited of two distractors (higher oracle) must be more similar,
    by ``margin`` in cosine: -log sigma(sign * (s_k1 - s_k2) - margin)."""

    def __init__(self, margin: float = 0.05, eps: float = 1e-6):
        self.margin, self.eps = float(margin), float(eps)

    def __call__(self, anchor, positives, distractors, pos_mask, neg_mask, oracle=None):
        if oracle is None:
            raise ValueError("oracle_rank needs the per-distractor oracle (edit severity)")
        sims = torch.einsum("bd,bkd->bk", _unit(anchor), _unit(distractors))
        diff_s = sims[:, :, None] - sims[:, None, :]
        diff_o = oracle[:, :, None] - oracle[:, None, :]
        valid = neg_mask.bool()[:, :, None] & neg_mask.bool()[:, None, :] & (diff_o > self.eps)
        if not valid.any():
            return sims.new_zeros(())
        return F.softplus(-(diff_s[valid] - self.margin)).mean()


class SigLIPExtLoss:
    """Extended SigLIP: pairwise BCE over anchor x pool (t = 1/0.07, b = -10), BCE pushing own distractors
    to 0, and alpha * -log sigma(l_r - LSE over the valid batch negatives)."""

    def __init__(self, temperature: float = 0.07, bias: float = -10.0, alpha: float = 0.5):
        self.scale, self.bias, self.alpha = 1.0 / temperature, float(bias), float(alpha)

    def __call__(self, anchor, positives, distractors, pos_mask, neg_mask, oracle=None):
        anchor, positives, distractors = _unit(anchor), _unit(positives), _unit(distractors)
        pool, pool_valid, own = _pool(positives, pos_mask)
        logits = anchor @ pool.T * self.scale + self.bias
        labels = torch.zeros_like(logits).scatter_(1, own, pos_mask.to(logits.dtype))
        weight = pool_valid.float()[None, :].expand_as(logits)
        bce = F.binary_cross_entropy_with_logits(logits, labels, weight=weight, reduction="sum") / (weight.sum().clamp(min=1))
        r_logits = torch.einsum("bd,bkd->bk", anchor, distractors) * self.scale + self.bias
        valid_r = neg_mask.bool()
        if not valid_r.any():
            return bce
        r_bce = F.binary_cross_entropy_with_logits(r_logits[valid_r], torch.zeros_like(r_logits[valid_r]))
        own_columns = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, own, True)
        lse = torch.logsumexp(logits.masked_fill(own_columns | ~pool_valid[None, :], NEG_INF), dim=1, keepdim=True)
        rank = F.softplus(lse - r_logits)[valid_r].mean()
        return bce + r_bce + self.alpha * rank


class CircleExtLoss:
    """Extended Circle loss (m = 0.25, gamma = 64) plus a hinge making each distractor less similar than
    the batch negatives on average by ``rank_margin`` (weight 0.5); masked entries are left out."""

    def __init__(self, m: float = 0.25, gamma: float = 64.0, rank_weight: float = 0.5, rank_margin: float = 0.25):
        self.m, self.gamma, self.rank_weight, self.rank_margin = float(m), float(gamma), float(rank_weight), float(rank_margin)

    def __call__(self, anchor, positives, distractors, pos_mask, neg_mask, oracle=None):
        anchor, positives, distractors = _unit(anchor), _unit(positives), _unit(distractors)
        pool, pool_valid, own = _pool(positives, pos_mask)
        s_pool = anchor @ pool.T
        own_columns = torch.zeros_like(s_pool, dtype=torch.bool).scatter_(1, own, True)
        s_p = torch.einsum("bd,bpd->bp", anchor, positives)
        s_r = torch.einsum("bd,bkd->bk", anchor, distractors)
        s_n = torch.cat([s_pool, s_r], 1)
        n_valid = torch.cat([pool_valid[None, :] & ~own_columns, neg_mask.bool()], 1)
        alpha_p = (1 + self.m - s_p).clamp(min=0).detach()
        alpha_n = (s_n + self.m).clamp(min=0).detach()
        logit_p = (-alpha_p * (s_p - (1 - self.m)) * self.gamma).masked_fill(~pos_mask.bool(), NEG_INF)
        logit_n = (alpha_n * (s_n - self.m) * self.gamma).masked_fill(~n_valid, NEG_INF)
        rows = pos_mask.bool().any(1) & n_valid.any(1)
        circle = F.softplus(torch.logsumexp(logit_p, 1) + torch.logsumexp(logit_n, 1))[rows].mean()
        batch_valid = (pool_valid[None, :] & ~own_columns).float()  # [B, M]
        hinge = F.relu(s_pool[:, None, :] - s_r[:, :, None] + self.rank_margin)  # [B, K, M]
        per_distractor = (hinge * batch_valid[:, None, :]).sum(-1) / batch_valid.sum(-1, keepdim=True).clamp(min=1)
        valid_r = neg_mask.bool()
        rank = per_distractor[valid_r].mean() if valid_r.any() else circle.new_zeros(())
        return circle + self.rank_weight * rank


class CohesionLoss:
    """Positive cohesion: 1 - cos(g_p, mean of the sample's valid positives), over samples with >= 2."""

    def __call__(self, anchor, positives, distractors, pos_mask, neg_mask, oracle=None):
        positives = _unit(positives)
        mask = pos_mask.float()
        rows = mask.sum(1) >= 2
        if not rows.any():
            return positives.new_zeros(())
        prototype = _unit((positives * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1))
        cosine = torch.einsum("bpd,bd->bp", positives, prototype)
        used = mask * rows[:, None].float()
        return ((1 - cosine) * used).sum() / used.sum()


LOSSES = {
    "nearid": NearIDLoss,
    "infonce": InfoNCELoss,
    "infonce_rneg": lambda **kw: InfoNCELoss(include_negatives=True, **kw),
    "oracle_rank": OracleRankLoss,
    "siglip_ext": SigLIPExtLoss,
    "circle_ext": CircleExtLoss,
    "cohesion": CohesionLoss,
}


class CombinedLoss:
    """A weighted sum parsed from ``"name:weight[:key=value...]+name:weight..."``, e.g. ``nearid:1.0+cohesion:0.1``."""

    def __init__(self, spec: str):
        from .errors import NearIDError

        self.spec = spec
        self.terms = []
        for term in filter(None, (t.strip() for t in spec.split("+"))):
            name, *rest = term.split(":")
            if name not in LOSSES:
                raise NearIDError(f"--loss {spec}: unknown loss '{name}'; known: {', '.join(LOSSES)}")
            weight = float(rest[0]) if rest else 1.0
            kwargs = {}
            for item in rest[1:]:
                key, _, value = item.partition("=")
                kwargs[key] = _parse_value(value)
            try:
                self.terms.append((name, weight, LOSSES[name](**kwargs)))
            except TypeError as exc:
                raise NearIDError(f"--loss {spec}: bad option for '{name}' ({exc})") from None
        if not self.terms:
            raise NearIDError(f"--loss '{spec}': no loss named")

    def __call__(self, anchor, positives, distractors, pos_mask, neg_mask, oracle=None):
        return sum(w * fn(anchor, positives, distractors, pos_mask, neg_mask, oracle=oracle) for _, w, fn in self.terms)


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


__all__ = ["LOSSES", "CombinedLoss", "NearIDLoss", "gather_with_grad"]
