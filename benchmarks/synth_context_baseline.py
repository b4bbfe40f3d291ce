"""How context-dominated encoders fare on the synthetic matched-context benchmark (SSR / PA).

The paper finds that frozen encoders (CLIP, DINOv2, SigLIP2) mostly rank a different object on the
same background above the same object on another background. This script measures that on the
synthetic benchmark for model-free and untrained baselines: a colour histogram, and the mean of the
post-LN tokens of the tiny SigLIP tower (the `siglip2-mean` readout on the `tiny` backbone). The
baseline each row is compared with is chance on a 2-view trial (PA 50 %).

    python benchmarks/synth_context_baseline.py [--data DIR] [--identities 600]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from nearid.data import load_nearid
from nearid.data.synth import SOURCES, SynthConfig, generate
from nearid.eval.evaluate import pooled_scores, similarity_tables
from nearid.images.processors import siglip_processor
from nearid.models.encoders import TransformersEncoder, load_encoder, mean_token_readout
from nearid.tiny.model import build_tiny_model


def tiny_siglip_mean():
    model = build_tiny_model(0).backbone
    return TransformersEncoder(
        "siglip2-mean on tiny (untrained)",
        model,
        siglip_processor(64),
        mean_token_readout,
        device="cpu",
        dtype=model.dtype,
        dim=model.config.hidden_size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="an existing `nearid synth` folder (default: generate one)")
    parser.add_argument("--identities", type=int, default=600)
    args = parser.parse_args()
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="nearid-ctx-")) / "bench"
    if not args.data:
        generate(data, SynthConfig(identities=args.identities, seed=0, mtg_train=0, mtg_test=1), progress=False)
    bench = load_nearid(data, list(SOURCES), split="test")
    print(f"synthetic benchmark: {len(bench)} test identities x {len(SOURCES)} sources ({bench.report.summary()})")
    for encoder in (load_encoder("histogram", device="cpu"), tiny_siglip_mean(), load_encoder("tiny", device="cpu")):
        for masks in (False, True):
            tables, embedded = similarity_tables(encoder, bench, list(SOURCES), masks=masks)
            pooled = pooled_scores(tables)
            per_source = "  ".join(f"{s} {t.scores().ssr:5.1f}" for s, t in tables.items())
            print(
                f"{encoder.name:38s} {'foreground' if masks else 'full image':10s}  SSR {pooled.ssr:5.1f}  "
                f"PA {pooled.pa:5.1f}  (chance PA 50.0; {embedded} images embedded)  per source SSR: {per_source}"
            )
    if not args.data:
        shutil.rmtree(data.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
