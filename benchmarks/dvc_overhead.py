"""DVC's own cost per stage, and why the many-run stages read their params through runs/params/<family>.json.

    python -m benchmarks.dvc_overhead [--stages 60] [--out reports/benchmarks.md]

Two fresh temporary git + DVC repos with the same N trivial stages (a matrix over N items; each command writes two
small files; 3 data deps), differing only in how the stages take their params:
  params    each stage lists the sections `params: [train, runtime]` of a params.yaml shaped like the project's
            (what dvc.yaml did before): DVC copies their values into every stage's dvc.lock entry;
  file      each stage depends on one small JSON file holding those values (what `check` now writes).
`dvc repro` of all N stages is timed in each (interleaved order, --rounds rounds, median). DVC re-parses and
rewrites the whole dvc.lock after every stage, so its cost per stage grows with the lock's size: the ratio is the
saving at this N, and it grows with N (a study has ~190 stages). Also reported: dvc.lock bytes per stage.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks._common import base_parser, publish, resolve_out, table

TRAIN = {"model": "cnn_tiny", "epochs": 10, "batch_size": 64, "augment": True,
         "optim": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0005, "schedule": "onecycle",
                   "milestones": [0.5, 0.75], "gamma": 0.1, "warmup": 0.15},
         "attack": {"eps": 0.031, "alpha": 0.0078, "steps": 3, "beta": 6.0}, "modes": ["standard", "trades"],
         "seeds": [0, 1, 2], "eval_every": 0}
RUNTIME = {"device": "auto", "amp": True, "channels_last": True, "compile": False, "deterministic": False,
           "sync_bn": False}


def _dvc() -> str | None:
    """The dvc executable: on PATH, else beside this Python (an un-activated .venv)."""
    import sys

    here = Path(sys.executable).parent / "dvc"
    found = shutil.which("dvc")
    return str(Path(found).resolve()) if found else (str(here) if here.exists() else None)


def _repo(root: Path, n: int, variant: str) -> Path:
    import yaml

    root.mkdir(parents=True)
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@b")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    subprocess.run([_dvc(), "init", "-q"], cwd=root, check=True, env=env)
    for i in range(3):
        (root / f"d{i}.bin").write_bytes(bytes(range(256)) * 400)
    (root / "params.yaml").write_text(yaml.safe_dump({"train": TRAIN, "runtime": RUNTIME}, sort_keys=False))
    (root / "p.json").write_text(json.dumps({"train": TRAIN, "runtime": RUNTIME}, sort_keys=True))
    stage = {"matrix": {"i": list(range(n))},
             "cmd": "mkdir -p o/${item.i} && echo ${item.i} > o/${item.i}/a && echo x > o/${item.i}/b",
             "deps": ["d0.bin", "d1.bin", "d2.bin"] + (["p.json"] if variant == "file" else []),
             "outs": ["o/${item.i}/a", "o/${item.i}/b"]}
    if variant == "params":
        stage["params"] = ["train", "runtime"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": stage}}, sort_keys=False))
    return root


def _time_repro(root: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([_dvc(), "repro", "-q"], cwd=root, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = base_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--stages", type=int, default=60)
    args = ap.parse_args(argv)
    resolve_out(args)
    n, rounds = (6, 1) if args.quick else (args.stages, args.rounds or 2)
    if _dvc() is None:
        print("dvc_overhead: no `dvc` on PATH or beside this Python (activate .venv)")
        return 2
    times: dict[str, list[float]] = {"params": [], "file": []}
    lock: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="easycore-dvc-overhead-") as tmp:
        for r in range(rounds):
            for variant in (("params", "file") if r % 2 == 0 else ("file", "params")):
                root = _repo(Path(tmp) / f"{variant}-{r}", n, variant)
                times[variant].append(_time_repro(root))
                lock[variant] = (root / "dvc.lock").stat().st_size
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [[v, f"{med[v]:.1f}", f"{1000 * med[v] / n:.0f}", f"{lock[v] / n:.0f}",
             ", ".join(f"{t:.1f}" for t in times[v])] for v in ("params", "file")]
    body = (f"`dvc repro` of {n} trivial stages (each writes two small files; 3 data deps), {rounds} interleaved "
            f"round(s), median. DVC re-reads and rewrites dvc.lock after every stage, so the per-stage cost grows "
            f"with the lock.\n\n"
            + table(["params taken as", "repro s", "ms / stage", "dvc.lock bytes / stage", "rounds (s)"], rows)
            + f"\n\n- `params:` in every stage / one params file dep: **{med['params'] / med['file']:.2f}x** the wall "
              f"time at {n} stages.")
    publish(args, "DVC overhead per stage: `params:` per stage vs a params file dep", body)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
