#!/usr/bin/env bash
# The README's offline walk-through: synth -> bench -> train -> export -> bench again -> score.
# Everything runs on the CPU in about a minute, with no network: a synthetic benchmark and the tiny,
# UNTRAINED stand-in backbone (`tiny`), so the numbers show the plumbing, not NearID's quality.
# Usage: scripts/offline_example.sh [FOLDER]   (default runs/example; it must not exist yet)
set -euo pipefail
OUT=${1:-runs/example}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

# 1. data in the hub schemas: NearID/, NearID-Instance/, splits (nothing is downloaded)
nearid synth "$OUT/data" --identities 60 --size 48 --sources Instance --test 20 --val 10 --mtg-train 0 --mtg-test 0

# 2. frozen baselines on the validation split (also calibrates a same/different threshold per encoder)
nearid bench --model tiny --model histogram --data "$OUT/data/NearID" --sources Instance --split val --out "$OUT/bench"

# 3. train the head on the frozen tiny trunk, then export a full model folder
nearid train --data "$OUT/data/NearID" --sources Instance --backbone tiny --out "$OUT/run" \
    --epochs 10 --batch-size 8 --lr 3e-2 --save-steps 10
nearid export "$OUT/run/checkpoints/$(ls "$OUT/run/checkpoints" | sort -t- -k2 -n | tail -1)" "$OUT/model"

# 4. the trained model into the same bench folder: results.json keeps all three encoders
nearid bench --model "nearid:$OUT/model" --data "$OUT/data/NearID" --sources Instance --split val --out "$OUT/bench"

# 5. score pairs of images with the trained model and its calibrated threshold
python3 - "$OUT" <<'PY'
import sys
from pathlib import Path
import nearid
from nearid.data import load_nearid

out = Path(sys.argv[1])
bench = load_nearid(out / "data" / "NearID", ["Instance"], split="test")
for folder in ("refs", "gens"):
    (out / "images" / folder).mkdir(parents=True, exist_ok=True)
for identity in list(bench)[:5]:
    first, second = identity.view_slots[:2]
    nearid.load_image(identity.views[first].image).save(out / "images" / "refs" / f"{identity.id}.png")
    nearid.load_image(identity.views[second].image).save(out / "images" / "gens" / f"{identity.id}.png")
PY
nearid score --refs "$OUT/images/refs" --gens "$OUT/images/gens" --model "nearid:$OUT/model" \
    --threshold calibrated --calibration "$OUT/bench/results.json" --out "$OUT/scores.csv"
nearid report "$OUT/bench/results.json"
