"""Time per image of the tiny inpainting pipelines, and what paste-back and feathering do.

    PYTHONPATH=src python benchmarks/distract_pasteback.py [--identities 12] [--size 128] [--out runs/distract-bench]

For each tiny generator (4 steps, 64-pixel canvas, the defaults) on a small `nearid synth` benchmark:
seconds per image, and for feather 0 / 4 / 8 (dilation 8, the default) the mean absolute difference outside the
dilated mask and the seam statistic, with and without paste-back (docs/distract.md). The tiny
pipelines have random weights: their "objects" are noise and their VAE does not reconstruct, so the
no-paste-back difference is an upper bound of what a trained VAE's round trip does. The ratio printed
is outside-mask difference without / with paste-back (with is 0 by construction).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from nearid.data.synth import SynthConfig, generate
from nearid.distract import DistractConfig, distract


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--identities", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", default="runs/distract-bench")
    args = parser.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    generate(
        root / "synth",
        SynthConfig(
            identities=args.identities,
            size=args.size,
            seed=0,
            val=1,
            test=2,
            mtg_train=0,
            mtg_test=0,
            workers=1,
            sources=("Instance",),
        ),
        progress=False,
    )
    rows = []
    for generator in ("tiny-flux-fill", "tiny-sdxl-inpaint"):
        for feather in (0, 4, 8):
            summary = distract(
                DistractConfig(
                    data=str(root / "synth"),
                    generator=generator,
                    source=f"{generator}-{feather}",
                    dilate=8,
                    feather=feather,
                    progress=False,
                )
            )
            m = summary["measurements"]
            rows.append(
                {
                    "generator": generator,
                    "feather": feather,
                    "images": summary["distractors"],
                    "seconds_per_image": summary["seconds"]["per_image"],
                    "outside_with": m["outside_mean_abs"]["with_paste_back"],
                    "outside_without": m["outside_mean_abs"]["without_paste_back"],
                    "seam_with": m["seam"]["with_paste_back"],
                    "seam_without": m["seam"]["without_paste_back"],
                    "changed_inside": m["changed_inside_mask"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        "| generator | feather | images | s/image | outside, paste-back | outside, none | seam, paste-back | seam, none |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['generator']} | {r['feather']} | {r['images']} | {r['seconds_per_image']:.3f} | {r['outside_with']:.2f} | "
            f"{r['outside_without']:.2f} | {r['seam_with']:.2f} | {r['seam_without']:.2f} |"
        )
    (root / "measurements.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
