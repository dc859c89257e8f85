"""Inference with the replicate as the unit (easycore/inference.py): simulations shaped like the study that can tell
a right design from a wrong one, and known answers.

The simulation (`_draw`) has the structure of the study's per-image outcomes: C = 10 classes of 100 test images, K =
10 whole-pipeline replicates of two methods; image i of class c is correct for method m in replicate k when

    mu_m + alpha_c + beta_mc + s_i + t_mi + u_mk + v_kc + w_mkc + e_mki > 0

with class effects alpha (fixed: classes differ in difficulty), method x class beta (fixed: classes disagree about the
methods), an image effect s shared by both methods (the pairing), method x image t (images disagree about the
methods), a replicate effect u = selection + training (the selection redrawn in every replicate), replicate x class
v (shared) and method x replicate x class w, and noise e. Accuracies of 15-55 % and the difference's variance
components (`test_the_simulation_has_the_study_s_variance_components`) are those measured in the committed study
(reports/study-small/outcomes.npz). The population target is the expected difference over new images of the
same classes and new replicates, computed in closed form (probit). Designs:
  crossed     inference.paired (target: new images and new replicates): must cover 93-97 %
  fixed set   inference.paired(target="fixed"): the t over the K per-replicate differences; right for these images,
              under-covers the population target where images disagree about the methods
  image-only  replicates treated as fixed: t over the images of the per-image mean differences
  seed-only   one selection per method kept for every replicate (only the training seed redrawn)
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from easycore import inference

C, NPC, K = 10, 100, 10
REPS = 1000          # coverage SE near 0.95: 0.7 points
ROOT = Path(__file__).resolve().parents[1]


def _config(seed, *, sd_class=0.8, sd_mc=0.25, sd_img=1.2, sd_mi=0.6, sd_sel=0.08, sd_train=0.05, sd_rc=0.3,
            sd_mrc=0.1, acc=0.2, delta=0.0):
    g = np.random.default_rng(seed)
    alpha = g.normal(0, sd_class, C)
    beta = g.normal(0, sd_mc, (2, C))
    beta -= beta.mean(1, keepdims=True)
    tau = math.sqrt(sd_img ** 2 + sd_mi ** 2 + sd_sel ** 2 + sd_train ** 2 + sd_rc ** 2 + sd_mrc ** 2 + 1)
    mu = stats.norm.ppf(acc) * tau * 1.15
    mus = np.array([mu + delta / 2, mu - delta / 2])
    truth = float(np.mean(stats.norm.cdf((mus[0] + alpha + beta[0]) / tau)
                          - stats.norm.cdf((mus[1] + alpha + beta[1]) / tau)))
    return {"alpha": alpha, "beta": beta, "mus": mus, "truth": truth,
            "sd": (sd_img, sd_mi, sd_sel, sd_train, sd_rc, sd_mrc)}


def _draw(rng, cfg, *, k=K, fixed_selection=False):
    sd_img, sd_mi, sd_sel, sd_train, sd_rc, sd_mrc = cfg["sd"]
    lab = np.repeat(np.arange(C), NPC)
    n = len(lab)
    s = rng.normal(0, sd_img, n)
    rc = rng.normal(0, sd_rc, (k, C))
    out = []
    for m in (0, 1):
        sel = np.full((k, 1), rng.normal(0, sd_sel)) if fixed_selection else rng.normal(0, sd_sel, (k, 1))
        u = sel + rng.normal(0, sd_train, (k, 1))
        eta = ((cfg["mus"][m] + cfg["alpha"][lab] + cfg["beta"][m][lab] + s + rng.normal(0, sd_mi, n))[None, :] + u
               + rc[:, lab] + rng.normal(0, sd_mrc, (k, C))[:, lab] + rng.normal(0, 1, (k, n)))
        out.append(eta > 0)
    return out[0], out[1], lab


def _t_interval(x, level=0.95):
    x = np.asarray(x, dtype=np.float64)
    se = x.std(ddof=1) / math.sqrt(len(x))
    q = stats.t.ppf(0.5 + level / 2, len(x) - 1)
    return x.mean() - q * se, x.mean() + q * se


def _coverage(cfg, seed, reps=REPS):
    rng = np.random.default_rng(seed)
    hits = {"crossed": 0, "fixed set": 0, "image-only": 0, "seed-only": 0}
    t = cfg["truth"]
    for _ in range(reps):
        a, b, _ = _draw(rng, cfg)
        d, f = inference.paired(a, b), inference.paired(a, b, target="fixed")
        lo, hi = _t_interval((a.astype(float) - b).mean(0))
        a2, b2, _ = _draw(rng, cfg, fixed_selection=True)
        s2 = inference.paired(a2, b2, target="fixed")
        for name, (l, h) in (("crossed", (d.lo, d.hi)), ("fixed set", (f.lo, f.hi)), ("image-only", (lo, hi)),
                             ("seed-only", (s2.lo, s2.hi))):
            hits[name] += l <= t <= h
    return {k: v / reps for k, v in hits.items()}


STUDY = dict()                                                  # components as measured (see the test below)
IMAGES = dict(sd_mi=0.9, sd_sel=0.04, sd_train=0.03)            # images disagree more, replicates less
REPLICATES = dict(sd_sel=0.2, sd_train=0.1)                     # replicates differ more


@pytest.mark.parametrize("shape,kw", [("study", STUDY), ("images", IMAGES), ("replicates", REPLICATES),
                                      ("accuracy 50 %", dict(acc=0.5)), ("accuracy 15 %", dict(acc=0.15))])
def test_the_crossed_interval_covers_the_population_target(shape, kw):
    """95 % intervals over 1,000 simulated studies of each shape: the crossed interval covers 93-97 %."""
    cov = _coverage(_config(1, **kw), seed=7)
    assert 0.93 <= cov["crossed"] <= 0.97, cov


def test_the_wrong_designs_under_cover():
    """The designs the verdict does not use, on the same simulations: resampling images alone under-covers where
    replicates differ, one selection reused across replicates everywhere, and the per-replicate t (right for these
    test images) under-covers the population target where images disagree about the methods."""
    cov_i = _coverage(_config(1, **IMAGES), seed=7)
    cov_r = _coverage(_config(1, **REPLICATES), seed=7)
    assert cov_i["fixed set"] < 0.88 and cov_i["crossed"] >= 0.93, cov_i
    assert cov_r["image-only"] < 0.75 and cov_r["crossed"] >= 0.93, cov_r
    assert cov_r["seed-only"] < 0.6 and cov_i["seed-only"] < 0.8, (cov_i, cov_r)


def test_false_positive_rate_at_no_difference():
    """A true difference of 0 (the method x class effects set to 0): the crossed design rejects at 5 % in 3-7 % of
    1,000 simulated studies."""
    cfg = _config(3)
    cfg["beta"] = np.zeros_like(cfg["beta"])
    cfg["truth"] = 0.0
    rng = np.random.default_rng(2)
    rejections = [inference.paired(*_draw(rng, cfg)[:2]).p < 0.05 for _ in range(REPS)]
    assert 0.03 <= float(np.mean(rejections)) <= 0.07, np.mean(rejections)


def test_the_simulation_has_the_study_s_variance_components():
    """The study-shaped simulation's variance components of the difference are within a factor of 2.5 of the range
    measured on the committed small study's primary cells (image 0.025-0.057, residual 0.14-0.17 as fractions^2;
    the replicate component 4e-6 to 1.6e-3), so the coverage above is measured where the data are."""
    from easycore import report
    from easycore.config import load_params

    path = ROOT / "reports/study-small/outcomes.npz"
    if not path.exists():
        pytest.skip("reports/study-small/outcomes.npz is not committed")
    res, _ = report.read_outcomes(path, load_params(ROOT / "params-study-small.yaml"))
    measured = []
    for mode, f, key in (("standard", 0.1, "eps2"), ("standard", 0.3, "eps2"), ("trades", 0.1, "eps4"),
                         ("trades", 0.3, "eps4")):
        a = report.outcome_matrix(res, scores="main", method="easycore", fraction=f, mode=mode, key=key)
        b = report.outcome_matrix(res, scores="main", method="random", fraction=f, mode=mode, key=key)
        measured.append(inference.paired(a, b).components)
    measured = np.array(measured)
    sim = np.mean([inference.paired(*_draw(np.random.default_rng(s), _config(1))[:2]).components for s in range(20)], 0)
    for j in (1, 2):             # image and residual components
        assert measured[:, j].min() / 2.5 <= sim[j] <= measured[:, j].max() * 2.5, (j, sim, measured)
    assert measured[:, 0].min() / 2.5 <= sim[0] <= measured[:, 0].max() * 2.5, (sim, measured)


def test_df_never_below_k_minus_1_the_issue_s_reproduction():
    """Issue 32's reproduction (3 replicates x 400 images, 12 % vs 22 %, rng seed 10): df was 0.66 and p 0.085;
    now df >= K - 1 and the interval is the per-replicate t's (the image component estimates <= 0). Over 200 such
    noise draws df is never below K - 1 and no interval is wider than the range of differences [-1, 1]."""
    rng = np.random.default_rng(10)
    a = rng.random((3, 400)) < .12
    b = rng.random((3, 400)) < .22
    d = inference.paired(a, b)
    rows = a.mean(1) - b.mean(1)
    assert d.df >= 2 and d.diff == pytest.approx(-0.1025)
    assert d.p == pytest.approx(stats.ttest_1samp(rows, 0).pvalue) and d.p < 0.01
    for _ in range(200):
        a = rng.random((3, 400)) < .12
        b = rng.random((3, 400)) < .22
        d = inference.paired(a, b)
        assert d.df >= 2 and -1 <= d.lo <= d.hi <= 1
        assert inference.mde(d) < 1


def test_three_replicates_cover_nearly_with_the_floor():
    """K = 3 whole-pipeline replicates of the study-shaped simulation: the crossed interval (df floored at 2) covers
    0.92-0.93 (measured over 2,000 studies of three configurations: 0.924, 0.933, 0.934), slightly under the 95 %
    it claims: why rows with fewer than 5 replicates are labelled "indicative" (report.INDICATIVE_K) and no claim
    rests on one. Asserted: >= 0.90 over 1,000."""
    cfg = _config(1)
    rng = np.random.default_rng(11)
    hits = [(lambda d: d.lo <= cfg["truth"] <= d.hi)(inference.paired(*_draw(rng, cfg, k=3)[:2]))
            for _ in range(REPS)]
    assert 0.90 <= float(np.mean(hits)) < 0.95, np.mean(hits)


def test_fixed_set_is_the_per_replicate_t():
    rng = np.random.default_rng(4)
    a, b = rng.random((6, 300)) < 0.3, rng.random((6, 300)) < 0.25
    f = inference.paired(a, b, target="fixed")
    lo, hi = _t_interval(a.mean(1) - b.mean(1))
    assert (f.lo, f.hi) == pytest.approx((lo, hi)) and f.df == 5 and f.target == "these images"
    d = inference.paired(a, b)
    assert d.se >= f.se and d.df >= 5


def test_interaction_equals_the_paired_t_for_two_classes_and_detects_a_class_effect():
    """The class x method test against scipy: with 2 classes the repeated-measures F is the paired t squared
    (Greenhouse-Geisser eps = 1); a difference carried by one class of 10 is detected (p < 0.01), none is not."""
    rng = np.random.default_rng(0)
    d = (rng.random((10, 200)) < .3).astype(int) - (rng.random((10, 200)) < .3).astype(int)
    lab = np.repeat([0, 1], 100)
    it = inference.interaction(d, lab)
    m = inference.class_means(d, lab)
    t = stats.ttest_rel(m[:, 0], m[:, 1])
    assert it.f == pytest.approx(t.statistic ** 2) and it.p == pytest.approx(t.pvalue) and it.gg_eps == 1.0
    lab10 = np.repeat(np.arange(10), 100)
    a = rng.random((10, 1000)) < 0.3
    b = rng.random((10, 1000)) < 0.3
    assert inference.interaction(a.astype(int) - b, lab10).p > 0.01
    a[:, lab10 == 6] = rng.random((10, 100)) < 0.6             # one class carries a difference
    it = inference.interaction(a.astype(int) - b, lab10)
    assert it.p < 0.01 and 1 / 9 <= it.gg_eps <= 1
    pcs = inference.per_class_diffs(a.astype(int) - b, lab10)
    assert pcs[6].lo > 0 and pcs[6].level == pytest.approx(1 - 0.05 / 10)
    assert sum(p.lo > 0 for p in pcs) == 1
    loco = inference.leave_one_class_out(a.astype(int) - b, lab10)
    assert len(loco) == 10 and loco[6].diff < min(x.diff for j, x in enumerate(loco) if j != 6)


# ----------------------------------------------------------------------------- known answers
def test_crossed_variance_matches_the_expected_mean_squares_by_hand():
    """A 3 x 6 matrix: the estimate, standard error, Satterthwaite df and p against a hand computation of
    (MS_rep + MS_img - MS_res) / (K n), and the interval clipped to [-1, 1]."""
    d = np.array([[1, 0, 0, 1, 0, 1], [0, 0, -1, 1, 0, 1], [1, 1, 0, 1, 0, 1]], dtype=float)
    k, n = d.shape
    g = d.mean()
    r, c = d.mean(1), d.mean(0)
    ms_r = n * ((r - g) ** 2).sum() / (k - 1)
    ms_c = k * ((c - g) ** 2).sum() / (n - 1)
    ms_e = ((d - r[:, None] - c[None, :] + g) ** 2).sum() / ((k - 1) * (n - 1))
    assert ms_c > ms_e                      # the image component is estimated above 0: it enters
    var = (ms_r + ms_c - ms_e) / (k * n)
    df = max(k - 1, (ms_r + ms_c - ms_e) ** 2 / (ms_r ** 2 / (k - 1) + ms_c ** 2 / (n - 1)
                                               + ms_e ** 2 / ((k - 1) * (n - 1))))
    got = inference.crossed(d)
    assert got.diff == pytest.approx(g) and got.se == pytest.approx(math.sqrt(var)) and got.df == pytest.approx(df)
    q = stats.t.ppf(0.975, df)
    assert (got.lo, got.hi) == pytest.approx((max(-1, g - q * math.sqrt(var)), min(1, g + q * math.sqrt(var))))
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


def test_replicates_for_mde_is_the_first_k_by_brute_force():
    """The planning number beside each primary cell (issue 31 item 4): the fewest replicates whose MDE reaches the
    target at the measured variance components, checked by scanning K with scipy's t; the image term alone caps
    what replicates can do (inf: more test images needed)."""
    import dataclasses
    from scipy import stats as st

    base = inference.crossed(np.random.default_rng(0).integers(-1, 2, (10, 2000)).astype(float))
    for comps in [(4e-4, 0.0, 0.05), (1e-3, 2e-4, 0.3), (2e-5, 1e-4, 0.1)]:
        d = dataclasses.replace(base, components=comps)
        n = d.n

        def mde(k):
            se = np.sqrt(comps[0] / k + max(comps[1], 0) / n + comps[2] / (k * n))
            return (st.t.ppf(1 - 0.0125, k - 1) + st.t.ppf(0.8, k - 1)) * se

        got = inference.replicates_for_mde(d, 0.02, alpha=0.025, power=0.8)
        want = next((k for k in range(2, 10_001) if mde(k) <= 0.02), np.inf)
        assert got == want, (comps, got, want)
    wall = dataclasses.replace(base, components=(1e-4, 0.5, 0.1))       # image variance alone: MDE > 2 points
    assert inference.replicates_for_mde(wall, 0.02) == np.inf
