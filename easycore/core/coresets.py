"""Coreset selection: EasyCore and the baselines, from the proxy run's per-sample records.

Every method maps the proxy artifact (a dict of numpy arrays, see below) to a set of training indices of
exactly ``budget(fraction, N) = floor(fraction * N + 0.5)`` samples. The one place that says which way each
score is ranked is the ``METHODS`` table (rendered for the README by ``direction_table_markdown``).

Artifact keys used (``[E, N]`` = one row per *tracked* proxy epoch, in order):
  aign_l1 / aign_l2 / aign_linf  float32 [E, N]  per-epoch input-gradient norms (AIGN = their mean)
  loss, margin, el2n, grand, entropy  float32 [E, N];  correct  bool [E, N]
  features  float32 [N, d]  penultimate features at the final checkpoint
  deepfool  float32 [N]     DeepFool L2 distance to the decision boundary at the final checkpoint (inf allowed)
  labels    int64 [N]

Conventions
  * Ties in a score are broken uniformly at random by the seed; the returned indices are shuffled by the
    seed (no order is implied).
  * ``balanced=True``: per-class quotas by the largest-remainder (Hamilton) rule, see ``class_quotas``; every
    method then selects inside each class with its quota. ``balanced=False``: one global ranking (or one global
    k-center / herding / CCS run).
  * Epoch windows count tracked rows: with ``proxy.aign.every = k`` row K-1 is the K-th *tracked* epoch.

References
  EasyCore / AIGN: "The Easy Path to Robustness: Coreset Selection using Sample Hardness".
  EL2N, GraNd: Paul, Ganguli, Dziugaite, "Deep Learning on a Data Diet", NeurIPS 2021.
  Forgetting: Toneva et al., "An Empirical Study of Example Forgetting during Deep Neural Network Learning", ICLR 2019.
  AUM: Pleiss et al., "Identifying Mislabeled Data using the Area Under the Margin Ranking", NeurIPS 2020.
  Entropy / margin (least-confidence family): Coleman et al., "Selection via Proxy", ICLR 2020.
  Moderate-DS: Xia et al., "Moderate Coreset: A Universal Method of Data Selection for Real-world Data-efficient
    Deep Learning", ICLR 2023.
  k-center greedy: Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach", ICLR 2018.
  Herding: Welling, "Herding Dynamical Weights to Learn", ICML 2009 (as used in DeepCore, Guo et al. 2022,
    with DeepCore's argmax corrected to argmin).
  CCS: Zheng et al., "Coverage-centric Coreset Selection for High Pruning Rates", ICLR 2023.
  DeepFool: Moosavi-Dezfooli et al., CVPR 2016 (boundary distance as a score, as in DeepCore).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from easycore.core.aign import aign_scores, norm_key
from easycore.registry import Registry
from easycore.store import ArtifactError

# ----------------------------------------------------------------------------- the registry
METHODS = Registry("coreset method", "methods")
CCS_STRATA = 50
"""name -> Entry(fn, meta). meta: kind 'static' (chosen once from the proxy's records), 'adaptive' (re-chosen
during training, `easycore.core.acs`) or 'reference' (the full-data run); keep 'low' | 'high' (the end of `score` a
static method keeps; fn(artifacts, opts, labels) -> scores [N]) or 'custom' (fn(artifacts, opts, labels, fraction,
seed) -> indices; an optional meta `scores` gives its per-sample score for summaries); score: what it ranks by;
needs: proxy artifact keys ('aign' = the norm matrix chosen by p); doc: one line for the README."""


@dataclass(frozen=True)
class Options:
    """The coreset.* params every method may read."""
    window: str = "all"
    p: float = 2.0
    squared: bool = False
    score_epochs: int = 3
    ccs_score: str = "aign"
    ccs_cutoff: float = 0.1
    moderate_band: float = 0.0
    balanced: bool = False
    device: Optional[str] = None     # torch device for kcenter / herding (default: cuda when available)


def method(name: str, *, keep: str, score: str = "", needs: tuple[str, ...] = (), doc: str, kind: str = "static",
           **meta: Any):
    """Register a coreset method (see METHODS)."""
    if keep not in ("low", "high", "custom", "adaptive", "all"):
        raise ValueError(f"keep must be low, high, custom, adaptive or all, got {keep!r}")
    return METHODS.register(name, kind=kind, keep=keep, score=score, needs=tuple(needs), doc=doc, **meta)


# which proxy setting produces each artifact key (for the missing-key message)
_PRODUCED_BY = {
    "aign_l2": "the proxy stage with proxy.aign.mode exact, inline or both",
    "aign_l1": "the proxy stage with proxy.aign.mode exact or both (inline records only aign_l2)",
    "aign_linf": "the proxy stage with proxy.aign.mode exact or both (inline records only aign_l2)",
    "features": "the proxy stage (penultimate features at the final checkpoint)",
    "deepfool": "the proxy stage (DeepFool at the final checkpoint, proxy.deepfool_steps)",
    "labels": "the proxy stage",
}
for _k in ("loss", "correct", "margin", "el2n", "grand", "entropy"):
    _PRODUCED_BY[_k] = "the proxy stage with proxy.aign.mode not 'off' (the per-epoch dynamics pass)"


def direction_table_markdown() -> str:
    """The METHODS table as Markdown (embedded in the README)."""
    keep_txt = {"low": "lowest", "high": "highest", "custom": "custom rule", "adaptive": "re-selected in training",
                "all": "everything"}
    lines = ["| method | kind | ranks by | keeps | needs | rule |", "|---|---|---|---|---|---|"]
    for name, e in METHODS.items():
        needs = ", ".join(f"`{n}`" for n in e.needs) or "-"
        doc = e.doc.replace("|", "\\|")  # a literal | would split the Markdown cell
        lines.append(f"| `{name}` | {e.kind} | {e.score or '-'} | {keep_txt[e.keep]} | {needs} | {doc} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- budgets and ranking
def check_fraction(fraction: Any) -> float:
    """fraction must be a real number in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(fraction)) or not 0 < float(fraction) <= 1:
        raise ValueError(f"coreset fraction must be a number in (0, 1], got {fraction!r}")
    return float(fraction)


