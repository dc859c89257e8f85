"""Robustness evaluation: clean, FGSM, PGD (Linf), PGD-50 with restarts, L2 PGD, AutoAttack; sanity checks.

Reporting convention: a sample counts as robust under an attack only if it is classified correctly both
on the clean input AND on the adversarial input. Every robust accuracy is therefore <= the clean
accuracy, even for attacks (FGSM, one-shot starts) that can occasionally "repair" a misclassified sample.
`outcomes[name]` is the per-sample bool array of exactly that event ("still correct"); the accuracy is
its mean. AutoAttack runs on the first `cfg.autoattack_n` samples only (its outcome array is shorter).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import attacks
from .config import EvalConfig
from .store import save_arrays, write_json

Attack = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Generator]], torch.Tensor]


def _as_float01(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _correct_under(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Optional[Attack], *,
                   batch_size: int, seed: int, desc: str, progress: bool, amp: bool) -> torch.Tensor:
    """Bool [N]: is the prediction on attack(x) (or x if attack is None) equal to y. Batched, on device."""
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    out = []
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=desc, disable=not progress or attack is None, leave=False):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        xa = xb if attack is None else attack(xb, yb, gen)
        out.append(attacks.predict(model, xa, batch_size=len(xa), amp=amp) == yb)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)


def _entry(correct: torch.Tensor, settings: Mapping[str, Any]) -> dict:
    n = int(correct.numel())
    return {"accuracy": float(correct.float().mean()) if n else float("nan"), "n": n, "attack": dict(settings)}


def _pgd_attack(model, *, eps, alpha, steps, norm="linf", restarts=1, amp=False) -> Attack:
    def run(xb, yb, gen):
        return attacks.pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=True,
                           restarts=restarts, generator=gen, amp=amp)
    return run


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: EvalConfig, *, seed: int = 0,
                   progress: bool = True, amp: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    """Evaluate `model` on the first cfg.n_test samples of (x, y).

    x: float in [0, 1] (or uint8, divided by 255) [N, C, H, W] on the model's device (moved if not);
    y: int64 [N]. Returns (metrics, outcomes):
      metrics[name] = {"accuracy": float, "n": int, "attack": {settings}} for name in
        clean, fgsm, pgd{steps}, pgd50x{restarts}, l2_pgd20, autoattack (those enabled in cfg),
        plus metrics["sanity"] (see `sanity_checks`) when cfg.sanity;
      outcomes[name] = np.bool_ [n] "correct on clean AND adversarial input" (module docstring).
    Random starts use a torch.Generator seeded with `seed` (+ a per-attack offset); AutoAttack gets `seed`.
    The model's train/eval mode is restored.
    """
    dev = _model_device(model)
    n = min(int(cfg.n_test), len(x))
    x = _as_float01(x[:n].to(dev))
    y = y[:n].to(dev).long()
    bs = int(cfg.batch_size)
    kw = dict(batch_size=bs, progress=progress, amp=amp)

    metrics: dict[str, Any] = {}
    outcomes: dict[str, np.ndarray] = {}
    with attacks.eval_mode(model):
        clean = _correct_under(model, x, y, None, seed=seed, desc="clean", **kw)
        metrics["clean"] = _entry(clean, {"name": "clean"})
        outcomes["clean"] = clean.cpu().numpy()

        runs: list[tuple[str, dict, Attack]] = []
        if cfg.fgsm:
            runs.append(("fgsm", {"name": "fgsm", "norm": "linf", "eps": cfg.eps},
                         lambda xb, yb, g: attacks.fgsm(model, xb, yb, eps=cfg.eps, amp=amp)))
        runs.append((f"pgd{cfg.pgd_steps}",
                     {"name": "pgd", "norm": "linf", "eps": cfg.eps, "alpha": cfg.alpha, "steps": cfg.pgd_steps,
                      "restarts": 1, "random_start": True},
                     _pgd_attack(model, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.pgd_steps, amp=amp)))
        if cfg.pgd50_restarts > 0:
            runs.append((f"pgd50x{cfg.pgd50_restarts}",
                         {"name": "pgd", "norm": "linf", "eps": cfg.eps, "alpha": cfg.alpha, "steps": 50,
                          "restarts": cfg.pgd50_restarts, "random_start": True},
                         _pgd_attack(model, eps=cfg.eps, alpha=cfg.alpha, steps=50, restarts=cfg.pgd50_restarts,
                                     amp=amp)))
        if cfg.l2_eps > 0:
            runs.append(("l2_pgd20",
                         {"name": "pgd", "norm": "l2", "eps": cfg.l2_eps, "alpha": cfg.l2_eps / 4, "steps": 20,
                          "restarts": 1, "random_start": True},
                         _pgd_attack(model, eps=cfg.l2_eps, alpha=cfg.l2_eps / 4, steps=20, norm="l2", amp=amp)))
        for k, (name, settings, attack) in enumerate(runs):
            ok = _correct_under(model, x, y, attack, seed=seed + 1000 * (k + 1), desc=name, **kw) & clean
            metrics[name] = _entry(ok, settings)
            outcomes[name] = ok.cpu().numpy()

        if cfg.autoattack:
            na = min(int(cfg.autoattack_n), n)
            ok = _autoattack(model, x[:na], y[:na], eps=cfg.eps, seed=seed, batch_size=bs, progress=progress)
            ok &= clean[:na]
            metrics["autoattack"] = _entry(ok, {"name": "autoattack", "version": "standard", "norm": "Linf",
                                               "eps": cfg.eps, "implementation": "torchattacks", "seed": seed})
            outcomes["autoattack"] = ok.cpu().numpy()

    if cfg.sanity:
        metrics["sanity"] = sanity_checks(model, x, y, cfg, metrics, seed=seed, progress=progress, amp=amp)
    return metrics, outcomes


def _autoattack(model, x, y, *, eps, seed, batch_size, progress) -> torch.Tensor:
    import torchattacks

    with torch.no_grad():
        k = int(model(x[:1]).shape[1])
    aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=k, seed=seed)
    out = []
    for i in tqdm(range(0, len(x), batch_size), desc="autoattack", disable=not progress, leave=False):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        xa = aa(xb, yb)
        out.append(attacks.predict(model, xa, batch_size=len(xa)) == yb)
    return torch.cat(out)


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
        if "fgsm" in metrics:
            f = metrics["fgsm"]["accuracy"]
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
