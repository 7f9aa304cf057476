#!/bin/bash
# Small-scale ProxIQA reproduction by paired fine-tuning (docs/proxiqa.md, "Paired fine-tuning"):
#   stage 1: one BLS (N=M=64) per lambda trained with MSE from scratch on 64x64 crops of TRAIN, batch 8, BASE steps
#            (Adam 1e-3 until step BOUNDARY, then 1e-4; 1e-3 throughout made one run collapse, docs/proxiqa.md);
#   stage 2: from each stage-1 checkpoint (`--config.init_from`), FT more steps twice with the same data order and
#            seed: once with MSE (the control) and once with SSIM_p (eq. 10-11, alpha 3e-3, a fresh proxy),
#            codec Adam 1e-4, proxy Adam 1e-3.
#   stage 1p: each loss of LOSSES trained from scratch exactly as the bases (same schedule, data order and seed;
#            proxy Adam 1e-3 dropping with the codec's), `scratch_<loss>_<lambda>`, to pair with `base_<lambda>`.
# Runs one after the other (2-core machine); each logs to $OUT/<name>.log. Then evaluate with eval_rd.py.
#   OUT=runs/ft64 TRAIN=../shared/data/photos-train BASE=10000 BOUNDARY=4000 FT=1500 docs/proxiqa/finetune_rd.sh
set -u
BASE=${BASE:-10000}
BOUNDARY=${BOUNDARY:-4000}
FT=${FT:-1500}
OUT=${OUT:-runs/ft64}
TRAIN=${TRAIN:-../shared/data/photos-train}
LAMBDAS=${LAMBDAS:-0.0035 0.0130 0.0483 0.1800}
STAGES=${STAGES:-"1 2"}
LOSSES=${LOSSES:-"mse ssim_p"}  # stage 2; msssim_p too: LOSSES=msssim_p STAGES=2 ...
EXTRA=${EXTRA:-}                 # stage 2: more config flags, e.g. EXTRA="--config.alpha=0.03"
mkdir -p "$OUT"
common=(--config.N=64 --config.M=64 --config.patch_size=64 --config.train_data="$TRAIN" --config.eval_data=
        --config.log_every=25 --config.seed=0)
run() {  # run NAME VARIANT ARGS...: one `jaxcomp train`, timed and logged
  local name=$1 variant=$2; shift 2
  echo "$(date -u +%H:%M:%S) start $name load $(cut -d' ' -f1 /proc/loadavg)"
  local start=$(date +%s)
  jaxcomp train --config configs/proxiqa.py:$variant --workdir "$OUT/$name" "${common[@]}" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$(date -u +%H:%M:%S) done $name rc=$rc wall=$(( $(date +%s) - start ))s load $(cut -d' ' -f1 /proc/loadavg)"
}
for stage in $STAGES; do
  for lam in $LAMBDAS; do
    if [ "$stage" = 1p ]; then  # control for stage 1: each loss of LOSSES from scratch with the bases' schedule
      for loss in $LOSSES; do
        run "scratch_${loss}_$lam" bls_$loss --config.lmbda=$lam --config.steps=$BASE \
          --config.learning_rate=1e-3 --config.lr_boundary=$BOUNDARY --config.lr_after=1e-4 \
          --config.proxy_learning_rate=1e-3 --config.checkpoint_every=1000 $EXTRA
      done
    elif [ "$stage" = 1 ]; then
      run "base_$lam" bls_mse --config.lmbda=$lam --config.steps=$BASE \
        --config.learning_rate=1e-3 --config.lr_boundary=$BOUNDARY --config.lr_after=1e-4 \
        --config.checkpoint_every=1000
    else
      for loss in $LOSSES; do
        run "${loss}_$lam" bls_$loss --config.lmbda=$lam --config.steps=$FT \
          --config.init_from="$OUT/base_$lam" --config.learning_rate=1e-4 --config.lr_boundary=$FT \
          --config.lr_after=1e-4 --config.proxy_learning_rate=1e-3 --config.checkpoint_every=500 $EXTRA
      done
    fi
  done
done
