#!/usr/bin/env bash
# Multi-host GPU: one process per host, all GPUs of a host in that process, joined through a coordinator.
#
#   launch/gpu_multihost.sh [--dry-run] --hosts h0,h1,... [--port 8476] [--repo DIR] [--python PY] \
#       CONFIG WORKDIR [--config.key=value ...]
#
# Starts, over ssh, on host i: JAX_COORDINATOR_ADDRESS=h0:PORT JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i
# python -m jaxcomp.cli train ...; jaxcomp passes them to jax.distributed.initialize(). Host 0 is the coordinator
# and the only one that writes logs. WORKDIR must be a path every host sees (shared file system or gs://).
# Under a scheduler that starts the processes itself (SLURM, Kubernetes), set the three variables in the job and run
# launch/local.sh on each host instead.
set -euo pipefail
source "$(dirname "$0")/common.sh"
DRY_RUN=0; HOSTS=""; PORT=8476; REPO='~/jaxcomp'; PY=python3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --hosts) HOSTS="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --repo) REPO="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
if [[ -z "$HOSTS" || $# -lt 2 ]]; then
  echo "usage: launch/gpu_multihost.sh [--dry-run] --hosts h0,h1,... [--port P] [--repo DIR] CONFIG WORKDIR [flags]" >&2
  exit 2
fi
CONFIG="$1"; WORKDIR="$2"; shift 2
IFS=',' read -r -a HOST_LIST <<< "$HOSTS"
N=${#HOST_LIST[@]}
COORD="${HOST_LIST[0]}:$PORT"
PIDS=()
for i in "${!HOST_LIST[@]}"; do
  REMOTE="cd $REPO && JAX_COORDINATOR_ADDRESS=$COORD JAX_NUM_PROCESSES=$N JAX_PROCESS_ID=$i $(quote "$PY" -m jaxcomp.cli train --config "$CONFIG" --workdir "$WORKDIR" "$@")"
  if [[ "$DRY_RUN" == 1 ]]; then
    run_or_print ssh "${HOST_LIST[$i]}" "$REMOTE"
  else
    ssh "${HOST_LIST[$i]}" "$REMOTE" &
    PIDS+=($!)
  fi
done
# Wait for every host; the launch fails if any process failed.
rc=0
for p in "${PIDS[@]}"; do wait "$p" || rc=$?; done
exit "$rc"
