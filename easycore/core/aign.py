"""Average input-gradient norm (AIGN): the paper's hardness score, and the per-sample training dynamics
that every baseline coreset score needs, recorded in the same pass.

AIGN(x_i) = mean over tracked epochs e of || d CE(f_e(x_i), y_i) / d x_i ||_p

Two ways to record the per-epoch values:
  exact:  after each tracked epoch, an eval-mode forward + input backward over the un-augmented training
          set (`per_sample_input_grad_norm`). In eval mode BatchNorm uses running statistics, so the
          samples of a batch do not interact and d(sum of losses)/dx_i is sample i's own gradient.
  inline: reuse the input gradient of the training step's own backward pass (train-mode BN, augmented
          input, mean loss rescaled by the batch size). Almost free; an approximation.

The per-epoch matrices are stored whole ([epochs, N] float32), so windows and norms can be ablated
without retraining (`aign_scores`). During a run with a checkpoint, each tracked epoch's records go to their own
file (`AIGNTracker.store`), and the checkpoint keeps only the list of tracked epochs.

Several processes (DDP, easycore/core/dist.py): each rank scores its shard (exact: its part of the un-augmented set;
inline: its own training batches) and the per-sample values are merged by sample index
(`dist.all_gather_by_index`), so the matrices equal a one-process run's.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

# per-epoch per-sample records written by the proxy run (all float32 [E, N] except `correct`: bool)
DYNAMICS = ("loss", "correct", "margin", "el2n", "grand", "entropy")
NORM_KEYS = {1.0: "aign_l1", 2.0: "aign_l2", math.inf: "aign_linf"}


def _norms(g: torch.Tensor, p: float) -> torch.Tensor:
    g = g.flatten(1)
    if p == 2:
        return g.norm(p=2, dim=1)
    if p == 1:
        return g.abs().sum(dim=1)
    if math.isinf(p):
        return g.abs().amax(dim=1)
    raise ValueError(f"p must be 1, 2 or inf, got {p}")


def per_sample_input_grad_norm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                               p: float = 2.0, squared: bool = False) -> torch.Tensor:
    """|| d CE(model(x_i), y_i) / d x_i ||_p for every sample i, in eval mode (the mode found is restored).

    Each value is the gradient of that sample's own loss: not divided by the batch size, and independent
    of the other samples in the batch. Returns a detached tensor [N] in x's dtype.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            xr = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(xr), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xr)
    finally:
        model.train(was_training)
    n = _norms(g, float(p))
    return (n * n if squared else n).detach()


