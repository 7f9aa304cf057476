#!/bin/bash
# Small-scale ProxIQA reproduction (docs/proxiqa.md, "Reproduction at small scale"): one BLS (N=M=64) per
# (loss, lambda), trained from scratch on 64x64 crops of TRAIN, batch 8, the same steps, schedule and seed for all.
# Runs one after the other (2-core machine); logs to $OUT/<loss>_<lambda>.log.
#   OUT=runs/rd64 TRAIN=path/to/photos-train STEPS=1200 LAMBDAS="0.0483 0.0130 0.1800 0.0035" docs/proxiqa/train_rd.sh
set -u
STEPS=${STEPS:-1200}
OUT=${OUT:-runs/rd64}
TRAIN=${TRAIN:-../shared/data/photos-train}
LAMBDAS=${LAMBDAS:-0.0483 0.0130 0.1800 0.0035}
mkdir -p "$OUT"
for lam in $LAMBDAS; do
  for loss in mse ssim_p; do
    wd="$OUT/${loss}_${lam}"
    echo "$(date -u +%H:%M:%S) start $wd load $(cut -d' ' -f1 /proc/loadavg)"
    start=$(date +%s)
    jaxcomp train --config configs/proxiqa.py:bls_$loss --workdir "$wd" \
      --config.N=64 --config.M=64 --config.patch_size=64 --config.lmbda=$lam --config.steps=$STEPS \
      --config.learning_rate=1e-3 --config.proxy_learning_rate=1e-3 --config.lr_boundary=$((STEPS * 4 / 5)) \
      --config.lr_after=1e-4 --config.train_data="$TRAIN" --config.eval_data= \
      --config.log_every=25 --config.checkpoint_every=100 --config.seed=0 > "$wd.log" 2>&1
    echo "$(date -u +%H:%M:%S) done $wd rc=$? wall=$(( $(date +%s) - start ))s load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
