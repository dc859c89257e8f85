"""The regime a profile's coreset models train in: clean accuracy, overall and of the weakest class, of uniform random
coresets of the whole training set, per training variant, mode and seed (issue 31 item 1: models that have learned).

    python -m benchmarks.regime [--params params-study-v2.yaml] [--seeds 3] [--variants aug10,noaug10,noaug8]
                                [--full] [--workers 2] [--quick]

Each job trains `cnn_tiny` (the profile's train settings, bf16 as the profile says) with `easycore.core.train.train`
on a uniform random coreset (fraction 0.1 of all 50,000 CIFAR-10 training images, redrawn per seed: seed 1000 + s)
and measures clean accuracy on all 10,000 test images, per class. A variant is a name `aug<E>` / `noaug<E>`: the
profile's training with augmentation on / off and E epochs. --full adds the full-data reference (all 50,000 images,
no augmentation, train.full_epochs, one seed per mode). The jobs run in --workers processes of one thread each, the
study's layout, so the seconds are the study's per-run seconds. Reported: every run, and per variant and mode the
mean clean accuracy and the weakest class over the seeds, against the issue's conditions (random coresets >= 45 % /
35 % clean, no class below 15 %; full data >= 65 % / 50 %).
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import re
import statistics
import time

from benchmarks._common import REPO, base_parser, data_root, publish, table

FLOOR = 15.0
MEAN = {"standard": 45.0, "trades": 35.0}
FULL = {"standard": 65.0, "trades": 50.0}


def _variant(name: str) -> tuple[bool, int]:
    m = re.fullmatch(r"(no)?aug(\d+)", name)
    if not m:
        raise SystemExit(f"variant {name!r}: expected aug<E> or noaug<E> (augmentation on / off, E epochs)")
    return m.group(1) is None, int(m.group(2))


_DATA: dict = {}


def _data(name: str, root: str, quick: bool):
    """(train, test) of this worker process, loaded once."""
    from easycore.data.loaders import load_dataset

    if name not in _DATA:
        _DATA[name] = (load_dataset(name, "train", root, n_per_class=20 if quick else None, seed=0),
                       load_dataset(name, "test", root, n_per_class=10 if quick else None, seed=0))
    return _DATA[name]


def _job(job: tuple) -> dict:
    params_path, root, quick, variant, mode, seed, full = job
    import torch

    torch.set_num_threads(1)
    from easycore.config import load_params
    from easycore.core.train import train

    P = load_params(params_path)
    tr, te = _data("synthetic" if quick else P.data.dataset, root, quick)
    augment, epochs = (False, P.train.full_epochs or P.train.epochs) if full else _variant(variant)
    if quick:
        epochs = 1
    if full:
        sub = tr
    else:
        g = torch.Generator().manual_seed(1000 + seed)
        sub = tr.subset(torch.randperm(len(tr), generator=g)[:len(tr) // 10].sort().values.numpy())
    cfg = dataclasses.replace(P.train, augment=augment, epochs=epochs)
    t0 = time.perf_counter()
    net = train(cfg, sub, mode=mode, seed=seed, runtime=P.runtime, progress=False).model.eval()
    seconds = time.perf_counter() - t0
    x, y = te.x, te.y
    with torch.no_grad():
        pred = torch.cat([net(x[i:i + 1000].float() / 255).argmax(1) for i in range(0, len(x), 1000)])
    per = [100 * (pred[y == c] == c).float().mean().item() for c in range(int(y.max()) + 1)]
    weakest = min(range(len(per)), key=per.__getitem__)
    return {"variant": "full" if full else variant, "mode": mode, "seed": seed, "n": len(sub), "epochs": epochs,
            "seconds": seconds, "clean": 100 * (pred == y).float().mean().item(),
            "weakest": f"{te.info.classes[weakest]} {per[weakest]:.1f}", "weakest_pct": per[weakest]}


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--params", default=str(REPO / "params-study-v2.yaml"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", default="aug10,noaug10,noaug8")
    ap.add_argument("--modes", default="standard,trades")
    ap.add_argument("--full", action="store_true", help="also the full-data reference (no augmentation)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = "" if args.quick else str(REPO / "reports" / "benchmarks.md")
    if args.quick:
        args.seeds = 1
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        _variant(v)
    modes = args.modes.split(",")
    root = "." if args.quick else str(data_root())
    jobs = [(args.params, root, args.quick, v, m, s, False) for v in variants for m in modes for s in range(args.seeds)]
    if args.full:
        jobs = [(args.params, root, args.quick, "full", m, 0, True) for m in modes[::-1]] + jobs   # longest first
    with mp.get_context("spawn").Pool(args.workers) as pool:
        rows = []
        for r in pool.imap(_job, jobs):
            rows.append(r)
            print(f"regime: {r['variant']} {r['mode']} s{r['seed']}: {r['clean']:.1f} % clean, weakest class "
                  f"{r['weakest']} % ({r['seconds']:.0f} s)", flush=True)
    runs_table = table(["variant", "mode", "seed", "images", "epochs", "s (1 thread, 2 at once)", "clean %",
                        "weakest class %"],
                       [[r["variant"], r["mode"], r["seed"], r["n"], r["epochs"], f"{r['seconds']:.0f}",
                         f"{r['clean']:.1f}", r["weakest"]] for r in rows])
    summary = []
    for v in (["full"] if args.full else []) + variants:
        for m in modes:
            cell = [r for r in rows if r["variant"] == v and r["mode"] == m]
            if not cell:
                continue
            mean = statistics.mean(r["clean"] for r in cell)
            low = min(r["weakest_pct"] for r in cell)
            need = FULL[m] if v == "full" else MEAN[m]
            holds = mean >= need and (v == "full" or low >= FLOOR)
            summary.append([v, m, len(cell), f"{mean:.1f}", f"{low:.1f}",
                            f">= {need:.0f} %" + ("" if v == "full" else f", no class < {FLOOR:.0f} %"),
                            "met" if holds else "NOT met", f"{statistics.mean(r['seconds'] for r in cell):.0f}"])
    body = (f"Uniform random coresets (fraction 0.1 of all 50,000 CIFAR-10 training images, redrawn per seed) trained "
            f"with the training settings of `{args.params.split('/')[-1]}` (cnn_tiny, bf16 autocast, TRADES beta 6 "
            f"with 3 steps), augmentation on (aug) or off (noaug) for the given epochs; clean accuracy on all 10,000 test "
            f"images; {args.workers} runs at once, one thread each.\n\n"
            + table(["variant", "mode", "seeds", "mean clean %", "weakest class % (any seed)", "condition", "",
                     "mean s"], summary) + "\n\n" + runs_table)
    publish(args, "Regime: clean accuracy and weakest class of random coresets, by training variant (issue 31)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
