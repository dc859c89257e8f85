"""Training step time per mode: standard / fgsm_rs / pgd_at / trades, relative to standard.

    python -m benchmarks.train_step [--model cnn_tiny] [--batch-size 128] [--steps 10] [--rounds 3] [--quick]

Each mode runs the exact per-batch code of the training loop (the mode's `easycore.core.modes.MODES` function +
zero_grad + backward + SGD step, bf16 autocast and channels_last on CUDA as `train` does) on the same fixed, already
augmented batches (so the input pipeline is not timed), each mode on its own copy of the same initial
model. A round times `--iters` steps of every mode, round-robin; the median per-step time is reported.
On CPU an extra variant `standard_nhwc` runs standard mode with the model and batches in channels_last
(what `train` does by default, `runtime.channels_last: true`, since this measurement showed it faster on CPU);
the mode variants run NCHW on CPU, so their ratios compare like with like.
"""
from __future__ import annotations

import copy
import sys

from benchmarks._common import base_parser, interleaved, load_data, median, publish, ratio, session, spread, table, timed

MODES = ("standard", "fgsm_rs", "pgd_at", "trades")


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--model", default="cnn_tiny", help="the demo net")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="attack steps of pgd_at and trades")
    ap.add_argument("--iters", type=int, default=3, help="training steps timed per mode per round")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--no-nhwc", dest="nhwc", action="store_false", help="skip the CPU channels_last variant")
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.batch_size, args.steps, args.iters = "cnn_tiny", 16, 2, 1
    rounds = args.rounds or (1 if args.quick else 3)
    with session(args) as device:
        return _run(args, rounds, device)


def _run(args, rounds, device) -> int:
    import torch

    from easycore.config import AttackConfig, OptimConfig
    from easycore.data.loaders import DeviceLoader
    from easycore.core.models import build_model
    from easycore.core.modes import MODES
    from easycore.core.train import make_optimizer

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "standard" not in modes:
        modes.insert(0, "standard")
    ds, data_desc = load_data(args.dataset, max(1, (args.batch_size * args.iters + 9) // 10), quick=args.quick)
    cuda = device.type == "cuda"
    loader = DeviceLoader(ds.x, ds.y, batch_size=args.batch_size, device=device, augment=True, seed=0,
                          drop_last=True, channels_last=cuda)
    batches = [(x, y) for x, y, _ in loader][: args.iters]
    torch.manual_seed(0)
    base = build_model(args.model, ds.num_classes, ds.in_channels, *ds.stats).to(device)
    if cuda:
        base = base.to(memory_format=torch.channels_last)
    attack = AttackConfig(steps=args.steps)

    def make_variant(mode, nhwc=False):
        model = copy.deepcopy(base).train()
        bl = batches
        if nhwc:
            model = model.to(memory_format=torch.channels_last)
            bl = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
        opt = make_optimizer(model, OptimConfig(lr=0.01))
        mode_fn = MODES.get(mode).fn

        def steps():
            for x, y in bl:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    out = mode_fn(model, x, y, None, attack=attack, amp=cuda)
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()

        return lambda: timed(steps, device) / len(batches)

    variants = {m: make_variant(m) for m in modes}
    if not cuda and args.nhwc:
        variants["standard_nhwc"] = make_variant("standard", nhwc=True)
    print(f"train_step: {args.model}, batch {args.batch_size}, {len(batches)} steps x {len(modes)} modes x {rounds} rounds on {device}")
    t = interleaved(variants, rounds)
    rows = [[m, 1000 * median(t[m]), spread([1000 * v for v in t[m]]), f"{ratio(t, m, 'standard'):.2f}x"] for m in variants]
    body = "\n".join([
        f"Model {args.model}, batch {args.batch_size}, attack steps {args.steps} (pgd_at, trades; eps 8/255, alpha 2/255), "
        f"{len(batches)} steps per mode per round, {rounds} interleaved rounds (median); data: {data_desc}; device {device}.",
        "",
        table(["mode", "ms/step (median)", "range (ms)", "vs standard"], rows),
        "",
        "- ratios vs standard: " + ", ".join(f"{m} {ratio(t, m, 'standard'):.2f}x" for m in modes if m != "standard"),
        f"- expected from pass counts: fgsm_rs ~2x, pgd_at ~{args.steps + 1}x, trades ~{args.steps + 2}x "
        "(each attack step is a forward + input-only backward)",
    ] + ([f"- ratio standard_nhwc/standard = {ratio(t, 'standard_nhwc', 'standard'):.3f}x (channels_last on CPU; "
          "train() uses it by default)"] if "standard_nhwc" in t else []))
    publish(args, "Training step time by mode", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
