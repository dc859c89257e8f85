"""EasyCore on your own data, model and training loop: record AIGN while you train, then select a coreset.

    import easycore.api as ec

    rec = ec.AIGNRecorder(n=len(train_set))               # exact AIGN (the pipeline's default)
    for epoch in range(epochs):
        for x, y in train_loader:                          # your training step, unchanged
            ...
        rec.end_epoch(model, score_loader)                 # score_loader: the un-augmented train set, in order
    keep = ec.select(rec.scores(), fraction=0.1, labels=train_labels, balanced=True)   # indices to keep
    subset = torch.utils.data.Subset(train_set, keep)

`inline` mode (nearly free: the input gradient of your own training step) needs `x.requires_grad_(True)` before the
forward pass and one call per batch after `loss.backward()`:

    rec = ec.AIGNRecorder(n=len(train_set), mode="inline")
    for epoch in range(epochs):
        for x, y, idx in train_loader:                     # idx: the samples' positions in train_set
            x.requires_grad_(True)
            loss = F.cross_entropy(model(x), y)            # the batch's MEAN loss
            opt.zero_grad(); loss.backward(); opt.step()
            rec.batch(idx, x.grad)
        rec.end_epoch()

These are the pipeline's own functions (`easycore.aign.AIGNTracker` accumulates the per-epoch rows,
`easycore.aign.aign_scores` averages them, `easycore.coresets.select_by_score` keeps the lowest), so a score or a
selection made here equals the pipeline's for the same records. `rec.records()` returns the per-epoch matrices
under the keys the coreset registry reads (`aign_l1`, `aign_l2`, `aign_linf`, `labels` when given), so
`easycore.coresets.select("easycore" | "hard" | ..., rec.records(), labels, fraction)` works on them too.

Works on CPU and CUDA: the gradients are computed where the model is; the records are kept on the CPU.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .aign import AIGNTracker, _norms, aign_scores, norm_key
from .coresets import budget, check_fraction, select_by_score

__all__ = ["AIGNRecorder", "input_grad_norms", "select"]


def input_grad_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample ||d CE(model(x_i), y_i) / d x_i|| in L1, L2 and Linf (keys aign_l1, aign_l2, aign_linf), in
    eval mode (the model's mode is restored): each sample's own gradient, independent of the rest of the batch
    (as long as the model has no batch-coupled layers in eval mode). CPU float32 tensors [B]."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            xr = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(xr).float(), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xr)
    finally:
        model.train(was_training)
    return {"aign_l1": _norms(g, 1).float().cpu(), "aign_l2": _norms(g, 2).float().cpu(),
            "aign_linf": _norms(g, math.inf).float().cpu()}


def _device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


class AIGNRecorder:
    """Records per-sample input-gradient norms once per epoch, for `n` training samples.

    mode 'exact': `end_epoch(model, loader)` runs one eval-mode pass over `loader` (the un-augmented training set;
    batches (x, y) in the order of the set, or (x, y, idx) with idx the positions in the set) and records L1, L2 and
    Linf norms. mode 'inline': `batch(idx, x_grad)` after each training step's backward (x_grad: the input
    gradient of the batch's MEAN loss; rescaled by the batch size), `end_epoch()` closes the epoch; L2 only.
    `every`: record every k-th epoch (and the last one when `epochs` is given).
    """

    def __init__(self, n: int, *, mode: str = "exact", every: int = 1, epochs: Optional[int] = None,
                 labels: Optional[Iterable[int]] = None):
        if mode not in ("exact", "inline"):
            raise ValueError(f"mode must be 'exact' or 'inline', got {mode!r}")
        if int(n) < 1 or int(every) < 1:
            raise ValueError(f"n and every must be >= 1, got n={n}, every={every}")
        self.n, self.mode = int(n), mode
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and self.labels.shape != (self.n,):
            raise ValueError(f"labels must have shape ({self.n},), got {self.labels.shape}")
        # epochs=10**9: without a known last epoch only every k-th epoch is tracked
        self._tracker = AIGNTracker(n=self.n, mode=mode, every=int(every), epochs=int(epochs or 10 ** 9))
        self.epoch = 0
        self._open = False

    # -- inline ------------------------------------------------------------------------------------
    def batch(self, idx, x_grad: torch.Tensor) -> None:
        """Inline mode: record one training batch. idx: positions of its samples in the training set (tensor,
        array or list); x_grad: d(mean batch loss)/d x, the batch's input gradient after `loss.backward()`."""
        if self.mode != "inline":
            raise RuntimeError("batch() is for mode='inline'; in exact mode call end_epoch(model, loader) only")
        if x_grad is None:
            raise ValueError("x_grad is None: call x.requires_grad_(True) before the forward pass")
        t = self._tracker
        if not self._open:
            t.start_epoch(self.epoch, x_grad.device)
            self._covered = torch.zeros(self.n, dtype=torch.bool, device=x_grad.device)
            self._open = True
        if not t.inline_active:      # an epoch that `every` skips
            return
        idx = self._positions(idx, len(x_grad), x_grad.device)
        t.record_inline(idx, x_grad.detach(), len(idx))
        self._covered[idx] = True

    def _positions(self, idx, batch: int, device) -> torch.Tensor:
        """idx as a long tensor on `device`: one position per sample of the batch, each in [0, n) (a negative one
        would silently index from the end)."""
        idx = torch.as_tensor(np.asarray(idx) if not torch.is_tensor(idx) else idx, device=device)
        if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.dim() != 1 or len(idx) != batch:
            raise ValueError(f"idx must be {batch} integer positions (one per sample of the batch), got "
                             f"{idx.dtype} shape {tuple(idx.shape)}")
        idx = idx.long()
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            raise ValueError(f"idx holds positions outside [0, {self.n}) (min {int(idx.min())}, max "
                             f"{int(idx.max())}): positions are 0..n-1 in the training set")
        return idx

    def _check_epoch(self, values: torch.Tensor, covered: torch.Tensor, what: str) -> None:
        """Every sample recorded once this epoch (`covered`), with a finite input-gradient norm."""
        missing = int((~covered).sum())
        if missing:
            raise ValueError(f"epoch {self.epoch + 1}: {missing} of {self.n} samples got no {what}")
        bad = (~torch.isfinite(values.to(covered.device))) & covered
        if bool(bad.any()):
            first = bad.nonzero().flatten()[:5].tolist()
            raise ValueError(f"epoch {self.epoch + 1}: {int(bad.sum())} of {self.n} samples have NaN or inf input "
                             f"gradients (positions {first}{' ...' if int(bad.sum()) > 5 else ''}): the model or the "
                             f"loss is not finite; AIGN is undefined there")

    # -- per epoch ---------------------------------------------------------------------------------
    def end_epoch(self, model: Optional[torch.nn.Module] = None, loader=None) -> None:
        """Close the epoch. Exact mode: score every sample with `model` over `loader` first (both required)."""
        t = self._tracker
        exact = None
        if self.mode == "exact":
            if model is None or loader is None:
                raise ValueError("exact mode: end_epoch(model, loader) needs the model and the un-augmented loader")
            if t.tracks(self.epoch):
                exact = self._exact(model, loader)
        else:
            if not self._open:
                t.start_epoch(self.epoch, "cpu")
                self._covered = torch.zeros(self.n, dtype=torch.bool)
            if t.inline_active:
                self._check_epoch(t._inline["aign_inline_l2"], self._covered, "batch() record")
        t.end_epoch(self.epoch, exact)
        self.epoch += 1
        self._open = False

    def _exact(self, model: torch.nn.Module, loader) -> dict[str, torch.Tensor]:
        device = _device(model)
        out = {k: torch.full((self.n,), float("nan")) for k in ("aign_l1", "aign_l2", "aign_linf")}
        covered = torch.zeros(self.n, dtype=torch.bool)
        pos = 0
        sampler = getattr(loader, "sampler", None)
        for b in loader:
            x, y = b[0].to(device), b[1].to(device)
            if len(b) > 2:
                idx = torch.as_tensor(b[2], dtype=torch.long).cpu()
            else:
                if pos == 0:
                    _check_in_order(sampler)
                idx = torch.arange(pos, pos + len(y))
            pos += len(y)
            if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
                raise ValueError(f"the loader yields positions outside [0, {self.n}): is n the training set's size?")
            if self.labels is not None and not np.array_equal(self.labels[idx.numpy()], y.cpu().numpy()):
                raise ValueError("the scoring loader's labels are not `labels` at the positions it implies: it must "
                                 "yield the un-augmented training set in order (no shuffle), or (x, y, idx)")
            for k, v in input_grad_norms(model, x, y).items():
                out[k][idx] = v
            covered[idx] = True
        if not bool(covered.all()):
            raise ValueError(f"the scoring loader covered {int(covered.sum())} of {self.n} samples; it must yield "
                             "every training sample once (no drop_last, no sampler that skips)")
        self._check_epoch(out["aign_l2"], covered, "scoring-loader record")
        return out

    # -- results -----------------------------------------------------------------------------------
    @property
    def tracked_epochs(self) -> list[int]:
        return list(self._tracker.tracked_epochs)

    def records(self) -> dict[str, np.ndarray]:
        """The per-epoch matrices [tracked epochs, n] (aign_l2; exact mode also aign_l1, aign_linf), plus
        `labels` when given: the artifact layout `easycore.coresets.select` reads."""
        if not self._tracker.tracked_epochs:
            raise ValueError("no epoch recorded yet: call end_epoch() after each epoch")
        m = self._tracker.matrices()
        out = {k: v for k, v in m.items() if k.startswith("aign_") and k != "aign_inline_l2"}
        if self.labels is not None:
            out["labels"] = self.labels
        return out

    def scores(self, *, p: float = 2.0, window: str = "all", squared: bool = False) -> np.ndarray:
        """AIGN per sample [n]: the mean over the tracked epochs in `window` ('all', 'first:K', 'last:K') of the
        L`p` input-gradient norm (p 1, 2 or inf; inline mode has p=2 only)."""
        rec = self.records()
        key = norm_key(p)
        if key not in rec:
            raise ValueError(f"p={p} was not recorded (inline mode records L2 only)")
        return aign_scores(rec[key], window, squared=squared)


