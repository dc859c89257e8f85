"""Adversarial attacks used by training (PGD-AT, TRADES, FGSM-RS) and evaluation (FGSM, PGD, DeepFool, min-eps).

Conventions (all functions):
    * inputs ``x`` are float tensors in [0, 1] of shape [N, C, H, W]; the model normalises inside and
      returns logits; ``y`` are int64 labels [N]. Budgets ``eps``/``alpha`` are in [0, 1] pixel units.
    * the model runs in **eval mode** during the attack; the exact train/eval flag of every sub-module
      is restored afterwards (try/finally), whatever it was.
    * gradients are taken w.r.t. the input only (``torch.autograd.grad``); ``param.grad`` is never touched.
    * results are detached, lie in [0, 1] and inside the eps-ball around ``x`` (Linf or L2).
    * ``amp=True`` runs forward passes under ``torch.autocast(<the input's device>, bfloat16)`` (the callers pass
      `runtime.use_amp`: on CUDA with runtime.amp, on the CPU only with runtime.cpu_bf16); losses are always
      computed in float32 from the logits.
    * no per-sample Python loops and no host syncs inside the step loops (``pgd`` restarts and
      ``deepfool_distance`` sync once per restart / step to shrink the working set).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

Budget = Union[float, torch.Tensor]  # a float, or a per-sample tensor [N]

__all__ = ["fgsm", "pgd", "fgsm_rs", "trades_adv", "trades_loss", "deepfool_distance", "min_flip_eps",
           "eval_mode", "predict"]


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every sub-module in eval mode; restore each module's own flag afterwards (even on error)."""
    saved = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, t in saved:
            m.training = t


def _autocast(x: torch.Tensor, amp: bool):
    if amp:
        return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _logits(model: nn.Module, x: torch.Tensor, amp: bool) -> torch.Tensor:
    # Images go through the model in channels_last (NHWC): measured 1.2-1.4x faster per PGD step on CPU
    # even for an NCHW model, and the fast layout on CUDA. Gradients flow back to x in x's own layout.
    if x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(x, amp):
        out = model(x)
    return out.float()


class AmpLogits(nn.Module):
    """`model` seen through `_logits` (channels_last, bf16 autocast when amp, float32 logits): how an attack written
    for a plain model (torchattacks) runs at the speed of ours. Train / eval mode passes through to `model`."""

    def __init__(self, model: nn.Module, amp: bool = True):
        super().__init__()
        self.model, self.amp = model, amp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _logits(self.model, x, self.amp)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, amp: bool = False) -> torch.Tensor:
    """Arg-max predictions [N] in eval mode (mode restored), batched."""
    with eval_mode(model):
        return torch.cat([_logits(model, x[i:i + batch_size], amp).argmax(1) for i in range(0, len(x), batch_size)])


def _per_sample(v: Budget, x: torch.Tensor) -> Budget:
    """A float stays a float; a tensor [N] becomes [N, 1, 1, 1] (broadcastable against x)."""
    if isinstance(v, torch.Tensor):
        v = v.to(device=x.device, dtype=x.dtype)
        if v.dim() == 0:
            return float(v)
        return v.view(-1, *([1] * (x.dim() - 1)))
    return float(v)


