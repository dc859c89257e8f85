"""Size the study before launching it: the wall time of one training run and one evaluation per training mode at
a candidate scale, measured through the package's own functions on this machine, and the whole `dvc repro` of a
params file predicted from them (runs.expected_runs). Prints a table; --out appends it to reports/benchmarks.md.

    python -m benchmarks.study_cost --params params-study.yaml            # measure one epoch per mode, predict
    python -m benchmarks.study_cost --params params-study.yaml --epochs 2 # more epochs measured (less noise)
    python -m benchmarks.study_cost --params params-study-v2.yaml \
        --timings ../study-run/runs/timings --reference params-study.yaml      # replay a finished run's timings

--timings: the wall time of each part predicted from the per-run seconds a finished run of the --reference
profile measured (its runs/timings: proxies one after another; each training group's runs `runtime.concurrent` at
once), scaled by the epochs each run trains, and laid out as this profile's stages: a training stage of n runs on w
workers takes (n - n % w) / w paired runs plus its tail (group.py: one left-over run trains alone on every core,
--alone x a paired run's time, measured); evaluations the same way, from the seconds one evaluation takes alone on
every core (--eval-s). Only training and the proxies are replayed; the evaluation, the stage overhead, AutoAttack and
the reports are given (--eval-s, --fixed-s: measured, see reports/benchmarks.md).

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
from typing import Optional


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params-study.yaml", help="the params file to size")
    ap.add_argument("--epochs", type=int, default=1, help="epochs measured per training mode")
    ap.add_argument("--out", default=None, help="append the table to this Markdown file")
    ap.add_argument("--timings", default=None, help="a finished run's runs/timings folder: replay it (see above)")
    ap.add_argument("--reference", default="params-study.yaml", help="the params file that run was made with")
    ap.add_argument("--alone", type=float, default=0.62,
                    help="a run alone on every core / the same run paired (measured: TRADES on 5,000 images)")
    ap.add_argument("--eval-s", default="standard=40,trades=29",
                    help="seconds to evaluate one model on 10,000 test images alone on every core, per mode "
                         "(scaled by n)")
    ap.add_argument("--measured", action="append", default=[], metavar="GROUP=SECONDS",
                    help="a run of this profile measured directly (one thread, two at once), e.g. "
                         "none/full-1.0-trades=554: replaces the reference's scaled seconds for that group")
    ap.add_argument("--proxy-post-s", type=float, default=11.0,
                    help="seconds a proxy spends after training (features, test accuracy), alone on every core")
    ap.add_argument("--deepfool-s", type=float, default=150.0,
                    help="seconds of a proxy's DeepFool pass over the training set, alone on every core")
    ap.add_argument("--fixed-s", type=float, default=900.0,
                    help="seconds outside the runs: check, prepare, select, stage starts, AutoAttack, reports")
    args = ap.parse_args(argv)
    if args.timings:
        return _replay(args)

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


def _median_s(folder, stem: str):
    """The median of the training seconds of <folder>/<stem>-s<seed>.json (None when there is none): `seconds`, or
    a proxy's `training_seconds` where it logged one (its `seconds` then include the features / DeepFool pass)."""
    import json
    import statistics
    from pathlib import Path

    recs = [json.loads(f.read_text()) for f in sorted(Path(folder).glob(f"{stem}-s*.json"))]
    xs = [r.get("training_seconds", r["seconds"]) for r in recs]
    return statistics.median(xs) if xs else None


def stage_wall(n: int, workers: int, paired_s: float, alone: float) -> float:
    """Wall seconds of a training stage of n runs of paired_s seconds each on `workers` workers (group.py's
    layout): (n - n % w) / w rounds of paired runs, then the tail: one run alone on every core (alone x paired_s),
    or n % w runs at once (one paired round)."""
    w = max(1, min(workers, n))
    if w == 1:
        return n * paired_s * (alone if workers > 1 else 1.0)
    k = n - n % w
    tail = n % w
    return k // w * paired_s + (alone * paired_s if tail == 1 else paired_s if tail else 0.0)