def _check_in_order(sampler) -> None:
    """A scoring loader that yields (x, y) without positions must go through the set in order: a shuffling one
    (RandomSampler: DataLoader(shuffle=True)) would put every score on another sample; another sampler, a warning."""
    import warnings

    from torch.utils.data import RandomSampler, SequentialSampler

    if sampler is None or isinstance(sampler, SequentialSampler):
        return
    if isinstance(sampler, RandomSampler):
        raise ValueError("the scoring loader shuffles (DataLoader(shuffle=True)) and yields no positions: every "
                         "score would land on another sample; use shuffle=False, or batches (x, y, idx)")
    warnings.warn(f"the scoring loader uses a {type(sampler).__name__} and yields no positions: its batches are "
                  f"taken as samples 0, 1, 2, ... in order; yield (x, y, idx) if they are not", stacklevel=3)


def _labels(labels, n: int) -> np.ndarray:
    """labels as int64 class indices of shape (n,): integers, or floats holding integers; anything else is a
    ValueError (float labels such as 0.5 would each be a class of their own, or match no class at all)."""
    a = np.asarray(labels.detach().cpu() if torch.is_tensor(labels) else labels)
    if a.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one per score), got {a.shape}")
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
        return a.astype(np.int64)
    raise ValueError(f"labels must be integer class indices, got dtype {a.dtype}"
                     f"{f' (e.g. {a.flat[0]!r})' if a.size else ''}; map classes to 0..C-1 first")


def select(scores, fraction: float, *, labels=None, balanced: bool = False, keep: str = "low",
           seed: int = 0) -> np.ndarray:
    """The coreset: indices (int64, shuffled by the seed) of the `fraction` of samples with the lowest
    (keep='low': EasyCore) or highest (keep='high') score, globally or, with balanced=True (needs labels), each
    class keeping its proportional share. Ties are broken at random by the seed. The pipeline's
    `coresets.select_by_score`."""
    scores = np.asarray(scores.detach().cpu() if torch.is_tensor(scores) else scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"scores must be a non-empty 1-D array (one per sample), got shape {scores.shape}")
    if balanced and labels is None:
        raise ValueError("balanced=True needs labels")
    labels = np.zeros(len(scores), dtype=np.int64) if labels is None else _labels(labels, len(scores))
    check_fraction(fraction)
    if budget(fraction, len(scores)) == 0:
        raise ValueError(f"fraction {fraction} of {len(scores)} samples keeps none (the budget rounds to 0); use a "
                         f"fraction of at least {0.5 / len(scores):.3g}")
    idx = select_by_score(scores, labels, fraction, keep=keep, balanced=balanced, seed=seed)
    assert balanced or len(idx) == budget(fraction, len(scores))
    return idx
