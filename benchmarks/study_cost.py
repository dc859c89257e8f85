"""Size the study before launching it: the wall time of `dvc repro` of a params file, part by part (proxies,
training by family, evaluation, the rest), predicted from seconds measured on this machine or replayed from a
finished run, and laid out as the pipeline runs its stages. Prints a table; --out appends it to reports/benchmarks.md.

    python -m benchmarks.study_cost --params params-study-v2.yaml            # measure here (a few minutes), predict
    python -m benchmarks.study_cost --params params-study-v2.yaml --epochs 2 # more epochs measured (less noise)
    python -m benchmarks.study_cost --params params-study-v2.yaml \
        --timings ../study-run/runs/timings --reference params-study.yaml      # replay a finished run's timings

Measured (the default, `measure`): through the package's own functions, alone on every core: per training mode of
the profile's runs, --epochs epochs on the coreset of its smallest fraction and one evaluation of that model; per
proxy architecture, an epoch with its AIGN tracking; an ACS re-selection and a DeepFool pass on 512 images; each
scaled linearly to the study's sizes (`rate_run_seconds`: a run's sample-epochs, ACS by its schedule).

--timings: the per-run seconds a finished run of the --reference profile measured (its runs/timings: proxies one after
another; each training group's runs `runtime.concurrent` at once), scaled by the epochs each run trains; the
evaluation is given (--eval-s: seconds per 10,000 test images, measured, see reports/benchmarks.md).

Either way `predict` lays the runs out as this profile's stages: proxies one after another; a training stage of n
runs on w workers takes (n - n % w) / w paired runs plus its tail (group.py: one left-over run trains alone on every
core, --alone x a paired run's time, measured); evaluations the same way. The stage starts, AutoAttack and the reports
are given (--fixed-s). It is a prediction: the README states the study's measured wall time.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
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
    ap.add_argument("--alone", type=float, default=None,
                    help="a run alone on every core / the same run paired (default: measured here in the measured "
                         "mode; 0.62 in a replay, measured on study 1's CPU: TRADES on 5,000 images)")
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
                    help="seconds outside the runs: check, prepare, select, stage starts, AutoAttack, reports "
                         "(default: study 2's, measured on its bf16 CPU)")
    ap.add_argument("--compare", default=None,
                    help="measured mode: a finished run of this profile's runs/timings, each group's median run "
                         "seconds printed beside the predicted ones")
    ap.add_argument("--n", type=int, default=0,
                    help="measured mode: training images per measured epoch (0: the coreset of the smallest fraction)")
    args = ap.parse_args(argv)
    if args.timings:
        return _replay(args)
    return _measure(args)


def _measure(args) -> int:
    """The measured mode: rates taken on this machine (`measure`), laid out by `predict` as the replay lays out a
    reference run's seconds."""
    from easycore.config import load_params
    from easycore.pipeline import runs

    P = load_params(args.params)
    groups = runs.expected_groups(P)
    m = measure(P, epochs=args.epochs, n=args.n, paired=args.alone is None)
    alone = args.alone or m.alone or 0.62
    parts = predict(P, run_s=rate_run_seconds(P, m, alone=alone), proxy_s=lambda name: m.proxy_s[name],
                    eval_s=m.eval_s, alone=alone, fixed_s=args.fixed_s, proxy_post_s=m.proxy_post_s,
                    deepfool_s=m.deepfool_s)
    d, t = P.data, P.train
    lines = [f"{d.dataset} {m.n_train} training images, {t.model} {t.epochs} epochs, "
             f"{sum(len(v) for v in groups.values())} training runs in {len(groups)} groups, "
             f"{P.runtime.concurrent or 1} worker(s); rates from {args.epochs} epoch(s) on {m.n_measured} images "
             f"per mode, alone on every core; alone / paired {alone:.2f} "
             f"({'given' if args.alone else 'measured here' if m.alone else 'not measured'}); "
             f"fixed {args.fixed_s:.0f} s (given).", "",
             "| measured here | seconds |", "|---|---|"]
    lines += [f"| train, {mode}, per 1,000 sample-epochs | {1000 * r:.2f} |" for mode, r in m.rate.items()]
    lines += [f"| ACS re-selection ({mode}), per 1,000 images | {1000 * r:.2f} |" for mode, r in m.select_rate.items()]
    lines += [f"| evaluate one {mode} model, per 10,000 test images | {s:.0f} |" for mode, s in m.eval_s.items()]
    lines += [f"| proxy {name}: training, {P.proxy.epochs} epochs with AIGN {P.proxy.aign.mode} | {s:.0f} |"
              for name, s in m.proxy_s.items()]
    lines += [f"| proxy: features and test accuracy | {m.proxy_post_s:.0f} |",
              f"| proxy: DeepFool over the training set (where it runs) | {m.deepfool_s:.0f} |", ""]
    lines += _parts_table(parts)
    if args.compare:
        lines += compare(P, m, args.compare, alone=alone)
    _emit(f"study_cost: {args.params} measured here", lines, args.out)
    return 0


