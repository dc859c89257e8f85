"""Issue 21: the verdict (report.verdict) on synthetic runs with known answers: the pre-registered primary family with
Holm over it alone and the interval that decided each cell printed beside it; the primary eps rule; one replicate is
"not replicated"; a model at or below a constant classifier makes a cell uninformative; a one-class difference shows
in the difference without its top class; every number is closed-form (the same twice, no seed)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from easycore import report, runs
from easycore.config import params_from_dict
from easycore.headline import headline, n_keys

N = 400
LABELS = np.arange(N) % 10
EPS = {2: "eps2", 4: "eps4", 8: "eps8"}


def _params(seeds=(0, 1, 2, 3, 4, 5), eps=None, survey=()):
    return params_from_dict({
        "coreset": {"methods": ["easycore", "random"], "fractions": [0.1, 0.3], "survey_methods": list(survey),
                    "survey_fractions": [0.1], "survey_modes": ["trades"]},
        "train": {"modes": ["standard", "trades"], "seeds": list(seeds)},
        "eval": {"eps": 8 / 255, "eps_grid": [0.0, 2 / 255, 4 / 255, 8 / 255]},
        "report": {"primary": {"eps": eps}}})


def _run(method, f, mode, seed, acc, *, scores="main", rng, shift=None):
    """Outcomes with accuracy `acc` at every eps (per eps: acc, acc*0.8, acc*0.5 for 2, 4, 8/255) plus a
    per-replicate effect; `shift` (class -> extra accuracy) adds a class-specific effect."""
    out = {"clean": rng.random(N) < min(1.0, acc + 0.2)}
    rep = rng.normal(0, 0.01)
    for e, k in EPS.items():
        p = np.full(N, {2: acc, 4: 0.8 * acc, 8: 0.5 * acc}[e] + rep)
        for c, extra in (shift or {}).items():
            p[LABELS == c] += extra
        out[k] = rng.random(N) < np.clip(p, 0, 1)
    out["robust"] = out["eps8"]
    return report.RunResult(runs.Run(scores, method, f, mode, seed), "ok", {}, out)


def _results(params, accs, *, full=0.6, shift=None):
    """accs: {(method, mode, fraction): accuracy at 2/255}; the full-data model at `full`."""
    rng = np.random.default_rng(0)
    out = []
    for r in runs.expected_runs(params):
        if r.method == runs.FULL:
            out.append(_run(r.method, r.fraction, r.mode, r.seed, full, scores=r.scores, rng=rng))
        else:
            acc = accs.get((r.method, r.mode, r.fraction), 0.3)
            out.append(_run(r.method, r.fraction, r.mode, r.seed, acc, scores=r.scores, rng=rng,
                            shift=(shift or {}).get(r.method)))
    return out


def test_primary_family_holm_and_the_deciding_interval():
    P = _params()
    accs = {("easycore", "standard", 0.1): 0.45, ("random", "standard", 0.1): 0.30,     # clearly better
            ("easycore", "trades", 0.3): 0.28, ("random", "trades", 0.3): 0.30}          # ~nothing
    ver = report.verdict(_results(P, accs), P, labels=LABELS)
    prim = ver[ver.family == "primary"]
    assert len(prim) == 4 and set(prim.comparison) == {"easycore - random"}
    assert (prim.k == 6).all() and (prim.n == N).all()
    for r in prim.itertuples():
        found = r.verdict in ("EasyCore better", "EasyCore worse")
        assert found == (r.p_holm <= 0.05), r            # Holm decides ...
        assert found == (r.lo > 0 or r.hi < 0), r         # ... and the printed interval agrees with it
        assert 0.95 <= r.ci_level <= 1 - 0.05 / 4 + 1e-12 and r.mde > 0
    better = prim[(prim["mode"] == "standard") & (prim.fraction == 0.1)].iloc[0]
    assert better.verdict == "EasyCore better" and better["diff"] > 5
    # the rule: the largest eps where the full-data model keeps >= 20 %: 0.6 * 0.5 = 30 % at 8/255
    assert set(prim.eps_255) == {8.0} and prim.eps_rule.str.startswith("largest eps").all()
    sec = ver[ver.family == "secondary"]
    assert set(sec.eps_255) == {2.0, 4.0} and sec.p_holm.isna().all()
    # closed forms: the same frame twice
    pd.testing.assert_frame_equal(ver, report.verdict(_results(P, accs), P, labels=LABELS))
    h = headline(ver, P, N)
    assert h["standard_f0.1"]["verdict"] == 1 and n_keys(h) == 14


def test_eps_rule_follows_the_full_data_model():
    P = _params()
    ver = report.verdict(_results(P, {}, full=0.3), P, labels=LABELS)   # 30 / 24 / 15 % at 2 / 4 / 8
    assert set(ver[ver.family == "primary"].eps_255) == {4.0}
    ver = report.verdict(_results(P, {}, full=0.1), P, labels=LABELS)   # never >= 20 %: the smallest eps
    prim = ver[ver.family == "primary"]
    assert set(prim.eps_255) == {2.0} and prim.eps_rule.str.startswith("smallest eps").all()
    P = _params(eps=4 / 255)                                             # written in the params: that eps
    assert set(report.verdict(_results(P, {}), P, labels=LABELS).query("family == 'primary'").eps_255) == {4.0}


def test_one_replicate_is_not_replicated_and_below_chance_is_uninformative():
    P = _params(seeds=(0,))
    ver = report.verdict(_results(P, {}), P, labels=LABELS)
    prim = ver[ver.family == "primary"]
    assert (prim.verdict == "not replicated (K=1)").all() and prim.lo.isna().all() and prim.mde.isna().all()
    assert headline(ver, P, N)["standard_f0.1"]["verdict"] is None
    P = _params()
    accs = {("easycore", "standard", 0.1): 0.40, ("random", "standard", 0.1): 0.05}   # random below 10 % chance
    ver = report.verdict(_results(P, accs, full=0.9), P, labels=LABELS)
    cell = ver[(ver.family == "primary") & (ver["mode"] == "standard") & (ver.fraction == 0.1)].iloc[0]
    assert cell.verdict.startswith("uninformative") and cell["diff"] > 10 and cell.chance_pct == 10.0
    assert headline(ver, P, N)["standard_f0.1"]["verdict"] is None


def test_a_one_class_difference_shows_without_its_top_class_and_per_class():
    P = _params()
    ver = report.verdict(_results(P, {}, shift={"easycore": {8: 0.6}}), P, labels=LABELS)
    cell = ver[(ver.family == "primary") & (ver["mode"] == "standard") & (ver.fraction == 0.1)].iloc[0]
    assert cell["diff"] > 3 and cell.top_class == "8" and abs(cell.diff_without_top_class) < 2.5
    pc = report.per_class_table(_results(P, {}, shift={"easycore": {8: 0.6}}), P, ver, LABELS)
    top = pc[(pc["mode"] == "standard") & (pc.fraction == 0.1)].set_index("class")["diff"]
    assert top.idxmax() == 8 and top[8] > 40


def test_best_other_is_hsu_over_the_common_replicates():
    P = params_from_dict({
        "coreset": {"methods": ["easycore", "random"], "fractions": [0.1], "survey_methods": ["hard", "el2n"],
                    "survey_fractions": [0.1], "survey_modes": ["trades"]},
        "train": {"modes": ["trades"], "seeds": [0, 1, 2, 3, 4, 5], "survey_seeds": 3},
        "eval": {"eps": 8 / 255, "eps_grid": [0.0, 8 / 255]}})
    accs = {("hard", "trades", 0.1): 1.0, ("el2n", "trades", 0.1): 0.3}   # 50 % vs 15 % at 8/255
    ver = report.verdict(_results(P, accs), P, labels=LABELS)
    best = ver[ver.comparison == "easycore - best other (Hsu)"].iloc[0]
    assert best.comparator == "best other: hard" and best.k == 3            # paired on the 3 replicates both hold
    assert best.verdict == "EasyCore worse than the best other" and best.hi < 0
    prim = ver[ver.family == "primary"].iloc[0]
    assert prim.k == 6 and not math.isnan(prim.p_holm)
