"""Inference with the replicate as the unit: paired differences over crossed images and replicates.

Data model. One cell (training mode, fraction, eps) and two methods A, B give bool matrices ``a[K, n]``,
``b[K, n]``: K replicates (row k of both is replicate k: the whole pipeline re-run, proxy seed -> scores ->
selection -> training seed) x n test images (the same images, in the same order, for every row of both). The
paired difference matrix ``D = a - b`` (values -1, 0, 1) follows the crossed random-effects model

    D[k, i] = delta + r_k + s_i + e_ki,   r ~ (0, s2_rep),  s ~ (0, s2_img),  e ~ (0, s2_res)

(r: what replicate k's whole pipeline adds to the difference, the selection included; s: how much image i favours
A; e: the rest). The target is ``delta``: the expected accuracy difference over new test images from the same
distribution and new replicates of both pipelines. Its estimate is ``mean(D)``, with (two-way ANOVA without
replication, expected mean squares)

    Var(mean D) = s2_rep / K + s2_img / n + s2_res / (K n) = (MS_rep + MS_img - MS_res) / (K n)

estimated by the method of moments, and a t interval with Satterthwaite's degrees of freedom (between K - 1 and
K n; close to K - 1 when the replicate term dominates, which is the common case). When the combination is not
positive (possible by chance) the larger of MS_rep and MS_img alone is used (conservative). With K = 1 the replicate
variance cannot be estimated: the interval is refused (nan), never computed as if images were the only noise.

Every number comes from closed forms (scipy.stats.t): no Monte-Carlo, so no verdict depends on a seed.

The designs this replaces under-cover, and the simulations in tests/test_inference.py show it: resampling images
alone (replicates treated as fixed), t over training seeds of ONE selection (the selection's effect never varies),
and the unpaired interval (over-covers: the image effect counted twice).

Multiplicity. ``holm`` over the pre-registered primary family only (params report.primary); everything else is
secondary. ``simultaneous`` gives Bonferroni intervals over a family (used where the decision is about a family,
e.g. "better than the best other method": Hsu's multiple comparison with the best, ``vs_best``).

References
  Satterthwaite, "An approximate distribution of estimates of variance components", Biometrics Bulletin 2, 1946.
  Searle, Casella & McCulloch, "Variance Components" (1992), ch. 4 (crossed two-way model, expected mean squares).
  Hsu, "Multiple Comparisons: Theory and Methods" (1996), ch. 4 (multiple comparisons with the best).
  Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6, 1979.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Diff:
    """A paired difference A - B (accuracy points as fractions): estimate, standard error, Satterthwaite df,
    the t interval at `level`, its two-sided p-value, K replicates and n images, and the variance components."""
    diff: float
    se: float
    df: float
    lo: float
    hi: float
    p: float
    level: float
    k: int
    n: int
    sd_rep: float          # SD of the per-replicate differences (mean over the images): the pilot's sizing number
    components: tuple[float, float, float]   # (s2_rep, s2_img, s2_res), method-of-moments (may be < 0)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def at(self, level: float) -> "Diff":
        """The same estimate with the interval and p at another level (p unchanged)."""
        lo, hi = _interval(self.diff, self.se, self.df, level)
        return Diff(self.diff, self.se, self.df, lo, hi, self.p, level, self.k, self.n, self.sd_rep, self.components)


def _t():
    from scipy import stats

    return stats.t


def _interval(est: float, se: float, df: float, level: float) -> tuple[float, float]:
    if not (math.isfinite(se) and df > 0):
        return math.nan, math.nan
    q = float(_t().ppf(0.5 + level / 2, df))
    return est - q * se, est + q * se


def _matrix(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a [replicates, images] matrix, got shape {a.shape}")
    if a.dtype != bool:
        raise ValueError(f"{name}: per-image outcomes must be bool, got {a.dtype}")
    return a


def crossed(d, *, level: float = 0.95) -> Diff:
    """Inference on mean(d) for a [K, n] matrix of paired differences (or of outcomes: then an accuracy) under the
    crossed random-effects model of the module docstring."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"expected a [replicates, images] matrix with >= 2 images, got shape {d.shape}")
    k, n = d.shape
    est = float(d.mean())
    rows = d.mean(1)
    sd_rep = float(rows.std(ddof=1)) if k > 1 else math.nan
    if k < 2:
        return Diff(est, math.nan, math.nan, math.nan, math.nan, math.nan, level, k, n, sd_rep,
                    (math.nan, math.nan, math.nan))
    cols = d.mean(0)
    ms_rep = n * float(((rows - est) ** 2).sum()) / (k - 1)
    ms_img = k * float(((cols - est) ** 2).sum()) / (n - 1)
    resid = d - rows[:, None] - cols[None, :] + est
    ms_res = float((resid ** 2).sum()) / ((k - 1) * (n - 1))
    comb = ms_rep + ms_img - ms_res
    terms = [(ms_rep, k - 1), (ms_img, n - 1), (ms_res, (k - 1) * (n - 1))]
    if comb <= 0:  # by chance: the larger mean square alone (conservative)
        comb, terms = max(ms_rep, ms_img), [max((ms_rep, k - 1), (ms_img, n - 1))]
    var = comb / (k * n)
    denom = sum(ms ** 2 / f for ms, f in terms)
    df = comb ** 2 / denom if denom > 0 else float(k - 1)
    se = math.sqrt(var)
    if se == 0:  # every replicate and image gives the same difference: no uncertainty to speak of
        p = 1.0 if est == 0 else 0.0
        return Diff(est, 0.0, df, est, est, p, level, k, n, sd_rep, (0.0, 0.0, 0.0))
    lo, hi = _interval(est, se, df, level)
    p = float(2 * _t().sf(abs(est) / se, df))
    comps = ((ms_rep - ms_res) / n, (ms_img - ms_res) / k, ms_res)
    return Diff(est, se, df, lo, hi, p, level, k, n, sd_rep, comps)


