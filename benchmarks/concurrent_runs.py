"""Several runs at once on one device: models per hour, one run at a time vs concurrent worker processes.

    python -m benchmarks.concurrent_runs [--model cnn_tiny] [--fraction 0.1] [--runs 8] [--epochs 2]
                                         [--concurrent 0] [--device cuda] [--quick]

A group of `--runs` training runs (seeds 0..runs-1) of `--model` on a random `--fraction` coreset of CIFAR-10 (all
50,000 training images; --quick: a tiny synthetic set) is trained by `easycore.pipeline.group.train_group` twice, in
fresh folders: with runtime.concurrent = 1 (one run after the other in one process) and with --concurrent
(0 = automatic: from the free memory and the first run's measured peak on CUDA; on the CPU automatic means 1, so
give N to rehearse). Reported: wall seconds, models per hour, the speed-up, and the worker count used. On the CPU
this is a rehearsal of the code path (two cores are already busy with one run); the figures that matter are a
GPU's (`make gpu-check`, part `concurrency`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._common import base_parser, data_root, publish, session, table


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--model", default="cnn_tiny")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--concurrent", type=int, default=0, help="workers of the concurrent variant (0 = automatic)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.epochs, args.concurrent = 2, 1, args.concurrent or 2
    with session(args) as device:
        return _run(args, device)


def _run(args, device) -> int:
    import numpy as np

    from easycore.pipeline import group, stages as pipeline, runs
    from easycore.config import params_from_dict
    from easycore.store import save_npy

    quick = args.quick or args.dataset == "synthetic"
    data = ({"dataset": "synthetic", "n_per_class": 16, "test_n_per_class": 2} if quick else
            {"dataset": "cifar10", "root": str(data_root()), "n_per_class": None, "test_n_per_class": 10})
    base = {"data": data, "runtime": {"device": device.type},
            "train": {"model": args.model, "epochs": args.epochs, "batch_size": 16 if quick else args.batch_size,
                      "modes": ["standard"], "seeds": list(range(args.runs))},
            "coreset": {"methods": ["random"], "fractions": [args.fraction]}}
    cwd = os.getcwd()
    rows, walls, used = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="easycore-concurrent-") as tmp:
        try:
            os.chdir(tmp)
            params = params_from_dict(base)
            pipeline.prepare(params, Path("data/prepared"))
            tr, _ = pipeline.load_prepared(Path("data/prepared"), params)
            g = runs.Group("main", "random", args.fraction, "standard")
            members = g.runs(params.train.seeds)
            k = max(1, int(round(args.fraction * len(tr))))
            for r in members:        # every replicate trains on its own selection (random redrawn per replicate)
                save_npy(r.selection_dir() / "indices.npy",
                         np.sort(np.random.default_rng(r.seed).choice(len(tr), k, replace=False)))
            for name, conc in (("one at a time", 1), ("concurrent", args.concurrent)):
                params.runtime.concurrent = conc
                for r in members:
                    r.state_path().unlink(missing_ok=True)
                t0 = time.perf_counter()
                group.train_group(params, members, progress=False)
                walls[name] = time.perf_counter() - t0
                used[name] = str(conc) if conc else f"0 (auto: {group.LAST_WORKERS})"
                shutil.rmtree(g.train_dir(), ignore_errors=True)
        finally:
            os.chdir(cwd)
    for name, w in walls.items():
        rows.append([name, used[name], f"{w:.1f}", f"{args.runs * 3600 / w:.0f}",
                     f"{walls['one at a time'] / w:.2f}x"])
    body = (f"{args.runs} runs of `{args.model}`, standard training, {args.epochs} epochs, on a random {args.fraction:g} "
            f"coreset of {k} images ({'synthetic' if quick else 'CIFAR-10 train'}); device {device}.\n\n"
            + table(["variant", "runtime.concurrent", "wall s", "models / hour", "speed-up"], rows)
            + f"\n\n- ratio concurrent / one at a time: **{walls['one at a time'] / walls['concurrent']:.2f}x** "
              f"models per hour")
    publish(args, f"Concurrent runs on one device ({device.type})", body)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
