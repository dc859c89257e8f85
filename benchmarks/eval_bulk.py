"""Evaluation in bulk: K models of one architecture attacked one after the other vs stacked into one batched call.

    python -m benchmarks.eval_bulk [--model cnn_tiny] [--models 3] [--n 1000] [--batch-size 500] [--quick]

`sequential` runs easycore.core.attacks.pgd (PGD-20, 8/255) on each model in turn (what an evaluate group does);
`stacked` stacks the K models' weights (torch.func.stack_module_state) and runs the same PGD for all of them at once
with torch.func.vmap over the models (one batched forward/backward per step: the "attack batches filled across
models"). Both in eval mode, fp32, the same images; the robust accuracies must agree up to the random starts.
"""
from __future__ import annotations

import copy
import time

from benchmarks._common import base_parser, interleaved, load_data, median, publish, ratio, session, table


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--model", default="cnn_tiny")
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.batch_size, args.steps, args.models = 32, 32, 2, 2
    rounds = args.rounds or (1 if args.quick else 3)
    with session(args) as device:
        return _run(args, rounds, device)


def stacked_pgd(models, x, y, *, eps, alpha, steps, seed=0):
    """PGD (Linf, random start, CE) against every model at once: returns correct [K, n] after the attack."""
    import torch
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def f(p, b, xb):
        return functional_call(base, (p, b), (xb,))

    k = len(models)
    g = torch.Generator(device=x.device).manual_seed(seed)
    xs = x.unsqueeze(0).expand(k, *x.shape)
    adv = (xs + torch.empty_like(xs).uniform_(-eps, eps, generator=g)).clamp(0, 1)
    batched = vmap(f, in_dims=(0, 0, 0))
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        logits = batched(params, buffers, adv)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(k), reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), xs - eps), xs + eps).clamp(0, 1)
    with torch.no_grad():
        return batched(params, buffers, adv).argmax(-1) == y


def _run(args, rounds, device) -> int:
    import torch

    from easycore.core.attacks import pgd
    from easycore.core.models import build_model

    test, desc = load_data(args.dataset, max(1, (args.n + 9) // 10), quick=args.quick, split="test")
    x = test.x[: args.n].float().div(255).to(device)
    y = test.y[: args.n].to(device)
    models = []
    for s in range(args.models):
        torch.manual_seed(s)
        m = build_model(args.model, test.num_classes, test.in_channels, *test.stats).to(device).eval()
        for p in m.parameters():
            p.requires_grad_(False)
        models.append(m)
    eps, alpha, bs = 8 / 255, 2 / 255, args.batch_size
    accs = {}

    def sequential():
        t0 = time.perf_counter()
        hits = []
        for m in models:
            hit = 0
            for i in range(0, len(x), bs):
                adv = pgd(m, x[i:i + bs], y[i:i + bs], eps=eps, alpha=alpha, steps=args.steps)
                with torch.no_grad():
                    hit += int((m(adv).argmax(1) == y[i:i + bs]).sum())
            hits.append(hit / len(x))
        accs["sequential"] = hits
        return time.perf_counter() - t0

    def stacked():
        t0 = time.perf_counter()
        hits = torch.zeros(len(models))
        for i in range(0, len(x), bs):
            hits += stacked_pgd(models, x[i:i + bs], y[i:i + bs], eps=eps, alpha=alpha, steps=args.steps).sum(1).cpu()
        accs["stacked"] = (hits / len(x)).tolist()
        return time.perf_counter() - t0

    t = interleaved({"sequential": sequential, "stacked": stacked}, rounds)
    images = len(x) * len(models)
    rows = [[v, images / median(t[v]), f"{ratio(t, 'sequential', v):.2f}x",
             ", ".join(f"{a:.3f}" for a in accs[v])] for v in ("sequential", "stacked")]
    body = (f"{len(models)} untrained `{args.model}` models (seeds 0..{len(models) - 1}), PGD-{args.steps} Linf 8/255 "
            f"on {len(x)} images ({desc}) in batches of {bs}, fp32, device {device}, {torch.get_num_threads()} threads, "
            f"{rounds} interleaved rounds (median).\n\n"
            + table(["variant", "model-images / s", "speed-up vs sequential", "robust accuracy per model"], rows)
            + f"\n\n- ratio stacked / sequential throughput: **{ratio(t, 'sequential', 'stacked'):.2f}x**")
    publish(args, "Evaluation in bulk: models attacked one after the other vs stacked (vmap)", body)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
