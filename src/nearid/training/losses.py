"""The NearID loss and the ablation losses of the paper's Table 3, with one signature for all:

    loss_fn(anchor[B, D], positives[B, P, D], distractors[B, K, D], pos_mask[B, P], neg_mask[B, K],
            oracle=None) -> scalar

Embeddings are L2-normalised inside (eps 1e-7). ``pos_mask`` / ``neg_mask`` mark the valid slots;
padded (invalid) positives and distractors are removed from *every* denominator, as the paper states
(the authors' code leaves them in; spec section 5.1). In a multi-process run the batch's positives
are gathered from all processes with gradients, so the pool of batch negatives is the global batch.
``oracle[B, K]`` (edit severity per distractor: higher = less edited) is read only by ``oracle_rank``.

Every loss is built the same way (the shape of pytorch-metric-learning): a :class:`LossBatch` normalises
the inputs and pools the positives once; the loss's ``terms`` returns its *unreduced* components, each
with its validity mask (:class:`Terms`); one reducer (:func:`reduce`) divides by *global* counts. So every
loss, ablations included, gives on N processes (each a contiguous share of the batch) the gradient it
gives on one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

EPS = 1e-7
NEG_INF = float("-inf")


def _unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise in at least float32 (half-precision logits / 0.07 overflow)."""
    return F.normalize(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=-1, eps=EPS)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)


def _row_counts(rows: int, device) -> list[int]:
    """Every process's number of rows (the trainer's last share of a batch can be shorter)."""
    import torch.distributed as dist

    if not _distributed():
        return [rows]
    local = torch.tensor([rows], dtype=torch.int64, device=device)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return [int(part) for part in parts]


def gather_with_grad(x: torch.Tensor, rows: list[int] | None = None) -> tuple[torch.Tensor, int]:
    """All processes' ``x`` concatenated along dim 0 (gradients flow back to each), and this process's
    row offset. Shares may differ in length (``rows``: every process's length, asked for if not given):
    each is padded to the longest for the collective and trimmed after."""
    if not _distributed():
        return x, 0
    from torch.distributed.nn.functional import all_gather

    rank, _ = _world()
    rows = rows if rows is not None else _row_counts(x.shape[0], x.device)
    longest = max(rows)
    padded = torch.cat([x, x.new_zeros(longest - x.shape[0], *x.shape[1:])]) if x.shape[0] < longest else x
    parts = all_gather(padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, rows)]), sum(rows[:rank])


# --- the batch every loss reads: normalised once, positives pooled once ------------------------------


class LossBatch:
    """One step's inputs as every loss reads them: L2-normalised embeddings, boolean masks and, built on
    first use, the pool of all processes' positives. A combined loss builds it once for all its terms.
    Inputs a loss does not read may be ``None`` (cohesion reads only positives)."""

    def __init__(self, anchor, positives, distractors, pos_mask, neg_mask, oracle=None):
        self.anchor, self.positives, self.distractors = (
            _unit(x) if x is not None else None for x in (anchor, positives, distractors)
        )
        self.pos_mask = pos_mask.bool() if pos_mask is not None else None
        self.neg_mask = neg_mask.bool() if neg_mask is not None else None
        self.oracle = oracle

    @cached_property
    def rows(self) -> list[int]:
        """Every process's number of samples."""
        return _row_counts(self.positives.shape[0], self.positives.device)

    @cached_property
    def offset(self) -> int:
        """Global row index of this process's first sample."""
        return sum(self.rows[: _world()[0]])

    @cached_property
    def _pool(self):
        pool, _ = gather_with_grad(self.positives, self.rows)
        valid, _ = gather_with_grad(self.pos_mask.to(self.positives.dtype), self.rows)
        return pool.flatten(0, 1), valid.flatten().bool()

    @property
    def pool(self) -> torch.Tensor:
        """Every process's positives, flattened to ``[M, D]`` (M = global batch x P), with gradients."""
        return self._pool[0]

    @property
    def pool_valid(self) -> torch.Tensor:
        """``[M]``: which pool entries are real positives (the global ``pos_mask``, flattened)."""
        return self._pool[1]

    @cached_property
    def own(self) -> torch.Tensor:
        """``own[i, p]``: the pool column of this process's positive ``g_{i,p}``."""
        batch, n_pos, _ = self.positives.shape
        rows = self.offset + torch.arange(batch, device=self.positives.device)
        return rows[:, None] * n_pos + torch.arange(n_pos, device=self.positives.device)

    @cached_property
    def own_columns(self) -> torch.Tensor:
        """``[B, M]``: True at each anchor's own positives' columns."""
        return torch.zeros(self.own.shape[0], self.pool.shape[0], dtype=torch.bool, device=self.own.device).scatter_(
            1, self.own, True
        )


