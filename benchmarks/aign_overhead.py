"""AIGN tracking overhead: time per epoch of plain training vs inline vs exact AIGN tracking.

    python -m benchmarks.aign_overhead [--models cnn_tiny,cnn_small] [--epochs 2] [--rounds 3] [--quick]

Variants, on the same data, model, seed and batches (`easycore.core.train.train`, standard mode):
  plain        no tracker
  inline       AIGNTracker(mode="inline"): the training step's own input gradient, every epoch
  exact        AIGNTracker(mode="exact"): an eval-mode forward + input backward over the set after every epoch
  exact_every2 exact, every 2nd epoch (and the last)
and, in the same rounds, one bare `exact_pass` over the set (on the model the plain run just trained).
The floor for exact tracking is 1 + pass/epoch (the pass is extra work on top of an unchanged epoch);
for every-2nd-epoch tracking it is 1 + (tracked fraction) * pass/epoch. Epoch time = the loop's own
per-epoch wall time (`TrainResult.epoch_seconds`, includes the exact pass where one runs), averaged over the
run's epochs.
"""
from __future__ import annotations

import sys

from easycore.config import AIGNConfig
from benchmarks._common import base_parser, interleaved, load_data, median, publish, ratio, session, spread, table, timed


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--models", default="cnn_tiny,cnn_small")
    ap.add_argument("--n-per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per timed run (even, so every-2nd tracks half)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--aign-batch-size", type=int, default=AIGNConfig().batch_size, help="exact-pass batch of "
                    "the tracked runs (the AIGNConfig default)")
    ap.add_argument("--pass-batches", default="512", help="extra batch sizes for the bare exact pass (a sweep: "
                    "the pass's values do not depend on its batch size, its speed does)")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.n_per_class, args.epochs, args.batch_size, args.aign_batch_size = "cnn_tiny", 4, 2, 20, 40
        args.pass_batches = "20"
    rounds = args.rounds or (1 if args.quick else 3)
    with session(args) as device:
        return _run(args, rounds, device)


def _run(args, rounds, device) -> int:
    from easycore.core.aign import AIGNTracker, exact_pass
    from easycore.config import OptimConfig, RuntimeConfig, TrainConfig
    from easycore.data.loaders import DeviceLoader
    from easycore.core.train import train

    ds, data_desc = load_data(args.dataset, args.n_per_class, quick=args.quick)
    E = args.epochs
    tracked_every2 = sum(1 for e in range(E) if (e + 1) % 2 == 0 or e == E - 1) / E
    rows, ratio_lines = [], []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        cfg = TrainConfig(model=model, epochs=E, batch_size=args.batch_size, augment=True,
                          optim=OptimConfig(lr=0.05, schedule="onecycle"))
        runtime = RuntimeConfig(device=str(device.type))
        state = {}

        def run(mode, every=1, cfg=cfg):
            tracker = None if mode is None else AIGNTracker(n=len(ds), mode=mode, every=every, epochs=cfg.epochs)
            res = train(cfg, ds, mode="standard", seed=0, runtime=runtime, tracker=tracker,
                        aign_batch_size=args.aign_batch_size, progress=False)
            state["model"] = res.model
            return sum(res.epoch_seconds) / len(res.epoch_seconds)

        def bare_pass(bs):
            if "model" not in state:
                run(None)
            m = state["model"]
            # the loader train() builds for the tracker's pass: the set on the device, in order, unaugmented

            def go():
                loader = DeviceLoader(ds.x, ds.y, batch_size=bs, device=device, shuffle=False, augment=False,
                                      channels_last=runtime.channels_last, info=ds.info)
                return exact_pass(m, loader, amp=runtime.amp and device.type == "cuda")
            return timed(go, device)

        variants = {"plain": lambda: run(None), "inline": lambda: run("inline"), "exact": lambda: run("exact"),
                    "exact_every2": lambda: run("exact", 2), "exact_pass": lambda: bare_pass(args.aign_batch_size)}
        extra = [int(b) for b in args.pass_batches.split(",") if b.strip() and int(b) != args.aign_batch_size]
        for b in extra:
            variants[f"exact_pass_b{b}"] = lambda b=b: bare_pass(b)
        print(f"{model}: {data_desc}, {E} epochs x {len(variants)} variants x {rounds} rounds on {device}")
        t = interleaved(variants, rounds)
        pass_over_epoch = ratio(t, "exact_pass", "plain")
        floor, floor2 = 1 + pass_over_epoch, 1 + tracked_every2 * pass_over_epoch
        r_inline, r_exact, r_exact2 = ratio(t, "inline", "plain"), ratio(t, "exact", "plain"), ratio(t, "exact_every2", "plain")
        for name in variants:
            rows.append([model, name, median(t[name]), spread(t[name]),
                         f"{ratio(t, name, 'plain'):.3f}x"])
        ratio_lines += [
            f"- **{model}**: ratio inline/plain = {r_inline:.3f}x (target <= 1.05x: {'met' if r_inline <= 1.05 else 'NOT met'}); "
            f"ratio exact/plain = {r_exact:.3f}x vs floor 1 + pass/epoch = {floor:.3f}x "
            f"(exact/floor = {r_exact / floor:.3f}, target <= 1.05: {'met' if r_exact / floor <= 1.05 else 'NOT met'}); "
            f"ratio exact_every2/plain = {r_exact2:.3f}x vs floor {floor2:.3f}x; "
            f"bare exact pass / plain epoch = {pass_over_epoch:.3f} (batch {args.aign_batch_size})"
            + "".join(f"; with pass batch {b}: {ratio(t, f'exact_pass_b{b}', 'plain'):.3f} (floor "
                      f"{1 + ratio(t, f'exact_pass_b{b}', 'plain'):.3f}x)" for b in extra),
        ]
        del state
    body = "\n".join([
        f"Data: {data_desc}; batch {args.batch_size}, augment on, exact-pass batch {args.aign_batch_size}, "
        f"{E} epochs per run, {rounds} interleaved rounds (median; ratio = median of per-round ratios); device {device}.",
        "",
        table(["model", "variant", "s/epoch (median)", "range", "vs plain"], rows),
        "",
        f"`exact_pass` rows: one bare eval-mode forward + input backward over the set (not an epoch), batch "
        f"{args.aign_batch_size}, or the batch named by the suffix `_b<size>`.",
        "",
        *ratio_lines,
    ])
    publish(args, "AIGN tracking overhead (time per epoch)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
