#!/usr/bin/env bash
# Single-host training on every local accelerator (or the CPU).
#
#   launch/local.sh [--dry-run] [--python PY] CONFIG WORKDIR [--config.key=value ...]
#
# Example: launch/local.sh configs/proxiqa.py:default runs/proxiqa --config.parallel=shard_map
# Runs `python -m jaxcomp.cli train --config CONFIG --workdir WORKDIR ...`; rerunning resumes from WORKDIR.
set -euo pipefail
source "$(dirname "$0")/common.sh"
DRY_RUN=0
PY=python3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --python) PY="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
if [[ $# -lt 2 ]]; then
  echo "usage: launch/local.sh [--dry-run] [--python PY] CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
CONFIG="$1"; WORKDIR="$2"; shift 2
run_or_print "$PY" -m jaxcomp.cli train --config "$CONFIG" --workdir "$WORKDIR" "$@"
