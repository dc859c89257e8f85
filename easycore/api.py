"""EasyCore and every other static coreset method on your own data, model and training loop: record while you
train, then select a coreset; or one call that does both.

    import easycore.api as ec

    keep = ec.coreset(train_set, make_model, fraction=0.1)        # one call: train a proxy, record, select (EasyCore)
    keep = ec.coreset(train_set, make_model, 0.1, method="el2n", device="cuda", epochs=20)

In your own loop:

    rec = ec.Recorder(n=len(train_set))                   # exact AIGN and the training dynamics, once per epoch
    for epoch in range(epochs):
        for x, y in train_loader:                          # your training step, unchanged
            ...
        rec.end_epoch(model, score_loader)                 # score_loader: the un-augmented train set, in order
    rec.final(model, score_loader)                         # features and DeepFool distances (only some methods)
    keep = ec.select(rec.scores(), fraction=0.1, labels=train_labels, balanced=True)   # EasyCore: indices to keep
    keep = ec.select_method("forgetting", rec, fraction=0.1)                          # any static method
    subset = torch.utils.data.Subset(train_set, keep)

What each method needs (`ec.needs(method)` says it in words; `ec.select_method` refuses with that sentence):

    easycore, hard, easycore_balanced, ccs   AIGN: end_epoch (exact or inline)
    el2n, forgetting, aum, entropy, margin   the dynamics (loss, correctness, margin, EL2N, entropy per epoch): end_epoch
                                             in exact mode (one eval-mode pass over the scoring loader gives both)
    grand                                    the penultimate features in that pass: a model with `features` and `fc`
                                             (the easycore models), or Recorder(features=fn), fn(model, x) -> [B, d]
    moderate, kcenter, herding               the final model's features: final(model, loader) with features as above
    deepfool, deepfool_far                   the final model's DeepFool distances: final(model, loader)
    random, random_balanced                  nothing but the labels

`inline` mode (nearly free: the input gradient of your own training step) records AIGN (L2) only; it needs
`x.requires_grad_(True)` before the forward pass and one call per batch after `loss.backward()`:

    rec = ec.Recorder(n=len(train_set), mode="inline")
    for epoch in range(epochs):
        for x, y, idx in train_loader:                     # idx: the samples' positions in train_set
            x.requires_grad_(True)
            loss = F.cross_entropy(model(x), y)            # the batch's MEAN loss
            opt.zero_grad(); loss.backward(); opt.step()
            rec.batch(idx, x.grad)
        rec.end_epoch()

These are the pipeline's own functions (`easycore.core.aign.AIGNTracker` accumulates the per-epoch rows,
`easycore.core.aign.dynamics_from_logits` the dynamics, `easycore.core.attacks.deepfool_distance` the distances,
`easycore.core.coresets.select` / `select_by_score` choose), so a score or a selection made here equals the pipeline's for
the same records. `rec.records()` returns them under the keys the coreset registry reads (`aign_l1`, `aign_l2`,
`aign_linf`, `loss`, `correct`, `margin`, `el2n`, `grand`, `entropy` [epochs, n]; `features` [n, d], `deepfool` [n];
`labels`: given, or seen in the first scoring pass).

The scoring loader must yield every training sample once, in the order of the set ((x, y) batches), or with its
positions ((x, y, idx) batches). A shuffling loader without positions attributes each record to another sample:
`end_epoch` warns when the loader's sampler is random, and refuses when its labels disagree with the labels of the
positions it implies.

Works on CPU and CUDA: the gradients are computed where the model is; the records are kept on the CPU.
`AIGNRecorder` is the same class as `Recorder` (its earlier name).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from easycore.core.aign import DYNAMICS, AIGNTracker, _norms, aign_scores, dynamics_from_logits, norm_key
from easycore.core.coresets import budget, check_fraction, select_by_score
from easycore.core.methods import METHODS, score_names   # every registered method, the adaptive ones included

__all__ = ["Recorder", "AIGNRecorder", "input_grad_norms", "select", "select_method", "needs", "coreset"]

FeatureFn = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def input_grad_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample ||d CE(model(x_i), y_i) / d x_i|| in L1, L2 and Linf (keys aign_l1, aign_l2, aign_linf), in
    eval mode (the model's mode is restored): each sample's own gradient, independent of the rest of the batch
    (as long as the model has no batch-coupled layers in eval mode). CPU float32 tensors [B]."""
    return {k: v for k, v in _scoring_pass(model, x, y, dynamics=False).items() if k.startswith("aign_")}


