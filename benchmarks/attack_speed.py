"""PGD evaluation throughput: easycore.core.attacks.pgd vs torchattacks.PGD on the same model and batches.

    python -m benchmarks.attack_speed [--n 512] [--batch-size 128] [--model cnn_small] [--steps 20]
                                      [--eps 8,4] [--quick]

Data: a fixed synthetic CIFAR-shaped 10-class problem (a random prototype image per class + gaussian noise;
--dataset is ignored). The model (seed 0) is first trained on it for --train-steps SGD steps, so the robust
accuracies are comparable (throughput does not depend on the weights). Each budget in --eps (in /255 units)
is a pair of variants: at 8/255, the evaluation budget, this briefly trained model is broken by both attacks
(robust accuracy ~0), so "equal accuracy" is trivial there; at 4/255 about half the images survive, which
makes the accuracy comparison meaningful. Both attacks use the same eps / alpha (eps/4) / steps, random
start and RNG seed per round, fp32; all variants are interleaved with a rotating start
(benchmarks._common.interleaved), throughput is n / median seconds, the ratio is the median of the
per-round ratios. Appends a dated section to --out.
"""
from __future__ import annotations

import sys

import torch

from benchmarks._common import base_parser, interleaved, median, publish, ratio, session, spread, table, timed


def synthetic(n: int, seed: int, device: torch.device, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(12345)
    protos = torch.rand(k, 3, 32, 32, generator=g)
    g.manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    x = (0.5 + 0.6 * (protos[y] - 0.5) + 0.15 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)
    return x.to(device), y.to(device)


def train(model: torch.nn.Module, steps: int, bs: int, device: torch.device) -> None:
    import torch.nn.functional as F

    if steps > 0:
        x, y = synthetic(steps * bs, seed=0, device=device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        model.train()
        for i in range(steps):
            loss = F.cross_entropy(model(x[i * bs:(i + 1) * bs]), y[i * bs:(i + 1) * bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)


def _ours(model: torch.nn.Module, eps: float, steps: int):
    from easycore.core import attacks

    return lambda xb, yb: attacks.pgd(model, xb, yb, eps=eps, alpha=eps / 4, steps=steps)


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--n", type=int, default=512, help="images attacked per round")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--model", default="cnn_small")
    ap.add_argument("--steps", type=int, default=20, help="PGD steps")
    ap.add_argument("--eps", default="8,4", help="comma-separated Linf budgets in /255 units (step eps/4 each)")
    ap.add_argument("--train-steps", type=int, default=40, help="SGD steps on the synthetic task before timing")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.batch_size, args.steps, args.train_steps, args.model = 32, 16, 2, 2, "cnn_tiny"
    try:
        args.eps_list = [float(e) for e in args.eps.split(",") if e.strip()]
    except ValueError:
        ap.error(f"--eps must be comma-separated numbers (in /255 units), got {args.eps!r}")
    if not args.eps_list or min(args.eps_list) <= 0:
        ap.error(f"--eps needs at least one positive budget, got {args.eps!r}")
    rounds = args.rounds or (1 if args.quick else 3)
    with session(args) as device:
        return _run(args, rounds, device)


def _run(args, rounds: int, device: torch.device) -> int:
    import torchattacks

    from easycore.core.models import build_model

    torch.manual_seed(0)
    model = build_model(args.model, num_classes=10, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3).to(device)
    train(model, args.train_steps, args.batch_size, device)
    x, y = synthetic(args.n, seed=1, device=device)
    bs = args.batch_size
    with torch.no_grad():
        clean = float(torch.cat([model(x[i:i + bs]).argmax(1) == y[i:i + bs] for i in range(0, args.n, bs)]).float().mean())

    attack = {}
    for e in args.eps_list:
        attack[f"easycore.pgd@{e:g}"] = _ours(model, e / 255, args.steps)
        attack[f"torchattacks.PGD@{e:g}"] = torchattacks.PGD(model, eps=e / 255, alpha=e / 255 / 4, steps=args.steps,
                                                             random_start=True)
    accs: dict[str, list[float]] = {k: [] for k in attack}
    seed = [100]

    def variant(name):
        def run() -> float:
            torch.manual_seed(seed[0])  # same random starts for both within a round
            correct = []

            def sweep():
                for i in range(0, args.n, bs):
                    adv = attack[name](x[i:i + bs], y[i:i + bs])
                    with torch.no_grad():
                        correct.append(model(adv).argmax(1) == y[i:i + bs])

            t = timed(sweep, device)
            accs[name].append(float(torch.cat(correct).float().mean()))
            return t
        return run

    print(f"attack_speed: {args.model}, PGD-{args.steps}, eps {args.eps_list} /255, {args.n} images, batch {bs}, "
          f"{rounds} rounds on {device}; clean accuracy {clean:.4f}", flush=True)
    variants = {k: variant(k) for k in attack}
    t = interleaved(variants, rounds)
    acc = {k: sum(v[1:]) / max(len(v) - 1, 1) for k, v in accs.items()}  # v[0] is the warm-up call
    rows = [[k.split("@")[0], f"{k.split('@')[1]}/255", args.n / median(t[k]), spread([args.n / s for s in t[k]]),
             f"{acc[k]:.4f}"] for k in attack]
    lines = []
    for e in args.eps_list:
        ours, theirs = f"easycore.pgd@{e:g}", f"torchattacks.PGD@{e:g}"
        r = ratio(t, theirs, ours)  # time(theirs)/time(ours) = throughput(ours)/throughput(theirs)
        lines.append(f"- eps {e:g}/255: throughput ratio easycore/torchattacks = {r:.3f}x (robust accuracy "
                     f"{acc[ours]:.4f} vs {acc[theirs]:.4f}, difference {abs(acc[ours] - acc[theirs]):.4f})")
    body = "\n".join([
        f"PGD-{args.steps} Linf, step eps/4, random start, fp32; model `{args.model}` "
        f"(seed 0, {args.train_steps} SGD steps on a synthetic 10-class 3x32x32 task, clean accuracy {clean:.4f}); "
        f"{args.n} images, batch {bs}, device {device}, {rounds} interleaved rounds (median).",
        "",
        table(["attack", "eps", "images/s (median)", "range", "robust accuracy"], rows),
        "",
    ] + lines)
    publish(args, "Attack speed: PGD eval throughput, easycore vs torchattacks", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
