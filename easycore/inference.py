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

estimated by the method of moments as Var = (MS_rep + max(MS_img - MS_res, 0)) / (K n): MS_rep / (K n) is the
per-replicate t's variance (the replicate and residual terms, always kept), the image component is added where it
is estimated above 0 and taken as 0 where not (then the interval IS the per-replicate t: the conservative choice
where the component estimate is unstable). A t interval with Satterthwaite's degrees of freedom **floored at
K - 1**: for a combination with a negative coefficient (- MS_res) Satterthwaite's formula can fall far below the
replicate term's own K - 1 when the image and residual mean squares nearly cancel (3 replicates x 400 images of two
methods at 12 / 22 % gave df 0.66 and an interval of +-1,700 points before); with the floor its standard error is
never below the per-replicate t's nor its df below K - 1 (tests/test_inference.py reproduces the case; the
simulations shaped like the study check the coverage). Intervals are clipped to the range a difference (or an accuracy) can take, [-1, 1]
([0, 1]). With K = 1 the replicate variance cannot be estimated: the interval is refused (nan), never
computed as if images were the only noise.

Two targets. `crossed` (the verdict's): new test images from the same distribution AND new replicates of both
pipelines. `fixed_set`: these test images, new replicates: the t over the K per-replicate differences (df K - 1),
which leaves the image term out; it is narrower where images disagree about the methods and covers only the
fixed-test-set target (the simulations show it under-covering the population target). The verdict decides on the
crossed interval (a claim about the method, not about 10,000 particular images) and prints the fixed-set interval
beside it.

Per class (pre-specified; `per_class_analysis`): the class x method interaction test with the replicate as the unit
(repeated-measures ANOVA of the per-replicate class differences, Greenhouse-Geisser corrected; target: these test
images), per-class differences with Bonferroni-simultaneous crossed intervals over the C classes, and
leave-one-class-out differences for every class, each simultaneous over the C leave-outs and judged against 0.

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

import dataclasses
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
    bounds: tuple[float, float] = (-1.0, 1.0)   # the range the estimate can take: the interval is clipped to it
    target: str = "new images and replicates"   # what the interval covers (crossed) or "these images" (fixed_set)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def at(self, level: float) -> "Diff":
        """The same estimate with the interval and p at another level (p unchanged)."""
        lo, hi = _interval(self.diff, self.se, self.df, level, self.bounds)
        return dataclasses.replace(self, lo=lo, hi=hi, level=level)


def _t():
    from scipy import stats

    return stats.t


def _interval(est: float, se: float, df: float, level: float,
              bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float]:
    if not (math.isfinite(se) and df > 0):
        return math.nan, math.nan
    q = float(_t().ppf(0.5 + level / 2, df))
    return max(est - q * se, bounds[0]), min(est + q * se, bounds[1])


def _matrix(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a [replicates, images] matrix, got shape {a.shape}")
    if a.dtype != bool:
        raise ValueError(f"{name}: per-image outcomes must be bool, got {a.dtype}")
    return a


def _bounds(d: np.ndarray) -> tuple[float, float]:
    """[-1, 1] for differences of outcomes, [0, 1] for outcomes themselves (an accuracy)."""
    return (0.0, 1.0) if d.size and d.min() >= 0 else (-1.0, 1.0)


def crossed(d, *, level: float = 0.95) -> Diff:
    """Inference on mean(d) for a [K, n] matrix of paired differences (or of outcomes: then an accuracy) under the
    crossed random-effects model of the module docstring (target: new images and new replicates)."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"expected a [replicates, images] matrix with >= 2 images, got shape {d.shape}")
    k, n = d.shape
    est = float(d.mean())
    rows = d.mean(1)
    sd_rep = float(rows.std(ddof=1)) if k > 1 else math.nan
    bounds = _bounds(d)
    if k < 2:
        return Diff(est, math.nan, math.nan, math.nan, math.nan, math.nan, level, k, n, sd_rep,
                    (math.nan, math.nan, math.nan), bounds)
    cols = d.mean(0)
    ms_rep = n * float(((rows - est) ** 2).sum()) / (k - 1)
    ms_img = k * float(((cols - est) ** 2).sum()) / (n - 1)
    resid = d - rows[:, None] - cols[None, :] + est
    ms_res = float((resid ** 2).sum()) / ((k - 1) * (n - 1))
    comps = ((ms_rep - ms_res) / n, (ms_img - ms_res) / k, ms_res)
    # Var * K n = MS_rep (the per-replicate t's variance: replicate + residual terms, always kept) + the image
    # component's K n s2_img = MS_img - MS_res where it is estimated above 0
    c_img = float(ms_img > ms_res)
    terms = [(ms_rep, 1.0, k - 1), (ms_img, c_img, n - 1), (ms_res, -c_img, (k - 1) * (n - 1))]
    comb = sum(c * ms for ms, c, _ in terms)
    var = comb / (k * n)
    denom = sum((c * ms) ** 2 / f for ms, c, f in terms if c)
    df = max(comb ** 2 / denom if denom > 0 else float(k - 1), float(k - 1))   # never below K - 1
    se = math.sqrt(var) if var > 0 else 0.0
    if se == 0:  # every replicate and image gives the same difference: no uncertainty to speak of
        p = 1.0 if est == 0 else 0.0
        return Diff(est, 0.0, df, est, est, p, level, k, n, sd_rep, (0.0, 0.0, 0.0), bounds)
    lo, hi = _interval(est, se, df, level, bounds)
    p = float(2 * _t().sf(abs(est) / se, df))
    return Diff(est, se, df, lo, hi, p, level, k, n, sd_rep, comps, bounds)


def fixed_set(d, *, level: float = 0.95) -> Diff:
    """Inference on mean(d) for these test images only (new replicates, the same images): the t over the K
    per-replicate means, df K - 1. The second estimand printed beside the verdict."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 1:
        raise ValueError(f"expected a [replicates, images] matrix, got shape {d.shape}")
    k, n = d.shape
    rows = d.mean(1)
    est = float(rows.mean())
    bounds = _bounds(d)
    nan3 = (math.nan, math.nan, math.nan)
    if k < 2:
        return Diff(est, math.nan, math.nan, math.nan, math.nan, math.nan, level, k, n, math.nan, nan3, bounds,
                    "these images")
    sd = float(rows.std(ddof=1))
    se = sd / math.sqrt(k)
    if se == 0:
        return Diff(est, 0.0, k - 1, est, est, 1.0 if est == 0 else 0.0, level, k, n, sd, nan3, bounds, "these images")
    lo, hi = _interval(est, se, k - 1, level, bounds)
    p = float(2 * _t().sf(abs(est) / se, k - 1))
    return Diff(est, se, float(k - 1), lo, hi, p, level, k, n, sd, nan3, bounds, "these images")


def paired(a, b, *, level: float = 0.95, target: str = "population") -> Diff:
    """A - B for bool outcome matrices [K, n] of two methods (row k = replicate k of both, same images).
    target: "population" (`crossed`: new images and replicates) or "fixed" (`fixed_set`: these images)."""
    a, b = _matrix(a, "a"), _matrix(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have the same shape, got {a.shape} and {b.shape}")
    d = a.astype(np.int8) - b.astype(np.int8)
    if target == "population":
        return crossed(d, level=level)
    if target == "fixed":
        return fixed_set(d, level=level)
    raise ValueError(f"target must be 'population' or 'fixed', got {target!r}")


def mde(diff: Diff, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable |difference| at two-sided level `alpha` with `power`, for this cell's standard error
    and degrees of freedom: (t_{1-alpha/2} + t_{power}) * se."""
    if not (math.isfinite(diff.se) and diff.df > 0):
        return math.nan
    return _mde(diff.se, diff.df, alpha, power)


def _mde(se: float, df: float, alpha: float, power: float) -> float:
    """(t_{1-alpha/2, df} + t_{power, df}) * se: the MDE of a t test with this standard error."""
    t = _t()
    return float((t.ppf(1 - alpha / 2, df) + t.ppf(power, df)) * se)


def replicates_for_mde(diff: Diff, target: float, *, alpha: float = 0.05, power: float = 0.8,
                       k_max: int = 10_000) -> float:
    """A planning number, never a verdict: the fewest replicates K' (>= 2) at which this cell's MDE would be <=
    `target` (a fraction), with the measured variance components and the same n test images: Var(K') = s2_rep / K'
    + s2_img / n + s2_res / (K' n) (components floored at 0), df = K' - 1. inf where the image term alone keeps the
    MDE above `target` (only more test images help) or no K' <= k_max reaches it; nan without components."""
    s2_rep, s2_img, s2_res = (max(0.0, float(c)) for c in diff.components)
    if not all(map(math.isfinite, (s2_rep, s2_img, s2_res))) or diff.n < 1:
        return math.nan
    def mde_at(k: int) -> float:
        return _mde(math.sqrt(s2_rep / k + s2_img / diff.n + s2_res / (k * diff.n)), k - 1, alpha, power)

    if mde_at(k_max) > target:
        return math.inf
    lo, hi = 2, k_max                      # the MDE falls with K: bisect for the first K' that reaches the target
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if mde_at(mid) <= target else (mid + 1, hi)
    return float(lo)


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


# ----------------------------------------------------------------------------- per class (pre-specified)
@dataclass(frozen=True)
class Interaction:
    """The class x method interaction test: do the per-class differences differ across classes? Repeated-measures
    ANOVA of the [K, C] per-replicate class differences (the replicate is the unit, classes the within factor),
    F on (C - 1, (C - 1)(K - 1)) df, Greenhouse-Geisser corrected (eps in [1 / (C - 1), 1]). Target: these test
    images (the class means are over the images evaluated)."""
    f: float
    df1: float
    df2: float
    gg_eps: float
    p: float
    k: int
    classes: int


def class_means(d, labels) -> np.ndarray:
    """[K, C] per-replicate mean of the [K, n] matrix `d` over the images of each class (classes 0..max(labels));
    a class without images is a column of nan."""
    d = np.asarray(d, dtype=np.float64)
    labels = np.asarray(labels)
    if len(labels) != d.shape[1]:
        raise ValueError(f"{len(labels)} labels for {d.shape[1]} images")
    c = int(labels.max()) + 1 if len(labels) else 0
    return np.stack([d[:, labels == j].mean(1) if (labels == j).any() else np.full(d.shape[0], np.nan)
                     for j in range(c)], axis=1)


def interaction(d, labels) -> Interaction:
    """Class x method interaction of the paired differences `d` [K, n] (see `Interaction`); nan with K < 2."""
    m = class_means(d, labels)
    m = m[:, ~np.isnan(m).any(0)]
    k, c = m.shape
    if k < 2 or c < 2:
        return Interaction(math.nan, math.nan, math.nan, math.nan, math.nan, k, c)
    resid = m - m.mean(1, keepdims=True) - m.mean(0, keepdims=True) + m.mean()
    ss_class = k * float(((m.mean(0) - m.mean()) ** 2).sum())
    ss_err = float((resid ** 2).sum())
    df1, df2 = c - 1, (c - 1) * (k - 1)
    if ss_err <= 0:
        return Interaction(math.inf if ss_class > 0 else math.nan, df1, df2, 1.0, 0.0 if ss_class > 0 else math.nan,
                           k, c)
    f = (ss_class / df1) / (ss_err / df2)
    # Greenhouse-Geisser: eps from the double-centred covariance of the classes over the replicates
    s = np.cov(m, rowvar=False)
    dc = s - s.mean(0, keepdims=True) - s.mean(1, keepdims=True) + s.mean()
    eps = float(np.trace(dc) ** 2 / ((c - 1) * (dc ** 2).sum())) if (dc ** 2).sum() > 0 else 1.0
    eps = min(1.0, max(1.0 / (c - 1), eps))
    from scipy import stats

    p = float(stats.f.sf(f, eps * df1, eps * df2))
    return Interaction(float(f), float(eps * df1), float(eps * df2), eps, p, k, c)


def per_class_diffs(d, labels, *, level: float = 0.95) -> list[Diff]:
    """Each class's difference (crossed, on its images) with Bonferroni-simultaneous intervals over the C classes
    (level 1 - (1 - level) / C each)."""
    d = np.asarray(d)
    labels = np.asarray(labels)
    c = int(labels.max()) + 1
    sim = 1 - (1 - level) / c
    return [crossed(d[:, labels == j], level=sim) for j in range(c)]


def leave_one_class_out(d, labels, *, level: float = 0.95) -> list[Diff]:
    """The difference without each class in turn (crossed, on the other classes' images), every class, each
    interval simultaneous over the C leave-outs (level 1 - (1 - level) / C) and judged against 0 (its own null)."""
    d = np.asarray(d)
    labels = np.asarray(labels)
    c = int(labels.max()) + 1
    sim = 1 - (1 - level) / c
    return [crossed(d[:, labels != j], level=sim) for j in range(c)]


# ----------------------------------------------------------------------------- one replicate: over images alone
# A cell with K = 1 replicate has no replicate variance to estimate: its accuracy interval is over the test images
# alone, conditional on that one run (a percentile bootstrap over images; with S > 1 rows the two-level bootstrap
# of images and rows, kept for the tables' K >= 2 fallback in earlier releases). Exact integer replicate sums,
# deterministic for a seed (numpy.random.SeedSequence), images with identical columns pooled (the same
# distribution, far cheaper). Efron & Tibshirani (1993) ch. 13; Owen, "The pigeonhole bootstrap" (2007).
CHUNK_ELEMENTS = 4_000_000   # bound on one [chunk, distinct columns] image-weight block (8 bytes each: 32 MiB)


@dataclass(frozen=True)
class CellStat:
    """Accuracy of one method in one cell: mean over all seeds and images, population std (ddof=0) of the
    per-seed accuracies, [lo, hi] the two-level bootstrap percentile interval of the accuracy."""
    mean: float
    std_seeds: float
    lo: float
    hi: float
    n_seeds: int
    n_test: int


def _outcomes(x, name: str) -> np.ndarray:
    """`x` as an int8 [S, n] 0/1 matrix; ValueError unless it is 2-D, non-empty and holds only 0/1 (or bools)."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: outcomes must be a 2-D [seeds, test images] matrix, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: outcomes are empty (shape {arr.shape}); need at least one seed and one image")
    if arr.dtype != np.bool_:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)) \
                or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name}: outcomes must be bool (or 0/1), got dtype {arr.dtype} with other values")
    return arr.astype(np.int8)


def _alpha(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return round(1.0 - level, 12)


def _check_n_boot(n_boot: int) -> int:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    return int(n_boot)


def _replicate_sums(d: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """d: int8 [S, n] (0/1 outcomes or -1/0/1 differences). Returns float64 [n_boot]: replicate b is
    sum_s sum_i V[b, s] W[b, i] d[s, i] (an exact integer) with W ~ Multinomial(n, 1/n) over images and
    V ~ Multinomial(S, 1/S) over seeds (V = 1 when S = 1).

    Images with identical columns d[:, i] are pooled: the statistic depends on W only through the pooled
    counts, and pooling a uniform multinomial gives exactly Multinomial(n, counts / n) over the G distinct
    columns (G <= min(n, 3^S)), so the draw is over G categories instead of n; same distribution, far cheaper.
    Chunked over replicates to bound memory; the draws do not depend on the chunk size."""
    s, n = d.shape
    cols, counts = np.unique(d, axis=1, return_counts=True)            # [S, G], [G]
    g = counts.size
    img_ss, seed_ss = np.random.SeedSequence(seed).spawn(2)
    rng_img, rng_seed = np.random.default_rng(img_ss), np.random.default_rng(seed_ss)
    chunk = max(1, min(n_boot, CHUNK_ELEMENTS // g))
    p_img, p_seed = counts / n, np.full(s, 1.0 / s)
    colsf = cols.astype(np.float64).T                                    # [G, S]
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        w = rng_img.multinomial(n, p_img, size=m).astype(np.float64)   # [m, G] image counts per column
        per_seed = w @ colsf                                             # [m, S] resampled-image sums
        if s > 1:
            v = rng_seed.multinomial(s, p_seed, size=m).astype(np.float64)  # [m, S] seed counts
            out[start:start + m] = np.einsum("ms,ms->m", per_seed, v)
        else:
            out[start:start + m] = per_seed.sum(axis=1)
    return out


def _percentile_interval(sums: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(lo, hi, p) for replicate numerators `sums` [B] (see the module conventions); lo/hi still unscaled."""
    b = sums.size
    k = max(1, math.ceil(alpha * b / 2))
    while k > 1 and 2 * (k - 1) / b >= alpha:
        k -= 1
    while 2 * k / b < alpha:
        k += 1
    t = np.sort(sums)
    lo, hi = t[k - 1], t[b - k]
    c = min(int((sums <= 0).sum()), int((sums >= 0).sum()))
    return float(lo), float(hi), min(1.0, 2 * c / b)


def cell_stat(correct, *, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> CellStat:
    """Mean accuracy of a bool [S, n] outcome matrix, std (ddof=0) of its S per-seed accuracies, and the
    two-level bootstrap percentile interval at `level` (images and seeds resampled jointly; images only when
    S = 1; see the module conventions)."""
    x = _outcomes(correct, "correct")
    alpha, n_boot = _alpha(level), _check_n_boot(n_boot)
    s, n = x.shape
    sums = _replicate_sums(x, n_boot, seed)
    lo, hi, _ = _percentile_interval(sums, alpha)
    per_seed = x.mean(axis=1)
    return CellStat(mean=float(x.mean()), std_seeds=float(per_seed.std(ddof=0)), lo=lo / (s * n),
                    hi=hi / (s * n), n_seeds=s, n_test=n)
