"""What an ACS run costs next to a static coreset run of the same fraction, and where its time goes.

    python -m benchmarks.acs_cost [--params params-study-v2.yaml] [--n 10000] [--fp32] [--ops] [--quick]

Two runs at once, one thread each (the study's layout): ACS with CRAIG (`acs_craig`, the profile's coreset.acs
settings: a partial warm-up epoch, re-selections from the full set) and a uniform random coreset of the same
fraction (coreset.adaptive_fractions[0]), both TRADES with the profile's train settings, on the first --n images of
the class-balanced CIFAR-10 training set (a selection scores all n, through the loader the pipeline's ACS runs use:
stages.make_loader, batch 256). Reported: each run's seconds, its sample-forward
and -backward passes, and its seconds by piece (optimiser steps, re-selections: stages.pieces_of); the ratio of the
times beside the ratio of the passes. Where the time ratio is far above the pass ratio, a pass costs more inside
ACS than in plain training (study 1's ACS runs took ~10x a plain TRADES run for ~3x its passes, on a bf16 CPU).
bf16 as the profile says (--fp32: runtime.cpu_bf16 off). --ops adds, op by op, one re-selection next to one TRADES
training epoch on the same 2,560 images (torch.profiler, one thread): which operators a re-selection spends its time
in where a pass there costs more than in training.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time

from benchmarks._common import REPO, base_parser, data_root, publish, table


def _setup(params_path: str, root: str, quick: bool, fp32: bool, n: int):
    """The profile (bf16 off with --fp32, and always with --quick: fast anywhere) and the first n class-balanced
    training images (synthetic with --quick)."""
    from easycore.config import load_params
    from easycore.data.loaders import load_dataset

    P = load_params(params_path, ["runtime.cpu_bf16=false"] if fp32 or quick else [])
    tr = load_dataset("synthetic" if quick else P.data.dataset, "train", root, n_per_class=max(1, n // 10), seed=0)
    return P, tr


def _job(job: tuple) -> dict:
    params_path, root, quick, which, n, fp32 = job
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from easycore.core.acs import schedule_callback
    from easycore.core.train import train
    from easycore.pipeline.stages import make_loader, pieces_of

    P, tr = _setup(params_path, root, quick, fp32, n)
    fraction = (P.coreset.adaptive_fractions or P.coreset.fractions)[0]
    if quick:   # 3 epochs: a partial warm-up epoch, a re-selection, a coreset epoch (the schedule reads P.train)
        P = dataclasses.replace(P, train=dataclasses.replace(P.train, epochs=3))
    cfg = P.train
    dev = torch.device("cpu")
    t0 = time.perf_counter()
    if which == "acs_craig":
        score = make_loader(P, tr, batch_size=256, shuffle=False, augment=False, seed=0, device=dev, shard=False)
        cb = schedule_callback(P, "acs_craig", fraction, np.asarray(tr.labels), score, mode="trades", seed=0)
        res = train(cfg, tr, mode="trades", seed=0, runtime=P.runtime, callbacks=[cb], progress=False)
    else:
        g = torch.Generator().manual_seed(0)
        keep = max(1, round(fraction * len(tr)))
        sub = tr.subset(torch.randperm(len(tr), generator=g)[:keep].sort().values.numpy())
        res = train(cfg, sub, mode="trades", seed=0, runtime=P.runtime, progress=False)
    return {"run": which, "n": len(tr), "seconds": time.perf_counter() - t0, "counts": res.counts,
            "pieces": pieces_of(res), "epochs": [round(s, 1) for s in res.epoch_seconds],
            "schedule": [h.get("schedule", "") for h in res.history]}


def op_profile(params_path: str, root: str, quick: bool, fp32: bool, n: int = 2560) -> str:
    """Where a re-selection's time goes next to a training epoch's, op by op (torch.profiler, one thread): one
    re-selection (`score_and_select`, batch 256, as the pipeline scores) and one TRADES epoch (batch 128) over the
    same n images; ms per image and the top operators of each by self time."""
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    from easycore.core.acs import score_and_select
    from easycore.core.train import train, use_amp
    from easycore.pipeline.stages import make_loader

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        P, tr = _setup(params_path, root, quick, fp32, n)
        cfg = dataclasses.replace(P.train, epochs=1)
        a, dev = cfg.attack, torch.device("cpu")
        out = []
        prof_train = profile(activities=[ProfilerActivity.CPU])
        with prof_train:
            t0 = time.perf_counter()
            net = train(cfg, tr, mode="trades", seed=0, runtime=P.runtime, progress=False).model
            t_train = time.perf_counter() - t0
        score = make_loader(P, tr, batch_size=256, shuffle=False, augment=False, seed=0, device=dev, shard=False)
        prof_sel = profile(activities=[ProfilerActivity.CPU])
        with prof_sel:
            t0 = time.perf_counter()
            score_and_select(net, score, method="craig", fraction=0.1, labels=np.asarray(tr.labels), per_batch=True,
                             batch_size=128, mode="trades", eps=a.eps, alpha=a.alpha, steps=a.steps, beta=a.beta,
                             seed=0, amp=use_amp(P.runtime, dev))
            t_sel = time.perf_counter() - t0
        for name, prof, sec in (("one TRADES training epoch (batch 128)", prof_train, t_train),
                                ("one re-selection (batch 256)", prof_sel, t_sel)):
            rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
            total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1
            out.append(f"{name}: {1000 * sec / len(tr):.2f} ms per image ({len(tr)} images, one thread)\n\n"
                       + table(["operator", "calls", "self ms", "share"],
                               [[e.key, e.count, f"{e.self_cpu_time_total / 1000:.0f}",
                                 f"{100 * e.self_cpu_time_total / total:.0f} %"] for e in rows]))
        return "\n\n".join(out)
    finally:
        torch.set_num_threads(before)


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--params", default=str(REPO / "params-study-v2.yaml"))
    ap.add_argument("--n", type=int, default=10000, help="training images (class-balanced) the ACS run selects from")
    ap.add_argument("--fp32", action="store_true", help="runtime.cpu_bf16 off (the profile's bf16 otherwise)")
    ap.add_argument("--ops", action="store_true", help="also profile one re-selection and one training epoch "
                    "op by op (2,560 images, one thread)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = "" if args.quick else str(REPO / "reports" / "benchmarks.md")
    n = 200 if args.quick else args.n
    root = "." if args.quick else str(data_root())
    jobs = [(args.params, root, args.quick, w, n, args.fp32) for w in ("acs_craig", "random")]
    with mp.get_context("spawn").Pool(2) as pool:
        rows = pool.map(_job, jobs)
    acs, rnd = rows
    for r in rows:
        print(f"acs_cost: {r['run']}: {r['seconds']:.1f} s, {r['counts']['forward']} forward / "
              f"{r['counts']['backward']} backward passes; epochs {r['epochs']}", flush=True)
    ratio = (f"ACS / random: time {acs['seconds'] / rnd['seconds']:.2f}x, forward passes "
             f"{acs['counts']['forward'] / rnd['counts']['forward']:.2f}x, backward passes "
             f"{acs['counts']['backward'] / rnd['counts']['backward']:.2f}x")
    body = (f"`{args.params.split('/')[-1]}`'s training (TRADES, {'fp32' if args.fp32 or args.quick else 'its bf16 setting'}), "
            f"two runs at once on one thread each: ACS (CRAIG) selecting from {acs['n']} class-balanced CIFAR-10 "
            f"training images and a uniform random coreset of the same fraction.\n\n"
            + table(["run", "s", "forward passes", "backward passes", "by piece (s)", "epoch s (schedule)"],
                    [[r["run"], f"{r['seconds']:.1f}", r["counts"]["forward"], r["counts"]["backward"],
                      ", ".join(f"{k} {v:.1f}" for k, v in r["pieces"].items()),
                      " ".join(f"{s}{'/' + k if k else ''}" for s, k in zip(r["epochs"], r["schedule"]))]
                     for r in rows])
            + f"\n\n- {ratio}\n"
            + ("\n" + op_profile(args.params, root, args.quick, args.fp32, n=200 if args.quick else 2560) + "\n"
               if args.ops else ""))
    publish(args, "ACS cost: an ACS run vs a static coreset run of the same fraction, by piece", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