def budget(fraction: float, n: int) -> int:
    """floor(fraction * n + 0.5): the number of samples a fraction keeps (round half up, never above n)."""
    return min(int(n), int(math.floor(check_fraction(fraction) * n + 0.5)))


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *salt])


def class_quotas(labels: np.ndarray, fraction: float, seed: int = 0) -> dict[int, int]:
    """Per-class quotas summing to exactly ``budget(fraction, N)`` (largest-remainder / Hamilton rule).

    Each class c first gets floor(fraction * n_c); the remaining samples go one each to the classes with the
    largest fractional parts fraction * n_c - floor(.), ties between equal parts broken at random by the seed.
    A class never gets more than n_c (a class with fractional part > 0 has floor < n_c), so classes smaller than
    1 / fraction get 0 or 1 samples.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    total = budget(fraction, len(labels))
    exact = fraction * counts.astype(np.float64)
    base = np.floor(exact + 1e-9).astype(np.int64)
    base = np.minimum(base, counts)
    rest = total - int(base.sum())
    if rest > 0:
        frac = np.clip(exact - base, 0.0, None)
        order = np.lexsort((_rng(seed, 1).random(len(classes)), -frac))
        base[order[:rest]] += 1
    elif rest < 0:  # only possible by float noise; take back from the smallest fractional parts
        frac = exact - base
        order = np.lexsort((_rng(seed, 1).random(len(classes)), frac))
        for i in order:
            if rest == 0:
                break
            if base[i] > 0:
                base[i] -= 1
                rest += 1
    assert int(base.sum()) == total and np.all(base <= counts)
    return {int(c): int(q) for c, q in zip(classes, base)}


def _check_scores(scores: np.ndarray, n: int, what: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},) to match the labels, got {s.shape}")
    if np.isnan(s).any():
        bad = np.flatnonzero(np.isnan(s))
        raise ValueError(f"{what} contain {len(bad)} NaN value(s) (first at index {int(bad[0])}); "
                         "the proxy run produced non-finite records - re-run it or pick another score")
    return s


def _rank(scores: np.ndarray, keep: str, rng: np.random.Generator) -> np.ndarray:
    """Indices ordered best-first for `keep`, ties in the score broken by a random key."""
    if keep not in ("low", "high"):
        raise ValueError(f"keep must be 'low' or 'high', got {keep!r}")
    key = scores if keep == "low" else -scores
    return np.lexsort((rng.random(len(scores)), key))


def select_by_score(scores: np.ndarray, labels: np.ndarray, fraction: float, *, keep: str = "low",
                    balanced: bool = False, seed: int = 0) -> np.ndarray:
    """Keep the ``budget(fraction, N)`` samples with the lowest (keep='low') or highest (keep='high') score.

    balanced=False: one global ranking. balanced=True: each class keeps its ``class_quotas`` share of its own
    best-ranked samples. Ties are broken at random by the seed; the result (int64) is shuffled by the seed.
    """
    labels = np.asarray(labels)
    fraction = check_fraction(fraction)
    s = _check_scores(scores, len(labels))
    rng = _rng(seed, 2)
    order = _rank(s, keep, rng)
    if not balanced:
        chosen = order[:budget(fraction, len(labels))]
    else:
        quotas = class_quotas(labels, fraction, seed)
        ranked_labels = labels[order]
        parts = []
        for c, q in quotas.items():
            parts.append(order[ranked_labels == c][:q])
        chosen = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return _shuffle(chosen, seed)


def _shuffle(idx: np.ndarray, seed: int) -> np.ndarray:
    idx = np.asarray(idx, dtype=np.int64)
    return idx[_rng(seed, 3).permutation(len(idx))]


def _groups(labels: np.ndarray, fraction: float, balanced: bool, seed: int) -> list[tuple[np.ndarray, int]]:
    """(member indices, quota) per class when balanced, else one group of everything."""
    labels = np.asarray(labels)
    if not balanced:
        return [(np.arange(len(labels)), budget(fraction, len(labels)))]
    return [(np.flatnonzero(labels == c), q) for c, q in class_quotas(labels, fraction, seed).items()]


# ----------------------------------------------------------------------------- artifact access
def _get(artifacts: Mapping[str, np.ndarray], key: str, method: str) -> np.ndarray:
    if key not in artifacts:
        raise ArtifactError(
            f"method {method!r} needs the artifact key {key!r}, which the proxy artifact lacks "
            f"(it has {sorted(artifacts)}); it is produced by {_PRODUCED_BY.get(key, 'the proxy stage')}")
    return np.asarray(artifacts[key])


def _rows(a: np.ndarray, key: str) -> np.ndarray:
    if a.ndim != 2 or a.shape[0] < 1:
        raise ArtifactError(f"artifact key {key!r} must be [epochs, N] with at least one epoch, got {a.shape}")
    return a


# ----------------------------------------------------------------------------- scores
def aign(artifacts: Mapping[str, np.ndarray], *, window: str = "all", p: float = 2.0,
         squared: bool = False) -> np.ndarray:
    """AIGN = mean over the tracked epochs in `window` of ||d CE / d x||_p (squared first if `squared`)."""
    key = norm_key(p)
    return aign_scores(_rows(_get(artifacts, key, "aign"), key), window, squared=squared).astype(np.float64)


def el2n(artifacts: Mapping[str, np.ndarray], *, score_epochs: int = 3) -> np.ndarray:
    """EL2N = mean of ||softmax - onehot||_2 over the first K = score_epochs tracked epochs (clipped to E)."""
    m = _rows(_get(artifacts, "el2n", "el2n"), "el2n").astype(np.float64)
    k = max(1, min(int(score_epochs), m.shape[0]))
    return m[:k].mean(axis=0)


def grand(artifacts: Mapping[str, np.ndarray], *, score_epochs: int = 3) -> np.ndarray:
    """GraNd = the exact last-layer gradient norm at tracked epoch K = score_epochs (1-based: row K-1,
    clipped to the last row)."""
    m = _rows(_get(artifacts, "grand", "grand"), "grand").astype(np.float64)
    return m[min(max(int(score_epochs), 1), m.shape[0]) - 1]


def forgetting_events(correct: np.ndarray) -> np.ndarray:
    """Toneva et al. 2019: number of forgetting events, i.e. transitions correct (epoch e) -> incorrect
    (epoch e+1) over the tracked epochs. Never-learned samples (never correct) are counted as forgotten:
    they get E + 1, more than any learned sample can reach (at most floor(E / 2) events)."""
    c = np.asarray(correct).astype(bool)
    if c.ndim != 2 or c.shape[0] < 1:
        raise ValueError(f"correct must be [epochs, N], got shape {c.shape}")
    events = (c[:-1] & ~c[1:]).sum(axis=0).astype(np.float64)
    events[~c.any(axis=0)] = c.shape[0] + 1
    return events


def aum(artifacts: Mapping[str, np.ndarray]) -> np.ndarray:
    """AUM = mean over all tracked epochs of the margin (true logit minus the largest other logit)."""
    return _rows(_get(artifacts, "margin", "aum"), "margin").astype(np.float64).mean(axis=0)


def entropy(artifacts: Mapping[str, np.ndarray]) -> np.ndarray:
    """Predictive entropy at the final tracked epoch (high = uncertain)."""
    return _rows(_get(artifacts, "entropy", "entropy"), "entropy").astype(np.float64)[-1]


def margin(artifacts: Mapping[str, np.ndarray]) -> np.ndarray:
    """Logit margin at the final tracked epoch (low = uncertain)."""
    return _rows(_get(artifacts, "margin", "margin"), "margin").astype(np.float64)[-1]


def deepfool(artifacts: Mapping[str, np.ndarray]) -> np.ndarray:
    """DeepFool L2 distance to the boundary at the final checkpoint (inf where DeepFool did not cross)."""
    d = _get(artifacts, "deepfool", "deepfool").astype(np.float64)
    if d.ndim != 1:
        raise ArtifactError(f"artifact key 'deepfool' must be [N], got {d.shape}")
    return d


def _features(artifacts: Mapping[str, np.ndarray], method: str, n: Optional[int] = None) -> np.ndarray:
    f = _get(artifacts, "features", method)
    if f.ndim != 2 or (n is not None and len(f) != n):
        raise ArtifactError(f"artifact key 'features' must be [N, d] with N = {n}, got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain non-finite values; re-run the proxy stage")
    return f


def moderate_scores(features: np.ndarray, labels: np.ndarray, *, balanced: bool = False) -> np.ndarray:
    """Moderate-DS score |d_i - m| (Xia et al. 2023), low = moderate.

    d_i = ||f_i - median_c||_2, the L2 distance of sample i's feature to the coordinate-wise median feature of
    its class c; m = the median of d over the sample's class when balanced, over all samples otherwise (the
    Moderate-DS code ranks all distances together).
    """
    labels = np.asarray(labels)
    f = np.asarray(features, dtype=np.float64)
    d = np.empty(len(labels))
    for c in np.unique(labels):
        i = np.flatnonzero(labels == c)
        d[i] = np.linalg.norm(f[i] - np.median(f[i], axis=0), axis=1)
    if not balanced:
        return np.abs(d - np.median(d))
    out = np.empty_like(d)
    for c in np.unique(labels):
        i = np.flatnonzero(labels == c)
        out[i] = np.abs(d[i] - np.median(d[i]))
    return out


def score_names() -> list[str]:
    """The per-sample scores the static methods rank by (the choices of coreset.ccs_score)."""
    return list(dict.fromkeys(e.score for e in METHODS.entries() if e.keep in ("low", "high")))


def score(name: str, artifacts: Mapping[str, np.ndarray], opts: Options = Options(),
          labels: Optional[np.ndarray] = None) -> np.ndarray:
    """The raw per-sample score `name` (float64 [N]), computed by the first registered method that ranks by it."""
    for e in METHODS.entries():
        if e.score == name and e.keep in ("low", "high"):
            return e.fn(artifacts, opts, labels)
    raise ValueError(f"unknown score {name!r}; choose one of {score_names()}")


def ccs_hardness(artifacts: Mapping[str, np.ndarray], ccs_score: str = "aign", *, window: str = "all",
                 p: float = 2.0, squared: bool = False, score_epochs: int = 3) -> np.ndarray:
    """The score CCS stratifies on, oriented so that high = hard (each score method says which end is hard:
    meta `hard`; e.g. AUM is negated, low AUM is hard)."""
    if ccs_score not in score_names():
        raise ValueError(f"ccs_score must be one of {score_names()}, got {ccs_score!r}")
    s = score(ccs_score, artifacts, Options(window=window, p=p, squared=squared, score_epochs=score_epochs))
    hard = next(e.hard for e in METHODS.entries() if e.score == ccs_score and e.keep in ("low", "high"))
    return s if hard == "high" else -s


def method_scores(method: str, artifacts: Mapping[str, np.ndarray], *, labels: Optional[np.ndarray] = None,
                  balanced: bool = False, window: str = "all", p: float = 2.0, squared: bool = False,
                  score_epochs: int = 3, ccs_score: str = "aign", **_ignored: Any) -> Optional[np.ndarray]:
    """The per-sample score `method` ranks by (float64 [N]), oriented as in METHODS[method].keep; None for methods
    without one (random, kcenter, herding, adaptive, full). ccs: its hardness score (high = hard); moderate:
    |distance - median distance| (labels default to artifacts['labels'])."""
    e = _spec(method)
    opts = Options(window=window, p=p, squared=squared, score_epochs=score_epochs, ccs_score=ccs_score,
                   balanced=balanced)
    if e.keep in ("low", "high"):
        return e.fn(artifacts, opts, labels)
    fn = e.meta.get("scores")
    return None if fn is None else fn(artifacts, opts, labels)


# ----------------------------------------------------------------------------- custom selectors
def _torch_device(device: Optional[str]):
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _kcenter_group(x: np.ndarray, k: int, rng: np.random.Generator, device) -> np.ndarray:
    """Greedy k-center (farthest-point) on rows of x: start at a random row, then repeatedly add the row
    farthest from its nearest chosen row. Keeps only the [n] min-distance vector: O(n * d) memory."""
    import torch

    n = len(x)
    if k <= 0:
        return np.zeros(0, np.int64)
    if k >= n:
        return np.arange(n)
    perm = rng.permutation(n)  # argmax takes the first maximum: ties go by this seeded order
    X = torch.as_tensor(x[perm], dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    X = X - X.mean(0, keepdim=True)
    sq = X.pow(2).sum(1)

    def dist2(j):  # squared distances of all rows to row j without an [n, d] temporary
        return (sq - 2.0 * (X @ X[j]) + sq[j]).clamp_(min=0.0)

    chosen = torch.empty(k, dtype=torch.long, device=device)
    chosen[0] = 0
    mind = dist2(0)
    mind[0] = -1.0
    for t in range(1, k):
        j = torch.argmax(mind)
        chosen[t] = j
        mind = torch.minimum(mind, dist2(j))
        mind[j] = -1.0  # chosen rows stay at -1, so duplicates of chosen rows (distance 0) come first
    return perm[chosen.cpu().numpy()]


def _herding_group(x: np.ndarray, k: int, rng: np.random.Generator, device) -> np.ndarray:
    """Greedy herding: at step t add the unselected row x_j minimising ||(S + x_j) / t - mu||, S the sum of
    the t-1 rows chosen so far, mu the mean of all rows (the argmin; DeepCore's argmax is a bug).
    With centred features (mu = 0) this is argmin_j ||x_j||^2 + 2 <x_j, S>: O(n * d) per step and memory."""
    import torch

    n = len(x)
    if k <= 0:
        return np.zeros(0, np.int64)
    if k >= n:
        return np.arange(n)
    perm = rng.permutation(n)  # argmin takes the first minimum: ties go by this seeded order
    X = torch.as_tensor(x[perm], dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    X = X - X.mean(0, keepdim=True)
    sq = X.pow(2).sum(1)
    S = torch.zeros(X.shape[1], dtype=X.dtype, device=device)
    taken = torch.zeros(n, dtype=torch.bool, device=device)
    chosen = torch.empty(k, dtype=torch.long, device=device)
    for t in range(k):
        obj = sq + 2.0 * (X @ S)
        obj[taken] = float("inf")
        j = torch.argmin(obj)
        chosen[t] = j
        taken[j] = True
        S += X[j]
    return perm[chosen.cpu().numpy()]


def ccs_allocate(strata_sizes: np.ndarray, total: int) -> np.ndarray:
    """Zheng et al. 2023, Alg. 1 budget split: visit strata from the smallest up; each takes
    min(its size, remaining budget // strata left). Sums to `total` whenever total <= sum(sizes)."""
    sizes = np.asarray(strata_sizes, dtype=np.int64)
    out = np.zeros_like(sizes)
    order = np.argsort(sizes, kind="stable")
    rest = int(total)
    for i, s in enumerate(order):
        take = min(int(sizes[s]), rest // (len(order) - i))
        out[s] = take
        rest -= take
    return out


def _ccs_group(hard: np.ndarray, k: int, cutoff: float, rng: np.random.Generator,
               strata: int = CCS_STRATA) -> np.ndarray:
    """CCS inside one group. Drop the hardest min(round(cutoff * n), n - k) samples (ties at random), so the
    budget can always be met; split [min, max] of the remaining scores into `strata` equal-width bins; allocate
    the budget with `ccs_allocate`; draw uniformly within each bin."""
    n = len(hard)
    if k <= 0:
        return np.zeros(0, np.int64)
    n_drop = min(int(math.floor(cutoff * n + 0.5)), n - k)
    order = np.lexsort((rng.random(n), -hard))  # hardest first
    pool = np.sort(order[n_drop:])
    s = hard[pool]
    lo, hi = float(s.min()), float(s.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("CCS needs finite scores to build equal-width strata; the chosen ccs_score has inf values")
    if hi > lo:
        b = np.floor((s - lo) / (hi - lo) * strata).astype(np.int64)
        b = np.clip(b, 0, strata - 1)
    else:
        b = np.zeros(len(s), np.int64)
    sizes = np.bincount(b, minlength=strata)
    take = ccs_allocate(sizes, k)
    out = [rng.choice(pool[b == j], size=int(take[j]), replace=False) for j in range(strata) if take[j] > 0]
    return np.concatenate(out).astype(np.int64)


def _moderate_group(score: np.ndarray, k: int, band: float, rng: np.random.Generator) -> np.ndarray:
    """moderate_band = 0: the k samples with the lowest |d - m|; band b > 0: k drawn uniformly from the
    max(k, round(b * n)) lowest (a band of width b around the median distance)."""
    n = len(score)
    order = np.lexsort((rng.random(n), score))
    pool = order[:max(k, min(n, int(math.floor(band * n + 0.5))))]
    if len(pool) == k:
        return pool.astype(np.int64)
    return rng.choice(pool, size=k, replace=False).astype(np.int64)


# ----------------------------------------------------------------------------- the static methods
@method("easycore", score="aign", keep="low", hard="high", needs=("aign",),
        doc="EasyCore: lowest average input-gradient norm (easiest samples)")
def _easycore(a, o: Options, labels=None) -> np.ndarray:
    return aign(a, window=o.window, p=o.p, squared=o.squared)


@method("hard", score="aign", keep="high", hard="high", needs=("aign",),
        doc="highest AIGN (hardest samples), the ablation of EasyCore")
def _hard(a, o: Options, labels=None) -> np.ndarray:
    return aign(a, window=o.window, p=o.p, squared=o.squared)


@method("random", keep="custom", doc="uniform at random (seeded)")
def _random(a, o: Options, labels, fraction, seed) -> np.ndarray:
    rng = _rng(seed, 4)
    return np.concatenate([rng.choice(g, size=q, replace=False) for g, q in _groups(labels, fraction, o.balanced, seed)])


# The class-balanced variants: the same rule inside each class (class_quotas), whatever coreset.balanced says. The
# study reports them beside the global methods: a global EasyCore coreset can be dominated by a few easy classes.
@method("easycore_balanced", score="aign", keep="low", hard="high", needs=("aign",), balanced=True,
        doc="EasyCore inside each class (class quotas): lowest AIGN per class")
def _easycore_balanced(a, o: Options, labels=None) -> np.ndarray:
    return aign(a, window=o.window, p=o.p, squared=o.squared)


@method("random_balanced", keep="custom", balanced=True, doc="uniform at random inside each class (class quotas)")
def _random_balanced(a, o: Options, labels, fraction, seed) -> np.ndarray:
    return _random(a, o, labels, fraction, seed)


@method("el2n", score="el2n", keep="high", hard="high", needs=("el2n",),
        doc="highest EL2N ||softmax - onehot||, mean over the first score_epochs epochs (Paul et al. 2021)")
def _el2n(a, o: Options, labels=None) -> np.ndarray:
    return el2n(a, score_epochs=o.score_epochs)


@method("grand", score="grand", keep="high", hard="high", needs=("grand",),
        doc="highest last-layer gradient norm at epoch score_epochs (Paul et al. 2021)")
def _grand(a, o: Options, labels=None) -> np.ndarray:
    return grand(a, score_epochs=o.score_epochs)


@method("forgetting", score="forgetting", keep="high", hard="high", needs=("correct",),
        doc="most forgetting events; never-learned samples rank above all (Toneva et al. 2019)")
def _forgetting(a, o: Options, labels=None) -> np.ndarray:
    return forgetting_events(_get(a, "correct", "forgetting"))


@method("aum", score="aum", keep="low", hard="low", needs=("margin",),
        doc="lowest area under the margin, mean margin over epochs (Pleiss et al. 2020)")
def _aum(a, o: Options, labels=None) -> np.ndarray:
    return aum(a)


@method("entropy", score="entropy", keep="high", hard="high", needs=("entropy",),
        doc="highest predictive entropy at the final epoch (most uncertain)")
def _entropy(a, o: Options, labels=None) -> np.ndarray:
    return entropy(a)


@method("margin", score="margin", keep="low", hard="low", needs=("margin",),
        doc="lowest logit margin at the final epoch (most uncertain)")
def _margin(a, o: Options, labels=None) -> np.ndarray:
    return margin(a)


def _ccs_scores(a, o: Options, labels=None) -> np.ndarray:
    return ccs_hardness(a, o.ccs_score, window=o.window, p=o.p, squared=o.squared, score_epochs=o.score_epochs)


def _per_group(labels, fraction, o: Options, seed, values, pick) -> np.ndarray:
    """The methods that choose inside each group (`_groups`: per class, or one group) with a seeded generator:
    pick(values[g], q, rng) -> positions within group g of its q kept samples."""
    rng = _rng(seed, 4)
    groups = _groups(labels, fraction, o.balanced, seed)
    return np.concatenate([g[pick(values[g], q, rng)] for g, q in groups])


@method("ccs", score="ccs", keep="custom", needs=("ccs_score",), scores=_ccs_scores,
        doc=f"coverage-centric: drop the hardest ccs_cutoff, stratified sampling over {CCS_STRATA} score strata "
            "(Zheng et al. 2023)")
def _ccs(a, o: Options, labels, fraction, seed) -> np.ndarray:
    hard = _check_scores(_ccs_scores(a, o), len(labels), f"ccs ({o.ccs_score}) scores")
    return _per_group(labels, fraction, o, seed, hard, lambda h, q, rng: _ccs_group(h, q, o.ccs_cutoff, rng))


def _moderate_scores(a, o: Options, labels=None) -> np.ndarray:
    if labels is None:
        labels = _get(a, "labels", "moderate")
    return moderate_scores(_features(a, "moderate", len(labels)), labels, balanced=o.balanced)


@method("moderate", score="moderate", keep="custom", needs=("features",), scores=_moderate_scores,
        doc="feature distance to the class median closest to the median distance (Xia et al. 2023)")
def _moderate(a, o: Options, labels, fraction, seed) -> np.ndarray:
    s = _check_scores(_moderate_scores(a, o, labels), len(labels), "moderate scores")
    return _per_group(labels, fraction, o, seed, s, lambda v, q, rng: _moderate_group(v, q, o.moderate_band, rng))


def _greedy(fn):
    def run(a, o: Options, labels, fraction, seed) -> np.ndarray:
        f = _features(a, "features", len(labels))
        dev = _torch_device(o.device)
        return _per_group(labels, fraction, o, seed, f, lambda v, q, rng: fn(v, q, rng, dev))
    return run


method("kcenter", keep="custom", needs=("features",), doc="greedy k-center on features (Sener & Savarese 2018)")(
    _greedy(_kcenter_group))
method("herding", keep="custom", needs=("features",),
       doc="greedy herding: running mean of kept features closest to the mean (Welling 2009)")(
    _greedy(_herding_group))


@method("deepfool", score="deepfool", keep="low", hard="low", needs=("deepfool",),
        doc="smallest DeepFool distance to the boundary (closest, as in DeepCore)")
def _deepfool(a, o: Options, labels=None) -> np.ndarray:
    return deepfool(a)


@method("deepfool_far", score="deepfool", keep="high", hard="low", needs=("deepfool",),
        doc="largest DeepFool distance to the boundary (farthest)")
def _deepfool_far(a, o: Options, labels=None) -> np.ndarray:
    return deepfool(a)


@method("full", keep="all", kind="reference", doc="the full training set (the reference run, fraction 1.0)")
def _full(a, o: Options, labels, fraction, seed) -> np.ndarray:
    return np.arange(len(labels))


# ----------------------------------------------------------------------------- dispatch
def _spec(method: str):
    return METHODS.get(method)


def select(method: str, artifacts: Mapping[str, np.ndarray], labels: np.ndarray, fraction: float, *,
           balanced: bool = False, seed: int = 0, window: str = "all", p: float = 2.0, squared: bool = False,
           score_epochs: int = 3, ccs_score: str = "aign", ccs_cutoff: float = 0.1, moderate_band: float = 0.0,
           device: Optional[str] = None) -> np.ndarray:
    """Indices (int64, shuffled by the seed) of the ``budget(fraction, N)`` samples the static `method` keeps.

    keep 'low' / 'high': rank by the method's score (``select_by_score``); 'custom': the method's own rule
    (random, ccs, moderate, kcenter, herding: see their registrations). Per class when balanced, else globally.
    Adaptive methods (ACS) choose during training (``easycore.core.acs``), not here.
    """
    e = _spec(method)
    if e.kind == "adaptive":
        raise ValueError(f"{method!r} is an adaptive method: it selects during training (easycore train), not here")
    fraction = check_fraction(fraction)
    balanced = bool(balanced or e.meta.get("balanced"))   # a class-balanced variant is balanced whatever the params
    labels = np.asarray(labels)
    n = len(labels)
    if n == 0:
        raise ValueError("cannot select from an empty dataset")
    if not 0 <= ccs_cutoff < 1:
        raise ValueError(f"ccs_cutoff must be in [0, 1), got {ccs_cutoff!r}")
    if not 0 <= moderate_band < 1:
        raise ValueError(f"moderate_band must be in [0, 1), got {moderate_band!r}")
    opts = Options(window=window, p=p, squared=squared, score_epochs=score_epochs, ccs_score=ccs_score,
                   ccs_cutoff=ccs_cutoff, moderate_band=moderate_band, balanced=balanced, device=device)
    if e.keep in ("low", "high"):
        s = e.fn(artifacts, opts, labels)
        return select_by_score(_check_scores(s, n, f"{method} scores"), labels, fraction, keep=e.keep,
                               balanced=balanced, seed=seed)
    idx = np.asarray(e.fn(artifacts, opts, labels, fraction, seed), dtype=np.int64)
    want = n if e.keep == "all" else budget(fraction, n)
    assert len(idx) == want and len(np.unique(idx)) == len(idx), f"{method} selected {len(idx)} of {want}"
    return _shuffle(idx, seed) if e.keep != "all" else idx


# ----------------------------------------------------------------------------- summaries and the stage
def _stats(x: np.ndarray) -> dict[str, Any]:
    x = np.asarray(x, dtype=np.float64)
    fin = x[np.isfinite(x)]
    st: dict[str, Any] = {"n": int(len(x)), "n_nonfinite": int(len(x) - len(fin))}
    for name, fn in (("mean", np.mean), ("median", np.median), ("min", np.min), ("max", np.max)):
        st[name] = float(fn(fin)) if len(fin) else None
    return st


def summarize(indices: np.ndarray, labels: np.ndarray, scores: Optional[np.ndarray],
              meta: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready summary: meta's method / fraction / balanced / seed / fingerprint (and any other meta keys),
    n_selected, n_total, per-class counts (kept and total), and statistics (over finite values) of the score
    among the kept vs the dropped samples (null when the method has no score)."""
    labels = np.asarray(labels)
    idx = np.asarray(indices, dtype=np.int64)
    kept = np.zeros(len(labels), bool)
    kept[idx] = True
    classes = np.unique(labels)
    out: dict[str, Any] = {k: meta.get(k) for k in ("method", "fraction", "balanced", "seed", "fingerprint")}
    out.update({k: v for k, v in meta.items() if k not in out})
    out["n_selected"] = int(len(idx))
    out["n_total"] = int(len(labels))
    out["per_class"] = {str(int(c)): int(np.sum(kept & (labels == c))) for c in classes}
    out["per_class_total"] = {str(int(c)): int(np.sum(labels == c)) for c in classes}
    if scores is None:
        out["scores"] = None
    else:
        s = np.asarray(scores, dtype=np.float64)
        out["scores"] = {"kept": _stats(s[kept]), "dropped": _stats(s[~kept])}
    return out


def run_select(method: str, fraction: float, artifacts_path: str | os.PathLike, out_npy: str | os.PathLike,
               out_json: str | os.PathLike, *, fingerprint: Optional[str], labels: np.ndarray,
               balanced: bool = False, seed: int = 0, **opts: Any) -> dict[str, Any]:
    """The coreset stage for one (method, fraction): load the proxy artifact (checked against `fingerprint` and
    len(labels)), select, write the indices (.npy, int64) and the ``summarize`` JSON, each atomically.

    Bad input (unknown method, fraction outside (0, 1], missing artifact or key, label mismatch) raises before
    anything is written. Returns the summary.
    """
    from easycore.store import load_arrays, save_npy, write_json

    _spec(method)
    fraction = check_fraction(fraction)
    labels = np.asarray(labels)
    if budget(fraction, len(labels)) < 1:
        raise ArtifactError(f"coreset fraction {fraction!r} of {len(labels)} training samples keeps 0 samples; "
                            f"use a fraction >= {0.5 / max(len(labels), 1):.3g}")
    arrays, meta = load_arrays(artifacts_path, fingerprint=fingerprint, length=len(labels))
    if "labels" in arrays and not np.array_equal(np.asarray(arrays["labels"]), labels):
        raise ArtifactError(f"{artifacts_path} holds other labels than the dataset it is used with; "
                            "re-run the proxy stage with the same data settings")
    score_opts = {k: v for k, v in opts.items() if k in ("window", "p", "squared", "score_epochs", "ccs_score")}
    try:
        idx = select(method, arrays, labels, fraction, balanced=balanced, seed=seed, **opts)
        scores = method_scores(method, arrays, labels=labels, balanced=balanced, **score_opts)
    except ValueError as e:      # non-finite records, shapes that do not fit: the artifact's fault, one line
        raise ArtifactError(f"{artifacts_path}: {e}") from None
    summary = summarize(idx, labels, scores, {
        "method": method, "fraction": fraction, "balanced": bool(balanced or _spec(method).meta.get("balanced")),
        "seed": int(seed),
        "fingerprint": fingerprint, "budget": budget(fraction, len(labels)),
        # the scoring options, for a method that reads records (random reads none: a changed p re-runs none of it)
        "options": {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in opts.items()}
        if METHODS[method].needs else {},
        "direction": METHODS[method].keep, "score": METHODS[method].score or None,
    })
    save_npy(out_npy, idx)
    write_json(out_json, summary)
    return summary
