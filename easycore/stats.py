"""Statistics for comparing coreset methods: paired two-level bootstrap, Holm correction, best-in-column marks.

Data model. For one (training mode, fraction, eps) cell and one method the per-image outcome is a bool matrix
``correct[S, n]``: S seeds (independent training runs; seed s of every method uses the same seed value) x n test
images (the same images in the same order for every method and seed). Accuracy = mean of the matrix. Two
methods' matrices are *paired*: row s of both is seed s, column i of both is image i.

Conventions (all functions)
  * Two-level bootstrap. One replicate draws image weights ``W ~ Multinomial(n, 1/n)`` (one draw shared by
    all seeds and, for a paired difference, by both methods, so the image pairing is kept) and, independently,
    seed weights ``V ~ Multinomial(S, 1/S)`` (seeds resampled with replacement; the same seed rows of both
    methods are taken, so the seed pairing is kept). The replicate statistic is
    ``sum_s sum_i V_s W_i x[s, i] / (S n)``: the accuracy (or accuracy difference) of the resampled matrix.
    With S = 1 only images are resampled. Images with identical columns are pooled before drawing (exactly
    the same bootstrap distribution, see ``_replicate_sums``). Image and seed weights come from two streams
    spawned from ``numpy.random.SeedSequence(seed)``: deterministic for a given seed and input. Replicates
    are exact (integer counts summed in float64), so ties with 0 are exact.
  * Percentile interval at ``level``: with ``alpha = 1 - level`` (rounded to 12 decimals) and B replicates
    sorted ascending ``t_(1) <= ... <= t_(B)``, ``k`` is the smallest integer with ``2 k / B >= alpha``;
    ``lo = t_(k)``, ``hi = t_(B + 1 - k)`` (inverted-CDF percentiles, the same rule in both tails).
  * Two-sided bootstrap p-value for H0: diff = 0:
    ``p = min(1, 2 min(#{t* <= 0}, #{t* >= 0}) / B)``. With the interval above this is exactly consistent:
    ``p < alpha`` iff the interval excludes 0 (``lo > 0`` or ``hi < 0``), ties included.
  * Target and validity. The interval is for the population accuracy (difference): new test images from the
    same distribution and new training runs (seeds). Resampling both factors of this crossed design (Owen's
    "pigeonhole" bootstrap) counts the seed-by-image noise (an image flipping between runs by chance) in all
    three resampled components, so it is conservative when that noise dominates; with few seeds it sees a
    genuine run-level effect (one run better on all images) only with factor (S - 1) / S and a discrete seed
    distribution, so it under-covers when such effects dominate. Simulated (S = 3, n = 10000, logistic image
    model, 300 repetitions; tests/test_stats.py has the tested cases): 99% coverage of the 95% interval when
    runs differ by chance only (per-run accuracy std 0.26 points), 94% with run-level effects giving a
    per-run std of 0.5 points, lower beyond. Resampling images only would be exact in the first case but
    covered 62-90% once run-level effects exist (n = 600-3000), hence both factors.

References
  Efron & Tibshirani, "An Introduction to the Bootstrap" (1993), ch. 13 (percentile interval), ch. 16 (tests).
  Owen, "The pigeonhole bootstrap", Annals of Applied Statistics 1(2), 2007 (crossed random effects).
  Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6, 1979.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

# Bound on the elements of one [chunk, G] image-weight block (G distinct image columns; 8 bytes each: 32 MiB).
CHUNK_ELEMENTS = 4_000_000


# ----------------------------------------------------------------------------- results
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


@dataclass(frozen=True)
class PairedDiff:
    """Accuracy difference mean(a) - mean(b) of two paired outcome matrices, its paired bootstrap percentile
    interval [lo, hi] and the two-sided bootstrap p-value for H0: diff = 0 (see the module conventions)."""
    diff: float
    lo: float
    hi: float
    p_value: float
    n_seeds: int
    n_test: int


# ----------------------------------------------------------------------------- validation
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


def _same_shape(mats: Mapping[str, np.ndarray]) -> tuple[int, int]:
    shapes = {k: v.shape for k, v in mats.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"paired outcomes must have the same [seeds, test images] shape, got {shapes}")
    return next(iter(shapes.values()))


def _alpha(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return round(1.0 - level, 12)


def _check_n_boot(n_boot: int) -> int:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    return int(n_boot)


# ----------------------------------------------------------------------------- the bootstrap engine
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


def _interval(sums: np.ndarray, alpha: float) -> tuple[float, float, float]:
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


# ----------------------------------------------------------------------------- public API
def cell_stat(correct, *, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> CellStat:
    """Mean accuracy of a bool [S, n] outcome matrix, std (ddof=0) of its S per-seed accuracies, and the
    two-level bootstrap percentile interval at `level` (images and seeds resampled jointly; images only when
    S = 1; see the module conventions)."""
    x = _outcomes(correct, "correct")
    alpha, n_boot = _alpha(level), _check_n_boot(n_boot)
    s, n = x.shape
    sums = _replicate_sums(x, n_boot, seed)
    lo, hi, _ = _interval(sums, alpha)
    per_seed = x.mean(axis=1)
    return CellStat(mean=float(x.mean()), std_seeds=float(per_seed.std(ddof=0)), lo=lo / (s * n),
                    hi=hi / (s * n), n_seeds=s, n_test=n)


def _paired(d: np.ndarray, alpha: float, n_boot: int, seed: int) -> PairedDiff:
    """PairedDiff from an int8 [S, n] difference matrix d = a - b (values -1, 0, 1)."""
    s, n = d.shape
    lo, hi, p = _interval(_replicate_sums(d, n_boot, seed), alpha)
    return PairedDiff(diff=float(d.mean(dtype=np.float64)), lo=lo / (s * n), hi=hi / (s * n), p_value=p,
                      n_seeds=s, n_test=n)


def paired_bootstrap(a, b, *, level: float = 0.95, n_boot: int = 10000, seed: int = 0) -> PairedDiff:
    """Paired two-level bootstrap of diff = mean(a) - mean(b) for bool [S, n] outcomes paired by seed row and
    image column. Each replicate reweights images with one Multinomial(n, 1/n) draw shared by all seeds and
    both methods, and seeds with one Multinomial(S, 1/S) draw shared by both methods (images only when S = 1).
    lo/hi: percentile interval at `level`; p_value: two-sided, ``min(1, 2 min(#{t* <= 0}, #{t* >= 0}) / B)``,
    so ``p_value < 1 - level`` iff the interval excludes 0. Deterministic for a given seed."""
    xa, xb = _outcomes(a, "a"), _outcomes(b, "b")
    _same_shape({"a": xa, "b": xb})
    return _paired(xa - xb, _alpha(level), _check_n_boot(n_boot), seed)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order: with the m p-values sorted ascending,
    ``p_adj_(j) = max_{i <= j} min(1, (m - i + 1) p_(i))`` (monotone in the raw p-values, capped at 1).
    Rejecting where p_adj < alpha controls the family-wise error rate at alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p_values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def compare(outcomes: Mapping[str, np.ndarray], reference: str, *, others: Optional[Sequence[str]] = None,
            level: float = 0.95, n_boot: int = 10000, seed: int = 0, alpha: float = 0.05) -> list[dict]:
    """Compare `reference` with each other method (default: every other key, in mapping order) by
    `paired_bootstrap` (row k equals ``paired_bootstrap(outcomes[reference], outcomes[k], ...)`` with the
    same level, n_boot and seed). One dict per other method: method,
    reference, diff (reference minus method), lo, hi, p_value, p_holm (Holm over the rows of this call),
    verdict: "<reference> better" / "<reference> worse" when p_holm < alpha (by the sign of diff; the
    bootstrap mean equals diff, and with level = 1 - alpha the interval then excludes 0),
    else "no detectable difference"."""
    if reference not in outcomes:
        raise ValueError(f"reference {reference!r} is not among the methods {list(outcomes)}")
    others = [k for k in outcomes if k != reference] if others is None else list(others)
    missing = [k for k in others if k not in outcomes]
    if missing:
        raise ValueError(f"methods {missing} are not among the outcomes {list(outcomes)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not others:
        return []
    mats = {k: _outcomes(outcomes[k], k) for k in [reference, *others]}
    _same_shape(mats)
    alpha_ci, n_boot = _alpha(level), _check_n_boot(n_boot)
    res = [_paired(mats[reference] - mats[k], alpha_ci, n_boot, seed) for k in others]
    p_adj = holm([r.p_value for r in res])
    rows = []
    for k, r, ph in zip(others, res, p_adj):
        if ph < alpha and r.diff != 0:
            verdict = f"{reference} better" if r.diff > 0 else f"{reference} worse"
        else:
            verdict = "no detectable difference"
        rows.append({"method": k, "reference": reference, "diff": r.diff, "lo": r.lo, "hi": r.hi,
                     "p_value": r.p_value, "p_holm": float(ph), "verdict": verdict})
    return rows


def best_marks(outcomes: Mapping[str, np.ndarray], *, level: float = 0.95, n_boot: int = 10000,
               seed: int = 0) -> set[str]:
    """The methods to print in bold in one table column: {top} where top has the highest mean accuracy and
    its paired bootstrap interval against the runner-up (second-highest mean) lies above 0; else the empty
    set (also when the two highest means tie, or fewer than two methods are given)."""
    mats = {k: _outcomes(v, k) for k, v in outcomes.items()}
    if len(mats) < 2:
        return set()
    _same_shape(mats)
    means = {k: float(v.mean(dtype=np.float64)) for k, v in mats.items()}
    top, second = sorted(means, key=means.__getitem__, reverse=True)[:2]
    if means[top] == means[second]:
        return set()
    r = _paired(mats[top] - mats[second], _alpha(level), _check_n_boot(n_boot), seed)
    return {top} if r.lo > 0 else set()


def half_width(diff: PairedDiff) -> float:
    """(hi - lo) / 2 of a paired interval: roughly the smallest difference the comparison can detect."""
    return (diff.hi - diff.lo) / 2.0