def _parts_table(parts: list[tuple[str, float]]) -> list[str]:
    """Markdown lines: each part's predicted wall minutes and their total."""
    return (["| part | predicted wall (min) |", "|---|---|"] + [f"| {name} | {s / 60:.1f} |" for name, s in parts]
            + [f"| **predicted `dvc repro`** | **{sum(s for _, s in parts) / 60:.0f}** |"])


def _emit(title: str, lines: list[str], out: Optional[str]) -> None:
    """Print the section (with the machine line); append it, dated, to `out` (benchmarks._report.append_section)."""
    from benchmarks._report import append_section, machine_description

    body = "\n".join(lines)
    print(f"## {title}\n\nMachine: {machine_description()}\n\n{body}")
    if out:
        append_section(out, title, body)


def compare(P, m: "Rates", timings, *, alone: float) -> list[str]:
    """Markdown lines: each proxy run and training group of P, the seconds predicted from the rates beside the median
    seconds a finished run of P logged (runs/timings), and their ratio."""
    from pathlib import Path

    from easycore.pipeline import runs

    timings, run_s = Path(timings), rate_run_seconds(P, m, alone=alone)
    rows = [(f"proxy {name}", m.proxy_s[name], _median_s(timings / "proxy", name))
            for name in ["main"] + list(P.proxy.transfer_models)]
    rows += [(f"{g.scores}/{g.method}-{g.fraction}-{g.mode}", run_s(g),
              _median_s(timings / "train" / g.scores, f"{g.method}-{g.fraction}-{g.mode}"))
             for g in runs.expected_groups(P)]
    out = ["", f"Against {timings} (a finished run of this profile; median per group):", "",
           "| run | predicted s | logged s | predicted / logged |", "|---|---|---|---|"]
    for name, pred, got in rows:
        out.append(f"| {name} | {pred:.1f} | {'-' if got is None else f'{got:.1f}'} | "
                   f"{'-' if not got else f'{pred / got:.2f}'} |")
    return out + [""]


@dataclasses.dataclass
class Rates:
    """What `measure` took on this machine, alone on every core: seconds per training sample-epoch (rate) and per
    image of an ACS re-selection (select_rate), by mode; one evaluation per 10,000 test images by mode; each proxy
    run's training; a proxy's features + test accuracy pass and its DeepFool pass."""
    n_train: int
    n_measured: int
    rate: dict
    select_rate: dict
    eval_s: dict
    proxy_s: dict
    proxy_post_s: float
    deepfool_s: float
    alone: Optional[float] = None


def _train_in_worker(job) -> float:
    """Seconds of one training run in a worker process on `threads` threads (`measure`'s runs at once, as group.py
    runs a group's runs: cores // workers threads each)."""
    import torch

    from easycore.core.train import train

    cfg, sub, mode, runtime, threads = job
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    train(cfg, sub, mode=mode, seed=0, runtime=runtime, progress=False)
    return time.perf_counter() - t0