def _has_head(model: torch.nn.Module) -> bool:
    """An easycore-style model: logits = model.fc(model.features(x)), fc linear (the pipeline's proxy models)."""
    return callable(getattr(model, "features", None)) and isinstance(getattr(model, "fc", None), torch.nn.Linear)


def _scoring_pass(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, dynamics: bool = True,
                  features: Optional[FeatureFn] = None) -> dict[str, torch.Tensor]:
    """One eval-mode forward and input backward of a batch (the model's mode restored): the input-gradient norms
    and, with `dynamics`, the per-sample dynamics of `aign.dynamics_from_logits` (as the pipeline's exact pass:
    for a model with `features` and `fc` the logits are fc(features(x)), one forward). GraNd needs the penultimate
    features: left out when the model has no `features`/`fc` and no `features` function is given."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            xr = x.detach().clone().requires_grad_(True)
            feats = None
            if _has_head(model) and features is None:
                feats = model.features(xr)
                logits = model.fc(feats)
            else:
                logits = model(xr)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xr)
        out = {"aign_l1": _norms(g, 1), "aign_l2": _norms(g, 2), "aign_linf": _norms(g, math.inf)}
        if dynamics:
            if feats is None and features is not None:
                with torch.no_grad():
                    feats = features(model, x.detach())
            dyn = dynamics_from_logits(logits.detach(), y,
                                       feats.detach().flatten(1) if feats is not None else logits.detach())
            if feats is None:
                dyn.pop("grand")
            out.update(dyn)
    finally:
        model.train(was_training)
    return {k: v.detach().cpu() if k == "correct" else v.detach().float().cpu() for k, v in out.items()}


def _device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _shuffles(loader) -> bool:
    """Whether a torch DataLoader draws its samples in a random order (a random sampler, or a batch sampler over one)."""
    from torch.utils.data import RandomSampler, SubsetRandomSampler, WeightedRandomSampler

    random = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)
    inner = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    return isinstance(getattr(loader, "sampler", None), random) or isinstance(inner, random)


def _check_in_order(loader, positions: bool) -> None:
    """Warn about a scoring loader whose order may not be the set's: a shuffling one (even with positions), or,
    without positions, any sampler but a sequential one (its batches are taken as samples 0, 1, 2, ...)."""
    from torch.utils.data import RandomSampler, SequentialSampler

    inner = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    sampler = inner if inner is not None else getattr(loader, "sampler", None)
    if positions or sampler is None or isinstance(sampler, SequentialSampler):
        msg = ("the scoring loader shuffles (its sampler draws at random): the records go to the positions its "
               "batches yield; use shuffle=False for scoring") if positions and _shuffles(loader) else None
    elif isinstance(sampler, RandomSampler):      # certainly another order: every record would go to another sample
        raise ValueError("the scoring loader shuffles (DataLoader(shuffle=True)) and yields no positions: each record "
                         "would go to another sample; use shuffle=False for scoring, or yield (x, y, idx)")
    else:
        msg = (f"the scoring loader uses a {type(sampler).__name__} and yields no positions: its batches are taken "
               f"as samples 0, 1, 2, ... in order; yield (x, y, idx) if they are not")
    if msg:
        warnings.warn(msg, UserWarning, stacklevel=5)


class Recorder:
    """Records per-sample input-gradient norms (AIGN) and the training dynamics once per epoch, for `n` training
    samples, and (optionally) the final model's features and DeepFool distances: the records every static coreset
    method ranks by (`needs` says which method needs what).

    mode 'exact': `end_epoch(model, loader)` runs one eval-mode pass over `loader` (the un-augmented training set;
    batches (x, y) in the order of the set, or (x, y, idx) with idx the positions in the set) and records L1, L2 and
    Linf norms and, with `dynamics` (default), loss, correctness, margin, EL2N, entropy (and GraNd where the
    penultimate features are known: a model with `features` and `fc`, or `features=fn`, fn(model, x) -> [B, d]).
    mode 'inline': `batch(idx, x_grad)` after each training step's backward (x_grad: the input gradient of the
    batch's MEAN loss; rescaled by the batch size), `end_epoch()` closes the epoch; AIGN (L2) only.
    `every`: record every k-th epoch (and the last one when `epochs` is given).
    """

    def __init__(self, n: int, *, mode: str = "exact", every: int = 1, epochs: Optional[int] = None,
                 labels: Optional[Iterable[int]] = None, dynamics: bool = True, features: Optional[FeatureFn] = None):
        if mode not in ("exact", "inline"):
            raise ValueError(f"mode must be 'exact' or 'inline', got {mode!r}")
        if int(n) < 1 or int(every) < 1:
            raise ValueError(f"n and every must be >= 1, got n={n}, every={every}")
        self.n, self.mode = int(n), mode
        self.labels = None if labels is None else np.asarray(
            labels.cpu() if torch.is_tensor(labels) else labels, dtype=np.int64)
        if self.labels is not None and self.labels.shape != (self.n,):
            raise ValueError(f"labels must have shape ({self.n},), got {self.labels.shape}")
        self.dynamics, self.features = bool(dynamics) and mode == "exact", features
        # epochs=10**9: without a known last epoch only every k-th epoch is tracked
        self._tracker = AIGNTracker(n=self.n, mode=mode, every=int(every), epochs=int(epochs or 10 ** 9))
        self._final: dict[str, np.ndarray] = {}
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
                exact = self._pass(model, loader, dynamics=self.dynamics)
        else:
            if not self._open:
                t.start_epoch(self.epoch, "cpu")
                self._covered = torch.zeros(self.n, dtype=torch.bool)
            if t.inline_active:
                self._check_epoch(t._inline["aign_inline_l2"], self._covered, "batch() record")
        t.end_epoch(self.epoch, exact)
        self.epoch += 1
        self._open = False

    def _batches(self, loader):
        """(x, y, positions [B] on the CPU) of every batch of a scoring loader, checked: positions inside [0, n),
        labels that agree with `labels` (given, or seen in the first pass) at those positions."""
        seen = np.full(self.n, -1, dtype=np.int64) if self.labels is None else None
        pos = 0
        for b in loader:
            x, y = b[0], b[1]
            if pos == 0:
                _check_in_order(loader, len(b) > 2)
            if len(b) > 2:
                idx = torch.as_tensor(b[2], dtype=torch.long).cpu()
            else:
                idx = torch.arange(pos, pos + len(y))
            pos += len(y)
            if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
                raise ValueError(f"the loader yields positions outside [0, {self.n}): is n the training set's size?")
            yc = torch.as_tensor(y).cpu().numpy().astype(np.int64)
            if self.labels is not None and not np.array_equal(self.labels[idx.numpy()], yc):
                raise ValueError("the scoring loader's labels disagree with the labels of the positions it implies: "
                                 "it is shuffled (or another set); score with shuffle=False, or yield (x, y, idx)")
            if seen is not None:
                seen[idx.numpy()] = yc
            yield x, torch.as_tensor(y), idx
        if seen is not None and (seen >= 0).all():
            self.labels = seen          # the first complete pass fixes the labels; later passes are checked

    def _pass(self, model: torch.nn.Module, loader, *, dynamics: bool) -> dict[str, torch.Tensor]:
        device = _device(model)
        out: dict[str, torch.Tensor] = {}
        covered = torch.zeros(self.n, dtype=torch.bool)
        for x, y, idx in self._batches(loader):
            rec = _scoring_pass(model, x.to(device), y.to(device), dynamics=dynamics, features=self.features)
            for k, v in rec.items():
                if k not in out:
                    out[k] = torch.zeros(self.n, dtype=torch.bool) if k == "correct" else \
                        torch.full((self.n,), float("nan"))
                out[k][idx] = v
            covered[idx] = True
        missing = int((~covered).sum())
        if missing:
            raise ValueError(f"the scoring loader covered {self.n - missing} of {self.n} samples; it must yield "
                             "every training sample once (no drop_last, no sampler that skips)")
        self._check_epoch(out["aign_l2"], covered, "scoring-loader record")
        return out

    def final(self, model: torch.nn.Module, loader, *, features: bool = True, deepfool: bool = True,
              deepfool_steps: int = 50, deepfool_candidates: int = 0) -> None:
        """Records of the final model (the pipeline's proxy computes them after its last epoch): the penultimate
        `features` [n, d] (moderate, kcenter, herding; needs a model with `features` or Recorder(features=fn)) and
        the L2 DeepFool distance to the boundary [n] (deepfool, deepfool_far; `deepfool_steps` iterations over the
        `deepfool_candidates` top classes, 0 = all: the pipeline's proxy.deepfool_steps / deepfool_candidates)."""
        from easycore.core.attacks import deepfool_distance

        fn = self.features or ((lambda m, x: m.features(x)) if _has_head(model) else None)
        if features and fn is None:
            raise ValueError("final(features=True) needs the penultimate features: a model with `features` and `fc` "
                             "(the easycore models) or Recorder(features=fn), fn(model, x) -> [B, d]; or "
                             "final(..., features=False)")
        device = _device(model)
        feats, dists = torch.zeros(0), torch.full((self.n,), float("nan"))
        was_training = model.training
        model.eval()
        try:
            for x, y, idx in self._batches(loader):
                x = x.to(device)
                if features:
                    with torch.no_grad():
                        f = fn(model, x).flatten(1).float().cpu()
                    if feats.numel() == 0:
                        feats = torch.full((self.n, f.shape[1]), float("nan"))
                    feats[idx] = f
                if deepfool:
                    dists[idx] = deepfool_distance(model, x, steps=deepfool_steps,
                                                   num_classes=deepfool_candidates or None).float().cpu()
        finally:
            model.train(was_training)
        if features:
            self._final["features"] = feats.numpy()
        if deepfool:
            self._final["deepfool"] = dists.numpy()

    # -- results -----------------------------------------------------------------------------------
    @property
    def tracked_epochs(self) -> list[int]:
        return list(self._tracker.tracked_epochs)

    def records(self) -> dict[str, np.ndarray]:
        """The per-epoch matrices [tracked epochs, n] (aign_l2; exact mode also aign_l1, aign_linf and the
        dynamics), the final model's `features` / `deepfool` when `final` ran, and `labels` (given or seen): the
        artifact layout `easycore.core.coresets.select` reads."""
        if not self._tracker.tracked_epochs:
            raise ValueError("no epoch recorded yet: call end_epoch() after each epoch")
        m = self._tracker.matrices()
        keep = ("aign_l1", "aign_l2", "aign_linf") + (DYNAMICS if self.mode == "exact" else ())
        out = {k: v for k, v in m.items() if k in keep}
        out.update(self._final)
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


AIGNRecorder = Recorder


def _labels(labels, n: int) -> np.ndarray:
    """labels as int64 class indices of shape (n,): integers, or floats holding integers; anything else is a
    ValueError (float labels such as 0.5 would each be a class of their own, or match no class at all)."""
    a = np.asarray(labels.detach().cpu() if torch.is_tensor(labels) else labels)
    if a.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one per score), got {a.shape}")
    if a.dtype.kind in "iu" or (a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all()):
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


# ----------------------------------------------------------------------------- every static method
# what a Recorder call produces each record key (the sentence `needs` and `select_method` say)
_WHERE = {
    "aign": "AIGN: Recorder(...).end_epoch(model, loader) every epoch (exact mode; inline mode gives L2 only)",
    "loss": "the dynamics: end_epoch(model, loader) in exact mode", "correct": "the dynamics: end_epoch(model, "
    "loader) in exact mode", "margin": "the dynamics: end_epoch(model, loader) in exact mode",
    "el2n": "the dynamics: end_epoch(model, loader) in exact mode",
    "entropy": "the dynamics: end_epoch(model, loader) in exact mode",
    "grand": "end_epoch(model, loader) in exact mode with the penultimate features known: a model with `features` "
             "and `fc`, or Recorder(features=fn)",
    "features": "the final model's features: final(model, loader) (a model with `features`, or "
                "Recorder(features=fn))",
    "deepfool": "the final model's DeepFool distances: final(model, loader)",
}


def _needed_keys(method: str, *, p: float = 2.0, ccs_score: str = "aign") -> list[str]:
    """The record keys `method` reads (ccs: those of the method that ranks by its ccs_score)."""
    keys = []
    for k in METHODS.get(method).needs:
        if k == "aign":
            keys.append(norm_key(p))
        elif k == "ccs_score":
            by = next((m for m, e in METHODS.items() if e.score == ccs_score and e.keep in ("low", "high")), None)
            if by is None:
                raise ValueError(f"ccs_score must be one of {score_names()}, got {ccs_score!r}")
            keys += _needed_keys(by, p=p)
        else:
            keys.append(k)
    return keys


def needs(method: str, *, p: float = 2.0, ccs_score: str = "aign") -> str:
    """What `method` needs recorded, in words: which Recorder call produces it ('' for a method that needs the
    labels only: random, random_balanced)."""
    e = METHODS.get(method)
    if e.kind != "static":
        raise ValueError(f"{method!r} is not a static method ({e.kind}: " + (
            "re-selected during the pipeline's training, easycore train" if e.kind == "adaptive" else
            "the whole training set") + "): it is not chosen from records")
    out = []
    for k in _needed_keys(method, p=p, ccs_score=ccs_score):
        base = "aign" if k.startswith("aign_") else k
        out.append(f"`{k}` ({_WHERE.get(base, 'a record of the pipeline proxy')})")
    return "; ".join(dict.fromkeys(out))


def select_method(method: str, records, fraction: float, *, labels=None, balanced: bool = False, seed: int = 0,
                  **opts: Any) -> np.ndarray:
    """The coreset of any static method (`easycore methods` lists them) from a Recorder or its `records()`: the
    pipeline's `coresets.select` on them (same options: window, p, squared, score_epochs, ccs_score, ccs_cutoff,
    moderate_band, device). Labels: given, or the records'. A record the method needs and the records lack is
    named with the Recorder call that produces it."""
    from easycore.core.coresets import select as _select

    rec: Mapping[str, np.ndarray] = records.records() if isinstance(records, Recorder) else records
    e = METHODS.get(method)
    if e.kind != "static":
        needs(method)                 # raises: adaptive and reference methods are not chosen from records
    if labels is None:
        if "labels" not in rec:
            raise ValueError("no labels: pass labels=..., or Recorder(labels=...), or score with end_epoch first")
        labels = rec["labels"]
    labels = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels, dtype=np.int64)
    how = dict(p=float(opts.get("p", 2.0)), ccs_score=opts.get("ccs_score", "aign"))
    if any(k not in rec for k in _needed_keys(method, **how)):
        raise ValueError(f"{method!r} needs {needs(method, **how)}; the records hold {sorted(rec)}")
    return _select(method, rec, labels, fraction, balanced=balanced, seed=seed, **opts)


