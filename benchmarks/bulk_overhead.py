"""Per-run overhead (process start-up + DVC's per-stage work) per trained model: one stage per run vs groups.

    python -m benchmarks.bulk_overhead [--runs 10,100] [--group-size 10] [--quick]

A throw-away copy of the pipeline (benchmarks._pipeline) on tiny synthetic data (1 training epoch, a 1-step PGD
evaluation: compute is a small part of each run) is reproduced up to its selections, then the train and evaluate
stages are timed (`dvc repro train train_full evaluate evaluate_full`), for N trained models laid out two ways:
  one per stage    N groups of one run (N-1 coreset fractions and the full-data run, one seed): one process and
                   one DVC stage per trained model and per evaluation, as every run was before groups
  grouped          N / group-size groups of group-size runs (seeds), as the pipeline now lays out a study
Overhead per model = (wall - the runs' own training and evaluation seconds, from runs/timings) / N.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._common import base_parser, data_root, publish, resolve_out, table


def layout(n: int, group_size: int, grouped: bool) -> dict:
    """coreset.fractions and train.seeds giving n trained models (the full-data reference is one group)."""
    if grouped:
        g = max(1, min(group_size, n))
        groups = max(1, n // g)                  # groups - 1 coreset fractions + the full-data group
        fractions = [round(0.1 + 0.8 * i / max(groups - 2, 1), 3) for i in range(groups - 1)] or [0.5]
        if groups == 1:                          # (one group is not possible: full data is always trained)
            g, fractions = max(1, n // 2), [0.5]
        return {"fractions": fractions, "seeds": list(range(g))}
    fractions = [round(0.01 + 0.98 * i / max(n - 2, 1), 4) for i in range(n - 1)]
    return {"fractions": fractions, "seeds": [0]}


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--runs", default="10,100", help="numbers of trained models")
    ap.add_argument("--group-size", type=int, default=10)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.runs.split(",")]
    if args.quick:
        sizes, args.group_size = [4], 2
    resolve_out(args)
    return _run(args, sizes)


def _run(args, sizes) -> int:
    from benchmarks._pipeline import TINY, make_repo, merge, pipeline_env, repo_params, run, stages_ran

    rows = []
    for n in sizes:
        for grouped in (False, True):
            lay = layout(n, args.group_size, grouped)
            over = merge(TINY, {
                "runtime": {"device": "cpu"},
                "proxy": {"transfer_models": [], "epochs": 1},
                "coreset": {"methods": ["random"], "fractions": lay["fractions"], "survey_methods": [],
                            "adaptive": [], "transfer_methods": []},
                "train": {"epochs": 1, "seeds": lay["seeds"], "modes": ["standard"]},
                "eval": {"n_test": 20, "pgd_steps": 1, "attacks": ["pgd"], "eps_grid": [0.0], "sanity": False,
                         "strong": [], "autoattack_modes": []},
            })
            with tempfile.TemporaryDirectory(prefix="easycore-bulk-") as tmp:
                work = Path(tmp) / "repo"
                env = pipeline_env(str(work), {"EASYCORE_DATA": str(data_root())})
                make_repo(work, repo_params(over), env)
                run(["dvc", "repro", "select"], work, env)              # check, prepare, proxy, select: not timed
                t0 = time.perf_counter()
                r = run(["dvc", "repro", "train", "train_full", "evaluate", "evaluate_full"], work, env)
                wall = time.perf_counter() - t0
                compute = sum(json.loads(p.read_text())["seconds"]
                              for stage in ("train", "eval") for p in (work / "runs/timings" / stage).rglob("*.json"))
                models = len(list((work / "runs/train").rglob("model.safetensors")))
                stages = len(stages_ran(r.stdout))
                shutil.rmtree(work, ignore_errors=True)
            rows.append([models, "grouped" if grouped else "one per stage", stages, f"{wall:.1f}", f"{compute:.1f}",
                         f"{(wall - compute) / models:.2f}"])
            print(f"  {rows[-1]}", flush=True)
    by = {(r[0], r[1]): float(r[5]) for r in rows}
    ratios = [f"{n} models: {by[(n, 'one per stage')] / by[(n, 'grouped')]:.1f}x less overhead per model"
              for n in sorted({r[0] for r in rows}) if (n, "grouped") in by and (n, "one per stage") in by]
    body = (f"Tiny synthetic pipeline (cnn_tiny, 1 epoch on 80 images, PGD-1 on 20 test images), CPU; train and "
            f"evaluate stages timed by one `dvc repro`; group size {args.group_size}.\n\n"
            + table(["models", "layout", "stages run", "wall s", "runs' own compute s", "overhead s / model"], rows)
            + "\n\n- " + "; ".join(ratios))
    publish(args, "Per-run overhead: one stage per run vs groups", body)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
