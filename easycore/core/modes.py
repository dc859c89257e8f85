"""Training modes: the per-batch loss of standard training, PGD-AT, TRADES and FGSM-RS.

A mode is one function registered in MODES:
    fn(model, x, y, w, *, attack: AttackConfig, amp: bool) -> BatchOut
x float in [0, 1] (augmented), y labels, w per-sample weights [B] or None (an adaptive coreset's weights; the loss
is then sum(w_i l_i) / sum(w_i), and with w None the plain mean). The attacks run in eval mode and restore the mode
they found, so the outer loss sees the model in train mode. Adding a mode is one function and one registration.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from easycore.core import attacks
from easycore.registry import Registry

MODES = Registry("training mode", "modes")
"""name -> Entry(fn, meta). meta: adversarial (bool): the mode trains on attacked inputs (inline AIGN needs a
clean-input backward, so it is refused in adversarial modes)."""


class BatchOut(NamedTuple):
    loss: torch.Tensor                    # scalar: the (weighted) mean over the batch
    logits: torch.Tensor                  # logits on the CLEAN input when available (else adversarial)
    feats: Optional[torch.Tensor] = None  # penultimate features for those logits (standard mode)


def weighted_mean(losses: torch.Tensor, w: Optional[torch.Tensor]) -> torch.Tensor:
    """sum(w_i l_i) / sum(w_i); the plain mean when w is None."""
    if w is None:
        return losses.mean()
    w = w.to(losses.dtype)
    return (losses * w).sum() / w.sum()


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, w: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean cross-entropy (float32 from the logits), weighted by w when given."""
    if w is None:
        return F.cross_entropy(logits.float(), y)
    return weighted_mean(F.cross_entropy(logits.float(), y, reduction="none"), w)


@MODES.register("standard", adversarial=False)
def standard(model, x, y, w=None, *, attack=None, amp: bool = False) -> BatchOut:
    feats = model.features(x)
    logits = model.fc(feats)
    return BatchOut(cross_entropy(logits, y, w), logits, feats)


@MODES.register("pgd_at", adversarial=True)
def pgd_at(model, x, y, w=None, *, attack, amp: bool = False) -> BatchOut:
    """Madry et al. 2018: cross-entropy on PGD examples (attack.steps steps of attack.alpha, random start)."""
    x_adv = attacks.pgd(model, x, y, eps=attack.eps, alpha=attack.alpha, steps=attack.steps, amp=amp)
    logits = model(x_adv)
    return BatchOut(cross_entropy(logits, y, w), logits)


@MODES.register("fgsm_rs", adversarial=True)
def fgsm_rs(model, x, y, w=None, *, attack, amp: bool = False) -> BatchOut:
    """Wong et al. 2020: cross-entropy on FGSM examples from a random start (step 1.25 eps)."""
    x_adv = attacks.fgsm_rs(model, x, y, eps=attack.eps, amp=amp)
    logits = model(x_adv)
    return BatchOut(cross_entropy(logits, y, w), logits)


@MODES.register("trades", adversarial=True)
def trades(model, x, y, w=None, *, attack, amp: bool = False) -> BatchOut:
    """Zhang et al. 2019: CE(f(x), y) + beta KL(f(x) || f(x_adv)) (see attacks.trades_loss)."""
    loss, logits = attacks.trades_loss(model, x, y, eps=attack.eps, alpha=attack.alpha, steps=attack.steps,
                                       beta=attack.beta, amp=amp, weights=w)
    return BatchOut(loss, logits)
