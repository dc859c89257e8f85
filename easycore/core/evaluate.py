"""Robustness evaluation: clean accuracy, Linf attacks at the headline eps, a PGD robustness curve over an eps grid,
the per-image worst case over every attack run, L2 PGD, AutoAttack; gradient-masking sanity checks.

Reporting convention: a sample counts as robust only if it is classified correctly on the clean input AND on every
adversarial input tried. Robust accuracy at an eps is the **per-image worst case over every attack run at that eps
or a smaller one** (RobustBench's convention; an adversarial example inside a smaller ball is inside the larger one),
so the curve over the eps grid is monotone by construction. Attacks registered in ATTACKS:
  `eval.attacks` (e.g. fgsm, pgd) run on every image at eval.eps: their own accuracies are reported too (with
  eval.survivors_only each runs only on the images the attacks before it left correct, and its accuracy is then
  the worst case so far: the same robust accuracy, a fraction of the cost);
  `eval.strong` (e.g. apgd_dlr) runs only on the images still robust after them (what it could change), so it costs
  little where the cheap attacks already succeed; grid points other than eval.eps likewise attack only the images
  still robust at the previous grid point (with eval.grid_steps PGD steps).
`outcomes[name]` is the per-image bool array of "still correct"; the accuracy is its mean. AutoAttack runs in its own
stage (`autoattack_stage`) on the models the verdict compares, on eval.autoattack_n images spread over the classes
(`class_interleaved`). Which test images: `test_positions` (eval.n_test of them, spread over the classes, in position
order; the whole set when n_test covers it); the sanity and AutoAttack subsets are the first of the same
class-interleaved order.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from easycore.config import EvalConfig
from easycore.core import attacks
from easycore.registry import Registry
from easycore.store import ArtifactError, save_arrays, write_json

Attack = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Generator]], torch.Tensor]

ATTACKS = Registry("attack", "attacks")
"""name -> Entry(fn): fn(model, cfg: EvalConfig, eps, amp) -> Attack (x, y, generator) -> x_adv. meta: norm,
label (the metrics key, may use cfg), doc."""


def eps_name(eps: float) -> str:
    """'eps8' for 8/255: the key of the robust accuracy at that eps."""
    return f"eps{eps * 255:.4g}"


def _step(cfg: EvalConfig, eps: float) -> float:
    """PGD step at `eps`: eval.alpha at eval.eps, the same alpha / eps ratio elsewhere."""
    return cfg.alpha if cfg.eps == 0 else cfg.alpha * eps / cfg.eps


@ATTACKS.register("fgsm", norm="linf", label=lambda cfg: "fgsm", doc="FGSM: one signed gradient step of eps")
def _fgsm(model, cfg: EvalConfig, eps: float, amp: bool) -> Attack:
    return lambda xb, yb, g: attacks.fgsm(model, xb, yb, eps=eps, amp=amp)


@ATTACKS.register("pgd", norm="linf", label=lambda cfg: f"pgd{cfg.pgd_steps}",
                  doc="PGD (Madry et al.): eval.pgd_steps steps of eval.alpha, random start, eval.restarts restarts")
def _pgd(model, cfg: EvalConfig, eps: float, amp: bool) -> Attack:
    return _pgd_attack(model, eps=eps, alpha=_step(cfg, eps), steps=cfg.pgd_steps, restarts=cfg.restarts, amp=amp)


@ATTACKS.register("pgd_cw", norm="linf", label=lambda cfg: f"pgd{cfg.strong_steps}_cw",
                  doc="PGD on the Carlini-Wagner margin loss, eval.strong_steps steps, eval.restarts restarts")
def _pgd_cw(model, cfg: EvalConfig, eps: float, amp: bool) -> Attack:
    return _pgd_attack(model, eps=eps, alpha=_step(cfg, eps), steps=cfg.strong_steps, restarts=cfg.restarts,
                       loss="cw", amp=amp)


def _apgd(loss: str):
    def make(model, cfg: EvalConfig, eps: float, amp: bool) -> Attack:
        import torchattacks

        def run(xb, yb, g):
            seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g, device=g.device)) if g is not None else 0
            net = attacks.AmpLogits(model) if amp else model      # bf16 where the run is (runtime.cpu_bf16 / amp)
            atk = torchattacks.APGD(net, norm="Linf", eps=eps, steps=cfg.strong_steps, n_restarts=cfg.restarts,
                                    loss=loss, seed=seed)
            return atk(xb, yb)
        return run
    return make


ATTACKS.register("apgd_ce", norm="linf", label=lambda cfg: "apgd_ce",
                 doc="APGD-CE (Croce & Hein 2020, torchattacks): eval.strong_steps steps")(_apgd("ce"))
ATTACKS.register("apgd_dlr", norm="linf", label=lambda cfg: "apgd_dlr",
                 doc="APGD-DLR (Croce & Hein 2020, torchattacks): eval.strong_steps steps")(_apgd("dlr"))


def _as_float01(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _correct_under(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Optional[Attack], *,
                   batch_size: int, seed: int, desc: str, progress: bool, amp: bool,
                   only: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bool [N]: is the prediction on attack(x) (or x if attack is None) equal to y. Batched, on device.
    only: a bool mask [N]; the attack runs on those images only and the others are reported False (used for
    images already broken, where another attack can change nothing)."""
    if only is not None:
        out = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        idx = only.nonzero().squeeze(1)
        if len(idx):
            out[idx] = _correct_under(model, x[idx], y[idx], attack, batch_size=batch_size, seed=seed, desc=desc,
                                      progress=progress, amp=amp)
        return out
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    out = []
    starts = range(0, len(x), batch_size)
    bar = tqdm(total=len(x), desc=desc, unit="img", disable=not progress or attack is None, leave=False)
    for i in starts:
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if attack is None:
            out.append(_clean_predict(model, xb, amp) == yb)
        else:
            xa = attack(xb, yb, gen)
            out.append(attacks.predict(model, xa, batch_size=len(xa), amp=amp) == yb)
        bar.update(len(xb))
    bar.close()
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)