def replay(P, ref, timings, *, alone: float, eval_s: dict, fixed_s: float,
           measured: Optional[dict] = None, proxy_post_s: float = 0.0,
           deepfool_s: float = 0.0) -> list[tuple[str, float]]:
    """[(part, wall seconds)] of `dvc repro` of params P predicted from the runs/timings of a finished run of
    params `ref` (module docstring). A training run the reference did not make takes the median of the
    reference's static runs of its fraction and mode; the training runs are taken to run as many at once as in the
    reference (its runtime.concurrent). Proxies run one after another on every core (stages.proxy_all). `measured`:
    {"<scores>/<method>-<fraction>-<mode>": seconds} of this profile's own runs (one thread, two at once), used as
    they are. A proxy's timing is its training; `proxy_post_s` (features, test accuracy) and `deepfool_s` (where
    runs.needs_deepfool) are added per replicate, alone on every core."""
    from pathlib import Path

    from easycore.pipeline import runs

    timings = Path(timings)
    parts: dict[str, float] = {}
    for name in ["main"] + list(P.proxy.transfer_models):
        per = _median_s(timings / "proxy", name)
        if per is None:
            raise SystemExit(f"no proxy timings for {name!r} under {timings / 'proxy'}")
        per *= P.proxy.epochs / ref.proxy.epochs
        parts["proxies"] = parts.get("proxies", 0.0) + sum(
            per + proxy_post_s + (deepfool_s if runs.needs_deepfool(P, name, s) else 0.0)
            for s in runs.proxy_seeds(P, name))
    ref_keys = {(r.method, r.fraction, r.mode) for r in runs.expected_runs(ref)}
    evaluation = 0.0
    for g, members in runs.expected_groups(P).items():
        stem = f"{g.method}-{g.fraction}-{g.mode}"
        per = _median_s(timings / "train" / g.scores, stem)
        if per is None:
            alike = [_median_s(timings / "train" / "main", f"{m}-{g.fraction}-{g.mode}") for m, f, mode in ref_keys
                     if f == g.fraction and mode == g.mode]
            alike = [x for x in alike if x is not None]
            if not alike:
                raise SystemExit(f"no timings to stand in for {stem}")
            per = sorted(alike)[len(alike) // 2]
        full = g.method == runs.FULL
        per *= (P.train.full_epochs or P.train.epochs) / (ref.train.full_epochs or ref.train.epochs) if full \
            else P.train.epochs / ref.train.epochs
        per = (measured or {}).get(f"{g.scores}/{stem}", per)
        part = "training: full data" if full else "training: ACS" if g.scores == runs.NONE else \
            "training: primary" if P.is_primary_group(g.scores, g.method, g.fraction) else "training: secondary"
        w = P.runtime.concurrent or 1
        parts[part] = parts.get(part, 0.0) + stage_wall(len(members), w, per, alone)
        # its evaluation stage lays out the same runs the same way, from one evaluation's seconds alone
        eval_alone = eval_s[g.mode] * P.eval.n_for(P.is_primary_group(g.scores, g.method, g.fraction)) / 10000
        evaluation += stage_wall(len(members), w, eval_alone / alone if w > 1 else eval_alone, alone)
    parts["evaluation"] = evaluation
    parts["fixed (check, prepare, select, stage starts, AutoAttack, reports)"] = fixed_s
    return list(parts.items())


def _replay(args) -> int:
    from benchmarks._report import machine_description
    from easycore.config import load_params

    P, ref = load_params(args.params), load_params(args.reference)
    eval_s = {k: float(v) for k, v in (kv.split("=") for kv in args.eval_s.split(","))}
    measured = {k: float(v) for k, v in (kv.split("=") for kv in args.measured)}
    parts = replay(P, ref, args.timings, alone=args.alone, eval_s=eval_s, fixed_s=args.fixed_s, measured=measured,
                   proxy_post_s=args.proxy_post_s, deepfool_s=args.deepfool_s)
    total = sum(s for _, s in parts)
    lines = [f"## study_cost: {args.params} replayed from {args.timings} ({args.reference}) "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"{machine_description()}; alone / paired {args.alone}, proxy post-training {args.proxy_post_s:.0f} s + DeepFool {args.deepfool_s:.0f} s where it runs, "
             f"evaluation per 10,000 images {eval_s} s, measured {measured or 'none'}, "
             f"fixed {args.fixed_s:.0f} s.", "", "| part | predicted wall (min) |", "|---|---|"]
    lines += [f"| {name} | {s / 60:.1f} |" for name, s in parts]
    lines += [f"| **predicted `dvc repro`** | **{total / 60:.0f}** |", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
