#!/usr/bin/env bash
# scripts/stage-task.sh STAGE -- run one pipeline stage (e.g. train@main-easycore-0.3-trades-0) in its own clone of
# the workspace, with the workspace's DVC cache, so that its outputs and run-cache entry land where the workspace's
# final `dvc repro` restores them (docs/scale.md section 4). The body of one Slurm array task
# (scripts/slurm-stage.sbatch) and of one job slot of the one-worker-per-GPU recipe (docs/scale.md section 4b).
#
# The clone lives at $STATE_ROOT/<stage> (default: <workspace>/.dvc/tmp/stage-tasks; on a cluster put it on shared
# storage): the stage's resume checkpoint (written after every epoch) lives in the clone, so a task that is killed
# or preempted and started again with the same stage continues from its last epoch instead of from zero. The clone
# is removed when the stage has finished; a failed task leaves it (and says where) for the next attempt.
#
# Environment: REPO (default: the git top level of the current directory), CACHE (default: the workspace's cache
# dir), STATE_ROOT, EASYCORE_DATA (absolute: the clone is elsewhere), VENV (activated when set).
# Prerequisite: the stage's ancestors ran in the workspace and dvc.lock is committed (section 4a, step 1).
set -euo pipefail
STAGE=${1:?usage: stage-task.sh STAGE}
REPO=$(cd "${REPO:-$(git rev-parse --show-toplevel)}" && pwd)
if [ -n "${VENV:-}" ]; then source "$VENV/bin/activate"; fi
CACHE=${CACHE:-$(cd "$REPO" && dvc cache dir)}
STATE_ROOT=${STATE_ROOT:-$REPO/.dvc/tmp/stage-tasks}
WORK="$STATE_ROOT/$(printf '%s' "$STAGE" | tr -c 'A-Za-z0-9._@-' '_')"
mkdir -p "$STATE_ROOT"
echo "stage-task: $STAGE on $(hostname) CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset} in $WORK"
if [ -d "$WORK/.git" ]; then
  echo "stage-task: resuming in the clone of an earlier attempt"
  rm -f "$WORK/.dvc/tmp/rwlock" "$WORK/.dvc/tmp/lock"          # the earlier attempt's DVC locks (it is gone)
else
  rm -rf "$WORK.partial"
  git clone -q "$REPO" "$WORK.partial"                          # the committed state: dvc.lock of the ancestors
  mv "$WORK.partial" "$WORK"
fi
cd "$WORK"
export PYTHONPATH=$WORK${PYTHONPATH:+:$PYTHONPATH}             # the clone's easycore
dvc cache dir --local "$CACHE"
dvc checkout --allow-missing -q                                 # the ancestors' outputs; stages not run yet have none
dvc repro "$STAGE"          # the stage; upstream stages are checked out (ancestors) or restored from the run-cache
                            # (a train stage finished by another task): outputs + run-cache entry -> $CACHE
cd "$STATE_ROOT" && rm -rf "$WORK"
echo "stage-task: $STAGE done"
