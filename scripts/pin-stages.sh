#!/usr/bin/env bash
# scripts/pin-stages.sh PATTERN [FILE] -- the stage names matching the extended regex PATTERN (e.g. '^train',
# '^(train|evaluate)'), one a line, written to FILE (default: logs/stages-<date>.txt) and FILE's path printed.
# Array jobs index this file, not `dvc stage list`: a params change after submission reorders or resizes the
# stage list, but never the pinned file, so task k always runs the stage it was submitted for.
set -euo pipefail
PATTERN=${1:?usage: pin-stages.sh PATTERN [FILE]}
REPO=$(cd "${REPO:-$(git rev-parse --show-toplevel)}" && pwd)
FILE=${2:-$REPO/logs/stages-$(date +%Y%m%d-%H%M%S).txt}
mkdir -p "$(dirname "$FILE")"
(cd "$REPO" && dvc stage list --name-only) | grep -E "$PATTERN" > "$FILE.tmp" || { echo "pin-stages: no stage matches $PATTERN" >&2; rm -f "$FILE.tmp"; exit 2; }
mv "$FILE.tmp" "$FILE"
echo "$FILE"
