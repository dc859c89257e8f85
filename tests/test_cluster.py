"""The cluster recipes (scripts/, docs/scale.md section 4), rehearsed on the CPU with the tiny pipeline: the shared
ancestors run and only dvc.lock is committed (runs/ and data/prepared are ignored); the train stages are pinned to a
file at submission (a params change afterwards does not move them); a Slurm array task (scripts/slurm-stage.sbatch,
SLURM_* set by hand) that gets Slurm's time-limit signal (USR1, --signal) mid-training stops its stage, asks for its
requeue and keeps its clone, continues from its checkpoint when started again and removes its clone when done; the
other stages run on two "GPU" job slots (docs/scale.md 4b: xargs -P 2 --process-slot-var), each with its own
CUDA_VISIBLE_DEVICES; the workspace's `dvc repro` then restores every train stage from the run-cache and
`dvc status` is clean."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from easycore.data.sources import status_clean

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks._pipeline import TINY, make_repo, merge, pipeline_env, repo_params, run  # noqa: E402

SPEC = merge(TINY, {"runtime": {"device": "cpu"},
                    "proxy": {"transfer_models": [], "epochs": 1},
                    "coreset": {"methods": ["easycore"], "adaptive": [], "transfer_methods": []},
                    "train": {"epochs": 30, "seeds": [0], "modes": ["standard"]}})


@pytest.mark.slow
def test_slurm_and_one_worker_per_gpu_recipes_rehearsed_on_cpu(tmp_path):
    if shutil.which("dvc", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")) is None:
        pytest.skip("dvc is not installed (make setup)")
    env = pipeline_env("", {"OMP_NUM_THREADS": "1"})
    env["PYTHONPATH"] = ""
    env.pop("EASYCORE_DATA", None)
    work = make_repo(tmp_path / "ws", repo_params(SPEC), env)
    shutil.copytree(ROOT / "scripts", work / "scripts")
    (work / ".gitignore").write_text("__pycache__/\n/logs/\n")
    for f in ("runs", "data"):                                  # as in the repo: ignored, DVC-tracked
        with open(work / ".gitignore", "a") as fh:
            fh.write(f"/{f}/\n" if f == "runs" else "/data/prepared/\n")
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-q", "-m", "scripts"], work, env)
    env["PYTHONPATH"] = str(work)
    names = run(["dvc", "stage", "list", "--name-only"], work, env).stdout.split()
    ancestors = sorted({re.match(r"^(select[a-z_]*)", n).group(1) for n in names if n.startswith("select")})
    run(["dvc", "repro", *ancestors], work, env)
    run(["git", "add", "dvc.lock"], work, env)                  # step 1 of section 4a, as the docs now say
    run(["git", "commit", "-q", "-m", "ancestors"], work, env)

    # submission: a dry run of sbatch; the stage list is pinned to a file
    state = tmp_path / "shared" / "tasks"
    env.update(STATE_ROOT=str(state), SBATCH="echo", REPO=str(work))
    out = run([str(work / "scripts/slurm-submit.sh"), "^train", "--time=1:00:00"], work, env).stdout
    trains = [n for n in names if n.startswith("train")]
    assert len(trains) == 2 and "--array=0-1%16 --requeue" in out and "--time=1:00:00" in out
    listfile = Path(re.search(r"STAGES=(\S+),", out).group(1))
    assert listfile.read_text().split() == trains
    p = yaml.safe_load((work / "params.yaml").read_text())      # a params change after submission: more stages
    p["coreset"]["fractions"] = p["coreset"]["fractions"] + [0.25]
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    run([sys.executable, "-m", "easycore", "check", "-q"], work, env)   # check rewrites matrix.yaml: dvc.yaml's lists
    assert run(["dvc", "stage", "list", "--name-only"], work, env).stdout.split() != names
    assert listfile.read_text().split() == trains               # ... the pinned list is unchanged
    run(["git", "checkout", "params.yaml", "matrix.yaml"], work, env)

    # task 0 is preempted (killed) after its checkpoint of epoch >= 1, then requeued: it continues from there
    task = dict(env, STAGES=str(listfile), SLURM_ARRAY_TASK_ID="0", SLURM_RESTART_COUNT="0", SLURM_ARRAY_JOB_ID="77",
                SCONTROL="echo scontrol")
    clone = state / trains[0]
    logf = open(tmp_path / "task0.log", "w")
    proc = subprocess.Popen([str(work / "scripts/slurm-stage.sbatch")], cwd=work, env=task, stdout=logf,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(clone.glob("runs/train/*/.*.state.pt")):
        assert proc.poll() is None, (tmp_path / "task0.log").read_text()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGUSR1)                            # --signal=B:USR1@120: the time limit is near
    assert proc.wait(timeout=60) == 0
    logf.close()
    first = (tmp_path / "task0.log").read_text()
    assert "stopping" in first and "scontrol requeue 77_0" in first, first[-3000:]
    assert clone.is_dir()
    group = int(re.search(r"process group (\d+)", first).group(1))
    with pytest.raises(ProcessLookupError):                      # nothing of the stopped stage is left running
        os.killpg(group, 0)
    second = run([str(work / "scripts/slurm-stage.sbatch")], work, dict(task, SLURM_RESTART_COUNT="1")).stdout
    assert "resuming in the clone of an earlier attempt" in second
    m = re.search(r"resumed from .* after epoch (\d+)/30", second)
    assert m and int(m.group(1)) >= 1, second[-3000:]
    assert not clone.exists()                                    # removed once the stage finished

    # the remaining stage(s) on two workers, one "GPU" each
    rest = tmp_path / "rest.txt"
    evals = [n for n in names if n.startswith("evaluate")]      # worker 0: train_full, then its evaluation
    rest.write_text("\n".join([trains[1], *evals]) + "\n")
    assert trains[1].startswith("train_full") and evals[-1].startswith("evaluate_full")
    logs = tmp_path / "logs"
    logs.mkdir()
    run(["xargs", "-a", str(rest), "-P", "2", "-I{}", "--process-slot-var=SLOT", "sh", "-c",
         f'CUDA_VISIBLE_DEVICES=$SLOT "{work}/scripts/stage-task.sh" "$1" >> "{logs}/slot-$SLOT.log" 2>&1', "_", "{}"],
        work, env)
    seen = {i: re.findall(r"CUDA_VISIBLE_DEVICES=(\S+)", (logs / f"slot-{i}.log").read_text()) for i in (0, 1)}
    assert seen[0] and set(seen[0]) == {"0"} and seen[1] and set(seen[1]) == {"1"}
    assert not any(state.iterdir())                              # no clone left behind

    # collect: every train stage comes back from the run-cache; nothing left to do afterwards
    log = run(["dvc", "repro"], work, env).stdout
    restored = re.findall(r"Stage '([^']+)' is cached - skipping run", log)
    assert set(trains) <= set(restored), log[-3000:]
    assert not re.findall(r"Running stage '(train[^']*)'", log)
    st = run(["dvc", "status", "--json"], work, env).stdout
    assert status_clean(st), st
