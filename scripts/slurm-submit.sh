#!/usr/bin/env bash
# scripts/slurm-submit.sh PATTERN [sbatch options...] -- a Slurm job array over the stages matching PATTERN (e.g.
# '^train'), one task per stage, from the workspace (ancestors done, dvc.lock committed: docs/scale.md section 4).
# The stage names are pinned to a file at submission (scripts/pin-stages.sh) and task k runs line k+1 of it.
# Tasks are requeued on preemption (--requeue) or near their time limit (--signal: scripts/slurm-stage.sbatch) and
# resume from their checkpoint on shared storage (STATE_ROOT, default <workspace>/.dvc/tmp/stage-tasks: put the
# workspace, or STATE_ROOT, on storage every node sees; CACHE likewise).
#   THROTTLE=16 (tasks at once), SBATCH=sbatch (SBATCH=echo prints the command: a dry run).
#   e.g. scripts/slurm-submit.sh '^train' --gres=gpu:1 --time=24:00:00
#        scripts/slurm-submit.sh '^evaluate' --dependency=afterok:<train job id>
set -euo pipefail
PATTERN=${1:?usage: slurm-submit.sh PATTERN [sbatch options...]}
shift
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "${REPO:-$(git rev-parse --show-toplevel)}" && pwd)
LIST=$("$HERE/pin-stages.sh" "$PATTERN")
N=$(wc -l < "$LIST")
mkdir -p "$REPO/logs"
${SBATCH:-sbatch} --array=0-$((N - 1))%${THROTTLE:-16} --requeue --chdir="$REPO" --output="$REPO/logs/%x-%A_%a.out" \
  --export=ALL,STAGES="$LIST",REPO="$REPO" "$@" "$HERE/slurm-stage.sbatch"
