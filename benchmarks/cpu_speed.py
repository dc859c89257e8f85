"""CPU speed switches for the study's loops: channels_last, bf16 autocast, torch.compile (training step, attack).

    python -m benchmarks.cpu_speed [--model cnn_tiny] [--batch-size 128] [--rounds 5] [--quick]

The study's model and settings (params-study.yaml: cnn_tiny, batch 128, TRADES with 3 attack steps; PGD-20
evaluation at batch 500) on the machine's cores. Variants, each on its own copy of the same initial model and the
same fixed augmented batches (the input pipeline is not timed), timed round-robin in one process:
  nhwc       fp32, channels_last (what `train` and the attacks do on CPU today: the baseline)
  nchw       fp32, contiguous NCHW
  bf16       channels_last + torch.autocast("cpu", bfloat16) (useful only where the CPU has native bf16: the
             machine line and `avx512_bf16`/`amx` in /proc/cpuinfo say)
  compile    channels_last + torch.compile(model) (inductor; compile time excluded, reported separately)
Reported: median seconds per step (training) / images per second (attack), and each variant's ratio to nhwc.
"""
from __future__ import annotations

import copy
import time

from benchmarks._common import (base_parser, interleaved, load_data, median, publish, ratio, session, spread, table,
                                timed)

VARIANTS = ("nhwc", "nchw", "bf16", "compile")


def cpu_flags() -> str:
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    have = [f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2") if f in flags]
    return ", ".join(have) or "none of avx2/avx512f/avx512_bf16/amx_bf16"


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--model", default="cnn_tiny")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--eval-batch", type=int, default=500)
    ap.add_argument("--steps", type=int, default=3, help="TRADES attack steps (the study's 3)")
    ap.add_argument("--iters", type=int, default=4, help="training steps timed per variant per round")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args(argv)
    if args.quick:  # (torch.compile takes minutes to compile: not in a smoke run)
        args.batch_size, args.eval_batch, args.iters, args.steps = 16, 32, 1, 1
        args.variants = ",".join(v for v in args.variants.split(",") if v != "compile")
    rounds = args.rounds or (1 if args.quick else 5)
    with session(args) as device:
        return _run(args, rounds, device)


def _run(args, rounds, device) -> int:
    import torch

    from easycore.core.attacks import pgd
    from easycore.config import AttackConfig, OptimConfig
    from easycore.data.loaders import DeviceLoader
    from easycore.core.models import build_model
    from easycore.core.modes import MODES
    from easycore.core.train import make_optimizer

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    ds, data_desc = load_data(args.dataset, max(1, (args.batch_size * args.iters + 9) // 10), quick=args.quick)
    loader = DeviceLoader(ds.x, ds.y, batch_size=args.batch_size, device=device, augment=True, seed=0,
                          drop_last=True, channels_last=False)
    batches = [(x, y) for x, y, _ in loader][: args.iters]
    test, _ = load_data(args.dataset, max(1, (args.eval_batch + 9) // 10), quick=args.quick, split="test")
    xt = test.x[: args.eval_batch].float().div(255)
    yt = test.y[: args.eval_batch]
    torch.manual_seed(0)
    base = build_model(args.model, ds.num_classes, ds.in_channels, *ds.stats).to(device)
    attack = AttackConfig(steps=args.steps)
    trades = MODES.get("trades").fn
    compile_s = {}

    def setup(v):
        net = copy.deepcopy(base)
        if v != "nchw":
            net = net.to(memory_format=torch.channels_last)
        fwd = net
        if v == "compile":
            t0 = time.perf_counter()
            fwd = torch.compile(net)
            opt = make_optimizer(net, OptimConfig(lr=0.01))
            _train_steps(fwd, opt, batches[:1], v)         # the first calls compile
            _attack(fwd, xt[:8], yt[:8], v)
            compile_s[v] = time.perf_counter() - t0
        return net, fwd, make_optimizer(net, OptimConfig(lr=0.01))

    def _fmt(x, v):
        return x.contiguous(memory_format=torch.channels_last) if v != "nchw" else x.contiguous()

    def _train_steps(fwd, opt, bs, v):
        fwd.train()
        for x, y in bs:
            x = _fmt(x, v)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v == "bf16"):
                out = trades(fwd, x, y, None, attack=attack, amp=v == "bf16")
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()

    def _attack(fwd, x, y, v):
        fwd.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v == "bf16"):
            adv = pgd(fwd, _fmt(x, v), y, eps=8 / 255, alpha=2 / 255, steps=20, random_start=True)
        with torch.no_grad():
            acc = float((fwd(adv).argmax(1) == y).float().mean())
        return acc

    models = {v: setup(v) for v in variants}
    train_t = interleaved({v: (lambda v=v: timed(lambda: _train_steps(models[v][1], models[v][2], batches, v), device))
                           for v in variants}, rounds)
    accs = {}

    def attack_variant(v):
        t0 = time.perf_counter()
        accs[v] = _attack(models[v][1], xt, yt, v)
        return time.perf_counter() - t0

    attack_t = interleaved({v: (lambda v=v: attack_variant(v)) for v in variants}, rounds)
    rows = []
    for v in variants:
        rows.append([v, median(train_t[v]) / len(batches), spread([t / len(batches) for t in train_t[v]]),
                     f"{ratio(train_t, 'nhwc', v):.2f}x" if "nhwc" in variants else "-",
                     len(yt) / median(attack_t[v]), f"{ratio(attack_t, 'nhwc', v):.2f}x" if "nhwc" in variants else "-",
                     f"{accs[v]:.4f}", f"{compile_s[v]:.0f} s" if v in compile_s else "-"])
    body = (f"Model `{args.model}`, {data_desc}; TRADES step ({args.steps} attack steps) at batch {args.batch_size}, "
            f"{len(batches)} steps per round; PGD-20 (8/255, step 2/255, random start) on {len(yt)} test images in one "
            f"batch; device {device}, {torch.get_num_threads()} threads, {rounds} interleaved rounds (median). CPU "
            f"flags: {cpu_flags()}. Speed-up = nhwc time / variant time (>1: faster than today's default).\n\n"
            + table(["variant", "s / TRADES step", "range", "speed-up", "PGD-20 images/s", "speed-up",
                     "robust acc", "compile time"], rows)
            + "\n\n- speed-up vs nhwc (TRADES step / PGD-20): "
            + ", ".join(f"{v} {ratio(train_t, 'nhwc', v):.2f}x / {ratio(attack_t, 'nhwc', v):.2f}x"
                        for v in variants if v != "nhwc" and "nhwc" in variants))
    publish(args, "CPU speed switches: channels_last, bf16 autocast, torch.compile (study model)", body)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
