"""Size the study before launching it: the wall time of one training run and one evaluation per training mode at
a candidate scale, measured through the package's own functions on this machine, and the whole `dvc repro` of a
params file predicted from them (runs.expected_runs). Prints a table; --out appends it to reports/benchmarks.md.

    python -m benchmarks.study_cost --params params-study.yaml            # measure one epoch per mode, predict
    python -m benchmarks.study_cost --params params-study.yaml --epochs 2 # more epochs measured (less noise)

The prediction adds the stage overhead measured here (a stage is one `easycore` process: Python + torch import +
DVC's own work) and the proxy run (exact AIGN pass per epoch). It is a prediction: the README states the study's
measured wall time.
"""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from collections import Counter


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params-study.yaml", help="the params file to size")
    ap.add_argument("--epochs", type=int, default=1, help="epochs measured per training mode")
    ap.add_argument("--out", default=None, help="append the table to this Markdown file")
    args = ap.parse_args(argv)

    from benchmarks._report import machine_description
    from easycore.pipeline import runs
    from easycore.core.acs import acs_plan, partial_share
    from easycore.core.coresets import budget
    from easycore.config import load_params
    from easycore.data.loaders import load_dataset
    from easycore.core.evaluate import evaluate_model
    from easycore.core.train import train

    P = load_params(args.params)
    d, t = P.data, P.train
    tr = load_dataset(d.dataset, "train", d.resolved_root(), n_per_class=d.n_per_class, seed=d.seed)
    te = load_dataset(d.dataset, "test", d.resolved_root(), n_per_class=d.test_n_per_class, seed=d.seed)
    cfg = dataclasses.replace(t, epochs=args.epochs)
    per_sample_epoch, eval_s, acc = {}, {}, {}
    for mode in t.modes:
        res = []
        s = _seconds(lambda: res.append(train(cfg, tr, mode=mode, seed=0, runtime=P.runtime, progress=False)))
        per_sample_epoch[mode] = s / (len(tr) * args.epochs)
        n = min(P.eval.n_test, len(te))
        eval_s[mode] = _seconds(lambda: acc.setdefault(mode, evaluate_model(res[0].model, te.x[:n], te.y[:n],
                                                                               P.eval, progress=False)[0]))
    overhead = _seconds(lambda: subprocess.run([sys.executable, "-c", "import torch, easycore.pipeline.stages"], check=True))
    aign = P.proxy.aign.mode in ("exact", "both")
    proxy_s = per_sample_epoch["standard"] * len(tr) * P.proxy.epochs * (1.7 if aign else 1.0)

    every = runs.expected_runs(P)
    train_s = 0.0
    for r in every:
        if r.method == runs.FULL:
            n_seen = len(tr) * t.epochs
        elif r.scores == runs.NONE:  # ACS: warm start + coreset epochs, plus selections (one attack pass each)
            plan = acs_plan(t.epochs, r.fraction, kappa=P.coreset.acs.kappa, R=P.coreset.acs.every, warmup="exact")
            per = {"full": len(tr), "partial": partial_share(t.epochs, r.fraction, P.coreset.acs.kappa) * len(tr),
                   "skip": 0, "select": budget(r.fraction, len(tr)), "coreset": budget(r.fraction, len(tr))}
            n_seen = sum(per[k] for k in plan) + plan.count("select") * len(tr) * 0.5
        else:
            n_seen = budget(r.fraction, len(tr)) * t.epochs
        train_s += per_sample_epoch[r.mode] * n_seen
    evals = sum(eval_s[r.mode] for r in every)
    stages = len(every) * 2 + 3 + len(P.proxy.transfer_models) + len({(r.scores, r.method, r.fraction) for r in every})
    reports_s = 6 * 25.0
    total = proxy_s * (1 + len(P.proxy.transfer_models)) + train_s + evals + stages * (overhead + 1.5) + reports_s
    modes = Counter(r.mode for r in every)
    lines = [f"## study_cost ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"{machine_description()}; params {args.params}: {d.dataset} {len(tr)} train / {min(P.eval.n_test, len(te))} "
             f"attacked test images, {t.model} {t.epochs} epochs, {len(every)} training runs ({dict(modes)}), "
             f"measured on {args.epochs} epoch(s) per mode.", "",
             "| quantity | seconds |", "|---|---|"]
    for mode in t.modes:
        lines.append(f"| train, {mode}, per 1,000 sample-epochs | {1000 * per_sample_epoch[mode]:.2f} |")
        lines.append(f"| evaluate one {mode} model ({', '.join(P.eval.attacks + P.eval.strong)}, grid "
                     f"{len(P.eval.eps_grid)} eps, sanity {P.eval.sanity}) | {eval_s[mode]:.1f} |")
    lines += [f"| stage overhead (one process start; DVC adds ~1.5 s) | {overhead:.1f} |",
              f"| proxy run(s) | {proxy_s * (1 + len(P.proxy.transfer_models)):.0f} |",
              f"| all training runs | {train_s:.0f} |", f"| all evaluations | {evals:.0f} |",
              f"| **predicted `dvc repro`** ({stages} stages, reports ~{reports_s:.0f} s, AutoAttack not included) | "
              f"**{total:.0f} ({total / 60:.0f} min)** |", ""]
    text = "\n".join(lines)
    print(text)
    for mode, m in acc.items():
        print(mode, {k: round(v["accuracy"], 3) for k, v in m.items() if isinstance(v, dict) and "accuracy" in v})
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