def measure(P, *, epochs: int = 1, n: int = 0, paired: bool = True) -> Rates:
    """Rates of params P on this machine, through the package's own functions: per training mode of its runs,
    `epochs` epochs on n training images (default: the coreset of the smallest fraction) and one evaluation of that
    model on eval.n_test test images (the mode's eps, survivors as the profile says: a model of few epochs is
    weaker, so this is a lower bound where attacks stop early); per proxy architecture, one epoch with its AIGN
    tracking; an ACS re-selection and DeepFool on 512 images. Scaled linearly to the study's sizes. paired (and
    runtime.concurrent > 1): the training of the mode with the most runs again, runtime.concurrent copies at once
    with group.py's threads per worker, for `alone` (a run alone on every core / the same run paired)."""
    import numpy as np
    import torch

    from easycore.core.acs import score_and_select
    from easycore.core.aign import AIGNTracker
    from easycore.core.attacks import deepfool_distance
    from easycore.core.coresets import budget
    from easycore.core.evaluate import evaluate_model, test_positions
    from easycore.core.runtime import resolve_device, use_amp
    from easycore.core.train import train
    from easycore.data.loaders import load_dataset
    from easycore.pipeline import runs

    d = P.data
    tr = load_dataset(d.dataset, "train", d.resolved_root(), n_per_class=d.n_per_class, seed=d.seed)
    te = load_dataset(d.dataset, "test", d.resolved_root(), n_per_class=d.test_n_per_class, seed=d.seed)
    fractions = list(P.coreset.fractions) + list(P.coreset.survey_fractions or [])
    n = min(len(tr), n or budget(min(fractions), len(tr)))
    sub = tr.subset(np.sort(np.random.default_rng(0).permutation(len(tr))[:n]))
    few = sub.subset(np.arange(min(512, n)))
    device = resolve_device(P.runtime.device)
    amp = use_amp(P.runtime, device)
    cfg = dataclasses.replace(P.train, epochs=epochs)
    pos = test_positions(te.labels, min(P.eval.n_test, len(te)))
    x_te, y_te = te.x[pos].to(device), te.y[pos].to(device)
    groups = runs.expected_groups(P)
    modes = list(dict.fromkeys(g.mode for g in groups))            # in the pipeline's order
    adaptive_modes = {g.mode for g in groups if g.method in P.coreset.adaptive}
    rate, select_rate, eval_s = {}, {}, {}
    for mode in modes:
        t0 = time.perf_counter()
        net = train(cfg, sub, mode=mode, seed=0, runtime=P.runtime, progress=False).model
        rate[mode] = (time.perf_counter() - t0) / (n * epochs)
        print(f"study_cost: {mode}: {1000 * rate[mode]:.2f} s per 1,000 sample-epochs", file=sys.stderr, flush=True)
        e = P.eval.for_mode(mode)
        eval_s[mode] = _seconds(lambda: evaluate_model(net, x_te, y_te, e, progress=False, amp=amp)) * 10000 / len(pos)
        print(f"study_cost: {mode}: evaluation {eval_s[mode]:.0f} s per 10,000 test images", file=sys.stderr,
              flush=True)
        if mode in adaptive_modes:
            a = P.train.attack
            batches = [(few.x[i:i + 256].to(device).float() / 255, few.y[i:i + 256].to(device),
                        np.arange(i, min(i + 256, len(few)))) for i in range(0, len(few), 256)]
            select_rate[mode] = _seconds(lambda: score_and_select(
                net, batches, method="craig", fraction=0.1, per_batch=P.coreset.acs.per_batch, batch_size=128,
                mode=mode, eps=a.eps, alpha=a.alpha, steps=a.steps, beta=a.beta, amp=amp)) / len(few)
    proxy_s, net = {}, None
    for name in ["main"] + list(P.proxy.transfer_models):
        pc = dataclasses.replace(P.proxy.as_train(P.proxy.model_of(name)), epochs=1)
        tracker = AIGNTracker(n=n, mode=P.proxy.aign.mode, every=P.proxy.aign.every, epochs=1)
        t0 = time.perf_counter()
        res = train(pc, sub, mode="standard", seed=0, runtime=P.runtime, tracker=tracker,
                    aign_batch_size=P.proxy.aign.batch_size, progress=False)
        proxy_s[name] = (time.perf_counter() - t0) / n * len(tr) * P.proxy.epochs
        net = net or res.model.eval()
        print(f"study_cost: proxy {name}: {proxy_s[name]:.0f} s of training", file=sys.stderr, flush=True)
    xf = few.x.to(device).float() / 255
    with torch.no_grad():
        post = _seconds(lambda: net.features(xf))
    deepfool = _seconds(lambda: deepfool_distance(net, xf, steps=P.proxy.deepfool_steps, amp=amp,
                                                  num_classes=P.proxy.deepfool_candidates or None))
    scale = len(tr) / len(few)
    alone, w = None, P.runtime.concurrent or 1
    if paired and w > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from easycore.pipeline.group import _threads_for

        bulk = max(modes, key=lambda mode: sum(len(v) for g, v in groups.items() if g.mode == mode))
        job = (cfg, sub, bulk, P.runtime, _threads_for(w))
        with ProcessPoolExecutor(w, mp_context=mp.get_context("spawn")) as pool:   # a worker that dies: an error
            each = list(pool.map(_train_in_worker, [job] * w))
        alone = rate[bulk] * n * epochs / (sum(each) / w)
        print(f"study_cost: {bulk}: {w} runs at once on {_threads_for(w)} thread(s) each, {sum(each) / w:.0f} s "
              f"each; alone / paired {alone:.2f}", file=sys.stderr, flush=True)
    return Rates(len(tr), n, rate, select_rate, eval_s, proxy_s, post * (scale + len(te) / len(few)), deepfool * scale,
                 alone)


