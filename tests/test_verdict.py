"""Issue 21: the verdict (report.verdict) on synthetic runs with known answers: the pre-registered primary family with
Holm over it alone and the interval that decided each cell printed beside it; the primary eps rule; one replicate is
"not replicated"; a model at or below a constant classifier makes a cell uninformative; a one-class difference shows
in the pre-specified per-class analysis; both targets printed; the eps rule refuses rather than moves; every number is
closed-form (the same twice, no seed)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from easycore import report
from easycore.pipeline import runs
from easycore.config import params_from_dict
from easycore.report.headline import headline, n_keys

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
    h = headline(ver, P, N)["standard_f0.1"]
    assert (h["verdict"], h["mde"]) == (2, -1) and isinstance(h["diff"], float)      # codes, never null
    P = _params()
    accs = {("easycore", "standard", 0.1): 0.40, ("random", "standard", 0.1): 0.05}   # random below 10 % chance
    ver = report.verdict(_results(P, accs, full=0.9), P, labels=LABELS)
    cell = ver[(ver.family == "primary") & (ver["mode"] == "standard") & (ver.fraction == 0.1)].iloc[0]
    assert cell.verdict.startswith("uninformative") and cell["diff"] > 10 and cell.chance_pct == 10.0
    h = headline(ver, P, N)["standard_f0.1"]
    assert h["verdict"] == 3 and h["diff"] == round(cell["diff"], 2) and h["mde"] > 0


def test_a_one_class_difference_is_found_by_the_pre_specified_per_class_analysis():
    """EasyCore better on class 8 only: the interaction test rejects, class 8 is the one class whose simultaneous
    interval excludes 0, and leaving class 8 out (every class is left out in turn) gives the smallest difference."""
    P = _params()
    res = _results(P, {}, shift={"easycore": {8: 0.6}})
    ver = report.verdict(res, P, labels=LABELS)
    cell = ver[(ver.family == "primary") & (ver["mode"] == "standard") & (ver.fraction == 0.1)].iloc[0]
    assert cell["diff"] > 3 and "top_class" not in ver and "diff_without_top_class" not in ver
    pc = report.per_class_table(res, P, ver, LABELS)
    top = pc[(pc["mode"] == "standard") & (pc.fraction == 0.1)].set_index("class")["diff"]
    assert top.idxmax() == 8 and top[8] > 40 and "easycore clean %" in pc
    tests, per = report.per_class_analysis(res, P, ver, LABELS)
    t = tests[(tests["mode"] == "standard") & (tests.fraction == 0.1)].iloc[0]
    assert t["p interaction"] < 0.001 and t["classes with a difference"] == 1
    rows = per[(per["mode"] == "standard") & (per.fraction == 0.1)].set_index("class")
    assert rows.loc[8, "lo"] > 0 and len(rows) == 10 and rows["without class"].idxmin() == 8
    assert abs(rows.loc[8, "without class"]) < 2.5


def test_the_per_class_analysis_needs_replicates_and_two_images_per_class():
    """One replicate (the replicate is the unit) or a class with one attacked image (a tiny profile's 5 test
    images): no per-class analysis for that cell, where it stopped the coresets notebook with a ValueError."""
    P = _params(seeds=(0,))
    res = _results(P, {})
    tests, per = report.per_class_analysis(res, P, report.verdict(res, P, labels=LABELS), LABELS)
    assert tests.empty and per.empty
    P = _params()
    res = _results(P, {})
    lab = np.array(LABELS).copy()
    lab[lab == 3] = 4
    lab[np.flatnonzero(LABELS == 4)[0]] = 3                       # class 3 holds one image
    tests, per = report.per_class_analysis(res, P, report.verdict(res, P, labels=lab), lab)
    assert tests.empty and per.empty
    tests, _ = report.per_class_analysis(res, P, report.verdict(res, P, labels=LABELS), LABELS)
    assert len(tests) == 4


def test_both_targets_are_printed_and_the_crossed_one_decides():
    """Every primary row carries the crossed interval (which decides the word) and, at the same level, the
    fixed-test-set interval (the t over the per-replicate differences)."""
    P = _params()
    ver = report.verdict(_results(P, {("easycore", "trades", 0.1): 0.36}), P, labels=LABELS)
    prim = ver[ver.family == "primary"]
    assert prim[["fixed_lo", "fixed_hi", "p_fixed"]].notna().all().all()
    assert (prim.ci_kind.str.startswith("Holm")).all()
    assert (prim.df >= prim.k - 1).all()
    md = report.verdict_markdown(ver, "primary")
    assert "these images [CI]" in md and md["CI"].str.contains("Holm").all()


def test_the_eps_rule_refuses_rather_than_moves():
    """A missing full-data replicate leaves the mode's primary cells as "missing runs (full data, replicate k)",
    in the table and without a headline entry; it never moves the eps."""
    P = _params()
    res = [r for r in _results(P, {}, full=0.3) if not (r.run.method == runs.FULL and r.run.mode == "trades"
                                                         and r.run.seed == 2)]
    ver = report.verdict(res, P, labels=LABELS)
    prim = ver[(ver.family == "primary") & (ver["mode"] == "trades")]
    assert (prim.status == "missing runs (full data, replicate 2)").all() and (prim.verdict == prim.status).all()
    assert set(ver[(ver.family == "primary") & (ver["mode"] == "standard")].eps_255) == {4.0}
    h = headline(ver, P, N)
    assert "trades_f0.1" not in h and "standard_f0.1" in h


def test_mode_eps_primary_fractions_and_fewer_images_for_the_others():
    """eval.mode_eps fixes each mode's primary eps; report.primary.fractions makes 0.3 secondary with the secondary
    replicates (indicative with K = 3); a pair evaluated on fewer images (eval.n_test < primary_n_test) is
    compared on the images both were attacked on (the prefix of the class-interleaved order)."""
    from easycore.core.evaluate import test_positions

    P = params_from_dict({
        "coreset": {"methods": ["easycore", "random"], "fractions": [0.1, 0.3], "survey_methods": ["hard"],
                    "survey_fractions": [0.1], "survey_modes": ["trades"]},
        "train": {"modes": ["standard", "trades"], "seeds": [0, 1, 2, 3, 4, 5], "survey_seeds": 3},
        "eval": {"eps": 8 / 255, "eps_grid": [0.0], "n_test": 100, "primary_n_test": N,
                 "mode_eps": {"standard": 2 / 255, "trades": 8 / 255}},
        "report": {"primary": {"fractions": [0.1]}}})
    assert {(r.fraction, len({x.seed for x in runs.expected_runs(P) if x.fraction == r.fraction
                              and x.method == "easycore"})) for r in runs.expected_runs(P)
            if r.method == "easycore"} == {(0.1, 6), (0.3, 3)}
    res = _results(P, {("hard", "trades", 0.1): 0.9})
    sub = test_positions(LABELS, 100)
    for r in res:                       # the non-primary groups were attacked on the first 100 images only
        if not P.is_primary_group(r.run.scores, r.run.method, r.run.fraction):
            r.outcomes = {k: v[sub] for k, v in r.outcomes.items()}
    ver = report.verdict(res, P, labels=LABELS)
    prim = ver[ver.family == "primary"]
    assert set(zip(prim["mode"], prim.fraction, prim.eps_255)) == {("standard", 0.1, 2.0), ("trades", 0.1, 8.0)}
    assert (prim.n == N).all() and (prim.k == 6).all()
    sec = ver[(ver.family == "secondary") & (ver.fraction == 0.3)]
    assert (sec.k == 3).all() and (sec.n == 100).all() and sec.verdict.str.endswith("(K = 3: indicative)").all()
    best = ver[ver.comparison == "easycore - best other (Hsu)"].iloc[0]
    assert best.n == 100 and best.k == 3 and "m = 2" in best.ci_kind


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
    assert best.verdict == "EasyCore worse than the best other (K = 3: indicative)" and best.hi < 0
    assert best.ci_kind == "simultaneous over m = 3 (Bonferroni, Hsu)"   # random, hard, el2n
    prim = ver[ver.family == "primary"].iloc[0]
    assert prim.k == 6 and not math.isnan(prim.p_holm)


def test_regime_table_and_checks():
    """Every primary and full-data model gets a row with its weakest class; the conditions read the means and the
    weakest class of any comparator model."""
    P = _params()
    res = _results(P, {("random", "standard", 0.1): 0.3}, full=0.6)
    reg = report.regime_table(res, P, LABELS)
    assert set(reg.method) == {"easycore", "random", "full"} and (reg.n == N).all()
    assert {"weakest class", "weakest class clean %"} <= set(reg)
    checks = report.regime_checks(reg, P).set_index(["mode", "condition"])
    full = checks.loc[("standard", "full data mean clean >= 65 %")]
    assert full.measured == round(reg[(reg.method == "full") & (reg["mode"] == "standard")]["clean %"].mean(), 1)
    assert bool(full.holds) == (full.measured >= 65)
    rows = [c for c in checks.index if c[0] == "trades" and "no class below" in c[1]]
    assert len(rows) == 2                                       # fractions 0.1 and 0.3 of the primary family