# ----------------------------------------------------------------------------- one call
def _labels_of(dataset) -> Optional[np.ndarray]:
    t = getattr(dataset, "targets", None)
    if t is None and isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) > 1:
        t = dataset.tensors[1]
    if t is None:
        return None
    return np.asarray(t.cpu() if torch.is_tensor(t) else t, dtype=np.int64)


def coreset(dataset, model_fn: Callable[[], torch.nn.Module], fraction: float, *, method: str = "easycore",
            epochs: int = 10, batch_size: int = 128, lr: float = 0.05, momentum: float = 0.9,
            weight_decay: float = 5e-4, device: Optional[str | torch.device] = None, seed: int = 0,
            balanced: bool = False, score_dataset=None, num_workers: int = 0, deepfool_steps: int = 50,
            return_records: bool = False, **opts: Any):
    """One call for the common case: train a proxy `model_fn()` on `dataset` for `epochs` (plain SGD, Nesterov
    momentum, one-cycle learning rate peaking at `lr`, cross-entropy; shuffled batches seeded by `seed`), record
    every static method's scores after each epoch on `score_dataset` (the un-augmented training set, in order;
    default `dataset`), and return the indices (int64) `method` keeps at `fraction` (EasyCore: the easiest by
    AIGN). `dataset` yields (x, y) pairs (any torch Dataset; a TensorDataset of images and labels is the simplest).
    `device`: 'cuda' when available, else 'cpu'. `opts`: selection options (window, p, ...). With
    `return_records`: (indices, the Recorder).

    Not the pipeline's proxy run bit for bit (its loader augments on the device and its schedule has more knobs);
    the same scores and selection rules."""
    from torch.utils.data import DataLoader

    fraction = check_fraction(fraction)
    e = METHODS.get(method)
    if e.kind != "static":
        needs(method)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    model = model_fn().to(device)
    n = len(dataset)
    labels = _labels_of(dataset)
    train = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                       generator=torch.Generator().manual_seed(seed))
    score = DataLoader(score_dataset if score_dataset is not None else dataset, batch_size=max(256, batch_size),
                       shuffle=False, num_workers=num_workers)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                          weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * len(train)),
                                                pct_start=0.15, anneal_strategy="linear")
    rec = Recorder(n, labels=labels, epochs=epochs)
    keys = _needed_keys(method, p=float(opts.get("p", 2.0)), ccs_score=opts.get("ccs_score", "aign"))
    for _ in range(epochs):
        model.train()
        for b in train:
            x, y = b[0].to(device, non_blocking=True), torch.as_tensor(b[1]).to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        rec.end_epoch(model, score)
    if "features" in keys or "deepfool" in keys:
        rec.final(model, score, features="features" in keys, deepfool="deepfool" in keys,
                  deepfool_steps=deepfool_steps)
    idx = select_method(method, rec, fraction, balanced=balanced, seed=seed, **opts)
    return (idx, rec) if return_records else idx
