"""bf16 autocast on the CPU against fp32: the same runs in both precisions, compared with the seed-to-seed spread.

    python -m benchmarks.bf16_agreement [--seeds 3] [--n-test 2000] [--quick]

`runtime.cpu_bf16` changes every number of a run, so a profile may use it only where bf16 and fp32 agree within the
noise a replicate has anyway. This script trains the same runs twice through the pipeline's own functions
(`pipeline.prepare`, `pipeline.train_run`, `pipeline.evaluate_run`), once in fp32 and once with bf16 autocast, at
the study's settings (params-study.yaml: model, epochs, optimiser, TRADES attack, the eval attacks at each mode's
primary eps): a uniform random coreset (fraction 0.1 of the whole training set, redrawn per seed) per seed and
mode, evaluated on a class-balanced subset of the test set (clean, and the worst case over the study's attacks at
the mode's primary eps). Reported per mode: each run's clean and robust accuracy in both precisions, the mean
bf16 - fp32 difference over the seeds with its SD, the seed-to-seed SD of each precision, and the speed-up. The
agreement criterion (issue: "differences within the seed-to-seed spread"): |mean difference| <= the seed-to-seed
SD of fp32, for clean and robust accuracy, per mode.
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import REPO, base_parser, data_root, publish, table


def _params(base: dict, *, bf16: bool, mode: str, n_test: int):
    from easycore.config import params_from_dict

    d = copy.deepcopy(base)
    d["data"].update(root=str(data_root()), n_per_class=None, test_n_per_class=None)
    d["runtime"]["cpu_bf16"] = bf16
    d["runtime"]["concurrent"] = 0
    ev = d["eval"]
    eps = (ev.pop("mode_eps", None) or {}).get(mode, ev["eps"])     # the mode's headline (primary) eps
    ev.update(n_test=n_test, alpha=ev["alpha"] * eps / ev["eps"], eps=eps, eps_grid=[0.0], sanity=False)
    ev.pop("primary_n_test", None)
    return params_from_dict(d)


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--params", default=str(REPO / "params-study.yaml"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--modes", default="standard,trades")
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    import yaml

    from easycore.pipeline import stages as pipeline

    base = yaml.safe_load(Path(args.params).read_text())
    if args.quick:
        base["data"].update(dataset="synthetic")
        base["train"].update(epochs=1, model="cnn_tiny")
        args.seeds, args.n_test = 2, 64
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    rows, summary = [], []
    start = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="bf16-agreement-") as tmp:
        os.chdir(tmp)
        try:
            p0 = _params(base, bf16=False, mode=modes[0], n_test=args.n_test)
            if args.quick:
                p0.data.n_per_class, p0.data.test_n_per_class = 50, 20
            info = pipeline.prepare(p0, Path("prepared"))
            n_train = info["train"]["n"]
            k = max(1, round(args.fraction * n_train))
            res: dict = {}
            for mode in modes:
                for seed in range(args.seeds):
                    idx = np.sort(np.random.default_rng(1000 + seed).choice(n_train, k, replace=False))
                    sel = Path(f"sel/{mode}-s{seed}/indices.npy")
                    sel.parent.mkdir(parents=True, exist_ok=True)
                    np.save(sel, idx.astype(np.int64))
                    for bf16 in (False, True):
                        p = _params(base, bf16=bf16, mode=mode, n_test=args.n_test)
                        out = Path(f"runs/{mode}-s{seed}-{'bf16' if bf16 else 'fp32'}")
                        t0 = time.perf_counter()
                        pipeline.train_run(p, out / "train", mode=mode, seed=seed, indices=sel, prepared=Path("prepared"),
                                           progress=False)
                        t_train = time.perf_counter() - t0
                        t0 = time.perf_counter()
                        m = pipeline.evaluate_run(p, out / "train" / "model.safetensors", out / "eval",
                                                  prepared=Path("prepared"), progress=False)
                        t_eval = time.perf_counter() - t0
                        res[(mode, seed, bf16)] = (100 * m["clean"]["accuracy"], 100 * m["robust"]["accuracy"],
                                                   t_train, t_eval, p.eval.eps)
                        print(json.dumps({"mode": mode, "seed": seed, "bf16": bf16, "clean": res[(mode, seed, bf16)][0],
                                          "robust": res[(mode, seed, bf16)][1], "train_s": round(t_train, 1),
                                          "eval_s": round(t_eval, 1)}), flush=True)
        finally:
            os.chdir(start)
    for mode in modes:
        eps = res[(mode, 0, False)][4]
        for seed in range(args.seeds):
            f, b = res[(mode, seed, False)], res[(mode, seed, True)]
            rows.append([mode, seed, f"{f[0]:.2f}", f"{b[0]:.2f}", f"{b[0] - f[0]:+.2f}", f"{f[1]:.2f}", f"{b[1]:.2f}",
                         f"{b[1] - f[1]:+.2f}", f"{f[2]:.0f}", f"{b[2]:.0f}", f"{f[2] / b[2]:.2f}x"])
        for i, what in ((0, "clean"), (1, f"robust at {eps * 255:.3g}/255")):
            fp = [res[(mode, s, False)][i] for s in range(args.seeds)]
            bf = [res[(mode, s, True)][i] for s in range(args.seeds)]
            diff = [b - f for b, f in zip(bf, fp)]
            sd_f = statistics.stdev(fp) if len(fp) > 1 else float("nan")
            sd_b = statistics.stdev(bf) if len(bf) > 1 else float("nan")
            md = statistics.mean(diff)
            sd_d = statistics.stdev(diff) if len(diff) > 1 else float("nan")
            ok = abs(md) <= sd_f
            summary.append([mode, what, f"{statistics.mean(fp):.2f}", f"{statistics.mean(bf):.2f}", f"{md:+.2f}",
                            f"{sd_d:.2f}", f"{sd_f:.2f}", f"{sd_b:.2f}", "yes" if ok else "NO"])
        speed = statistics.median(res[(mode, s, False)][2] / res[(mode, s, True)][2] for s in range(args.seeds))
        summary[-1].append(f"{speed:.2f}x")
        summary[-2].append("")
    body = (f"Settings of `{Path(args.params).name}` (model, epochs, optimiser, TRADES attack), uniform random coresets "
            f"of {args.fraction:g} of the whole training set (redrawn per seed), {args.seeds} seeds per mode, each run "
            f"trained and evaluated in fp32 and in bf16 autocast (`runtime.cpu_bf16`); evaluation on {args.n_test} "
            f"class-balanced test images: clean, and the worst case over the study's attacks at the mode's primary eps. "
            f"Accuracies in %.\n\n"
            + table(["mode", "seed", "clean fp32", "clean bf16", "diff", "robust fp32", "robust bf16", "diff",
                     "train s fp32", "train s bf16", "speed-up"], rows)
            + "\n\nAgreement: mean bf16 - fp32 difference over the seeds against the seed-to-seed SD (criterion: "
              "|mean difference| <= the fp32 seed-to-seed SD).\n\n"
            + table(["mode", "accuracy", "fp32 mean", "bf16 mean", "mean diff", "SD of diff", "seed SD fp32",
                     "seed SD bf16", "agree", "train speed-up"], summary))
    publish(args, "bf16 autocast against fp32 on the CPU: the study's runs in both precisions", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
