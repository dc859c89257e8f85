"""Many runs at once through DVC's experiment queue: the recipe of docs/scale.md, measured against a serial
`dvc repro` of the same pipeline.

    python -m benchmarks.dvc_queue [--jobs 2] [--shards 4] [--out reports/benchmarks.md] [--keep DIR]

Two fresh temporary git + DVC copies of the pipeline with the same tiny synthetic params (benchmarks._pipeline.TINY,
every stage family present):
  serial   `dvc repro`: every stage, one after the other
  queue    1. `dvc repro` of every select* stage group (the shared ancestors: check, prepare, proxies, selections) and
              a git commit of dvc.lock, so every queued experiment starts from them;
           2. the evaluate stages (`dvc stage list --name-only | grep ^evaluate`, each pulls in its train stage) dealt
              round-robin into --shards groups, one `dvc exp run --queue -n shard-<i> <stages>` per group: the
              params are NOT changed, so every stage keeps the key it has in the full pipeline;
           3. `dvc queue start -j <jobs>`, waiting until `dvc queue status` shows no queued or running task (polled
              every --poll s); every task must end in Success;
           4. `dvc repro` in the workspace: the train (and, where DVC's run-cache allows it, evaluate) stages are
              restored from the shared run-cache instead of run again; the report stages run once on all results.
Reported: the wall time of each step, the stages each step ran and restored, the speed-up over serial, and
whether every metrics.json of the queue copy equals (bytes) the serial one. The load average is printed, since
the workers compete with whatever else runs on the machine.
"""
from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import base_parser, publish, resolve_out, table
from easycore.data.sources import status_clean


def shards(stages, n: int) -> list[list[str]]:
    """Deal `stages` round-robin into at most `n` non-empty groups (order kept within a group)."""
    n = max(1, min(n, len(stages)))
    return [list(stages[i::n]) for i in range(n)]


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


EVAL_METRICS = re.compile(r"\n(      - runs/eval/[^\n]*/metrics\.json:\n          cache: false\n)")


def metrics_fix(dvc_yaml: str) -> str:
    """dvc.yaml with evaluate's metrics.json declared under `metrics:` (it is the last of the evaluate outs) instead
    of a `cache: false` out: DVC skips its run-cache for a stage with a `cache: false` out that is not a metric or
    plot, and keeps it otherwise."""
    out, n = EVAL_METRICS.subn(lambda m: "\n    metrics:\n" + m.group(1), dvc_yaml)
    if n == 0:
        raise ValueError("dvc.yaml: no evaluate metrics.json out with cache: false found")
    return out


def _copy(work: Path, params: dict, env: dict, fix: bool) -> None:
    from benchmarks._pipeline import make_repo, run

    make_repo(work, params, env)
    if fix:
        (work / "dvc.yaml").write_text(metrics_fix((work / "dvc.yaml").read_text()))
        run(["git", "commit", "-q", "-am", "evaluate metrics under metrics:"], work, env)


def serial(work: Path, params: dict, env: dict, *, metrics_fix: bool = False) -> dict:
    from benchmarks._pipeline import run, stage_names, stages_ran, stages_restored

    _copy(work, params, env, metrics_fix)
    n = len(stage_names(work, env))
    t0 = time.perf_counter()
    log = run(["dvc", "repro"], work, env).stdout
    return {"stages": n, "steps": [("serial: dvc repro", time.perf_counter() - t0, len(stages_ran(log)),
                                    len(stages_restored(log)))]}


def queued(work: Path, params: dict, env: dict, *, jobs: int, n_shards: int, poll: float, timeout: float,
           metrics_fix: bool = False) -> dict:
    from benchmarks._pipeline import run, stage_names, stages_ran, stages_restored

    _copy(work, params, env, metrics_fix)
    names = stage_names(work, env)
    steps = []

    t0 = time.perf_counter()
    selects = sorted({s.split("@")[0] for s in names if s.startswith("select")})  # select, select_transfer, ...
    log = run(["dvc", "repro", *selects], work, env).stdout
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-q", "-m", "shared ancestors: dvc.lock"], work, env)
    steps.append((f"1. dvc repro {' '.join(selects)}; git commit", time.perf_counter() - t0, len(stages_ran(log)),
                  len(stages_restored(log))))

    groups = shards([s for s in names if s.startswith("evaluate")], n_shards)
    t0 = time.perf_counter()
    for i, g in enumerate(groups):
        run(["dvc", "exp", "run", "--queue", "-n", f"shard-{i}", *g], work, env)
    steps.append((f"2. dvc exp run --queue x {len(groups)} (shards of {', '.join(str(len(g)) for g in groups)} "
                  f"evaluate stages)", time.perf_counter() - t0, 0, 0))

    t0 = time.perf_counter()
    # the workers are daemons: give them no pipe of ours (a captured stdout would stay open until they exit)
    started = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=work, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if started.returncode != 0:
        raise RuntimeError(f"dvc queue start -j {jobs} failed (exit {started.returncode})")
    while True:
        time.sleep(poll)
        status = run(["dvc", "queue", "status"], work, env).stdout
        tasks = [ln.split() for ln in status.splitlines() if any(f"shard-{i}" in ln.split() for i in range(len(groups)))]
        if tasks and not any(t[-1] in ("Queued", "Running") for t in tasks):
            break
        if time.perf_counter() - t0 > timeout:
            run(["dvc", "queue", "stop", "--kill"], work, env, check=False)
            raise RuntimeError(f"queue not done after {timeout:.0f} s:\n{status}")
    wall = time.perf_counter() - t0
    failed = [t[1] for t in tasks if t[-1] != "Success"]
    if failed:
        raise RuntimeError(f"queued experiments {failed} did not succeed:\n{status}")
    logs = "".join(run(["dvc", "queue", "logs", f"shard-{i}"], work, env, check=False).stdout for i in range(len(groups)))
    steps.append((f"3. dvc queue start -j {jobs} (until all {len(groups)} tasks succeed)", wall, len(stages_ran(logs)),
                  len(stages_restored(logs))))

    t0 = time.perf_counter()
    log = run(["dvc", "repro"], work, env).stdout
    steps.append(("4. dvc repro (collect: run-cache + reports)", time.perf_counter() - t0, len(stages_ran(log)),
                  len(stages_restored(log))))
    st = run(["dvc", "status", "--json"], work, env, check=False)
    return {"stages": len(names), "steps": steps, "clean": st.returncode == 0 and status_clean(st.stdout),
            "restored_in_collect": stages_restored(log), "ran_in_collect": stages_ran(log)}