def rate_run_seconds(P, m: Rates, *, alone: float):
    """run_s for `predict` from measured rates: a run's sample-epochs (a static coreset: its budget x train.epochs;
    the full-data reference: every image x its epochs; ACS: its schedule's epochs, acs.acs_plan, plus a
    re-selection over every image per 'select') x the rate of its mode, as a paired run (/ alone) where runs
    train two or more at once."""
    from easycore.core.acs import acs_plan, partial_share
    from easycore.core.coresets import budget
    from easycore.pipeline import runs

    t, n = P.train, m.n_train
    paired = (P.runtime.concurrent or 1) > 1

    def run_s(g) -> float:
        if g.method == runs.FULL:
            s = m.rate[g.mode] * n * (t.full_epochs or t.epochs)
        elif g.scores == runs.NONE:
            c = P.coreset.acs
            plan = acs_plan(t.epochs, g.fraction, kappa=c.kappa, R=c.every, warmup="exact")
            per = {"full": n, "partial": partial_share(t.epochs, g.fraction, c.kappa) * n, "skip": 0,
                   "select": budget(g.fraction, n), "coreset": budget(g.fraction, n)}
            s = m.rate[g.mode] * sum(per[k] for k in plan) + m.select_rate[g.mode] * n * plan.count("select")
        else:
            s = m.rate[g.mode] * budget(g.fraction, n) * t.epochs
        return s / alone if paired else s
    return run_s


def _median_s(folder, stem: str):
    """The median of the training seconds of <folder>/<stem>-s<seed>.json (None when there is none): `seconds`, or
    a proxy's `training_seconds` where it logged one (its `seconds` then include the features / DeepFool pass)."""
    import json
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


def predict(P, *, run_s, proxy_s, eval_s: dict, alone: float, fixed_s: float, proxy_post_s: float = 0.0,
            deepfool_s: float = 0.0) -> list[tuple[str, float]]:
    """[(part, wall seconds)] of `dvc repro` of params P, the runs laid out as its stages run them. run_s(group):
    seconds of one run of that training group, paired where runs train two or more at once (runtime.concurrent);
    proxy_s(name): one proxy run's training alone on every core, the proxies one after another
    (stages.proxy_all), each replicate adding proxy_post_s and, where runs.needs_deepfool, deepfool_s; a training
    stage of n runs on w workers `stage_wall`, its evaluation stage likewise from eval_s[mode] (one evaluation of
    10,000 test images alone on every core, scaled by the group's test images); fixed_s: the rest."""
    from easycore.pipeline import runs

    parts: dict[str, float] = {}
    for name in ["main"] + list(P.proxy.transfer_models):
        per = proxy_s(name)
        parts["proxies"] = parts.get("proxies", 0.0) + sum(
            per + proxy_post_s + (deepfool_s if runs.needs_deepfool(P, name, s) else 0.0)
            for s in runs.proxy_seeds(P, name))
    w = P.runtime.concurrent or 1
    evaluation = 0.0
    for g, members in runs.expected_groups(P).items():
        primary = P.is_primary_group(g.scores, g.method, g.fraction)
        part = "training: full data" if g.method == runs.FULL else "training: ACS" if g.scores == runs.NONE else \
            "training: primary" if primary else "training: secondary"
        parts[part] = parts.get(part, 0.0) + stage_wall(len(members), w, run_s(g), alone)
        eval_alone = eval_s[g.mode] * P.eval.n_for(primary) / 10000
        evaluation += stage_wall(len(members), w, eval_alone / alone if w > 1 else eval_alone, alone)
    parts["evaluation"] = evaluation
    parts["fixed (check, prepare, select, stage starts, AutoAttack, reports)"] = fixed_s
    return list(parts.items())


