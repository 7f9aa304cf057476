#!/usr/bin/env bash
# Table 1 in small on ../shared/data/photos-train (docs/rl_srgan.md): RL-SRGAN and SRGAN (RL term off), the demo
# model and crops, STEPS steps each, SEEDS seeds, evaluated on Kodak at the end of training (eval/kodak.json).
# One run after the other (2-core machine); each logs to $OUT/<name>.log and resumes exactly if re-run.
set -euo pipefail
OUT=${OUT:-runs/rl_photos}
STEPS=${STEPS:-3000}
SEEDS=${SEEDS:-"0 1"}
SHARED=${SHARED:-../shared}
mkdir -p "$OUT"
for seed in $SEEDS; do
  for variant in rl srgan; do
    extra=""
    [ "$variant" = srgan ] && extra="--config.rl.enabled=False"
    jaxcomp train --config configs/rl_srgan.py:demo --workdir "$OUT/${variant}_s$seed" \
      --config.train_data="$SHARED/data/photos-train" --config.eval_data="$SHARED/data/kodak" \
      --config.eval_max_images=0 --config.steps="$STEPS" --config.checkpoint_every=1000 --config.seed="$seed" \
      $extra > "$OUT/${variant}_s$seed.log" 2>&1
  done
  python docs/rl_srgan/table1.py "$OUT/rl_s$seed/eval/kodak.json" "$OUT/srgan_s$seed/eval/kodak.json" \
    --out "$OUT/table1_s$seed.md"
done
pairs=()
for seed in $SEEDS; do pairs+=("$OUT/rl_s$seed/eval/kodak.json" "$OUT/srgan_s$seed/eval/kodak.json"); done
python docs/rl_srgan/table1.py "${pairs[@]}" --out "$OUT/table1.md"