def same_metrics(a: Path, b: Path) -> tuple[int, int]:
    """(equal, total) over every runs/eval/**/metrics.json of `a`, compared byte for byte with `b`'s."""
    files = sorted(p.relative_to(a) for p in (a / "runs" / "eval").rglob("metrics.json"))
    return sum((b / f).exists() and filecmp.cmp(a / f, b / f, shallow=False) for f in files), len(files)


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--jobs", default="2", help="queue workers (dvc queue start -j); a comma list runs the recipe "
                    "once per value, each in a fresh copy")
    ap.add_argument("--shards", type=int, default=4, help="queued experiments (groups of evaluate stages)")
    ap.add_argument("--poll", type=float, default=10.0, help="seconds between `dvc queue status` polls")
    ap.add_argument("--timeout", type=float, default=3600.0, help="give up on the queue after this many seconds")
    ap.add_argument("--keep", default=None, help="build the repos here and keep them (default: a temp folder)")
    ap.add_argument("--skip-serial", action="store_true", help="only the queue recipe (no baseline, no comparison)")
    ap.add_argument("--metrics-fix", action="store_true", help="in the copies, declare evaluate's metrics.json under "
                    "`metrics:` instead of a `cache: false` out (the dvc.yaml change docs/scale.md proposes: DVC then "
                    "keeps evaluate stages in its run-cache too)")
    args = ap.parse_args(argv)
    resolve_out(args)
    jobs = [int(j) for j in str(args.jobs).split(",") if j.strip()]

    from benchmarks._pipeline import TINY, pipeline_env, repo_params

    params = repo_params(TINY)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="easycore-dvc-queue-"))
    root.mkdir(parents=True, exist_ok=True)
    # PYTHONPATH '.': every stage imports the easycore of the copy it runs in (the workspace or a queue temp dir)
    env = pipeline_env(".", {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    fix = args.metrics_fix
    load0 = _load()
    qs = {}
    try:
        base = None if args.skip_serial else serial(root / "serial", params, env, metrics_fix=fix)
        print(f"dvc_queue: serial baseline: {base and base['steps']}", flush=True)
        for j in jobs:
            q = queued(root / f"queue-j{j}", params, env, jobs=j, n_shards=args.shards, poll=args.poll,
                       timeout=args.timeout, metrics_fix=fix)
            q["equal"] = None if base is None else same_metrics(root / "serial", root / f"queue-j{j}")
            qs[j] = q
            print(f"dvc_queue: -j {j}: {q['steps']}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    load1 = _load()

    rows = [["serial", *[v if isinstance(v, int) else f"{v:.1f}" for v in st[1:]], st[0]]
            for st in (base["steps"] if base else [])]
    for j, q in qs.items():
        rows += [[f"queue -j {j}", f"{sec:.1f}", ran, restored, name] for name, sec, ran, restored in q["steps"]]
        rows.append([f"queue -j {j}", f"{sum(s[1] for s in q['steps']):.1f}", "", "", "**steps 1-4**"])
    n_stages = next(iter(qs.values()))["stages"]
    lines = [
        f"Tiny synthetic pipeline (benchmarks._pipeline.TINY: {n_stages} stages, cnn_tiny / resnet_tiny, 2 epochs, "
        f"2 seeds), CPU, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, {args.shards} queued experiments, dvc.yaml "
        + ("with evaluate's metrics.json under `metrics:` (--metrics-fix)" if fix else "as in the repo")
        + f"; load average (1/5/15 min) {load0} before, {load1} after (the machine is shared).",
        "",
        table(["run", "wall s", "stages ran", "restored from run-cache", "step"], rows),
        "",
    ]
    ok = True
    for j, q in qs.items():
        total = sum(s[1] for s in q["steps"])
        bits = [f"- **-j {j}**: steps 1-4 {total:.0f} s"]
        if base:
            t_serial = base["steps"][0][1]
            bits.append(f"speed-up over serial `dvc repro` {t_serial / total:.2f}x")
            bits.append(f"metrics.json identical to the serial run's: {q['equal'][0]}/{q['equal'][1]}")
            ok &= q["equal"][0] == q["equal"][1]
        bits.append(f"the queue step: {q['steps'][2][1]:.0f} s for the {q['steps'][2][2]} stages its experiments ran")
        bits.append(f"collect: {len(q['restored_in_collect'])} stages restored from the run-cache "
                    f"({', '.join(sorted({s.split('@')[0] for s in q['restored_in_collect']})) or 'none'}), "
                    f"{len(q['ran_in_collect'])} run ({', '.join(sorted({s.split('@')[0] for s in q['ran_in_collect']}))})")
        bits.append(f"dvc status afterwards: {'clean' if q['clean'] else 'NOT clean'}")
        ok &= q["clean"]
        lines.append("; ".join(bits))
    publish(args, f"Many runs at once: DVC experiment queue, -j {','.join(map(str, jobs))}"
            + (" (evaluate metrics under `metrics:`)" if fix else ""), "\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
