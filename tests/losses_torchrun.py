"""Worker for ``test_losses.py::test_two_processes_match_one``; run under ``torchrun --nproc_per_node 2``.

For each (loss spec, global batch size) it computes the loss and the gradient of a shared linear head
(a stand-in for the trained MAP head) once on the whole batch in one process (before the process group
exists), then on 2 processes, each on a contiguous share of the same batch as the trainer does, with
DDP averaging the gradients. Rank 0 writes both losses and gradients to the JSON file named by argv[1].
argv[2] is a JSON list of specs, argv[3] a JSON list of global batch sizes (odd sizes: unequal shares).
"""

from __future__ import annotations

import json
import sys
import traceback

import torch
import torch.distributed as dist

from nearid.training.losses import CombinedLoss

DIM, P, K = 6, 2, 3


def global_batch(size: int, seed: int = 0):
    """Inputs, masks and oracle of one global batch, with padded slots on every process's share."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, 1 + P + K, DIM, generator=g, dtype=torch.float64)
    pos_mask = torch.ones(size, P, dtype=torch.bool)
    neg_mask = torch.ones(size, K, dtype=torch.bool)
    pos_mask[1, 1] = pos_mask[size - 1, 0] = pos_mask[size - 2, 1] = False  # 2-view identities, both shares
    neg_mask[0, 2] = neg_mask[size - 1, 1] = False
    neg_mask[2, :] = False  # a sample without distractors
    oracle = torch.rand(size, K, generator=g, dtype=torch.float64)
    return inputs, pos_mask, neg_mask, oracle


def head(seed: int = 1) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(DIM, DIM, dtype=torch.float64)


def loss_and_grad(module, parameters, spec, inputs, pos_mask, neg_mask, oracle):
    """One step's loss on these rows (one head call on every slot, like the trainer) and the head's gradient."""
    torch.manual_seed(123)  # the draws of `infonce` (its one positive per anchor) start from the same state
    embeddings = module(inputs)
    loss = CombinedLoss(spec)(
        embeddings[:, 0], embeddings[:, 1 : 1 + P], embeddings[:, 1 + P :], pos_mask, neg_mask, oracle=oracle
    )
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in parameters])
    return loss.detach(), grad


def main() -> None:
    out, specs, sizes = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    references = {}
    for spec in specs:
        for size in sizes:
            one = head()
            loss, grad = loss_and_grad(one, list(one.parameters()), spec, *global_batch(size))
            references[f"{spec}@{size}"] = (float(loss), grad.tolist())

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for spec in specs:
        for size in sizes:
            key = f"{spec}@{size}"
            inputs, pos_mask, neg_mask, oracle = global_batch(size)
            per = -(-size // world)  # the trainer's contiguous share
            rows = slice(rank * per, (rank + 1) * per)
            one = head()
            ddp = torch.nn.parallel.DistributedDataParallel(one)
            try:
                loss, grad = loss_and_grad(
                    ddp, list(one.parameters()), spec, inputs[rows], pos_mask[rows], neg_mask[rows], oracle[rows]
                )
                dist.all_reduce(loss)  # the trainer logs the mean over processes
                results[key] = {
                    "one": references[key][0],
                    "two": float(loss) / world,
                    "grad_one": references[key][1],
                    "grad_two": grad.tolist(),
                }
            except Exception:
                results[key] = {"error": traceback.format_exc()[-1500:]}
            dist.barrier()
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(results, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