def replay(P, ref, timings, *, alone: float, eval_s: dict, fixed_s: float,
           measured: Optional[dict] = None, proxy_post_s: float = 0.0,
           deepfool_s: float = 0.0) -> list[tuple[str, float]]:
    """`predict` of params P from the runs/timings of a finished run of params `ref` (module docstring). A training
    run the reference did not make takes the median of the reference's static runs of its fraction and mode; the
    training runs are taken to run as many at once as in the reference (its runtime.concurrent). `measured`:
    {"<scores>/<method>-<fraction>-<mode>": seconds} of this profile's own runs (one thread, two at once), used as
    they are. A proxy's timing is its training."""
    from pathlib import Path

    from easycore.pipeline import runs

    timings = Path(timings)
    ref_keys = {(r.method, r.fraction, r.mode) for r in runs.expected_runs(ref)}

    def proxy_s(name: str) -> float:
        per = _median_s(timings / "proxy", name)
        if per is None:
            raise SystemExit(f"no proxy timings for {name!r} under {timings / 'proxy'}")
        return per * P.proxy.epochs / ref.proxy.epochs

    def run_s(g) -> float:
        stem = f"{g.method}-{g.fraction}-{g.mode}"
        per = _median_s(timings / "train" / g.scores, stem)
        if per is None:
            alike = [_median_s(timings / "train" / "main", f"{m}-{g.fraction}-{g.mode}") for m, f, mode in ref_keys
                     if f == g.fraction and mode == g.mode]
            alike = [x for x in alike if x is not None]
            if not alike:
                raise SystemExit(f"no timings to stand in for {stem}")
            per = statistics.median(alike)   # the same median as _median_s
        per *= (P.train.full_epochs or P.train.epochs) / (ref.train.full_epochs or ref.train.epochs) \
            if g.method == runs.FULL else P.train.epochs / ref.train.epochs
        return (measured or {}).get(f"{g.scores}/{stem}", per)

    return predict(P, run_s=run_s, proxy_s=proxy_s, eval_s=eval_s, alone=alone, fixed_s=fixed_s,
                   proxy_post_s=proxy_post_s, deepfool_s=deepfool_s)


def _replay(args) -> int:
    from easycore.config import load_params

    P, ref = load_params(args.params), load_params(args.reference)
    eval_s = {k: float(v) for k, v in (kv.split("=") for kv in args.eval_s.split(","))}
    measured = {k: float(v) for k, v in (kv.split("=") for kv in args.measured)}
    args.alone = args.alone or 0.62
    parts = replay(P, ref, args.timings, alone=args.alone, eval_s=eval_s, fixed_s=args.fixed_s, measured=measured,
                   proxy_post_s=args.proxy_post_s, deepfool_s=args.deepfool_s)
    lines = [f"alone / paired {args.alone}, proxy post-training {args.proxy_post_s:.0f} s + DeepFool "
             f"{args.deepfool_s:.0f} s where it runs, evaluation per 10,000 images {eval_s} s, measured "
             f"{measured or 'none'}, fixed {args.fixed_s:.0f} s.", ""] + _parts_table(parts)
    _emit(f"study_cost: {args.params} replayed from {args.timings} ({args.reference})", lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
