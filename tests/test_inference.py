"""Inference with the replicate as the unit (easycore/inference.py): simulations that can tell a right design from
a wrong one, and known answers.

The simulation draws, per repetition, a new sample of n test images and K whole-pipeline replicates of two methods
from a latent model: image i is correct for method m in replicate k when mu_m + s_i + u_mk + e_mki > 0, with an image
effect s shared by both methods (the pairing), a replicate effect u_mk = selection + training (the selection
redrawn in every replicate), and noise e. The true population difference is then Phi(mu_a / tau) - Phi(mu_b / tau).
Designs:
  chosen      inference.paired on K whole-pipeline replicates (crossed images x replicates)
  image-only  replicates treated as fixed: the per-image mean differences, t over images
  seed-only   one selection per method kept for every replicate (only the training seed redrawn): t over the K
              per-replicate differences
  unpaired    the two methods' K x n outcomes as independent samples
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from easycore import inference

K, N, REPS = 10, 1000, 600
SIG_IMG, SIG_SEL, SIG_TRAIN = 1.5, 0.15, 0.1
TAU = math.sqrt(SIG_IMG ** 2 + SIG_SEL ** 2 + SIG_TRAIN ** 2 + 1.0)


def _draw(rng, mu_a, mu_b, *, redraw_selection=True):
    s = rng.normal(0, SIG_IMG, N)
    out = []
    for mu in (mu_a, mu_b):
        sel = rng.normal(0, SIG_SEL, (K, 1)) if redraw_selection else np.full((K, 1), rng.normal(0, SIG_SEL))
        u = sel + rng.normal(0, SIG_TRAIN, (K, 1))
        out.append(mu + s[None, :] + u + rng.normal(0, 1, (K, N)) > 0)
    return out


def _t_interval(x, level=0.95):
    x = np.asarray(x, dtype=np.float64)
    se = x.std(ddof=1) / math.sqrt(len(x))
    q = stats.t.ppf(0.5 + level / 2, len(x) - 1)
    return x.mean() - q * se, x.mean() + q * se


def _designs(rng, mu_a, mu_b):
    a, b = _draw(rng, mu_a, mu_b)
    fixed_a, fixed_b = _draw(rng, mu_a, mu_b, redraw_selection=False)
    d = a.astype(float) - b.astype(float)
    chosen = inference.paired(a, b)
    image_only = _t_interval(d.mean(0))
    seed_only = _t_interval(fixed_a.mean(1) - fixed_b.mean(1))
    diff = a.mean() - b.mean()
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    unpaired = (diff - 1.96 * se, diff + 1.96 * se)
    return {"chosen": (chosen.lo, chosen.hi), "image-only": image_only, "seed-only": seed_only,
            "unpaired": unpaired}


def _coverage(mu_a, mu_b, seed):
    truth = stats.norm.cdf(mu_a / TAU) - stats.norm.cdf(mu_b / TAU)
    rng = np.random.default_rng(seed)
    hits = {}
    for _ in range(REPS):
        for name, (lo, hi) in _designs(rng, mu_a, mu_b).items():
            hits.setdefault(name, []).append(lo <= truth <= hi)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def test_only_the_replicate_design_covers():
    """95% intervals, 600 repetitions (binomial SE of a coverage near 0.95: 0.9 points): the chosen design is
    inside 93-97%; resampling images alone, t over training seeds of one selection, and the unpaired interval
    are outside the band."""
    cov = _coverage(0.1, -0.1, seed=1)
    assert 0.93 <= cov["chosen"] <= 0.97, cov
    for wrong in ("image-only", "seed-only", "unpaired"):
        assert not 0.93 <= cov[wrong] <= 0.97, (wrong, cov)


def test_false_positive_rate_at_no_difference():
    """A true difference of 0: the chosen design rejects at 5% in 3-7% of the repetitions (600)."""
    rng = np.random.default_rng(2)
    rejections = [inference.paired(*_draw(rng, 0.2, 0.2)).p < 0.05 for _ in range(REPS)]
    assert 0.03 <= float(np.mean(rejections)) <= 0.07, np.mean(rejections)


# ----------------------------------------------------------------------------- known answers
def test_crossed_variance_matches_the_expected_mean_squares_by_hand():
    """A 3 x 4 matrix: the estimate, standard error, Satterthwaite df and p against a hand computation."""
    d = np.array([[1, 0, 0, 1], [0, 0, -1, 1], [1, 1, 0, 1]], dtype=float)
    k, n = d.shape
    g = d.mean()
    r, c = d.mean(1), d.mean(0)
    ms_r = n * ((r - g) ** 2).sum() / (k - 1)
    ms_c = k * ((c - g) ** 2).sum() / (n - 1)
    ms_e = ((d - r[:, None] - c[None, :] + g) ** 2).sum() / ((k - 1) * (n - 1))
    var = (ms_r + ms_c - ms_e) / (k * n)
    df = (ms_r + ms_c - ms_e) ** 2 / (ms_r ** 2 / (k - 1) + ms_c ** 2 / (n - 1) + ms_e ** 2 / ((k - 1) * (n - 1)))
    got = inference.crossed(d)
    assert got.diff == pytest.approx(g) and got.se == pytest.approx(math.sqrt(var)) and got.df == pytest.approx(df)
    q = stats.t.ppf(0.975, df)
    assert (got.lo, got.hi) == pytest.approx((g - q * math.sqrt(var), g + q * math.sqrt(var)))
    assert got.p == pytest.approx(2 * stats.t.sf(abs(g) / math.sqrt(var), df))


def test_one_replicate_is_refused_not_treated_as_images_only():
    d = inference.paired(np.ones((1, 50), bool), np.zeros((1, 50), bool))
    assert d.diff == 1.0 and math.isnan(d.se) and math.isnan(d.lo) and math.isnan(d.p)
    assert math.isnan(inference.mde(d))


def test_replicate_variance_dominates_when_runs_differ():
    """Every replicate's difference is constant over the images, replicates differ: the interval is the plain t
    interval over the K per-replicate differences (K - 1 df)."""
    per_rep = np.array([0.02, 0.05, -0.01, 0.04, 0.03])
    rng = np.random.default_rng(0)
    a = np.zeros((5, 400), bool)
    b = np.zeros((5, 400), bool)
    for k, v in enumerate(per_rep):        # v of the images correct for A only, none for B only
        a[k, rng.permutation(400)[: int(round(v * 400))]] = v > 0
        b[k, rng.permutation(400)[: int(round(-v * 400))]] = v < 0
    got = inference.paired(a, b)
    lo, hi = _t_interval(a.mean(1) - b.mean(1))
    assert got.sd_rep == pytest.approx((a.mean(1) - b.mean(1)).std(ddof=1))
    assert got.hi - got.lo >= 0.95 * (hi - lo)             # never narrower than the replicate-only interval


def test_mde_holm_simultaneous_and_best():
    d = inference.Diff(0.01, 0.01, 9.0, -0.0126, 0.0326, 0.34, 0.95, 10, 1000, 0.03, (0, 0, 0))
    assert inference.mde(d) == pytest.approx((stats.t.ppf(0.975, 9) + stats.t.ppf(0.8, 9)) * 0.01)
    assert inference.holm([0.01, 0.04, 0.03, math.nan]).tolist()[:3] == pytest.approx([0.03, 0.06, 0.06])
    many = [inference.Diff(0.0, 0.01, 50.0, 0, 0, 1.0, 0.95, 10, 1000, 0, (0, 0, 0))] * 4
    sim = inference.simultaneous(many)
    assert sim[0].level == pytest.approx(1 - 0.05 / 4)
    assert sim[0].half_width == pytest.approx(stats.t.ppf(1 - 0.025 / 4, 50) * 0.01)
    diffs = {"x": inference.Diff(0.05, 0.01, 50, 0, 0, 0, 0.95, 10, 1000, 0, (0, 0, 0)),
             "y": inference.Diff(-0.02, 0.01, 50, 0, 0, 0, 0.95, 10, 1000, 0, (0, 0, 0))}
    best = inference.vs_best(diffs)
    assert best.best == "y" and best.diff == pytest.approx(-0.02)
    sx, sy = inference.simultaneous(list(diffs.values()))
    assert best.lo == pytest.approx(min(sx.lo, sy.lo)) and best.hi == pytest.approx(min(sx.hi, sy.hi))


def test_constant_classifier_and_per_class():
    labels = np.repeat(np.arange(10), 5)
    assert inference.uninformative(0.10, 0.30, labels) and not inference.uninformative(0.11, 0.30, labels)
    o = np.zeros((2, 50), bool)
    o[:, labels == 8] = True
    acc = inference.per_class(o, labels)
    assert acc[8] == 1.0 and np.nansum(acc) == 1.0
