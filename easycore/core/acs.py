"""ACS: adversarial coreset selection (Dolatabadi, Erfani, Leckie, ECCV 2022 / IJCV 2023), re-implemented.

Adversarial training on a subset that is re-chosen every R epochs. At a selection the current model gives,
for every training sample, the gradient of its adversarial training loss w.r.t. the last layer
(``last_layer_grads``); per class (or per random mini-batch) a weighted coreset is chosen by CRAIG
(``craig``: greedy facility location) or GradMatch (``gradmatch``: orthogonal matching pursuit with
non-negative weights); training then minimises the weighted loss ``sum(w_i l_i) / sum(w_i)`` per batch
(``weighted_mean``). ``acs_plan`` lays out the epochs (warm start, skipped epochs, selections).
docs/acs.md compares every choice here with the ACS / CORDS code.

Conventions:
    * selectors take per-sample gradient rows ``grads`` [N, d] as a torch tensor or a numpy array and work
      in float64 on the tensor's device (numpy: CPU); they return numpy ``(indices int64 [m], weights
      float64 [m])`` with indices = row positions in ``grads``.
    * no N x N matrix is formed: distances are computed in column blocks (``chunk`` columns at a time).
    * ties are broken towards the lowest index everywhere.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from easycore.core import attacks
from easycore.core.coresets import budget, check_fraction, class_quotas, method
from easycore.core.train import Callback
from easycore.data.base import hash_seed

__all__ = ["craig", "gradmatch", "per_class", "batch_partition", "batch_gradients", "select_batches",
           "per_batch", "last_layer_grads", "score_and_select", "acs_plan", "examples_seen", "weighted_mean",
           "normalise_weights", "TIE_RTOL", "PLAN_KINDS", "MODES", "PARTS", "METHODS"]

Array = Union[np.ndarray, torch.Tensor]
Selector = Callable[[torch.Tensor, int], tuple]

MODES = ("trades", "pgd_at", "standard")
PARTS = ("bias", "full", "label_row")
METHODS = ("craig", "gradmatch")
PLAN_KINDS = ("full", "partial", "skip", "select", "coreset")

_BLOCK = 1 << 22  # entries per distance block (32 MiB in float64)
TIE_RTOL = 1e-9  # CRAIG: gains within this relative distance of the best one are ties (-> lowest index)


# ----------------------------------------------------------------------------- helpers
def _f64(grads: Array) -> torch.Tensor:
    """grads as a 2-D float64 tensor (numpy -> CPU tensor; a torch tensor stays on its device)."""
    g = grads if isinstance(grads, torch.Tensor) else torch.as_tensor(np.asarray(grads))
    if g.dim() != 2:
        raise ValueError(f"grads must be a 2-D [N, d] array, got shape {tuple(g.shape)}")
    g = g.detach().to(torch.float64)
    if not torch.isfinite(g).all():
        raise ValueError("grads contain non-finite values")
    return g


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.float64)


def _rows(g: Array, idx: np.ndarray):
    """g[idx] for a numpy array or a tensor (index moved to the tensor's device)."""
    if isinstance(g, torch.Tensor):
        return g[torch.as_tensor(idx, dtype=torch.long, device=g.device)]
    return np.asarray(g)[idx]


def _dist(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """[len(a), len(b)] distances. 'euclidean': from differences (exact 0 for duplicates, no cancellation).
    'sqeuclidean': |a|^2 + |b|^2 - 2 a.b clamped at 0 (exact for integer data, so exact ties stay ties;
    squaring a square root would not be; absolute error ~1e-16 |g|^2 otherwise)."""
    if metric == "sqeuclidean":
        return (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2.0 * (a @ b.T)).clamp_(min=0.0)
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _col_block(n: int, chunk: Optional[int]) -> int:
    if chunk is not None:
        if int(chunk) < 1:
            raise ValueError(f"chunk must be a positive number of columns, got {chunk}")
        return int(chunk)
    return max(1, _BLOCK // max(n, 1))


# ----------------------------------------------------------------------------- CRAIG
def craig(grads: Array, k: int, *, chunk: Optional[int] = None, metric: str = "euclidean",
          probe: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """CRAIG (Mirzasoleiman et al. 2020): greedy maximiser of the facility-location function

        F(S) = sum_i max_{j in S} (D - dist(g_i, g_j)),   F({}) = 0,

    dist = ||g_i - g_j|| (metric='euclidean') or its square (metric='sqeuclidean', what the ACS/CORDS code
    uses). F is monotone submodular for any D >= the largest pairwise distance; instead of that O(N^2)
    maximum we take D = the power of two >= the bound 2 max_i ||g_i - mean|| (squared for 'sqeuclidean';
    a power of two keeps D - dist exact for integer distances). The greedy choices do not depend on D (any
    D >= the max distance): step 1 maximises N*D - sum_i dist(i, j), later steps sum_i relu(m_i - dist(i, j))
    with m_i the distance to the nearest chosen sample; so the set equals that of plain greedy with D = the
    exact max pairwise distance (only F's value shifts, by N times the difference).

    Ties: gains within a relative ``TIE_RTOL`` = 1e-9 of the best gain are equal, and the lowest index wins
    (ties that are exact in real arithmetic, e.g. two samples that only cover each other, are then broken by
    index, not by rounding noise). Lazy greedy, same result as plain greedy: stale gains are upper bounds
    (submodularity); while some stale candidate's bound reaches the tie band of the best fresh gain, the
    ``probe`` largest such bounds are refreshed; then the lowest index in the band is taken. ``probe`` only
    trades Python rounds against wasted evaluations.
    ``chunk`` = columns per distance block (memory N x chunk; default: 2^22 entries).

    Returns (indices [k] int64 in greedy order, weights [k] float64): weight_j = the number of samples whose
    nearest chosen sample is j (distance ties -> the chosen one with the lowest index); weights sum to N.
    k >= N returns all samples with weight 1; k <= 0 returns empty arrays.
    """
    if metric not in ("euclidean", "sqeuclidean"):
        raise ValueError(f"metric must be 'euclidean' or 'sqeuclidean', got {metric!r}")
    g = _f64(grads)
    n, k = len(g), int(k)
    if k <= 0 or n == 0:
        return _empty()
    if k >= n:
        return np.arange(n, dtype=np.int64), np.ones(n, np.float64)
    block = _col_block(n, chunk)
    radius = float((g - g.mean(0)).norm(dim=1).max())
    dmax = (2.0 * radius) ** (2 if metric == "sqeuclidean" else 1) * (1 + 1e-9)  # >= every distance
    big = 2.0 ** math.ceil(math.log2(dmax)) if dmax > 0 else 1.0
    near = torch.full((n,), big, dtype=torch.float64, device=g.device)  # distance to the nearest chosen one

    def gains(cols: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(cols), dtype=torch.float64, device=g.device)
        for s in range(0, len(cols), block):
            c = cols[s:s + block]
            out[s:s + len(c)] = (near[:, None] - _dist(g, g[c], metric)).clamp_(min=0).sum(0)
        return out

    everyone = torch.arange(n, device=g.device)
    bound = gains(everyone)  # exact first-step gains
    fresh = torch.ones(n, dtype=torch.bool, device=g.device)
    free = torch.ones(n, dtype=torch.bool, device=g.device)
    chosen: list[int] = []
    probe = max(1, int(probe))
    inf = float("-inf")
    for _ in range(k):
        while True:
            # best fresh gain G; a stale candidate matters while its bound reaches the tie band [G - tol, inf)
            best = float(bound.masked_fill(~(free & fresh), inf).max())
            thr = best - TIE_RTOL * abs(best) if best > inf else inf
            stale = free & ~fresh & (bound >= thr)
            if not bool(stale.any()):
                break
            key = bound.masked_fill(~stale, inf)
            cand = torch.topk(key, min(probe, int(stale.sum()))).indices
            bound[cand] = gains(cand)
            fresh[cand] = True
        top = int(torch.nonzero(free & fresh & (bound >= thr))[0])  # lowest index in the tie band
        chosen.append(top)
        free[top] = False
        near = torch.minimum(near, _dist(g, g[top:top + 1], metric)[:, 0])
        fresh.zero_()

    idx = torch.tensor(chosen, dtype=torch.long, device=g.device)
    asc = torch.sort(idx).values  # nearest chosen one, ties -> lowest sample index
    owner = torch.empty(n, dtype=torch.long, device=g.device)
    rows = max(1, _BLOCK // max(k, 1))
    for s in range(0, n, rows):
        owner[s:s + rows] = asc[_dist(g[s:s + rows], g[asc], metric).argmin(1)]
    counts = torch.zeros(n, dtype=torch.float64, device=g.device).index_add_(
        0, owner, torch.ones(n, dtype=torch.float64, device=g.device))
    return idx.cpu().numpy().astype(np.int64), counts[idx].cpu().numpy()


# ----------------------------------------------------------------------------- GradMatch
def _ridge_solve(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin_z ||b - a^T z||^2 + lam ||z||^2 for the rows a [m, d] (unconstrained). A relative jitter of
    1e-12 * mean(diag) keeps the Gram matrix positive definite when lam = 0 and atoms are dependent."""
    gram = a @ a.T
    m = gram.shape[0]
    jitter = lam + 1e-12 * float(gram.diagonal().mean()) + 1e-300
    gram.diagonal().add_(jitter)
    chol, info = torch.linalg.cholesky_ex(gram)
    rhs = (a @ b)[:, None]
    if int(info) != 0:  # numerically indefinite despite the jitter: minimum-norm least squares
        return torch.linalg.lstsq(gram.cpu(), rhs.cpu(), driver="gelsd").solution[:, 0].to(a.device)
    return torch.cholesky_solve(rhs, chol)[:, 0].reshape(m)


def gradmatch(grads: Array, k: int, *, lam: float = 0.0, eps: float = 1e-10,
              max_iter: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """GradMatch (Killamsetty et al. 2021): orthogonal matching pursuit with non-negative weights for
    the target b = sum_i g_i, i.e. approximately

        min_{|S| <= k, w >= 0} ||b - sum_{j in S} w_j g_j||^2 + lam ||w||^2.

    Each step adds the atom with the largest projection g_j . r on the residual r (no atom normalisation,
    as CORDS ``OrthogonalMP_REG(positive=True)``), then re-fits the ridge least squares on the support
    (``(G_S G_S^T + lam I) w = G_S b``, the CORDS solve). Where CORDS drops the most negative weight and
    re-solves until all are >= 0, we take the Lawson-Hanson step (move towards the unconstrained solution up
    to the boundary, drop the atoms that hit 0, re-solve): the weights stay > 0 and the objective never
    increases, so with lam = 0 the residual is non-increasing in k. Stops at |S| = k, when
    ||r|| <= eps * ||b|| (CORDS' tol; ACS passes 1e-100, i.e. never; our default 1e-10 = numerical zero), or
    when no atom has a positive projection (the NNLS optimum over all atoms is reached).

    Returns (indices [m] int64 in order of entry, weights [m] float64 > 0) with m <= k: fewer than k when it
    stops early (e.g. d < k: an exact fit needs at most d atoms). k >= N is capped at N; k <= 0 -> empty.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    g = _f64(grads)
    n, k = len(g), min(int(k), len(g))
    if k <= 0:
        return _empty()
    b = g.sum(0)
    bnorm = float(b.norm())
    if bnorm == 0.0:
        return _empty()
    support = torch.zeros(0, dtype=torch.long, device=g.device)
    w = torch.zeros(0, dtype=torch.float64, device=g.device)
    banned = torch.zeros(n, dtype=torch.bool, device=g.device)
    limit = int(max_iter) if max_iter is not None else 3 * k + 50
    for _ in range(limit):
        if len(support) >= k:
            break
        r = b - g[support].T @ w if len(support) else b
        if float(r.norm()) <= eps * bnorm:
            break
        proj = g @ r
        proj[support] = float("-inf")
        proj[banned] = float("-inf")
        j = int(torch.argmax(proj))  # first maximum: lowest index
        if not float(proj[j]) > 0.0:
            break
        s = torch.cat([support, support.new_tensor([j])])
        x = torch.cat([w, w.new_zeros(1)])
        while True:  # Lawson-Hanson inner loop
            z = _ridge_solve(g[s], b, lam)
            if bool((z > 0).all()):
                x = z
                break
            neg = z <= 0
            denom = x - z  # > 0 where z < 0 <= x; x = z = 0 only for a new atom that cannot enter
            ratio = torch.where(neg, torch.where(denom > 0, x / denom.clamp(min=1e-300), torch.zeros_like(x)),
                                torch.full_like(x, float("inf")))
            t = int(torch.argmin(ratio))
            x = x + ratio[t] * (z - x)
            keep = x > 0
            keep[t] = False
            s, x = s[keep], x[keep]
            if len(s) == 0:
                break
        if len(s) == 0 or j not in s.tolist():
            banned[j] = True  # degenerate: the new atom could not enter; try the next one
        else:
            banned.zero_()
        support, w = s, x
    return support.cpu().numpy().astype(np.int64), w.cpu().numpy()


# ----------------------------------------------------------------------------- per class / per batch
def _fill(sel: np.ndarray, w: np.ndarray, n: int, q: int, rng: np.random.Generator):
    """Top a selection of < q rows up to q with random unselected rows of weight 1 (the ACS fill-up)."""
    if len(sel) >= q:
        return sel, w
    rest = np.setdiff1d(np.arange(n), sel)
    extra = np.sort(rng.choice(rest, size=q - len(sel), replace=False))
    return np.concatenate([sel, extra]), np.concatenate([w, np.ones(len(extra))])


def _check_selection(sel, w, n: int, q: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    sel = np.asarray(sel, dtype=np.int64).reshape(-1)
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if len(sel) != len(w) or len(sel) > q or len(np.unique(sel)) != len(sel) \
            or (len(sel) and (sel.min() < 0 or sel.max() >= n)) or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError(f"the selector returned an invalid selection for {what} "
                         f"({len(sel)} indices for a budget of {q} out of {n})")
    return sel, w


def per_class(select_fn: Selector, grads: Array, labels, fraction: float, *,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Run ``select_fn(grads_of_class, q_c) -> (positions, weights)`` inside each class c with the budget
    q_c = ``class_quotas(labels, fraction, seed)[c]`` (they sum to exactly ``budget(fraction, N)``).

    A selector that returns fewer than q_c (GradMatch stopping early) is topped up with random unselected
    samples of the class with weight 1 (ACS tops up with random samples of any class; per class keeps the
    quotas exact). Returns (indices int64 = positions in the full set, grouped by class in ascending class
    order, each class in the selector's order; weights float64 in the selector's units).
    """
    labels = np.asarray(labels)
    if len(labels) != len(grads):
        raise ValueError(f"labels ({len(labels)}) and grads ({len(grads)}) differ in length")
    quotas = class_quotas(labels, check_fraction(fraction), seed)
    rng = np.random.default_rng([int(seed), 11])
    idx, wts = [], []
    for c, q in quotas.items():
        if q == 0:
            continue
        members = np.flatnonzero(labels == c)
        sel, w = _check_selection(*select_fn(_rows(grads, members), q), len(members), q, f"class {c}")
        sel, w = _fill(sel, w, len(members), q, rng)
        idx.append(members[sel])
        wts.append(w)
    if not idx:
        return _empty()
    return np.concatenate(idx).astype(np.int64), np.concatenate(wts)


def batch_partition(n: int, batch_size: int, *, seed: int = 0) -> list[np.ndarray]:
    """A random partition of range(n) into consecutive blocks of a seeded permutation: ceil(n / batch_size)
    mini-batches of batch_size samples (the last one smaller), over all classes together (ACS/CORDS
    'PerBatch' batches the whole training set, not per class). The same seed gives the same partition."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    perm = np.random.default_rng([int(seed), 13]).permutation(int(n))
    return [np.sort(perm[s:s + int(batch_size)]) for s in range(0, int(n), int(batch_size))]


def _batch_ids(members: Sequence[np.ndarray], n: int) -> np.ndarray:
    ids = np.full(n, -1, np.int64)
    for b, m in enumerate(members):
        ids[m] = b
    if (ids < 0).any():
        raise ValueError("the batches do not cover every sample")
    return ids


def batch_gradients(grads: Array, batch_size: int, *, seed: int = 0) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Mean gradient of each mini-batch of ``batch_partition(N, batch_size, seed=seed)`` (ACS/CORDS
    'PerBatch': the batch gradient is the mean of its samples' rows). Returns (batch_grads float64 tensor
    [B, d] on grads' device, members: list of B int64 position arrays)."""
    g = _f64(grads)
    members = batch_partition(len(g), batch_size, seed=seed)
    ids = torch.as_tensor(_batch_ids(members, len(g)), device=g.device)
    sums = torch.zeros(len(members), g.shape[1], dtype=torch.float64, device=g.device).index_add_(0, ids, g)
    sizes = torch.as_tensor([len(m) for m in members], dtype=torch.float64, device=g.device)
    return sums / sizes[:, None], members


def select_batches(select_fn: Selector, batch_grads: Array, members: Sequence[np.ndarray], k: int, *,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Choose k batches with ``select_fn(batch_grads, k)`` (topped up with random batches of weight 1 if it
    returns fewer) and expand them: every sample of a chosen batch inherits the batch's weight.
    Returns (sample positions int64, weights float64), batch by batch in the selector's order."""
    k = min(int(k), len(members))
    sel, w = _check_selection(*select_fn(batch_grads, k), len(members), k, "the batches")
    sel, w = _fill(sel, w, len(members), k, np.random.default_rng([int(seed), 17]))
    if len(sel) == 0:
        return _empty()
    idx = np.concatenate([members[b] for b in sel]).astype(np.int64)
    return idx, np.repeat(w, [len(members[b]) for b in sel])


def per_batch(select_fn: Selector, grads: Array, fraction: float, *, batch_size: int = 128,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch variant (CRAIGPB / GradMatchPB): ceil(budget(fraction, N) / batch_size) mini-batches of
    ``batch_gradients`` chosen by ``select_fn`` and expanded to samples (``select_batches``). The number of
    samples is then about the budget (whole batches; the smaller last batch may be among them)."""
    bg, members = batch_gradients(grads, batch_size, seed=seed)
    k = math.ceil(budget(check_fraction(fraction), len(grads)) / int(batch_size))
    return select_batches(select_fn, bg, members, k, seed=seed)


# ----------------------------------------------------------------------------- last-layer gradients
def _factors(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, mode: str, eps, alpha, steps: int,
             beta: float, amp: bool, generator, x_adv: Optional[torch.Tensor]):
    """Closed-form pieces of the per-sample last-layer gradient, computed in eval mode (mode restored):
    [(dl/dz [N, K], h [N, D]), ...] for each forward pass the loss sees (TRADES: the clean and the
    adversarial one), so that dl/db = sum dz and dl/dW = sum dz h^T. All float32."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    x, y = x.detach(), y.detach()
    if mode != "standard" and x_adv is None:
        if mode == "pgd_at":
            x_adv = attacks.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, generator=generator, amp=amp)
        else:
            x_adv = attacks.trades_adv(model, x, eps=eps, alpha=alpha, steps=steps, generator=generator, amp=amp)

    def feats(inp):
        if inp.dim() == 4:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with attacks._autocast(inp, amp):
            h = model.features(inp)
        h = h.float()
        return h, model.fc(h.to(model.fc.weight.dtype)).float()  # through fc: the pass counters see it

    with attacks.eval_mode(model), torch.no_grad():
        if mode == "pgd_at":
            h, z = feats(x_adv.detach())
            return [(F.softmax(z, 1) - F.one_hot(y, z.shape[1]).to(z.dtype), h)]
        h, z = feats(x)
        onehot = F.one_hot(y, z.shape[1]).to(z.dtype)
        p = F.softmax(z, 1)
        if mode == "standard":
            return [(p - onehot, h)]
        # TRADES l = CE(z, y) + beta KL(p || p~), p = softmax(z) (clean), p~ = softmax(z~) (adversarial):
        #   dl/dz  = p - e_y + beta * p * (a - KL),  a = log p - log p~,  KL = sum_k p_k a_k
        #   dl/dz~ = beta * (p~ - p)
        h_adv, z_adv = feats(x_adv.detach())
        a = F.log_softmax(z, 1) - F.log_softmax(z_adv, 1)
        kl = (p * a).sum(1, keepdim=True)
        dz = p - onehot + beta * p * (a - kl)
        dz_adv = beta * (F.softmax(z_adv, 1) - p)
        return [(dz, h), (dz_adv, h_adv)]


def _assemble(factors, part: str, y: torch.Tensor, rows=slice(None)) -> torch.Tensor:
    """The per-sample gradient representation `part` for the given rows, from ``_factors``."""
    if part == "bias":
        return sum(dz[rows] for dz, _ in factors)
    if part == "label_row":
        yy = y[rows][:, None]
        return sum(torch.cat([dz[rows].gather(1, yy), dz[rows].gather(1, yy) * h[rows]], 1) for dz, h in factors)
    if part == "full":
        out = None
        for dz, h in factors:
            d, hh = dz[rows], h[rows]
            blk = torch.cat([d, (d[:, :, None] * hh[:, None, :]).flatten(1)], 1)
            out = blk if out is None else out + blk
        return out
    raise ValueError(f"part must be one of {PARTS}, got {part!r}")


def last_layer_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, mode: str = "trades",
                     eps=8 / 255, alpha=2 / 255, steps: int = 10, beta: float = 6.0, part: str = "bias",
                     amp: bool = False, generator: Optional[torch.Generator] = None,
                     x_adv: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample gradient of the per-sample training loss w.r.t. the last layer ``model.fc`` (float32
    [N, d] on x's device), in closed form (no autograd, no per-sample loop). Eval mode, restored after.

    mode: 'standard' l = CE(f(x), y); 'pgd_at' l = CE(f(x_adv), y) with x_adv = ``attacks.pgd`` (random
    start); 'trades' l = CE(f(x), y) + beta KL(softmax f(x) || softmax f(x_adv)) with x_adv =
    ``attacks.trades_adv``; the gradient flows through both forward passes, as in TRADES training.
    ``x_adv`` given: used instead of running the attack. eps/alpha/steps: the attack; beta: TRADES only.

    part (which last-layer gradient; ACS/CORDS names in brackets):
        'bias'       dl/db [N, K] = dl/dlogits summed over the forward passes (CRAIG, CRAIGPB:
                     linear_layer=False)
        'full'       [dl/db (K), dl/dW flattened row-major (K*D)] [N, K + K*D] (GradMatchPB:
                     linear_layer=True)
        'label_row'  [dl/db_y, dl/dW_y] [N, 1 + D]: the entries of the sample's own class row
                     (GradMatch 'PerClassPerGradient', which keeps class c's row inside class c)
    """
    factors = _factors(model, x, y, mode=mode, eps=eps, alpha=alpha, steps=steps, beta=beta, amp=amp,
                       generator=generator, x_adv=x_adv)
    return _assemble(factors, part, y.detach())


# ----------------------------------------------------------------------------- selection driver
def normalise_weights(w) -> np.ndarray:
    """float32 weights scaled so that their mean over the selected samples is 1 (a weighted loss
    sum(w l) / sum(w) does not depend on the scale; mean 1 makes weight-1 the unweighted case)."""
    w = np.asarray(w, dtype=np.float64)
    if len(w) == 0:
        return w.astype(np.float32)
    m = w.mean()
    if not m > 0:
        raise ValueError("coreset weights must have a positive mean")
    return (w / m).astype(np.float32)


def score_and_select(model: torch.nn.Module, batches: Iterable, *, method: str, fraction: float,
                     labels=None, per_batch: bool = False, batch_size: int = 128, lam: float = 0.0,
                     mode: str = "trades", eps=8 / 255, alpha=2 / 255, steps: int = 10, beta: float = 6.0,
                     seed: int = 0, amp: bool = False, part: Optional[str] = None,
                     metric: str = "sqeuclidean", omp_eps: float = 1e-10,
                     generator: Optional[torch.Generator] = None) -> tuple[np.ndarray, np.ndarray]:
    """One ACS selection. ``batches`` yields (x, y, idx) over the FULL training set exactly once (x float
    in [0, 1] on the model's device, un-augmented; idx = positions 0..N-1). For every batch the
    adversarial example is made and the last-layer gradient factors kept (O(N (K + D)) memory); then

        per_batch=False: per class (``per_class``) with the class quotas of ``budget(fraction, N)``;
        per_batch=True:  ceil(budget / batch_size) random mini-batches (``batch_partition``, seed) chosen
                         by the method over the batch-mean gradients, expanded to samples.

    method 'craig' (metric: 'sqeuclidean' as the ACS/CORDS code, or 'euclidean') or 'gradmatch' (lam,
    omp_eps). part (see ``last_layer_grads``) defaults to the ACS choice: 'bias' for craig, 'label_row' for
    gradmatch, 'full' for gradmatch per batch. labels: optional check against the y of the batches.
    Returns (positions int64, weights float32 normalised to mean 1 over the selected samples) for a
    weighted loss sum(w_i l_i) / sum(w_i) per batch (``weighted_mean``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if part is None:
        part = "bias" if method == "craig" else ("full" if per_batch else "label_row")
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    fraction = check_fraction(fraction)
    pieces, ys, ids = [], [], []
    for x, y, idx in batches:
        pieces.append(_factors(model, x, y, mode=mode, eps=eps, alpha=alpha, steps=steps, beta=beta, amp=amp,
                               generator=generator, x_adv=None))
        ys.append(y.detach())
        ids.append(torch.as_tensor(idx).reshape(-1).to(torch.long).cpu())
    if not pieces:
        raise ValueError("score_and_select got no batches")
    pos = torch.cat(ids)
    n = len(pos)
    if not torch.equal(torch.sort(pos).values, torch.arange(n)):
        raise ValueError(f"the batches must cover positions 0..N-1 exactly once (got {n} positions, "
                         f"{len(torch.unique(pos))} distinct, max {int(pos.max())})")
    inv = torch.empty(n, dtype=torch.long)
    inv[pos] = torch.arange(n)
    dev = pieces[0][0][0].device
    inv = inv.to(dev)
    factors = [(torch.cat([p[t][0] for p in pieces])[inv], torch.cat([p[t][1] for p in pieces])[inv])
               for t in range(len(pieces[0]))]
    y_all = torch.cat(ys).to(dev)[inv]
    lab = y_all.cpu().numpy()
    if labels is not None and not np.array_equal(np.asarray(labels), lab):
        raise ValueError("labels disagree with the y of the batches (in position order)")
    select_fn = partial(craig, metric=metric) if method == "craig" else partial(gradmatch, lam=lam, eps=omp_eps)

    if not per_batch:
        grads = _assemble(factors, part, y_all)
        idx, w = per_class(select_fn, grads, lab, fraction, seed=seed)
    else:
        members = batch_partition(n, batch_size, seed=seed)
        bid = torch.as_tensor(_batch_ids(members, n), device=dev)
        d = _assemble(factors, part, y_all, slice(0, 1)).shape[1]
        sums = torch.zeros(len(members), d, dtype=torch.float64, device=dev)
        rows = max(1, _BLOCK // max(d, 1))
        for s in range(0, n, rows):  # batch sums without an [N, d] matrix (d = K + K*D for 'full')
            sl = slice(s, min(n, s + rows))
            sums.index_add_(0, bid[sl], _assemble(factors, part, y_all, sl).double())
        sizes = torch.as_tensor([len(m) for m in members], dtype=torch.float64, device=dev)
        k = math.ceil(budget(fraction, n) / int(batch_size))
        idx, w = select_batches(select_fn, sums / sizes[:, None], members, k, seed=seed)
    return idx, normalise_weights(w)


def weighted_mean(losses: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum(w_i l_i) / sum(w_i): the ACS/CORDS per-batch weighted loss (all weights 1 -> the plain mean)."""
    w = w.to(losses.dtype)
    return (losses * w).sum() / w.sum()


# ----------------------------------------------------------------------------- epoch plan
def acs_plan(epochs: int, fraction: float, *, kappa: float = 0.5, R: int = 20, warmup: str = "acs") -> list[str]:
    """Per epoch (0-based) what ACS does, following the ACS '-Warm' training scripts:

        select_after S = int(kappa * epochs), warm-up T_w = round(fraction * S) (Python round, as ACS)
        epoch i < T_w         'full'     adversarial training on all data (unweighted)
        T_w <= i < S          'skip'     no training (the epoch-indexed LR schedule still advances)
        i >= S, (i-S) % R == 0 'select'   re-select the coreset with the current model, then train on it
        otherwise             'coreset'  train on the current coreset (weighted)

    T_w * N + (epochs - S) * budget ~= epochs * budget: the same number of examples as a static coreset of
    the same fraction (exactly when fraction * S is an integer; else within N / 2). kappa = 0: no warm-up,
    the first selection at epoch 0 (from the initial model). ACS selects at i % R == 0 (with a random subset
    before the first multiple of R >= S); we select at S and every R epochs after (same when R divides S).
    warmup='exact' (what `easycore train` uses): floor(fraction * S) full epochs, then one 'partial' epoch on a
    seeded random share fraction * S - floor(fraction * S) of the data when that is not 0, so the run sees
    epochs * budget examples to within one sample per epoch (ACS's rounding can be half an epoch of data off).
    """
    if warmup not in ("acs", "exact"):
        raise ValueError(f"warmup must be 'acs' or 'exact', got {warmup!r}")
    e = int(epochs)
    if e < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    f = check_fraction(fraction)
    if not 0 <= kappa < 1:
        raise ValueError(f"kappa must be in [0, 1), got {kappa}")
    if int(R) < 1:
        raise ValueError(f"R (epochs between selections) must be >= 1, got {R}")
    s = int(kappa * e)
    warm = round(s * f) if warmup == "acs" else math.floor(s * f)
    partial = warmup == "exact" and s * f > warm
    plan = []
    for i in range(e):
        if i < warm:
            plan.append("full")
        elif partial and i == warm:
            plan.append("partial")
        elif i < s:
            plan.append("skip")
        elif (i - s) % int(R) == 0:
            plan.append("select")
        else:
            plan.append("coreset")
    return plan


def partial_share(epochs: int, fraction: float, kappa: float) -> float:
    """The share of the data a 'partial' warm-up epoch trains on: fraction * S - floor(fraction * S)."""
    s = int(kappa * int(epochs))
    return s * fraction - math.floor(s * fraction)


def examples_seen(plan: Sequence[str], n: int, fraction: float, *, partial: float = 0.0) -> int:
    """Training examples an ACS run of ``plan`` sees: N per 'full' epoch, round(partial * N) per 'partial' epoch,
    budget(fraction, N) per 'select' or 'coreset' epoch, 0 per 'skip' epoch."""
    b = budget(check_fraction(fraction), int(n))
    per = {"full": int(n), "skip": 0, "select": b, "coreset": b, "partial": int(round(partial * int(n)))}
    bad = sorted(set(plan) - set(per))
    if bad:
        raise ValueError(f"unknown plan entries {bad}; expected {PLAN_KINDS}")
    return int(sum(per[p] for p in plan))


# ----------------------------------------------------------------------------- the data schedule in the training loop
@method("acs_craig", keep="adaptive", kind="adaptive",
        doc="ACS with CRAIG: adversarial last-layer gradients, greedy facility location, re-selected every R epochs "
            "(Dolatabadi et al. 2022)")
def _acs_craig(params, fraction, labels, score_loader, *, mode, seed):
    return ACSSchedule("craig", fraction, params.coreset.acs, params.train, labels, score_loader, mode=mode, seed=seed)


@method("acs_gradmatch", keep="adaptive", kind="adaptive",
        doc="ACS with GradMatch: adversarial last-layer gradients, non-negative OMP, re-selected every R epochs "
            "(Dolatabadi et al. 2022)")
def _acs_gradmatch(params, fraction, labels, score_loader, *, mode, seed):
    return ACSSchedule("gradmatch", fraction, params.coreset.acs, params.train, labels, score_loader, mode=mode,
                       seed=seed)


def schedule_callback(params, method: str, fraction: float, labels, score_loader, *, mode: str, seed: int):
    """The training-loop callback of the adaptive method `method` (registered in methods.METHODS). labels: of the
    training set [N]; score_loader: a Loader over it, un-augmented, in order (what a selection scores)."""
    from easycore.core.coresets import METHODS

    e = METHODS.get(method)
    if e.kind != "adaptive":
        raise ValueError(f"{method!r} is not an adaptive method; adaptive ones: {METHODS.names(kind='adaptive')}")
    return e.fn(params, fraction, labels, score_loader, mode=mode, seed=seed)


class ACSSchedule(Callback):
    """The ACS data schedule as a training-loop callback (extension point `on_epoch_start`): per `acs_plan`
    (warmup 'exact'), full-data epochs, one partial warm-up epoch, skipped epochs, and coreset epochs whose subset
    and per-sample weights are re-selected by `score_and_select` from the current model every R epochs.

    The selection runs on the un-augmented full set in eval mode with the run's own training attack (fgsm_rs
    models are scored with PGD-AT gradients). The current coreset is saved in the checkpoint (state_dict), so a
    run killed after a re-selection resumes to the same weights."""
    name = "schedule"

    def __init__(self, method: str, fraction: float, cfg, train_cfg, labels, score_loader, *, mode: str, seed: int):
        self.method, self.fraction, self.cfg, self.train_cfg = method, float(fraction), cfg, train_cfg
        self.labels, self.score_loader, self.mode, self.seed = np.asarray(labels), score_loader, mode, seed
        self.plan = acs_plan(train_cfg.epochs, fraction, kappa=cfg.kappa, R=cfg.every, warmup="exact")
        self.share = partial_share(train_cfg.epochs, fraction, cfg.kappa)
        self.positions: Optional[torch.Tensor] = None
        self.weights: Optional[torch.Tensor] = None
        self.selections = 0
        self.n_epoch = 0

    def on_epoch_start(self, loop) -> None:
        kind = self.plan[loop.epoch]
        n = loop.loader.info.n
        loop.skip, loop.weights, self.n_epoch = kind == "skip", None, n
        if kind in ("full", "skip"):
            loop.loader.set_subset(None)
            self.n_epoch = 0 if kind == "skip" else n
            return
        if kind == "partial":  # a seeded uniform share of the data, unweighted
            g = torch.Generator().manual_seed(hash_seed(self.seed, loop.epoch, 7))
            sub = torch.randperm(n, generator=g)[: int(round(self.share * n))].sort().values
            loop.loader.set_subset(sub)
            self.n_epoch = len(sub)
            return
        if kind == "select" or self.positions is None:
            self._select(loop)
        loop.loader.set_subset(self.positions)
        self.n_epoch = len(self.positions)
        w = torch.zeros(n, dtype=torch.float32)
        w[self.positions] = self.weights
        loop.weights = w.to(loop.device)

    def _select(self, loop) -> None:
        a = self.train_cfg.attack
        idx, w = score_and_select(loop.model, self.score_loader, method=self.method, fraction=self.fraction,
                                  labels=self.labels, per_batch=self.cfg.per_batch,
                                  batch_size=self.cfg.batch_size or self.train_cfg.batch_size, lam=self.cfg.lam,
                                  mode=self.mode if self.mode in MODES else "pgd_at", eps=a.eps, alpha=a.alpha,
                                  steps=a.steps, beta=a.beta, seed=self.seed, amp=loop.amp)
        order = np.argsort(idx, kind="stable")
        self.positions = torch.as_tensor(idx[order], dtype=torch.long)
        self.weights = torch.as_tensor(w[order], dtype=torch.float32)
        self.selections += 1

    def on_epoch_end(self, loop, record: dict) -> None:
        record["schedule"], record["n_train"] = self.plan[loop.epoch], self.n_epoch

    def state_dict(self):
        return {"positions": self.positions, "weights": self.weights, "selections": self.selections}

    def load_state_dict(self, state) -> None:
        self.positions, self.weights, self.selections = state["positions"], state["weights"], state["selections"]