class NonFiniteOutput(ArtifactError):
    """The model's logits on clean test images are NaN or inf: damaged or diverged weights, never an accuracy."""


def _clean_predict(model: nn.Module, xb: torch.Tensor, amp: bool) -> torch.Tensor:
    """attacks.predict on one batch, refusing non-finite logits (NaN weights would otherwise predict class 0 for
    every image: a balanced test set reads as 1/C clean and, since no attack can change it, as just as robust)."""
    with attacks.eval_mode(model):
        logits = attacks._logits(model, xb, amp)
    bad = ~torch.isfinite(logits).all(1)
    if bool(bad.any()):
        raise NonFiniteOutput(f"the model's logits are NaN or inf on {int(bad.sum())} of {len(xb)} clean test "
                              f"images (non-finite weights?); it cannot be evaluated: re-train it")
    return logits.argmax(1)


def _entry(correct: torch.Tensor, settings: Mapping[str, Any]) -> dict:
    n = int(correct.numel())
    return {"accuracy": float(correct.float().mean()) if n else float("nan"), "n": n, "attack": dict(settings)}


def _pgd_attack(model, *, eps, alpha, steps, norm="linf", restarts=1, loss="ce", amp=False) -> Attack:
    def run(xb, yb, gen):
        return attacks.pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=True,
                           restarts=restarts, loss=loss, generator=gen, amp=amp)
    return run


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: EvalConfig, *, seed: int = 0,
                   progress: bool = True, amp: bool = False,
                   seconds: Optional[dict] = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Evaluate `model` on the first cfg.n_test samples of (x, y) (see the module docstring).

    x: float in [0, 1] (or uint8, divided by 255) [N, C, H, W] on the model's device (moved if not); y: int64 [N].
    Returns (metrics, outcomes):
      metrics[name] = {"accuracy", "n", "attack": {settings}} for clean, each of cfg.attacks (by its label, e.g.
        fgsm, pgd20), each of cfg.strong (worst case after it), l2_pgd20 (when cfg.l2_eps > 0),
        eps<e> for every eps of the grid and of eval.eps (monotone worst case), and `robust` (= eps<eval.eps>);
        plus metrics["sanity"] when cfg.sanity;
      outcomes[name] = np.bool_ [n], "correct on clean AND every attack counted in it".
    Random starts use torch.Generators seeded from `seed` (a fixed offset per attack). The model's train/eval
    mode is restored. `seconds`: a dict that receives each pass's wall time by its label (clean, fgsm, pgd20, ...,
    sanity) for the timing log; it changes nothing computed.
    """
    dev = _model_device(model)
    n = min(int(cfg.n_test), len(x))
    x = _as_float01(x[:n].to(dev))
    y = y[:n].to(dev).long()
    kw = dict(batch_size=int(cfg.batch_size), progress=progress, amp=amp)

    metrics: dict[str, Any] = {}
    outcomes: dict[str, torch.Tensor] = {}

    def correct_under(*a, desc: str, **k):  # _correct_under, timed by its label into `seconds`
        t = time.perf_counter()
        out = _correct_under(*a, desc=desc, **k)
        if seconds is not None:
            seconds[desc] = seconds.get(desc, 0.0) + time.perf_counter() - t
        return out

    def record(name: str, ok: torch.Tensor, settings: dict) -> None:
        metrics[name] = _entry(ok, settings)
        outcomes[name] = ok

    with attacks.eval_mode(model):
        clean = correct_under(model, x, y, None, seed=seed, desc="clean", **kw)
        record("clean", clean, {"name": "clean"})

        # the headline attacks, every image, at eval.eps
        robust = clean.clone()
        for k, name in enumerate(cfg.attacks):
            e = ATTACKS.get(name)
            ok = correct_under(model, x, y, e.fn(model, cfg, cfg.eps, amp), seed=seed + 1000 * (k + 1),
                                desc=e.label(cfg), only=robust if cfg.survivors_only else None, **kw) & clean
            record(e.label(cfg), ok & robust if cfg.survivors_only else ok,
                   {"name": name, "norm": e.norm, "eps": cfg.eps, "steps": cfg.pgd_steps, "alpha": cfg.alpha,
                    "restarts": cfg.restarts, "worst_case": cfg.survivors_only})
            robust &= ok

        # the PGD curve: grid points in increasing eps, each on the images still robust at the previous one
        grid = sorted(set(cfg.eps_grid) | {cfg.eps})
        prev = clean.clone()
        pgd = ATTACKS.get("pgd")
        for j, eps in enumerate(grid):
            if eps == cfg.eps:
                cur = prev & robust
            elif eps == 0:
                cur = prev.clone()
            else:
                grid_cfg = dataclasses.replace(cfg, pgd_steps=cfg.grid_steps or cfg.pgd_steps)
                cur = correct_under(model, x, y, pgd.fn(model, grid_cfg, eps, amp), seed=seed + 50_000 + j,
                                     desc=f"pgd {eps_name(eps)}", only=prev, **kw)
            if eps == cfg.eps:  # the strong attacks, on the survivors at eval.eps
                for k, name in enumerate(cfg.strong):
                    e = ATTACKS.get(name)
                    cur &= correct_under(model, x, y, e.fn(model, cfg, eps, amp), seed=seed + 90_000 + k,
                                          desc=e.label(cfg), only=cur, **kw)
                    record(e.label(cfg), cur.clone(), {"name": name, "eps": eps, "steps": cfg.strong_steps,
                                                      "restarts": cfg.restarts, "worst_case": True})
            record(eps_name(eps), cur, {"name": "worst_case", "eps": eps})
            prev = cur
        metrics["robust"] = dict(metrics[eps_name(cfg.eps)], attack={
            "name": "worst_case", "eps": cfg.eps, "attacks": [ATTACKS.get(a).label(cfg) for a in cfg.attacks]
            + [f"pgd{cfg.grid_steps or cfg.pgd_steps}@smaller eps of the grid"]
            + [ATTACKS.get(a).label(cfg) for a in cfg.strong]})
        outcomes["robust"] = outcomes[eps_name(cfg.eps)]

        if cfg.l2_eps > 0:
            ok = correct_under(model, x, y, _pgd_attack(model, eps=cfg.l2_eps, alpha=cfg.l2_eps / 4, steps=20,
                                                         norm="l2", amp=amp), seed=seed + 70_000, desc="l2 pgd", **kw)
            record("l2_pgd20", ok & clean, {"name": "pgd", "norm": "l2", "eps": cfg.l2_eps, "alpha": cfg.l2_eps / 4,
                                            "steps": 20})

    if cfg.sanity:
        # on sanity_n images spread over the classes; the checks compare single attacks: with survivors_only the
        # recorded attacks are cumulative, so the checks run their own PGD on the subset
        ns = min(cfg.sanity_n, n)
        idx = torch.as_tensor(class_interleaved(y.cpu().numpy(), ns), device=dev)
        sub = {} if cfg.survivors_only else {k: _entry(v[idx], {}) for k, v in outcomes.items()}
        t = time.perf_counter()
        metrics["sanity"] = sanity_checks(model, x[idx], y[idx], dataclasses.replace(cfg, n_test=ns), sub,
                                          seed=seed, progress=progress, amp=amp)
        if seconds is not None:
            seconds["sanity"] = time.perf_counter() - t
    return metrics, {k: v.cpu().numpy() for k, v in outcomes.items()}


def test_positions(labels, n: int) -> np.ndarray:
    """The test images an evaluation takes: positions (in the prepared test set) of the first n of
    `class_interleaved(labels)`, in position order. The one rule for every subset of the test set: the subset of
    k images is the first k of the class-interleaved order (the first image of each class, then the second, ...),
    so every subset is as class-balanced as the data allows, even on a class-sorted split (an ImageFolder copy,
    ImageNet's val/). The evaluation takes its n in position order; the sanity checks and AutoAttack take
    `class_interleaved` over the evaluated images, which is the first k of the same order (a prefix of a prefix:
    tests/test_subsets.py). With n >= len(labels) this is 0..len-1 in order (the whole set, as before).
    int64 [min(n, len(labels))]."""
    labels = np.asarray(labels).reshape(-1)
    if int(n) >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    return np.sort(class_interleaved(labels, n))


def class_interleaved(labels, n: int) -> np.ndarray:
    """Positions of n samples spread over the classes: the first sample of each class (in position order), then the
    second of each, and so on; so every prefix is as class-balanced as the data allows. Used for the subsets that
    the sanity checks and AutoAttack attack: a class-ordered test split (an ImageFolder copy) would otherwise give
    them one class only. int64 [min(n, len(labels))]."""
    labels = np.asarray(labels).reshape(-1)
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inv = np.unique(labels, return_inverse=True)
    order = np.argsort(inv, kind="stable")                       # positions grouped by class, in position order
    starts = np.searchsorted(inv[order], np.arange(inv.max() + 1))
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts[inv[order]]    # each sample's rank within its class
    return np.lexsort((np.arange(len(labels)), rank))[:max(int(n), 0)].astype(np.int64)


def autoattack(model, x, y, *, eps: float, seed: int = 0, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Bool [N]: still correct under standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; torchattacks) at Linf eps,
    in eval mode (mode restored)."""
    import torchattacks

    with attacks.eval_mode(model), torch.no_grad():
        k = int(model(x[:1]).shape[1])
    aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=k, seed=seed)
    out = []
    bar = tqdm(total=len(x), desc="autoattack", unit="img", disable=not progress, leave=False)
    with attacks.eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            out.append(attacks.predict(model, aa(xb, yb), batch_size=len(xb)) == yb)
            bar.update(len(xb))
    bar.close()
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: EvalConfig, metrics: Mapping, *,
                  seed: int = 0, progress: bool = False, amp: bool = False) -> dict:
    """Gradient-masking sanity checks (Carlini et al. 2019 style); never raises, prints WARNING lines.

    On the first cfg.n_test samples (those `metrics` was computed on):
      eps0:        PGD with eps = 0 leaves the clean accuracy unchanged (exactly);
      pgd_le_fgsm: PGD accuracy <= FGSM accuracy + max(1 sample, 0.5%)   (skipped without FGSM);
      more_steps:  PGD with 2x steps is not above PGD accuracy + max(1 sample, 0.5%);
      large_eps:   PGD-50 at Linf eps 64/255 (alpha = eps/10) drives accuracy to <= 5%.
    Accuracies compared with `metrics` entries count clean-AND-adversarial correct samples, like them.
    Returns {check: {"passed": bool, "detail": str}}.
    """
    dev = _model_device(model)
    n = min(int(cfg.n_test), len(x))
    x = _as_float01(x[:n].to(dev))
    y = y[:n].to(dev).long()
    tol = max(1.0 / max(n, 1), 0.005)
    pgd_name = f"pgd{cfg.pgd_steps}"
    kw = dict(batch_size=int(cfg.batch_size), progress=progress, amp=amp)

    def acc(attack, s, desc) -> float:
        return float(_correct_under(model, x, y, attack, seed=s, desc=desc, **kw).float().mean())

    res: dict[str, dict] = {}
    with attacks.eval_mode(model):
        clean_mask = _correct_under(model, x, y, None, seed=seed, desc="clean", **kw)
        clean = float(clean_mask.float().mean())
        a0 = acc(_pgd_attack(model, eps=0.0, alpha=cfg.alpha, steps=min(cfg.pgd_steps, 5), amp=amp), seed, "sanity eps0")
        res["eps0"] = {"passed": abs(a0 - clean) < 0.5 / max(n, 1),
                       "detail": f"PGD at eps=0: {a0:.4f} vs clean {clean:.4f}"}

        if pgd_name in metrics:
            pgd_acc = metrics[pgd_name]["accuracy"]
        else:
            pgd_acc = float((_correct_under(model, x, y, _pgd_attack(model, eps=cfg.eps, alpha=cfg.alpha,
                                                                     steps=cfg.pgd_steps, amp=amp),
                                            seed=seed + 1000, desc=pgd_name, **kw) & clean_mask).float().mean())
        if "fgsm" in metrics or "fgsm" in cfg.attacks:
            f = metrics["fgsm"]["accuracy"] if "fgsm" in metrics else float((_correct_under(
                model, x, y, lambda xb, yb, g: attacks.fgsm(model, xb, yb, eps=cfg.eps, amp=amp), seed=seed + 1000,
                desc="sanity fgsm", **kw) & clean_mask).float().mean())
            res["pgd_le_fgsm"] = {"passed": pgd_acc <= f + tol,
                                  "detail": f"PGD-{cfg.pgd_steps} {pgd_acc:.4f} vs FGSM {f:.4f} (tol {tol:.4f})"}

        a2 = float((_correct_under(model, x, y, _pgd_attack(model, eps=cfg.eps, alpha=cfg.alpha,
                                                            steps=2 * cfg.pgd_steps, amp=amp),
                                   seed=seed + 7, desc="sanity 2x steps", **kw) & clean_mask).float().mean())
        res["more_steps"] = {"passed": a2 <= pgd_acc + tol,
                             "detail": f"PGD-{2 * cfg.pgd_steps} {a2:.4f} vs PGD-{cfg.pgd_steps} {pgd_acc:.4f} "
                                       f"(tol {tol:.4f})"}

        big = 64 / 255
        ab = acc(_pgd_attack(model, eps=big, alpha=big / 10, steps=50, amp=amp), seed + 9, "sanity eps=64/255")
        res["large_eps"] = {"passed": ab <= 0.05, "detail": f"PGD-50 at eps=64/255: accuracy {ab:.4f} (want <= 0.05)"}

    for name, r in res.items():
        if not r["passed"]:
            print(f"WARNING: sanity check {name!r} failed - gradient masking suspected: {r['detail']}", flush=True)
    return res


def write_eval(out_dir, metrics: Mapping, outcomes: Mapping[str, np.ndarray], meta: Mapping) -> None:
    """Atomically write out_dir/metrics.json ({**metrics, "meta": meta}) and out_dir/outcomes.npz.

    meta should hold: fingerprint, model, checkpoint (path), n (samples evaluated), plus anything else.
    outcomes.npz holds one bool array per attack name and the same meta (via store.save_arrays).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", {**dict(metrics), "meta": dict(meta)})
    save_arrays(out_dir / "outcomes.npz", {k: np.asarray(v, dtype=bool) for k, v in outcomes.items()}, meta)
