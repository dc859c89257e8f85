"""Profile one demo-proxy epoch on CPU (training + AIGN tracking): top ops by self CPU time.

    python -m benchmarks.profile_epoch [--model M] [--n-per-class K] [--out reports/profile_epoch.md] [--quick]

The defaults are the demo proxy of params.yaml (model, batch size, subset size, AIGN mode and batch).
Runs `easycore.core.train.train` for 1 epoch with that AIGNTracker under torch.profiler (CPU activities, plus
CUDA when the device is a GPU) after an untimed warm-up epoch, and WRITES (overwrites) a Markdown
report: the wall time, the share of self CPU time of the top ops, and torch's table.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks._common import REPO, base_parser, demo_settings, load_data, session, table


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.set_defaults(default_out=str(REPO / "reports" / "profile_epoch.md"))
    demo = demo_settings()
    ap.set_defaults(dataset=demo["dataset"])
    ap.add_argument("--model", default=demo["model"])
    ap.add_argument("--n-per-class", type=int, default=demo["n_per_class"])
    ap.add_argument("--batch-size", type=int, default=demo["batch_size"])
    ap.add_argument("--aign-mode", default=demo["aign_mode"], choices=["exact", "inline", "both", "off"])
    ap.add_argument("--aign-batch-size", type=int, default=demo["aign_batch_size"])
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    args.demo_source = demo["source"]
    if args.quick:
        args.model, args.n_per_class, args.batch_size, args.aign_batch_size, args.top = "cnn_tiny", 4, 20, 40, 10
    with session(args) as device:
        return _run(args, device)


def _run(args, device) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks._report import machine_description
    from easycore.core.aign import AIGNTracker
    from easycore.config import OptimConfig, RuntimeConfig, TrainConfig
    from easycore.core.train import train

    ds, data_desc = load_data(args.dataset, args.n_per_class, quick=args.quick)
    cfg = TrainConfig(model=args.model, epochs=1, batch_size=args.batch_size, augment=True,
                      optim=OptimConfig(lr=0.05, schedule="onecycle"))
    runtime = RuntimeConfig(device=device.type)

    def epoch():
        tr = AIGNTracker(n=len(ds), mode=args.aign_mode, epochs=1)
        return train(cfg, ds, runtime=runtime, tracker=tr, aign_batch_size=args.aign_batch_size, progress=False)

    epoch()  # warm-up (oneDNN primitive caches, allocator)
    t0 = time.perf_counter()
    epoch()
    plain_wall = time.perf_counter() - t0
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=acts, record_shapes=False) as prof:
        res = epoch()
    prof_wall = time.perf_counter() - t0
    ka = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in ka) or 1.0
    top = sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    rows = [[e.key, e.count, e.self_cpu_time_total / 1e3, f"{100 * e.self_cpu_time_total / total_self:.1f}%"] for e in top]
    top5 = sum(e.self_cpu_time_total for e in top[:5]) / total_self
    torch_table = ka.table(sort_by="self_cpu_time_total", row_limit=args.top)
    n_batches = -(-len(ds) // args.batch_size)
    title = f"Profile: one demo epoch on {device.type}" + (" [--quick smoke run: NOT meaningful]" if args.quick else "")
    text = "\n".join([
        f"# {title}",
        "",
        f"Machine: {machine_description()}",
        "",
        f"`train` 1 epoch, {args.model}, {data_desc}, batch {args.batch_size} ({n_batches} steps, augment on), AIGN "
        f"mode {args.aign_mode} (exact-pass batch {args.aign_batch_size}); settings from {args.demo_source}; "
        f"written by `python -m benchmarks.profile_epoch`.",
        "",
        f"- wall time of the epoch: {plain_wall:.3f} s unprofiled, {prof_wall:.3f} s under the profiler "
        f"(ratio profiled/unprofiled {prof_wall / plain_wall:.2f}x); loop-measured {res.epoch_seconds[0]:.3f} s",
        f"- top-5 ops share of self CPU time: {100 * top5:.1f}% (total self CPU {total_self / 1e6:.3f} s)",
        "",
        "## Top ops by self CPU time",
        "",
        table(["op", "calls", "self CPU (ms)", "share"], rows),
        "",
        "## torch.profiler table",
        "",
        "```",
        torch_table,
        "```",
        "",
    ])
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"(written to {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
