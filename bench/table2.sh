#!/usr/bin/env bash
# The paper's Table 2 protocol on DAVIS (docs/quality.md): every clip through
# `pix2video compare` with the authors' preset, then the mean over clips.
# usage: bash bench/table2.sh DAVIS_ROOT OUT_DIR [FRAMES]
set -euo pipefail
davis=${1:?DAVIS root (with JPEGImages/480p)}; out=${2:?output folder}; frames=${3:-10}
mkdir -p "$out"
while IFS='|' read -r clip source target; do
  [ -z "$clip" ] && continue
  ffmpeg -nostdin -loglevel error -y -framerate 24 -i "$davis/JPEGImages/480p/$clip/%05d.jpg" -frames:v "$frames" \
    -c:v libx264 -crf 12 -pix_fmt yuv420p "$out/$clip.mp4"
  pix2video compare "$out/$clip.mp4" --preset authors --source-prompt "$source" --prompt "$target" \
    --max-frames "$frames" --clip-model openai/clip-vit-large-patch14 --metrics-device cuda -o "$out/$clip"
done <<'CLIPS'
blackswan|a black swan on the lake|a swarovski blue crystal swan on the lake
car-turn|a car turning on a road|a red sports car turning on a snowy road
camel|a camel walking|a golden camel statue walking
dog|a dog walking on a road|a white fluffy poodle walking on a road
horsejump-high|a horse jumping|a zebra jumping, cartoon style
kite-surf|a person kite surfing|a person kite surfing, van gogh painting
CLIPS
python - "$out" <<'PY'
import json, pathlib, statistics, sys
tables = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*/table.json"))]
print(f"| method (mean of {len(tables)} clips) | CLIP-Text | CLIP-Image | Pixel-MSE |\n| --- | --- | --- | --- |")
for v in tables[0]["variants"]:
    m = {k: statistics.mean(t["variants"][v][k] for t in tables) for k in ("clip_text", "clip_image", "pixel_mse")}
    print(f"| {v} | {m['clip_text']:.4f} | {m['clip_image']:.4f} | {m['pixel_mse']:.2f} |")
PY
