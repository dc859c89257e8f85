"""A throw-away copy of the DVC pipeline: a temporary git + DVC repository holding dvc.yaml, notebooks/, easycore/
and a params.yaml built from the repo's own with overrides (the pattern of tests/test_pipeline.py). Used by
`benchmarks.gpu_check` (the demo part) and `benchmarks.dvc_queue` (the many-runs-at-once recipe).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

from benchmarks._common import REPO

# a tiny synthetic pipeline: every stage family present, seconds per stage on a CPU (tests/test_pipeline.py uses it
# with one seed)
TINY = {
    "data": {"dataset": "synthetic", "n_per_class": 16, "test_n_per_class": 4, "seed": 0},
    "proxy": {"model": "cnn_tiny", "transfer_models": ["resnet_tiny"], "epochs": 2, "batch_size": 64,
              "deepfool_steps": 1, "aign": {"mode": "both", "batch_size": 256}},
    "coreset": {"methods": ["random", "easycore"], "adaptive": ["acs_craig"], "adaptive_modes": ["standard"],
                "transfer_methods": ["easycore"], "fractions": [0.5], "adaptive_fractions": [0.5], "score_epochs": 1,
                "acs": {"every": 1, "kappa": 0.5}},
    "train": {"model": "cnn_tiny", "epochs": 2, "batch_size": 64, "modes": ["standard"], "seeds": [0, 1],
              "attack": {"steps": 1}},
    "eval": {"n_test": 20, "pgd_steps": 2, "sanity": False, "eps_grid": [0.0, 0.01568627450980392]},
    "report": {"grid_per_class": 2, "formats": ["png"]},
}


def merge(base: dict, over: dict) -> dict:
    """`base` with `over` merged in, section by section (a non-dict value replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def repo_params(overrides: Optional[dict] = None) -> dict:
    """The repo's params.yaml (DVC needs every declared key present) with `overrides` merged in."""
    return merge(yaml.safe_load((REPO / "params.yaml").read_text()), overrides or {})


def pipeline_env(pythonpath: str, extra: Optional[dict] = None) -> dict:
    """Environment for dvc and the stages: the venv's bin first on PATH (dvc, easycore), `pythonpath` first on
    PYTHONPATH (the copy's easycore, not the installed one; an inherited PYTHONPATH after it), git identity,
    headless plotting, no analytics."""
    bin_dir = str(Path(sys.executable).parent)
    inherited = os.environ.get("PYTHONPATH")      # kept after `pythonpath` (where dvc itself may be installed)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH=pythonpath + (os.pathsep + inherited if inherited else ""),
               MPLBACKEND="Agg", DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="easycore", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="easycore", GIT_COMMITTER_EMAIL="bench@localhost")
    env.update(extra or {})
    return env


def run(cmd: Sequence[str], cwd, env, *, check: bool = True, timeout: Optional[float] = None,
        echo: bool = False) -> subprocess.CompletedProcess:
    """Run `cmd`; its stdout and stderr merged into .stdout. check: a non-zero exit raises RuntimeError with the
    command and the tail of its output. echo: print the output as it arrives (still captured)."""
    if echo:
        p = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1)
        lines = []
        for line in p.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        rc = p.wait(timeout=timeout)
        r = subprocess.CompletedProcess(list(cmd), rc, "".join(lines), "")
    else:
        r = subprocess.run(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stdout[-3000:]}")
    return r


def write_params(work, params: dict) -> None:
    """`params` as work/params.yaml, and work/matrix.yaml, the run lists dvc.yaml expands (what `easycore check`
    writes from them: easycore/pipeline/runs.py write_matrix)."""
    from easycore.config import params_from_dict
    from easycore.pipeline.runs import write_matrix

    (Path(work) / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_matrix(params_from_dict(params), Path(work) / "matrix.yaml")


def make_repo(work, params: dict, env: dict) -> Path:
    """A new git + DVC repository at `work` (must not exist) with dvc.yaml, notebooks/, easycore/ and `params`
    as params.yaml, everything committed. Returns the path."""
    work = Path(work)
    work.mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(REPO / "notebooks", work / "notebooks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "easycore", work / "easycore", ignore=shutil.ignore_patterns("__pycache__"))
    write_params(work, params)
    (work / ".gitignore").write_text("__pycache__/\n")
    run(["git", "init", "-q"], work, env)
    run(["dvc", "init", "-q"], work, env)
    run(["dvc", "config", "core.analytics", "false"], work, env)
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-q", "-m", "pipeline copy"], work, env)
    return work


def stage_names(work, env) -> list[str]:
    """`dvc stage list --name-only`: every stage of the pipeline, matrix items expanded."""
    return run(["dvc", "stage", "list", "--name-only"], work, env).stdout.split()


RAN = re.compile(r"^Running stage '([^']+)'", re.M)
RESTORED = re.compile(r"^Stage '([^']+)' is cached - skipping run", re.M)


def stages_ran(log: str) -> list[str]:
    """Stages a dvc repro / exp run log says it ran (its command executed)."""
    return RAN.findall(log)


def stages_restored(log: str) -> list[str]:
    """Stages a dvc log says it restored from the run-cache instead of running."""
    return RESTORED.findall(log)
