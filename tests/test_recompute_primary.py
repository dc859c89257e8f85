"""Issues 21 and 32: each committed study's primary table (reports/<study>/tables/coresets/verdict.csv, family
"primary") recomputed from its committed per-image outcomes (reports/<study>/outcomes.npz) by a small independent
implementation: numpy reads the packed bits, the crossed images x replicates interval is written out here from the
two-way ANOVA mean squares ((MS_rep + max(MS_img - MS_res, 0)) / (K n), Satterthwaite df floored at K - 1,
scipy.stats.t, clipped to [-100, 100] points), the fixed-test-set interval as the t over the per-replicate
differences, Holm by hand, and the eps (eval.mode_eps, a fixed eps, or the rule on the full-data model's outcomes).
No easycore statistics code is used."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
STUDIES = [("reports/study-small", "params-study-small.yaml"), ("reports/study", "params-study.yaml")]


def _vector(z, n, member):
    return np.unpackbits(z[member])[:n].astype(bool)


def _interval(d: np.ndarray, level: float):
    k, n = d.shape
    est = d.mean()
    r, c = d.mean(1), d.mean(0)
    ms_r = n * ((r - est) ** 2).sum() / (k - 1)
    ms_c = k * ((c - est) ** 2).sum() / (n - 1)
    ms_e = ((d - r[:, None] - c[None, :] + est) ** 2).sum() / ((k - 1) * (n - 1))
    if ms_c > ms_e:                              # the image component enters where it is estimated above 0
        v = ms_r + ms_c - ms_e
        df = v ** 2 / (ms_r ** 2 / (k - 1) + ms_c ** 2 / (n - 1) + ms_e ** 2 / ((k - 1) * (n - 1)))
    else:
        v, df = ms_r, k - 1
    df = max(df, k - 1)
    se = np.sqrt(v / (k * n))
    p = 2 * stats.t.sf(abs(est) / se, df)
    fixed_se = r.std(ddof=1) / np.sqrt(k)
    return est, se, df, p, fixed_se


@pytest.mark.parametrize("study,params_file", STUDIES)
def test_committed_primary_table_recomputes_independently(study, params_file):
    STUDY = ROOT / study
    if not (STUDY / "tables/coresets/verdict.csv").exists():
        pytest.skip(f"no committed study under {study}")
    params = yaml.safe_load((ROOT / params_file).read_text())
    prim = params["report"]["primary"]
    seeds = params["train"]["seeds"]
    level, alpha = prim["level"], 1 - prim["level"]
    z = np.load(STUDY / "outcomes.npz", allow_pickle=False)
    n = None
    for name in z.files:                         # the count of images: the labels' length
        if name == "labels":
            n = len(z[name])
    assert n, "the outcomes file holds no labels"
    labels = z["labels"]
    chance = 100 * np.bincount(labels).max() / n
    want = pd.read_csv(STUDY / "tables/coresets/verdict.csv")
    want = want[want.family == "primary"].reset_index(drop=True)
    fractions = prim.get("fractions") or params["coreset"]["fractions"]
    assert len(want) == len(params["train"]["modes"]) * len(fractions)

    def mat(method, f, mode, key, ss, scores="main"):       # run names: <method>-<fraction, at least one decimal>-...
        fr = f"{f:.1f}" if f == round(f, 1) else f"{f:g}"
        return np.stack([_vector(z, n, f"{scores}/{method}-{fr}-{mode}-s{s}/{key}") for s in ss])

    rows = []
    for mode in params["train"]["modes"]:
        grid = sorted(e for e in set(params["eval"]["eps_grid"]) | {params["eval"]["eps"]} if e > 0)
        survey = seeds[:params["train"]["survey_seeds"] or len(seeds)]
        mode_eps = params["eval"].get("mode_eps") or {}
        if prim["eps"] is not None or mode in mode_eps:
            eps = prim["eps"] if prim["eps"] is not None else mode_eps[mode]
        else:
            full = {e: 100 * mat("full", 1.0, mode, f"eps{e * 255:.4g}", survey, scores="none").mean() for e in grid}
            ok = [e for e in grid if full[e] >= 100 * prim["min_full_robust"]]
            eps = ok[-1] if ok else grid[0]
        for f in fractions:
            key = f"eps{eps * 255:.4g}"
            a = mat(prim["method"], f, mode, key, seeds)
            b = mat(prim["comparator"], f, mode, key, seeds)
            est, se, df, p, fixed_se = _interval(a.astype(float) - b.astype(float), level)
            informative = min(a.mean(), b.mean()) * 100 > chance
            rows.append(dict(mode=mode, fraction=f, eps_255=round(eps * 255, 3), diff=100 * est, se=se, df=df,
                             p=p if informative else 1.0, informative=informative, fixed_se=fixed_se, k=len(a)))
    m = len(rows)
    order = sorted(range(m), key=lambda i: (rows[i]["p"], i))
    running, stopped = 0.0, False
    for rank, i in enumerate(order):
        r = rows[i]
        running = max(running, min(1.0, (m - rank) * r["p"]))
        r["p_holm"] = running
        a_step = alpha / (m - rank)
        if stopped or r["p"] > a_step:
            stopped, a_step = True, alpha / m
        q = stats.t.ppf(1 - a_step / 2, r["df"])
        r["lo"], r["hi"] = max(-100, r["diff"] - 100 * q * r["se"]), min(100, r["diff"] + 100 * q * r["se"])
        qf = stats.t.ppf(1 - a_step / 2, r["k"] - 1)
        r["fixed_lo"] = max(-100, r["diff"] - 100 * qf * r["fixed_se"])
        r["fixed_hi"] = min(100, r["diff"] + 100 * qf * r["fixed_se"])
        r["word"] = ("uninformative" if not r["informative"] else "better" if r["lo"] > 0 else
                     "worse" if r["hi"] < 0 else "no detectable difference")
    got = pd.DataFrame(rows)
    for c in ("mode", "fraction", "eps_255"):
        assert got[c].tolist() == want[c].tolist(), c
    for c in ("diff", "lo", "hi", "p_holm", "fixed_lo", "fixed_hi"):
        np.testing.assert_allclose(got[c], want[c], atol=2e-4, err_msg=c)
    for w, g in zip(want.verdict, got.word):
        assert w.startswith("uninformative") if g == "uninformative" else w.endswith(g), (w, g)
