#!/usr/bin/env bash
# Cloud TPU VM (single host or a multi-host slice): the same command on every worker.
#
#   launch/tpu_vm.sh [--dry-run] --tpu NAME --zone ZONE [--project P] [--repo DIR] [--setup] \
#       CONFIG WORKDIR [--config.key=value ...]
#
# Each worker runs `python3 -m jaxcomp.cli train ...` with JAXCOMP_DISTRIBUTED=1, so jaxcomp calls
# jax.distributed.initialize(), which finds the slice's other workers by itself. WORKDIR must be visible to every
# worker at the same path: a gs:// bucket (orbax writes there) or a shared disk. Only process 0 writes logs.
# --setup first installs the checkout at --repo on every worker (pip install -e).
set -euo pipefail
source "$(dirname "$0")/common.sh"
DRY_RUN=0; TPU=""; ZONE=""; PROJECT=""; REPO='~/jaxcomp'; SETUP=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --tpu) TPU="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --repo) REPO="$2"; shift 2 ;;
    --setup) SETUP=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
if [[ -z "$TPU" || -z "$ZONE" || $# -lt 2 ]]; then
  echo "usage: launch/tpu_vm.sh [--dry-run] --tpu NAME --zone ZONE [--project P] [--repo DIR] [--setup] CONFIG WORKDIR [flags]" >&2
  exit 2
fi
CONFIG="$1"; WORKDIR="$2"; shift 2
GCLOUD=(gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE")
[[ -n "$PROJECT" ]] && GCLOUD+=(--project "$PROJECT")
GCLOUD+=(--worker=all)
# $REPO is left unquoted on the remote side so that ~ expands there.
if [[ "$SETUP" == 1 ]]; then
  run_or_print "${GCLOUD[@]}" --command="cd $REPO && python3 -m pip install -q -e ."
fi
TRAIN="cd $REPO && JAXCOMP_DISTRIBUTED=1 $(quote python3 -m jaxcomp.cli train --config "$CONFIG" --workdir "$WORKDIR" "$@")"
run_or_print "${GCLOUD[@]}" --command="$TRAIN"
