#!/usr/bin/env bash
# One shard of a GPU study on a fresh machine that may reach no package index (the project's device checks; a spot
# instance), run from the folder the study's report.dir is relative to (the repository root):
#   scripts/gpu-shard.sh PARAMS BUDGET_SECONDS [easycore shard options, e.g. --only 'none/full-*']
# Data: EASYCORE_DATA, else .gpu-data/ in the repository (carry cifar10-jpeg.tar.gz there: 19 MB).
# Packages: where the machine's Python lacks one easycore needs and .whl/ holds wheels, they are installed from
# there with pip --no-index. With $OUT set, the study's report.dir (what the shard committed to, plus the report)
# is packed into $OUT/shard.tar.gz, to unpack in the repository and commit (docs/scale.md section 6).
set -euo pipefail
params=${1:?usage: scripts/gpu-shard.sh PARAMS BUDGET_SECONDS [options]}
budget=${2:?usage: scripts/gpu-shard.sh PARAMS BUDGET_SECONDS [options]}
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
need="torch torchvision safetensors numpy scipy pandas yaml tqdm tabulate torchattacks"
if ! $py -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in '$need'.split()))"; then
    [ -d "$repo/.whl" ] || { echo "gpu-shard: missing packages ($need) and no $repo/.whl/ to install from" >&2; exit 2; }
    $py -m pip install -q --no-index --find-links "$repo/.whl" --no-deps "$repo"/.whl/*.whl
fi
export EASYCORE_DATA=${EASYCORE_DATA:-$repo/.gpu-data}
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
$py -c "import torch; print('gpu-shard:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
rc=0
$py -m easycore shard --params "$params" --budget "$budget" -q "$@" || rc=$?
if [ -n "${OUT:-}" ]; then
    dir=$($py -c "import sys; from easycore.config import load_params; print(load_params(sys.argv[1]).report.dir)" "$params")
    tar -czf "$OUT/shard.tar.gz" "$dir"
    echo "gpu-shard: $dir -> $OUT/shard.tar.gz ($(du -h "$OUT/shard.tar.gz" | cut -f1))"
fi
exit $rc