# --- unreduced terms and the one reducer --------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """One component of a loss, unreduced (the pytorch-metric-learning shape): per-item ``values``, which
    items are summed (``valid``) and which count in the denominator (``counted``; default ``valid``).
    The component adds ``weight`` x (sum of valid values / global count of counted items) to the loss.
    ``by_column``: each column of ``[B, C]`` values is averaged on its own, then the columns that have a
    count anywhere are averaged with equal weight (the NearID loss's per-positive-index mean)."""

    values: torch.Tensor
    valid: torch.Tensor
    weight: float = 1.0
    counted: torch.Tensor | None = None
    by_column: bool = False


def reduce(terms: list[Terms]) -> torch.Tensor:
    """The scalar loss from unreduced terms, the same on any number of processes.

    Counts are global (one all-reduce of every count); each process returns its local sums x world size
    / global counts, so DDP's gradient *average* is the gradient of the one-process loss. Invalid items
    are selected out, never multiplied by 0, so an infinite masked value cannot turn into NaN. A term
    with no count on any process adds nothing."""
    import torch.distributed as dist

    terms = [t for t in terms if t.weight != 0]
    if not terms:
        raise ValueError("a loss with no non-zero term")
    _, world = _world()
    counts = []
    for t in terms:
        counted = (t.valid if t.counted is None else t.counted).expand_as(t.values)
        counts.append(counted.sum(0) if t.by_column else counted.sum().reshape(1))
    sizes = [len(c) for c in counts]
    counts = torch.cat(counts).to(torch.float64)
    if world > 1:
        dist.all_reduce(counts)
    counts = counts.split(sizes)
    total = None
    for t, count in zip(terms, counts):
        valid = t.valid.expand_as(t.values)
        if t.by_column:
            columns = [
                _mean(t.values[:, c][valid[:, c]], count[c], world, t.counted is None)
                for c in range(t.values.shape[1])
                if count[c] > 0
            ]
            part = torch.stack(columns).mean() if columns else None
        else:
            part = _mean(t.values[valid], count[0], world, t.counted is None) if count[0] > 0 else None
        if part is None:
            continue
        part = part if t.weight == 1 else t.weight * part
        total = part if total is None else total + part
    if total is None:  # nothing to learn from anywhere: a zero that still has a graph
        total = sum(t.values.flatten()[:0].sum() for t in terms)
    return total


def _mean(selected: torch.Tensor, count: torch.Tensor, world: int, plain: bool) -> torch.Tensor:
    if world == 1 and plain:
        return selected.mean()  # one process: exactly the mean it always was
    return selected.sum() * world / count.to(selected.dtype)


def global_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean over every process's ``values`` (local sum x world size / global count; see :func:`reduce`)."""
    return reduce([Terms(values, torch.ones_like(values, dtype=torch.bool))])


class Loss:
    """The base of every loss: ``terms`` gives the unreduced components, ``__call__`` reduces them."""

    def terms(self, batch: LossBatch) -> list[Terms]:
        raise NotImplementedError

    def __call__(self, anchor, positives, distractors, pos_mask, neg_mask, oracle=None) -> torch.Tensor:
        return reduce(self.terms(LossBatch(anchor, positives, distractors, pos_mask, neg_mask, oracle)))


# --- the losses -------------------------------------------------------------------------------------


class NearIDLoss(Loss):
    """L_NearID = L_disc + alpha * L_rank (paper Eq. 1-3; tau = 0.07 fixed, alpha = 0.5).

    L_disc: for each positive index p, cross-entropy of the anchor's logits over all valid positives of
    the (global) batch plus its own valid distractors, target its p-th positive, averaged over anchors
    whose p-th positive is valid, then over p. L_rank: softplus(LSE over the batch negatives (other
    samples' positives) - distractor logit), averaged over valid distractors.
    """

    def __init__(self, temperature: float = 0.07, alpha: float = 0.5):
        self.temperature, self.alpha = float(temperature), float(alpha)

    def terms(self, batch):
        batch_logits = (batch.anchor @ batch.pool.T / self.temperature).masked_fill(
            ~batch.pool_valid, NEG_INF
        )  # [B, M]
        distractor_logits = torch.einsum("bd,bkd->bk", batch.anchor, batch.distractors) / self.temperature
        distractor_logits = distractor_logits.masked_fill(~batch.neg_mask, NEG_INF)  # [B, K]
        log_denominator = torch.logsumexp(torch.cat([batch_logits, distractor_logits], dim=1), dim=1)  # [B]
        disc = log_denominator[:, None] - batch_logits.gather(1, batch.own)  # [B, P]
        terms = [Terms(disc, batch.pos_mask, by_column=True)]
        if self.alpha:
            lse_negatives = torch.logsumexp(batch_logits.masked_fill(batch.own_columns, NEG_INF), dim=1, keepdim=True)
            terms.append(Terms(F.softplus(lse_negatives - distractor_logits), batch.neg_mask, weight=self.alpha))
        return terms


class InfoNCELoss(Loss):
    """Symmetric single-positive InfoNCE (CLIP-style), one random valid positive per anchor; with
    ``include_negatives`` each row also holds its own distractors ("+ R neg" in Table 3).

    The positives are drawn for the whole global batch at once and process 0's draw is used everywhere,
    so a run on several processes sees the draw of one process with the same random state."""

    def __init__(self, temperature: float = 0.07, include_negatives: bool = False):
        self.temperature, self.include_negatives = float(temperature), bool(include_negatives)

    def terms(self, batch):
        import torch.distributed as dist

        batch_size, n_pos, _ = batch.positives.shape
        global_mask = batch.pool_valid.view(-1, n_pos)  # [N, P]
        global_rows = global_mask.any(dim=1)
        choice = torch.zeros(len(global_mask), dtype=torch.int64, device=global_mask.device)
        choice[global_rows] = torch.multinomial(global_mask[global_rows].float(), 1).squeeze(1)
        if _distributed():
            dist.broadcast(choice, src=0)
        mine = torch.arange(batch_size, device=choice.device)
        anchor, positive = batch.anchor, batch.positives[mine, choice[batch.offset + mine]]
        all_anchors, _ = gather_with_grad(anchor, batch.rows)
        all_positives, _ = gather_with_grad(positive, batch.rows)
        absent = ~global_rows[None, :]  # samples without a valid positive take no part
        forward = (anchor @ all_positives.T / self.temperature).masked_fill(absent, NEG_INF)
        backward = (positive @ all_anchors.T / self.temperature).masked_fill(absent, NEG_INF)
        if self.include_negatives:
            invalid = ~batch.neg_mask
            extra = (torch.einsum("bd,bkd->bk", anchor, batch.distractors) / self.temperature).masked_fill(
                invalid, NEG_INF
            )
            extra_back = (torch.einsum("bd,bkd->bk", positive, batch.distractors) / self.temperature).masked_fill(
                invalid, NEG_INF
            )
            forward, backward = torch.cat([forward, extra], 1), torch.cat([backward, extra_back], 1)
        target = batch.offset + mine
        rows = batch.pos_mask.any(dim=1)
        return [
            Terms(F.cross_entropy(forward, target, reduction="none"), rows, weight=0.5),
            Terms(F.cross_entropy(backward, target, reduction="none"), rows, weight=0.5),
        ]


class OracleRankLoss(Loss):
    """RankNet within a sample: the less edited of two distractors (higher oracle) must be more similar,
    by ``margin`` in cosine: -log sigma(sign * (s_k1 - s_k2) - margin)."""

    def __init__(self, margin: float = 0.05, eps: float = 1e-6):
        self.margin, self.eps = float(margin), float(eps)

    def terms(self, batch):
        if batch.oracle is None:
            raise ValueError("oracle_rank needs the per-distractor oracle (edit severity)")
        sims = torch.einsum("bd,bkd->bk", batch.anchor, batch.distractors)
        diff_s = sims[:, :, None] - sims[:, None, :]
        diff_o = batch.oracle[:, :, None] - batch.oracle[:, None, :]
        valid = batch.neg_mask[:, :, None] & batch.neg_mask[:, None, :] & (diff_o > self.eps)
        return [Terms(F.softplus(-(diff_s - self.margin)), valid)]


class SigLIPExtLoss(Loss):
    """Extended SigLIP: pairwise BCE over anchor x pool (t = 1/0.07, b = -10), BCE pushing own distractors
    to 0, and alpha * -log sigma(l_r - LSE over the valid batch negatives)."""

    def __init__(self, temperature: float = 0.07, bias: float = -10.0, alpha: float = 0.5):
        self.scale, self.bias, self.alpha = 1.0 / temperature, float(bias), float(alpha)

    def terms(self, batch):
        logits = batch.anchor @ batch.pool.T * self.scale + self.bias  # [B, M]
        labels = torch.zeros_like(logits).scatter_(1, batch.own, batch.pos_mask.to(logits.dtype))
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        r_logits = torch.einsum("bd,bkd->bk", batch.anchor, batch.distractors) * self.scale + self.bias
        r_bce = F.binary_cross_entropy_with_logits(r_logits, torch.zeros_like(r_logits), reduction="none")
        negatives = logits.masked_fill(batch.own_columns | ~batch.pool_valid[None, :], NEG_INF)
        lse = torch.logsumexp(negatives, dim=1, keepdim=True)
        return [
            Terms(bce, batch.pool_valid[None, :]),
            Terms(r_bce, batch.neg_mask),
            Terms(F.softplus(lse - r_logits), batch.neg_mask, weight=self.alpha),
        ]


class CircleExtLoss(Loss):
    """Extended Circle loss (m = 0.25, gamma = 64) plus a hinge making each distractor less similar than
    the batch negatives on average by ``rank_margin`` (weight 0.5). Masked entries are left out of the
    circle term; the hinge's average over batch negatives divides by all M pool columns (the distractor's
    own and padded columns add 0 but count), as the authors' code does (spec 12.10; dividing by the valid
    columns instead moved the loss by 1.2e-5 on their test batch)."""

    def __init__(self, m: float = 0.25, gamma: float = 64.0, rank_weight: float = 0.5, rank_margin: float = 0.25):
        self.m, self.gamma, self.rank_weight, self.rank_margin = (
            float(m),
            float(gamma),
            float(rank_weight),
            float(rank_margin),
        )

    def terms(self, batch):
        s_pool = batch.anchor @ batch.pool.T
        s_p = torch.einsum("bd,bpd->bp", batch.anchor, batch.positives)
        s_r = torch.einsum("bd,bkd->bk", batch.anchor, batch.distractors)
        s_n = torch.cat([s_pool, s_r], 1)
        pool_negatives = batch.pool_valid[None, :] & ~batch.own_columns  # [B, M]
        n_valid = torch.cat([pool_negatives, batch.neg_mask], 1)
        alpha_p = (1 + self.m - s_p).clamp(min=0).detach()
        alpha_n = (s_n + self.m).clamp(min=0).detach()
        logit_p = (-alpha_p * (s_p - (1 - self.m)) * self.gamma).masked_fill(~batch.pos_mask, NEG_INF)
        logit_n = (alpha_n * (s_n - self.m) * self.gamma).masked_fill(~n_valid, NEG_INF)
        circle = F.softplus(torch.logsumexp(logit_p, 1) + torch.logsumexp(logit_n, 1))
        rows = batch.pos_mask.any(1) & n_valid.any(1)
        weights = pool_negatives.to(s_pool.dtype)
        hinge = F.relu(s_pool[:, None, :] - s_r[:, :, None] + self.rank_margin)  # [B, K, M]
        per_distractor = (hinge * weights[:, None, :]).sum(-1) / weights.shape[-1]  # all M columns count
        return [Terms(circle, rows), Terms(per_distractor, batch.neg_mask, weight=self.rank_weight)]


class CohesionLoss(Loss):
    """Positive cohesion (Table 9's beta term, "prototype" mode; spec 12.4): 1 - cos(g_p, normalised mean
    of the sample's valid positives), summed over the valid positives of samples with >= 2 of them and
    divided, as the authors do, by the valid positives of the *whole* (global) batch: a sample with one
    valid positive adds 0 but counts 1. So "beta = 0.1" means what it means in the paper (dividing by
    the positives of samples with >= 2 only made the term 1.8-3.2x larger). 0 if no sample has 2."""

    def terms(self, batch):
        mask = batch.pos_mask.to(batch.positives.dtype)
        rows = mask.sum(1) >= 2
        prototype = _unit((batch.positives * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1))
        cosine = torch.einsum("bpd,bd->bp", batch.positives, prototype)
        return [Terms(1 - cosine, batch.pos_mask & rows[:, None], counted=batch.pos_mask)]


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
        from nearid.io.errors import NearIDError

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
        if not any(weight for _, weight, _ in self.terms):
            raise NearIDError(f"--loss {spec}: every weight is 0; give at least one loss a non-zero weight")

    def __call__(self, anchor, positives, distractors, pos_mask, neg_mask, oracle=None):
        """One batch (normalised, pooled once) for every loss, one reduction (one count all-reduce)."""
        batch = LossBatch(anchor, positives, distractors, pos_mask, neg_mask, oracle)
        terms = [dataclasses.replace(t, weight=w * t.weight) for _, w, fn in self.terms for t in fn.terms(batch)]
        return reduce(terms)


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


__all__ = ["LOSSES", "CombinedLoss", "Loss", "LossBatch", "NearIDLoss", "Terms", "gather_with_grad", "reduce"]