def _bounds(x: torch.Tensor, eps: Budget) -> tuple[torch.Tensor, torch.Tensor]:
    """Box [lo, hi] = Linf ball around x intersected with [0, 1] (lo <= hi since x is in [0, 1])."""
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def _loss(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Summed (not mean) attack loss, so per-sample gradients do not shrink with the batch size."""
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    if kind == "cw":  # Carlini-Wagner margin: max_{k != y} z_k - z_y
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
        return (other - z_y).sum()
    raise ValueError(f"unknown attack loss {kind!r}; choose 'ce' or 'cw'")


def _input_grad(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, kind: str, amp: bool) -> torch.Tensor:
    with torch.enable_grad():  # attacks also work when called under torch.no_grad()
        x_adv.requires_grad_(True)
        loss = _loss(_logits(model, x_adv, amp), y, kind)
        (g,) = torch.autograd.grad(loss, x_adv)
    return g


def _uniform(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """U(-1, 1) noise shaped like x."""
    return torch.empty_like(x).uniform_(-1.0, 1.0, generator=generator)


def _linf_step(x_adv: torch.Tensor, g: torch.Tensor, alpha, lo, hi) -> torch.Tensor:
    """One signed-gradient step of size alpha (a float, or per sample [B, 1, 1, 1]) projected into [lo, hi]
    (the eps ball within [0, 1]), in place on a detached copy."""
    x_adv = x_adv.detach()
    if isinstance(alpha, float):
        x_adv.add_(g.sign(), alpha=alpha)
    else:
        x_adv.addcmul_(g.sign(), alpha)
    torch.clamp(x_adv, min=lo, max=hi, out=x_adv)
    return x_adv


# ----------------------------------------------------------------------------- FGSM / FGSM-RS
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Budget, amp: bool = False) -> torch.Tensor:
    """FGSM (Goodfellow et al. 2015): x + eps * sign(grad CE), clamped to [0, 1]."""
    with eval_mode(model):
        x = x.detach()
        e = _per_sample(eps, x)
        g = _input_grad(model, x.clone(), y, "ce", amp)
        return (x + e * g.sign()).clamp_(0.0, 1.0).detach()


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Budget, alpha: Optional[Budget] = None,
            generator: Optional[torch.Generator] = None, amp: bool = False) -> torch.Tensor:
    """'Fast is better than free' (Wong et al. 2020) training example.

    delta ~ U(-eps, eps) (the start is clamped to [0, 1]), one signed step of ``alpha`` (default
    1.25 * eps), projection to the Linf ball and to [0, 1].
    """
    with eval_mode(model):
        x = x.detach()
        e = _per_sample(eps, x)
        a = 1.25 * e if alpha is None else _per_sample(alpha, x)
        lo, hi = _bounds(x, e)
        x_adv = torch.clamp(x + _uniform(x, generator) * e, 0.0, 1.0)
        return _linf_step(x_adv, _input_grad(model, x_adv, y, "ce", amp), a, lo, hi)


# ----------------------------------------------------------------------------- PGD
def _pgd_once(model, x, y, eps, alpha, steps, norm, random_start, kind, generator, amp) -> torch.Tensor:
    if norm == "linf":
        lo, hi = _bounds(x, eps)
        if random_start:
            x_adv = torch.clamp(x + _uniform(x, generator) * eps, 0.0, 1.0)
        else:
            x_adv = x.clone()
        for _ in range(steps):
            x_adv = _linf_step(x_adv, _input_grad(model, x_adv, y, kind, amp), alpha, lo, hi)
        return x_adv.detach()

    # L2
    if random_start:
        # uniform in the L2 ball: gaussian direction, radius eps * U^(1/d); then clamp to [0, 1]
        # (clamping towards x in [0, 1] only shrinks |delta|, so the start stays in the ball).
        d = x[0].numel()
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        r = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, device=x.device, dtype=x.dtype)
        delta = noise / _flat_norm(noise).clamp_min(1e-12) * (r ** (1.0 / d)) * eps
        x_adv = torch.clamp(x + delta, 0.0, 1.0)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        g = _input_grad(model, x_adv, y, kind, amp)
        x_adv = x_adv.detach()
        x_adv.add_(g / _flat_norm(g).clamp_min(1e-12) * alpha)
        delta = x_adv.sub_(x)  # in place: x_adv now holds delta
        delta.mul_(torch.clamp(eps / _flat_norm(delta).clamp_min(1e-12), max=1.0))
        x_adv = delta.add_(x).clamp_(0.0, 1.0)
    return x_adv.detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Budget, alpha: Budget, steps: int,
        norm: str = "linf", random_start: bool = True, restarts: int = 1, loss: str = "ce",
        generator: Optional[torch.Generator] = None, amp: bool = False) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018), untargeted, batched.

    norm: "linf" (signed steps, projection by clamping) or "l2" (L2-normalised steps, projection by
    rescaling; random start uniform in the L2 ball). eps / alpha: floats or per-sample tensors [N].
    Random start (Linf): x + U(-eps, eps), clamped to [0, 1] (as torchattacks.PGD). loss: "ce" | "cw".
    generator: a torch.Generator on x's device for the random starts (default: the global RNG).

    restarts > 1: each sample gets the result of the first restart whose final iterate fools the model
    (later restarts run only on the samples not yet fooled); samples never fooled get the last
    restart's result. So a sample counts as robust only if every restart fails.
    Returns detached adversarial inputs in [0, 1] inside the eps-ball.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; choose 'linf' or 'l2'")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    x = x.detach()
    y = y.detach()
    eps_all = _per_sample(eps, x)
    alpha_all = _per_sample(alpha, x)
    with eval_mode(model):
        x_adv = _pgd_once(model, x, y, eps_all, alpha_all, steps, norm, random_start, loss, generator, amp)
        if restarts == 1:
            return x_adv
        with torch.no_grad():
            fooled = _logits(model, x_adv, amp).argmax(1) != y
        for _ in range(restarts - 1):
            idx = (~fooled).nonzero().squeeze(1)  # one host sync per restart
            if idx.numel() == 0:
                break
            sub = lambda v: v if isinstance(v, float) else v[idx]  # noqa: E731
            cand = _pgd_once(model, x[idx], y[idx], sub(eps_all), sub(alpha_all), steps, norm, random_start,
                             loss, generator, amp)
            with torch.no_grad():
                f = _logits(model, cand, amp).argmax(1) != y[idx]
            x_adv[idx] = cand  # fooled ones: first fooling restart; others: the latest restart
            fooled[idx] = f
        return x_adv.detach()


# ----------------------------------------------------------------------------- TRADES
def trades_adv(model: nn.Module, x: torch.Tensor, *, eps: Budget, alpha: Budget, steps: int,
               generator: Optional[torch.Generator] = None, amp: bool = False) -> torch.Tensor:
    """TRADES inner maximisation (Zhang et al. 2019, reference implementation's PGD on KL).

    Start at x + 0.001 * N(0, 1) (clamped into the Linf ball and [0, 1], a no-op away from the box
    edges), then ``steps`` signed steps of ``alpha`` maximising sum-reduced
    KL(softmax(f(x)) || softmax(f(x_adv))) (the reference's ``KLDivLoss(size_average=False)``), each
    followed by projection onto the Linf ball and [0, 1]. Runs in eval mode (mode restored) - the
    choice of most modern reimplementations; the reference ran it in train mode, which updates BN
    running statistics with adversarial batches.
    """
    with eval_mode(model):
        x = x.detach()
        e, a = _per_sample(eps, x), _per_sample(alpha, x)
        lo, hi = _bounds(x, e)
        with torch.no_grad():
            p_nat = F.softmax(_logits(model, x, amp), dim=1)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = torch.clamp(x + 0.001 * noise, min=lo, max=hi)
        for _ in range(steps):
            with torch.enable_grad():
                x_adv.requires_grad_(True)
                kl = F.kl_div(F.log_softmax(_logits(model, x_adv, amp), dim=1), p_nat, reduction="sum")
                (g,) = torch.autograd.grad(kl, x_adv)
            x_adv = _linf_step(x_adv, g, a, lo, hi)
        return x_adv.detach()


def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Budget, alpha: Budget, steps: int,
                beta: float, generator: Optional[torch.Generator] = None, amp: bool = False,
                weights: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """TRADES training loss: CE(f(x), y) + beta * KL(softmax(f(x)) || softmax(f(x_adv))), KL 'batchmean'.

    The adversarial example comes from ``trades_adv`` (eval mode). The outer loss is computed in the
    model's **current** mode - the caller puts the model in train mode (as the training loop does).
    Clean and adversarial batches go through the model in two separate forward passes (BN batch
    statistics are not mixed), and gradients flow through both terms, as in the reference.
    beta == 0 skips the attack (the loss is then exactly the clean cross-entropy).
    weights: per-sample weights [N] (adaptive coresets): the loss is then sum_i w_i (CE_i + beta KL_i) / sum_i w_i,
    KL_i summed over classes; with weights None the reference's means (equal to all-ones weights).
    Returns (loss, clean logits [float32]); ``loss.backward()`` is the caller's job.
    """
    logits = _logits(model, x, amp)
    if weights is None:
        loss = F.cross_entropy(logits, y)
    else:
        w = weights.to(logits.dtype)
        ce_i = F.cross_entropy(logits, y, reduction="none")
    if beta == 0:
        return (loss if weights is None else (w * ce_i).sum() / w.sum()), logits
    x_adv = trades_adv(model, x, eps=eps, alpha=alpha, steps=steps, generator=generator, amp=amp)
    logits_adv = _logits(model, x_adv, amp)
    if weights is None:
        kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return loss + beta * kl, logits
    kl_i = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="none").sum(1)
    return (w * (ce_i + beta * kl_i)).sum() / w.sum(), logits


# ----------------------------------------------------------------------------- DeepFool
def deepfool_distance(model: nn.Module, x: torch.Tensor, *, steps: int = 50, overshoot: float = 0.02,
                      num_classes: Optional[int] = None, batch_size: int = 256, amp: bool = False,
                      return_flipped: bool = False):
    """L2 DeepFool (Moosavi-Dezfooli et al. 2016) perturbation size: a "distance to the decision boundary".

    Per sample, the label is the model's own clean prediction. Each step linearises the logit gaps to
    the candidate classes (the ``num_classes`` top classes of the clean logits, default all), takes the
    minimal step r_i = (|f'_k| / ||w'_k|| + 1e-4) * w'_k / ||w'_k|| to the nearest linearised boundary,
    and accumulates r_tot; the iterate is x + (1 + overshoot) * r_tot (no [0, 1] clamping: this is a
    geometric distance in input space). Returns ||(1 + overshoot) * r_tot||_2 [N] (float32, on x's device).

    For a linear binary model the value is (1 + overshoot) * (|w.x + b| / ||w|| + 1e-4).
    Samples not flipped within ``steps`` keep the accumulated norm (a lower bound, finite; 0 when the
    gradient vanishes); pass ``return_flipped=True`` to also get the bool mask [N] of flipped samples.
    Batched over samples (chunks of ``batch_size``); a Python loop over candidate classes and steps.
    """
    dists, flips = [], []
    with eval_mode(model), torch.enable_grad():
        for i in range(0, len(x), batch_size):
            d, f = _deepfool_chunk(model, x[i:i + batch_size].detach(), steps, overshoot, num_classes, amp)
            dists.append(d)
            flips.append(f)
    dist, flipped = torch.cat(dists), torch.cat(flips)
    return (dist, flipped) if return_flipped else dist


def _deepfool_chunk(model, x, steps, overshoot, num_classes, amp):
    n = x.shape[0]
    with torch.no_grad():
        logits0 = _logits(model, x, amp)
    k_all = logits0.shape[1]
    k = k_all if num_classes is None else max(2, min(num_classes, k_all))
    cand = logits0.argsort(dim=1, descending=True)[:, :k]  # cand[:, 0] = original prediction
    orig = cand[:, 0]
    r_tot = torch.zeros_like(x)
    flipped = torch.zeros(n, dtype=torch.bool, device=x.device)
    active = torch.arange(n, device=x.device)
    view = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(steps):
        xa = (x[active] + (1 + overshoot) * r_tot[active]).requires_grad_(True)
        logits = _logits(model, xa, amp)
        c = cand[active]
        now_flipped = logits.argmax(1) != c[:, 0]
        f0 = logits.gather(1, c[:, :1]).squeeze(1)
        g0 = torch.autograd.grad(f0.sum(), xa, retain_graph=True)[0]
        best_pert = torch.full((len(active),), float("inf"), device=x.device)
        best_w = torch.zeros_like(xa)
        for j in range(1, k):
            fj = logits.gather(1, c[:, j:j + 1]).squeeze(1)
            gj = torch.autograd.grad(fj.sum(), xa, retain_graph=j < k - 1)[0]
            w = gj - g0
            wn = w.flatten(1).norm(dim=1)
            pert = (fj - f0).detach().abs() / wn.clamp_min(1e-12)
            pert = torch.where(wn > 0, pert, torch.full_like(pert, float("inf")))
            better = pert < best_pert
            best_pert = torch.where(better, pert, best_pert)
            best_w = torch.where(better.view(view), w, best_w)
        wn = best_w.flatten(1).norm(dim=1).clamp_min(1e-12)
        step_ok = torch.isfinite(best_pert) & ~now_flipped
        r_i = ((best_pert + 1e-4) / wn).masked_fill(~step_ok, 0.0).view(view) * best_w
        r_tot[active] += r_i.detach()  # (r_i carries no graph: best_w comes from autograd.grad)
        flipped[active] |= now_flipped
        # keep iterating on the samples neither flipped nor stuck (vanishing gradient): one sync per step
        active = active[step_ok]
        if active.numel() == 0:
            break
    if active.numel() > 0:  # last update may have flipped them: check once more
        with torch.no_grad():
            pred = _logits(model, x[active] + (1 + overshoot) * r_tot[active], amp).argmax(1)
        flipped[active] |= pred != orig[active]
    dist = ((1 + overshoot) * r_tot).flatten(1).norm(dim=1)
    return dist.float(), flipped


# ----------------------------------------------------------------------------- minimal flipping eps
def min_flip_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps_max: float = 16 / 255,
                 alpha_frac: float = 0.25, steps: int = 10, iters: int = 8, random_start: bool = False,
                 generator: Optional[torch.Generator] = None, amp: bool = False) -> torch.Tensor:
    """Smallest Linf eps at which PGD(eps, alpha=alpha_frac*eps, steps) flips each sample, by bisection.

    Batched bisection over per-sample eps in [0, eps_max], ``iters`` halvings (resolution
    eps_max / 2**iters); each returned value is the upper end of the final bracket (an eps at which the
    attack did flip the sample). Samples misclassified at eps=0 get 0; samples PGD does not flip at
    eps_max get +inf. ``random_start`` defaults to False so the result is deterministic. Float32 [N].
    """
    x, y = x.detach(), y.detach()
    out = torch.full((len(x),), float("inf"), device=x.device)

    def fools(idx: torch.Tensor, eps: Budget) -> torch.Tensor:
        adv = pgd(model, x[idx], y[idx], eps=eps, alpha=alpha_frac * eps, steps=steps, random_start=random_start,
                  generator=generator, amp=amp)
        with torch.no_grad(), eval_mode(model):
            return _logits(model, adv, amp).argmax(1) != y[idx]

    with torch.no_grad(), eval_mode(model):
        wrong = _logits(model, x, amp).argmax(1) != y
    out[wrong] = 0.0
    idx = (~wrong).nonzero().squeeze(1)
    if idx.numel() == 0:
        return out
    idx = idx[fools(idx, float(eps_max))]
    if idx.numel() == 0:
        return out
    lo = torch.zeros(len(idx), device=x.device)
    hi = torch.full((len(idx),), float(eps_max), device=x.device)
    for _ in range(iters):
        mid = (lo + hi) / 2
        f = fools(idx, mid)
        hi = torch.where(f, mid, hi)
        lo = torch.where(f, lo, mid)
    out[idx] = hi
    return out