@torch.no_grad()
def dynamics_from_logits(logits: torch.Tensor, y: torch.Tensor, feats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample statistics for the baseline scores, from logits and penultimate features.

    loss: CE; correct: argmax == y; margin: true logit minus the largest other logit (AUM's margin);
    el2n: ||softmax - onehot||_2; grand: the exact last-layer gradient norm of CE w.r.t. (W, b),
    ||p - onehot||_2 * sqrt(||h||^2 + 1); entropy: of the softmax.
    """
    logits = logits.float()
    logp = F.log_softmax(logits, dim=1)
    prob = logp.exp()
    onehot = F.one_hot(y, logits.shape[1]).to(prob.dtype)
    err = (prob - onehot).norm(dim=1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(onehot.bool(), float("-inf")).amax(dim=1)
    return {
        "loss": -logp.gather(1, y[:, None]).squeeze(1),
        "correct": logits.argmax(1) == y,
        "margin": true - other,
        "el2n": err,
        "grand": err * torch.sqrt(feats.float().pow(2).sum(1) + 1.0),
        "entropy": -(prob * logp).sum(1),
    }


def exact_pass(model: torch.nn.Module, loader, *, amp: bool = False, progress: bool = False,
               index: bool = False) -> dict[str, torch.Tensor]:
    """One eval-mode pass over a Loader of the un-augmented set in order (no shuffle): input-gradient norms
    (L1, L2, Linf) and the dynamics of `dynamics_from_logits`, per sample. Returns CPU tensors [N] in the
    loader's order; with `index`, also "index": the loader's idx (positions in the full set, int64), for a
    loader that yields a part of the set (a rank's shard) or another order. The model's mode is restored."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: dict[str, list[torch.Tensor]] = {}
    try:
        n = getattr(loader, "epoch_samples", None) or len(loader) * int(loader.batch_size)
        bar = tqdm(total=n, desc="exact AIGN", unit="img", leave=False, disable=not progress)
        for xb, yb, ib in loader:
            bar.update(len(yb))
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            xb.requires_grad_(True)
            with torch.enable_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                feats = model.features(xb)
                logits = model.fc(feats)
                loss = F.cross_entropy(logits.float(), yb, reduction="sum")
            (g,) = torch.autograd.grad(loss, xb)
            rec = {"aign_l1": _norms(g, 1), "aign_l2": _norms(g, 2), "aign_linf": _norms(g, math.inf)}
            rec.update(dynamics_from_logits(logits.detach(), yb, feats.detach()))
            if index:
                rec["index"] = ib
            for k, v in rec.items():
                out.setdefault(k, []).append(v.detach().float().cpu() if k not in ("correct", "index") else v.cpu())
        bar.close()
    finally:
        model.train(was_training)
    return {k: torch.cat(v) for k, v in out.items()}


@dataclass
class AIGNTracker:
    """Accumulates the per-epoch records of a proxy run into [E_tracked, N] arrays.

    `tracked_epochs` lists which epochs (0-based) produced a row. Without `store`, the rows are kept in memory
    and the state (a dict of numpy arrays) is saved inside the training checkpoint. With `store` (a folder;
    train() sets one beside its checkpoint), each tracked epoch's records are written there as one file
    (`epoch-EEEE.npz`, atomically, by the process with `write` True: rank 0), not kept in memory and not put in
    the checkpoint, which holds only `tracked_epochs`; `matrices()` reads them back. A resumed run continues
    with the same rows either way.
    """
    n: int
    mode: str = "exact"              # exact | inline | both | off
    every: int = 1
    epochs: int = 1
    rows: dict[str, list[np.ndarray]] = field(default_factory=dict)
    tracked_epochs: list[int] = field(default_factory=list)
    store: Optional[Path] = None     # folder of per-epoch record files (None: rows in memory and in the state)
    write: bool = True               # this process writes the record files (False on DDP ranks other than 0)
    _inline: Optional[dict[str, torch.Tensor]] = None

    @property
    def wants_inline(self) -> bool:
        return self.mode in ("inline", "both")

    @property
    def wants_exact(self) -> bool:
        return self.mode in ("exact", "both")

    def tracks(self, epoch: int) -> bool:
        return self.mode != "off" and ((epoch + 1) % self.every == 0 or epoch == self.epochs - 1)

    # -- inline -------------------------------------------------------------------------------
    def start_epoch(self, epoch: int, device) -> None:
        self._inline = None
        if self.wants_inline and self.tracks(epoch):
            self._inline = {k: torch.full((self.n,), float("nan"), device=device)
                            for k in ("aign_inline_l2",) + (() if self.wants_exact else ("loss", "margin", "el2n", "entropy"))}
            if not self.wants_exact:
                self._inline["correct"] = torch.zeros(self.n, dtype=torch.bool, device=device)
                self._inline["grand"] = torch.full((self.n,), float("nan"), device=device)

    @property
    def inline_active(self) -> bool:
        return self._inline is not None

    def record_inline(self, idx: torch.Tensor, x_grad: torch.Tensor, batch_size: int,
                      logits: Optional[torch.Tensor] = None, y: Optional[torch.Tensor] = None,
                      feats: Optional[torch.Tensor] = None) -> None:
        """x_grad: the input gradient of the batch's MEAN loss; rescaled by the batch size."""
        assert self._inline is not None
        self._inline["aign_inline_l2"][idx] = _norms(x_grad.float(), 2) * batch_size
        if not self.wants_exact and logits is not None:
            for k, v in dynamics_from_logits(logits.detach(), y, feats.detach()).items():
                self._inline[k][idx] = v

    def gather_inline(self, gather: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        """Merge every process's inline records of this epoch: gather(values [m], positions [m]) -> [n] (DDP:
        `dist.all_gather_by_index`). The positions this process recorded are those whose input-gradient norm is
        not NaN; positions no process recorded keep the defaults (NaN, False)."""
        if self._inline is None:
            return
        seen = (~torch.isnan(self._inline["aign_inline_l2"])).nonzero().squeeze(1)
        self._inline = {k: gather(v[seen], seen) for k, v in self._inline.items()}

    def end_epoch(self, epoch: int, exact: Optional[dict[str, torch.Tensor]] = None) -> None:
        if not self.tracks(epoch):
            return
        rec: dict[str, torch.Tensor] = {}
        if self._inline is not None:
            rec.update({k: v.cpu() for k, v in self._inline.items()})
            if not self.wants_exact:
                rec["aign_l2"] = rec["aign_inline_l2"]
        if exact is not None:
            rec.update(exact)
        arrays = {k: v.numpy().astype(np.bool_ if k == "correct" else np.float32) for k, v in rec.items()}
        if self.store is None:
            for k, a in arrays.items():
                self.rows.setdefault(k, []).append(a)
        elif self.write:
            from easycore.store import save_arrays

            save_arrays(self._record_path(epoch), arrays, {"epoch": epoch, "n": self.n})
        self.tracked_epochs.append(epoch)
        self._inline = None

    def _record_path(self, epoch: int) -> Path:
        return Path(self.store) / f"epoch-{epoch:04d}.npz"

    # -- state ----------------------------------------------------------------------------------
    def matrices(self) -> dict[str, np.ndarray]:
        if self.store is None:
            return {k: np.stack(v) for k, v in self.rows.items()}
        from easycore.store import load_arrays

        rows: dict[str, list[np.ndarray]] = {}
        for e in self.tracked_epochs:
            arrays, _ = load_arrays(self._record_path(e), length=self.n)
            for k, a in arrays.items():
                rows.setdefault(k, []).append(a)
        return {k: np.stack(v) for k, v in rows.items()}

    def state_dict(self) -> dict:
        if self.store is not None:
            return {"tracked_epochs": list(self.tracked_epochs)}
        return {"rows": {k: list(v) for k, v in self.rows.items()}, "tracked_epochs": list(self.tracked_epochs)}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`'s state. With a store, the writing process checks that every tracked epoch's
        file is there (ArtifactError naming the first missing one otherwise)."""
        tracked = list(state["tracked_epochs"])
        if "rows" not in state:
            if self.store is None:
                from easycore.store import ArtifactError

                raise ArtifactError("the checkpoint's AIGN records are in per-epoch files, but no store folder is set")
            if self.write:
                missing = [e for e in tracked if not self._record_path(e).exists()]
                if missing:
                    from easycore.store import ArtifactError

                    raise ArtifactError(f"AIGN records of epoch {missing[0] + 1} missing ({self._record_path(missing[0])})")
        else:
            self.rows = {k: list(v) for k, v in state["rows"].items()}
        self.tracked_epochs = tracked


def parse_window(window: str, n_epochs: int) -> slice:
    """'all' | 'first:K' | 'last:K' -> a slice over the epoch axis."""
    if window == "all":
        return slice(None)
    head, _, k = window.partition(":")
    if head not in ("first", "last") or not k.isdigit() or int(k) < 1:
        raise ValueError(f"AIGN window must be all, first:K or last:K, got {window!r}")
    k = min(int(k), n_epochs)
    return slice(0, k) if head == "first" else slice(n_epochs - k, n_epochs)


def aign_scores(matrix: np.ndarray, window: str = "all", *, squared: bool = False) -> np.ndarray:
    """AIGN per sample from a per-epoch norm matrix [E, N]: mean over the window of the (squared) norms."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"AIGN matrix must be [epochs, N], got shape {m.shape}")
    m = m[parse_window(window, m.shape[0])]
    if squared:
        m = m * m
    with warnings.catch_warnings():    # a sample NaN in every epoch of the window stays NaN (refused by select)
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(m, axis=0).astype(np.float32)


def norm_key(p: float) -> str:
    p = float(p)
    if p not in NORM_KEYS:
        raise ValueError(f"p must be 1, 2 or inf, got {p}")
    return NORM_KEYS[p]


def spearman(a: Iterable[float], b: Iterable[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic)
