"""Embedding throughput of the full-size NearID architecture (random weights), fp32 vs bf16.

The baseline is fp32 measured in the same run; the script prints images/s for each dtype and the
ratio to fp32. Random weights are fine: throughput does not depend on the values. Runs on the CPU
by default (about 2-5 s per image at fp32 on a 2-core machine); pass ``--device cuda`` on a GPU.

    python benchmarks/embed_throughput.py [--batch 8] [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from nearid.images.processors import siglip_processor
from nearid.models.encoders import TransformersEncoder, nearid_readout, resolve_device, resolve_dtype
from nearid.models.nearid_model import NearIDConfig, NearIDModel


def measure(encoder: TransformersEncoder, pixels: torch.Tensor, repeats: int) -> float:
    encoder.embed(pixels)  # warm-up: kernels, allocator, oneDNN primitives
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        encoder.embed(pixels)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return repeats * len(pixels) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    started = time.perf_counter()
    model = NearIDModel(NearIDConfig())
    print(
        f"built full-size NearID (SigLIP2-SO400M/14 @384, {sum(p.numel() for p in model.parameters()):,} params) "
        f"in {time.perf_counter() - started:.1f} s; device={device}, threads={torch.get_num_threads()}, batch={args.batch}"
    )
    pixels = torch.rand(args.batch, 3, 384, 384) * 2 - 1
    results = {}
    for name in args.dtypes:
        dtype = resolve_dtype(name, device)
        encoder = TransformersEncoder(
            f"full-size {name}", model, siglip_processor(384), nearid_readout, device=device, dtype=dtype, dim=1152
        )
        results[name] = measure(encoder, pixels, args.repeats)
        print(f"  {name:9s} {results[name]:8.3f} images/s   ({1 / results[name]:.2f} s/image)")
    baseline = results[args.dtypes[0]]
    for name, rate in results.items():
        print(f"ratio {name}/{args.dtypes[0]}: {rate / baseline:.2f}x")


if __name__ == "__main__":
    main()
