"""Run by tests/test_torchmetrics.py under ``torchrun --nproc_per_node 2`` (gloo): each process updates
the metrics with its own, unequal share of the inputs; rank 0 writes the synced ``compute()`` values."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from nearid.eval.torchmetrics import IdentitySimilarity, NearIDBenchScore


def main(folder: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    spec = json.loads(Path(folder, "inputs.json").read_text())
    share = slice(0, spec["split"]) if rank == 0 else slice(spec["split"], None)  # unequal shares
    for reduction in ("mean", "max"):
        metric = IdentitySimilarity("tiny", reduction, device="cpu", dtype="float32")
        metric.update(spec["generated"][share], [list(refs) for refs in spec["references"][share]])
        value = float(metric.compute())
        if rank == 0:
            spec[f"similarity_{reduction}"] = value
    tables = np.load(f"{folder}/tables.npz")
    rows = slice(0, tables["split"]) if rank == 0 else slice(int(tables["split"]), None)
    bench = NearIDBenchScore()
    bench.update(torch.from_numpy(tables["pair_sims"][rows]), torch.from_numpy(tables["own_background"][rows]))
    result = {k: float(v) for k, v in bench.compute().items()}
    if rank == 0:
        spec["bench"] = result
        spec["world_size"] = dist.get_world_size()
        with open(out, "w") as handle:
            json.dump(spec, handle)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
