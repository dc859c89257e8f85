#!/usr/bin/env bash
# scripts/gpu-workers.sh STAGE_LIST [N] -- one worker per GPU on a multi-GPU machine: worker i runs with
# CUDA_VISIBLE_DEVICES=i the stages of lines i+1, i+1+N, ... of STAGE_LIST (one stage name a line, e.g. from
# `scripts/pin-stages.sh '^train'`), each through scripts/stage-task.sh (its own clone, the shared cache, resumable).
# N: the number of workers (default: the GPUs nvidia-smi lists). Logs: $LOGS/worker-<i>.log (default
# <workspace>/logs). Exit status 1 when any stage failed (listed at the end); run the same command again to retry
# them: finished stages are restored from the run-cache in seconds, interrupted ones resume from their checkpoint.
# (DVC's own `dvc queue start -j N` gives its workers no GPU each: this is the per-GPU alternative.)
set -uo pipefail
LIST=${1:?usage: gpu-workers.sh STAGE_LIST [N]}
N=${2:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')}
[ "$N" -ge 1 ] || { echo "gpu-workers: no GPU found; give N" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "${REPO:-$(git rev-parse --show-toplevel)}" && pwd); export REPO
LOGS=${LOGS:-$REPO/logs}
mkdir -p "$LOGS"
FAILED=$(mktemp)
for i in $(seq 0 $((N - 1))); do
  (
    awk -v N="$N" -v i="$i" 'NF && (NR - 1) % N == i' "$LIST" | while read -r stage; do
      if ! CUDA_VISIBLE_DEVICES=$i "$HERE/stage-task.sh" "$stage" >> "$LOGS/worker-$i.log" 2>&1 < /dev/null; then
        echo "$stage" >> "$FAILED"
      fi
    done
  ) &
done
wait
if [ -s "$FAILED" ]; then
  echo "gpu-workers: failed stages (logs in $LOGS):"; cat "$FAILED"; rm -f "$FAILED"; exit 1
fi
rm -f "$FAILED"
echo "gpu-workers: all stages of $LIST done"