def paired(a, b, *, level: float = 0.95) -> Diff:
    """A - B for bool outcome matrices [K, n] of two methods (row k = replicate k of both, same images)."""
    a, b = _matrix(a, "a"), _matrix(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have the same shape, got {a.shape} and {b.shape}")
    return crossed(a.astype(np.int8) - b.astype(np.int8), level=level)


def mde(diff: Diff, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable |difference| at two-sided level `alpha` with `power`, for this cell's standard error
    and degrees of freedom: (t_{1-alpha/2} + t_{power}) * se."""
    if not (math.isfinite(diff.se) and diff.df > 0):
        return math.nan
    t = _t()
    return float((t.ppf(1 - alpha / 2, diff.df) + t.ppf(power, diff.df)) * diff.se)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (nan stays nan and is not counted in the family)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    running = 0.0
    for rank, j in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[j]))
        out[j] = running
    return out


def simultaneous(diffs: Sequence[Diff], *, level: float = 0.95) -> list[Diff]:
    """Bonferroni-simultaneous intervals over a family: each at level 1 - (1 - level) / m."""
    m = max(1, sum(math.isfinite(d.se) for d in diffs))
    return [d.at(1 - (1 - level) / m) for d in diffs]


@dataclass(frozen=True)
class VsBest:
    """Multiple comparison with the best (Hsu): the interval for mu_A - max_j mu_j over the other methods j, from
    simultaneous intervals of A - j (lower = min_j lo_j, upper = min_j hi_j); `best` is the other method with the
    highest estimate (for the table; the interval does not depend on which one it is)."""
    diff: float
    lo: float
    hi: float
    best: str
    level: float
    m: int


def vs_best(diffs: Mapping[str, Diff], *, level: float = 0.95) -> VsBest:
    """A against the best of the others, from A - j for every other method j (a Mapping j -> Diff)."""
    names = [j for j, d in diffs.items() if math.isfinite(d.se)]
    if not names:
        return VsBest(math.nan, math.nan, math.nan, "", level, 0)
    sim = dict(zip(names, simultaneous([diffs[j] for j in names], level=level)))
    best = min(names, key=lambda j: sim[j].diff)          # the smallest A - j: j has the highest accuracy
    return VsBest(sim[best].diff, min(s.lo for s in sim.values()), min(s.hi for s in sim.values()), best, level,
                  len(names))


def uninformative(acc_a: float, acc_b: float, labels) -> bool:
    """A cell where either model is at or below a constant classifier on the attacked images (the accuracy of
    always predicting the most frequent class) cannot rank methods: it is reported, never decided."""
    labels = np.asarray(labels)
    chance = float(np.bincount(labels).max() / len(labels)) if len(labels) else 1.0
    return min(acc_a, acc_b) <= chance


def per_class(outcomes, labels) -> np.ndarray:
    """Accuracy per class [C] of a [K, n] outcome matrix (mean over replicates and the class's images)."""
    o = _matrix(outcomes, "outcomes")
    labels = np.asarray(labels)
    if len(labels) != o.shape[1]:
        raise ValueError(f"{len(labels)} labels for {o.shape[1]} images")
    return np.array([o[:, labels == c].mean() if (labels == c).any() else np.nan
                     for c in range(int(labels.max()) + 1)])
