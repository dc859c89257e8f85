"""The verdict: paired comparisons with the replicate as the unit (easycore.inference), the pre-registered primary family with Holm, secondary rows, the per-class analysis, the regime of the models."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from easycore.config import Params
from easycore.pipeline import runs
from easycore.report.outcomes import (
    RunResult,
    _cell,
    cells,
    fractions,
    labels_of,
    outcome_matrix,
    paired_rows,
    seed_rows,
)

PAPER_CLAIM = {"standard": 7.0, "trades": 5.0}   # "up to +7 / +5 points" of adversarial accuracy (abstract)


def _full_pct(results, mode, key) -> float:
    m = outcome_matrix(results, scores=runs.NONE, method=runs.FULL, fraction=1.0, mode=mode, key=key)
    return 100 * float(m.mean()) if m is not None else math.nan


def _full_missing(results, params: Params, mode: str) -> list[int]:
    """The declared full-data replicates of `mode` that are not evaluated (the eps rule needs every one)."""
    have = {r.run.seed for r in results if r.ok and (r.run.method, r.run.mode) == (runs.FULL, mode)}
    return [s for s in params.train.full_data_seeds() if s not in have]


def primary_eps(results: Sequence[RunResult], params: Params, mode: str) -> tuple[float, str]:
    """The primary family's eps for `mode` and the rule that chose it (report.primary): a number from the params;
    else eval.mode_eps[mode] (the mode's headline eps, fixed before the run); else the largest eps > 0 of
    eval.eps_grid where the full-data model keeps >= min_full_robust robust accuracy (mean over its replicates), the
    smallest eps > 0 when none does. The rule refuses rather than moves: with a declared full-data replicate
    missing it gives (nan, "missing runs (full data, replicate k)"), and the cells say so."""
    from easycore.core.evaluate import eps_name

    pc = params.report.primary
    if pc.eps is not None:
        return float(pc.eps), "fixed in params"
    if mode in params.eval.mode_eps:
        return float(params.eval.mode_eps[mode]), "fixed in params (eval.mode_eps)"
    miss = _full_missing(results, params, mode)
    if miss:
        return math.nan, f"missing runs (full data, replicate {', '.join(map(str, miss))})"
    grid = sorted(e for e in set(params.eval.eps_grid) | {params.eval.eps} if e > 0)
    acc = {e: _full_pct(results, mode, eps_name(e)) for e in grid}
    ok = [e for e in grid if acc[e] >= 100 * pc.min_full_robust]
    if ok:
        return ok[-1], f"largest eps with full data >= {100 * pc.min_full_robust:g}% robust ({acc[ok[-1]]:.1f}%)"
    return grid[0], f"smallest eps (full data < {100 * pc.min_full_robust:g}% robust everywhere)"


def chance_pct(labels) -> float:
    """A constant classifier's accuracy on the attacked images (the most frequent class's share), in %."""
    labels = np.asarray(labels)
    return 100 * float(np.bincount(labels).max() / len(labels)) if len(labels) else math.nan


def _pair(results, params, mode, fraction, key, a, b, labels):
    """(seeds, a [K, n], b [K, n], labels of the n images) of two cells on their common replicates and images, or a
    'missing runs (...)' string."""
    ra, rb = _cell(results, params, mode, a, fraction, key), _cell(results, params, mode, b, fraction, key)
    if ra is None or rb is None:
        return "missing runs (" + ", ".join(m for m, r in ((a, ra), (b, rb)) if r is None) + ")"
    seeds, ma, mb = paired_rows(ra, rb, labels)
    if not seeds:
        return "missing runs (no common replicate)"
    return seeds, ma, mb, labels_of(labels, ma.shape[1])


def compare_cells(results, params, mode: str, fraction: float, key: str, a: str, b: str, labels, *,
                  level: float) -> dict:
    """`a` - `b` in (mode, fraction) on outcome `key`: the paired difference with the replicate as the unit, in
    points, on both targets (inference.paired: new images and replicates; these images), accuracies, clean
    accuracies, validity. Not decided here."""
    from easycore import inference

    row = {"mode": mode, "fraction": fraction, "method": a, "comparator": b}
    got = _pair(results, params, mode, fraction, key, a, b, labels)
    if isinstance(got, str):
        return row | {"status": got}
    seeds, ma, mb, lab = got
    d = inference.paired(ma, mb, level=level)
    fx = inference.paired(ma, mb, level=level, target="fixed")
    clean = _pair(results, params, mode, fraction, "clean", a, b, labels)
    ca, cb = (clean[1], clean[2]) if not isinstance(clean, str) else (None, None)
    row |= {"status": "ok", "k": d.k, "n": d.n, "method_pct": 100 * float(ma.mean()),
            "comparator_pct": 100 * float(mb.mean()),
            "method_clean_pct": 100 * float(ca.mean()) if ca is not None else math.nan,
            "comparator_clean_pct": 100 * float(cb.mean()) if cb is not None else math.nan,
            "diff": 100 * d.diff, "se": 100 * d.se, "df": d.df, "p": d.p, "sd_rep": 100 * d.sd_rep,
            "p_fixed": fx.p, "_diff": d, "_fixed": fx}
    return _with_context(row, results, mode, key, lab)


def _with_context(row: dict, results, mode: str, key: str, labels) -> dict:
    """A compared pair's row with the full-data reference (robust at `key`, clean), the constant classifier's
    accuracy on the attacked images and whether the pair is informative (both models above it)."""
    row |= {"full_pct": _full_pct(results, mode, key), "full_clean_pct": _full_pct(results, mode, "clean"),
            "chance_pct": chance_pct(labels) if labels is not None else math.nan}
    row["informative"] = bool(labels is None or min(row["method_pct"], row["comparator_pct"]) > row["chance_pct"])
    return row


def _label(m: str) -> str:
    return "EasyCore" if m == "easycore" else m


INDICATIVE_K = 5   # rows with fewer replicates say "indicative" beside their word; no claim rests on one


def _word(row, lo, hi) -> str:
    if row.get("status") != "ok":
        return row.get("status", "missing runs")
    if row["k"] < 2:
        return f"not replicated (K={row['k']})"
    if not row["informative"]:
        return "uninformative (a model at or below a constant classifier)"
    word = ("no detectable difference" if not (lo > 0 or hi < 0) else
            f"{_label(row['method'])} {'better' if lo > 0 else 'worse'}")
    return word + (f" (K = {int(row['k'])}: indicative)" if row["k"] < INDICATIVE_K else "")


def verdict(results: Sequence[RunResult], params: Params, *, labels=None) -> pd.DataFrame:
    """The verdict, one row per comparison (points; numbers and names only; `verdict_markdown` for reading):

    primary    report.primary.method - comparator for every (mode, fraction of report.primary.fractions) at the
               mode's primary eps (`primary_eps`). Holm over this family alone. The crossed interval (target: new
               test images and new replicates) decides: it is at the level of the Holm step that decided the cell
               (1 - alpha / (m - r + 1) for the r-th smallest p; 1 - alpha / m where Holm stopped before it), so it
               excludes 0 exactly when the verdict is a difference (a Holm-step interval, not a simultaneous one).
               Beside it, at the same level, the fixed-test-set interval (target: these test images, new
               replicates: the t over the K per-replicate differences). MDE at `power` for the family's Bonferroni
               alpha / m.
    secondary  (unadjusted 95 % intervals, labelled so): the pair at the other fractions and at every other eps; the
               class-balanced pair (easycore_balanced - random_balanced) where surveyed; EasyCore against the best
               other method (Hsu's comparison with the best: Bonferroni-simultaneous over the m other methods, m
               printed, on their common replicates).

    A cell whose models are at or below a constant classifier on the attacked images (`labels`: the classes of the
    largest evaluated set) is "uninformative"; one with a single replicate is "not replicated"; fewer than
    INDICATIVE_K replicates say "indicative" beside the word; a missing replicate of either method, or of the
    full-data model whose rule picks the eps, leaves the cell undecided ("missing runs (...)")."""
    from easycore import inference
    from easycore.core.evaluate import eps_name

    pc = params.report.primary
    alpha = 1 - pc.level
    prim_f = params.primary_fractions()
    rows = []
    for mode in params.train.modes:
        eps0, rule = primary_eps(results, params, mode)
        if math.isnan(eps0):           # the rule refuses: every primary cell of the mode says which run is missing
            for f in prim_f:
                rows.append({"eps_255": math.nan, "family": "primary", "comparison": f"{pc.method} - {pc.comparator}",
                             "eps_rule": rule, "mode": mode, "fraction": f, "method": pc.method,
                             "comparator": pc.comparator, "status": rule})
            continue
        # the eps this mode's models were attacked at: the grid and the mode's headline eps
        mode_grid = sorted(e for e in set(params.eval.eps_grid) | {params.eval.for_mode(mode).eps} if e > 0)
        for f in fractions(params):
            for eps in mode_grid:
                key = eps_name(eps)
                base = {"eps_255": round(eps * 255, 3)}
                if f in params.coreset.fractions:
                    fam = "primary" if eps == eps0 and f in prim_f else "secondary"
                    rows.append(base | {"family": fam, "comparison": f"{pc.method} - {pc.comparator}",
                                        "eps_rule": rule if eps == eps0 else ""}
                                | compare_cells(results, params, mode, f, key, pc.method, pc.comparator, labels,
                                                level=pc.level))
                if eps != eps0:
                    continue
                have = {m for s, m, ff in cells(params, mode) if ff == f}
                if {"easycore_balanced", "random_balanced"} <= have:
                    rows.append(base | {"family": "secondary", "comparison": "easycore_balanced - random_balanced",
                                        "eps_rule": ""}
                                | compare_cells(results, params, mode, f, key, "easycore_balanced", "random_balanced",
                                                labels, level=pc.level))
                others = sorted(m for m in have if m not in (pc.method, runs.FULL))
                if pc.method in have and len(others) > 1:
                    rows.append(base | {"family": "secondary", "comparison": f"{pc.method} - best other (Hsu)",
                                        "eps_rule": ""} | _vs_best(results, params, mode, f, key, pc.method, others,
                                                                   labels, pc.level))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # the primary family: Holm; each cell's interval at its Holm step's level
    prim = df.index[df.family == "primary"]
    m = len(prim)
    for c in ("p_holm", "lo", "hi", "mde", "k_for_mde2", "fixed_lo", "fixed_hi"):
        df[c] = math.nan
    df["ci_level"] = pc.level
    df["ci_kind"] = ""
    df["verdict"] = ""
    decidable = [i for i in prim if df.at[i, "status"] == "ok" and df.at[i, "k"] >= 2]
    p_eff = [df.at[i, "p"] if df.at[i, "informative"] else 1.0 for i in decidable]   # never decided: last in Holm
    adj = inference.holm(p_eff) if decidable else []
    order = sorted(range(len(decidable)), key=lambda j: (p_eff[j], j))
    stopped = False
    for rank, j in enumerate(order):
        i = decidable[j]
        step_alpha = alpha / (m - rank)
        step = f"Holm step {rank + 1} of {m}"
        if stopped or p_eff[j] > step_alpha:
            stopped = True
            step_alpha, step = alpha / m, f"Holm: alpha / {m} (not rejected)"
        d = df.at[i, "_diff"].at(1 - step_alpha)
        fx = df.at[i, "_fixed"].at(1 - step_alpha)
        df.loc[i, ["lo", "hi", "ci_level", "p_holm", "fixed_lo", "fixed_hi"]] = [
            100 * d.lo, 100 * d.hi, 1 - step_alpha, adj[j], 100 * fx.lo, 100 * fx.hi]
        df.at[i, "ci_kind"] = step
        df.at[i, "mde"] = 100 * inference.mde(d, alpha=alpha / m, power=pc.power)
        df.at[i, "k_for_mde2"] = inference.replicates_for_mde(d, 0.02, alpha=alpha / m, power=pc.power)
    for i in df.index:
        r = df.loc[i]
        if r["family"] == "secondary" and r.get("status") == "ok" and isinstance(r.get("_diff"), inference.Diff):
            df.loc[i, ["lo", "hi", "fixed_lo", "fixed_hi"]] = [100 * r["_diff"].lo, 100 * r["_diff"].hi,
                                                               100 * r["_fixed"].lo, 100 * r["_fixed"].hi]
            df.at[i, "ci_kind"] = "unadjusted"
        vb = r.get("_best")
        if isinstance(vb, inference.VsBest):     # Hsu's simultaneous interval against the best other method
            df.loc[i, ["lo", "hi", "ci_level"]] = [100 * vb.lo, 100 * vb.hi, vb.level]
            df.at[i, "ci_kind"] = f"simultaneous over m = {vb.m} (Bonferroni, Hsu)"
        r = df.loc[i]
        # primary: the step interval excludes 0 exactly when Holm rejects (same t, df), so the word it gives is Holm's
        word = _word(r, r.get("lo", math.nan), r.get("hi", math.nan))
        if isinstance(vb, inference.VsBest):
            word = word.replace("better", "better than every other").replace("worse", "worse than the best other")
        df.at[i, "verdict"] = word
    df["paper_claim_points"] = df["mode"].map(PAPER_CLAIM)
    cols = ["family", "mode", "fraction", "eps_255", "comparison", "method", "comparator", "k", "n", "method_pct",
            "comparator_pct", "diff", "lo", "hi", "ci_level", "ci_kind", "p", "p_holm", "fixed_lo", "fixed_hi",
            "p_fixed", "mde", "k_for_mde2", "sd_rep", "df", "verdict", "method_clean_pct", "comparator_clean_pct", "full_pct",
            "full_clean_pct", "chance_pct", "informative", "eps_rule", "status", "paper_claim_points"]
    df = df.drop(columns=[c for c in ("_diff", "_fixed", "_best", "se") if c in df])
    return df[[c for c in cols if c in df]].reset_index(drop=True)


def _vs_best(results, params, mode, f, key, method, others, labels, level) -> dict:
    """Hsu's comparison with the best: `method` - max_j mu_j from Bonferroni-simultaneous intervals of
    `method` - j on the replicates (and test images) each pair shares."""
    from easycore import inference

    ra = _cell(results, params, mode, method, f, key)
    row = {"mode": mode, "fraction": f, "method": method}
    rb = {j: _cell(results, params, mode, j, f, key) for j in others}
    miss = [j for j, r in rb.items() if r is None] + ([method] if ra is None else [])
    if miss:
        return row | {"comparator": "best other", "status": "missing runs (" + ", ".join(miss) + ")"}
    diffs, acc = {}, {}
    for j, r in rb.items():
        seeds, ma, mb = paired_rows(ra, r, labels)
        diffs[j] = inference.paired(ma, mb, level=level)
        acc[j] = 100 * float(mb.mean())
    vb = inference.vs_best(diffs, level=level)
    best = vb.best or max(acc, key=acc.get)
    d = diffs[best]
    seeds, ma, mb = paired_rows(ra, rb[best], labels)
    row |= {"comparator": f"best other: {best}", "status": "ok", "k": d.k, "n": d.n,
            "method_pct": 100 * float(ma.mean()), "comparator_pct": acc[best], "diff": 100 * vb.diff if vb.m else
            100 * d.diff, "se": 100 * d.se, "df": d.df, "p": math.nan, "sd_rep": 100 * d.sd_rep, "_best": vb}
    return _with_context(row, results, mode, key, labels_of(labels, ma.shape[1]))


def per_class_table(results: Sequence[RunResult], params: Params, ver: pd.DataFrame, labels,
                    classes: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The regime of every primary cell, per class: clean and robust accuracy (%) of both methods (mean over their
    common replicates) and the robust difference in points. A class where a model is near 0 % clean is where a
    difference can come from a near-constant classifier."""
    from easycore.core.evaluate import eps_name

    rows = []
    for r in ver[(ver.family == "primary") & (ver.status == "ok")].itertuples():
        got = {key: _pair(results, params, r.mode, r.fraction, key, r.method, r.comparator, labels)
               for key in ("clean", eps_name(r.eps_255 / 255))}
        if any(isinstance(g, str) for g in got.values()):
            continue
        (_, ca, cb, lab), (_, ma, mb, _) = got["clean"], got[eps_name(r.eps_255 / 255)]
        for c in range(int(lab.max()) + 1):
            sel = lab == c
            if not sel.any():
                continue
            a, b = 100 * float(ma[:, sel].mean()), 100 * float(mb[:, sel].mean())
            rows.append({"mode": r.mode, "fraction": r.fraction, "eps_255": r.eps_255,
                         "class": classes[c] if classes else c, "n": int(sel.sum()),
                         f"{r.method} clean %": 100 * float(ca[:, sel].mean()),
                         f"{r.comparator} clean %": 100 * float(cb[:, sel].mean()),
                         f"{r.method} %": a, f"{r.comparator} %": b, "diff": a - b})
    return pd.DataFrame(rows)


REGIME = {"full": {"standard": 65.0, "trades": 50.0}, "comparator": {"standard": 45.0, "trades": 35.0},
          "class_floor": 15.0}


def regime_table(results: Sequence[RunResult], params: Params, labels,
                 classes: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Every model of the primary family and of the full-data reference, one row per model: clean and robust
    accuracy (%, at the mode's primary eps) on its evaluated images and its weakest class (clean %), so a reader sees
    where each model stands before reading a difference."""
    from easycore.core.evaluate import eps_name

    lab = np.asarray(labels) if labels is not None else None
    rows = []
    for r in results:
        run = r.run
        primary = params.is_primary_group(run.scores, run.method, run.fraction)
        if not r.ok or not (primary or run.method == runs.FULL):
            continue
        key = eps_name(primary_eps(results, params, run.mode)[0]) if run.mode in params.train.modes else "robust"
        clean = r.outcomes["clean"]
        row = {"mode": run.mode, "fraction": run.fraction, "method": run.method, "replicate": run.seed,
               "n": len(clean), "clean %": 100 * float(clean.mean()),
               "robust %": 100 * float(r.outcomes[key].mean()) if key in r.outcomes else math.nan}
        if lab is not None:
            ll = labels_of(lab, len(clean))
            per = [100 * float(clean[ll == c].mean()) for c in range(int(ll.max()) + 1) if (ll == c).any()]
            worst = int(np.argmin(per))
            row |= {"weakest class": classes[worst] if classes else worst, "weakest class clean %": per[worst]}
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["mode", "fraction", "method", "replicate"]).reset_index(drop=True) \
        if rows else pd.DataFrame()


def regime_checks(table: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Issue 31's conditions against `regime_table`: full-data mean clean >= REGIME['full'][mode], the comparator's
    mean clean at each primary fraction >= REGIME['comparator'][mode], and none of its models with a class below
    REGIME['class_floor']; one row per condition with the measured value and whether it holds."""
    pc = params.report.primary
    out = []
    for mode in params.train.modes:
        f = table[(table["mode"] == mode) & (table.method == runs.FULL)]
        if len(f) and mode in REGIME["full"]:
            v = float(f["clean %"].mean())
            out.append({"mode": mode, "condition": f"full data mean clean >= {REGIME['full'][mode]:g} %",
                        "measured": round(v, 1), "holds": v >= REGIME["full"][mode]})
        for fr in params.primary_fractions():
            c = table[(table["mode"] == mode) & (table.method == pc.comparator) & (table.fraction == fr)]
            if not len(c) or mode not in REGIME["comparator"]:
                continue
            v = float(c["clean %"].mean())
            out.append({"mode": mode, "condition": f"{pc.comparator} at {fr:g}: mean clean >= "
                        f"{REGIME['comparator'][mode]:g} %", "measured": round(v, 1),
                        "holds": v >= REGIME["comparator"][mode]})
            if "weakest class clean %" in c:
                w = float(c["weakest class clean %"].min())
                out.append({"mode": mode, "condition": f"{pc.comparator} at {fr:g}: no class below "
                            f"{REGIME['class_floor']:g} % clean (any replicate)", "measured": round(w, 1),
                            "holds": w >= REGIME["class_floor"]})
    return pd.DataFrame(out)


def per_class_analysis(results: Sequence[RunResult], params: Params, ver: pd.DataFrame, labels,
                       classes: Optional[Sequence[str]] = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pre-specified per-class analysis of every primary cell (easycore/inference.py), two frames:
    tests     one row per cell: the class x method interaction test (replicate as the unit, Greenhouse-Geisser;
              target: these test images) and how many per-class / leave-one-class-out intervals exclude 0;
    classes   one row per (cell, class): the class's difference with its Bonferroni-simultaneous interval over the C
              classes, and the difference without that class (leave-one-class-out, every class) with its interval,
              simultaneous over the C leave-outs, judged against 0. Points."""
    from easycore import inference
    from easycore.core.evaluate import eps_name

    level = params.report.primary.level
    tests, per = [], []
    for r in ver[(ver.family == "primary") & (ver.status == "ok")].itertuples():
        got = _pair(results, params, r.mode, r.fraction, eps_name(r.eps_255 / 255), r.method, r.comparator, labels)
        if isinstance(got, str) or got[3] is None:
            continue
        _, ma, mb, lab = got
        d = ma.astype(np.int8) - mb.astype(np.int8)
        if d.shape[0] < 2 or np.bincount(lab).min() < 2:   # the replicate is the unit; a class needs >= 2 images
            continue
        it = inference.interaction(d, lab)
        pcs = inference.per_class_diffs(d, lab, level=level)
        loco = inference.leave_one_class_out(d, lab, level=level)
        cell = {"mode": r.mode, "fraction": r.fraction, "eps_255": r.eps_255}
        tests.append(cell | {"K": it.k, "classes": it.classes, "F": it.f, "df1 (GG)": it.df1, "df2 (GG)": it.df2,
                             "GG eps": it.gg_eps, "p interaction": it.p,
                             "classes with a difference": int(sum(x.lo > 0 or x.hi < 0 for x in pcs)),
                             "leave-outs excluding 0": int(sum(x.lo > 0 or x.hi < 0 for x in loco)),
                             "diff": r.diff})
        for c, (x, y) in enumerate(zip(pcs, loco)):
            per.append(cell | {"class": classes[c] if classes else c, "n": x.n, "diff": 100 * x.diff,
                               "lo": 100 * x.lo, "hi": 100 * x.hi,
                               "without class": 100 * y.diff, "without lo": 100 * y.lo, "without hi": 100 * y.hi,
                               "level": x.level})
    return pd.DataFrame(tests), pd.DataFrame(per)


def comparisons(results: Sequence[RunResult], params: Params, mode: str, fraction: float, key: str, *,
                reference: str, level: float = 0.95, labels=None) -> pd.DataFrame:
    """Secondary, unadjusted: `reference` - every other coreset method of (mode, fraction) on outcome `key`, paired
    on their common replicates and test images (inference.paired): difference in points, 95 % interval, p, K, n."""
    from easycore import inference

    ra = _cell(results, params, mode, reference, fraction, key)
    if ra is None:
        return pd.DataFrame()
    rows = []
    for s, m, f in cells(params, mode):
        if f != fraction or m in (reference, runs.FULL):
            continue
        rb = seed_rows(results, scores=s, method=m, fraction=f, mode=mode, key=key)
        if rb is None:
            continue
        seeds, ma, mb = paired_rows(ra, rb, labels)
        if not seeds:
            continue
        d = inference.paired(ma, mb, level=level)
        word = ("not replicated" if d.k < 2 else "reference better" if d.lo > 0 else
                "reference worse" if d.hi < 0 else "no detectable difference")
        rows.append({"mode": mode, "fraction": fraction, "key": key, "reference": reference, "method": m,
                     "k": d.k, "n": d.n, "diff": 100 * d.diff, "lo": 100 * d.lo, "hi": 100 * d.hi, "p_value": d.p,
                     "verdict": word + (f" (K = {d.k}: indicative)" if 2 <= d.k < INDICATIVE_K else "")})
    return pd.DataFrame(rows)


def _p(p) -> str:
    if not isinstance(p, (float, int)) or math.isnan(p):
        return "-"
    return "< 1e-4" if p < 1e-4 else f"{p:.4f}"


def verdict_markdown(v: pd.DataFrame, family: Optional[str] = None) -> pd.DataFrame:
    """The verdict for reading (points): one row per comparison of `family` (all when None). "diff [CI]" is the
    interval that decided the word (target: new test images and new replicates); "these images" the fixed-test-set
    interval at the same level (target: these test images, new replicates)."""
    rows = []
    for _, r in (v if family is None else v[v.family == family]).iterrows():
        ok = r.get("status") == "ok"
        pct = lambda k: f"{r[k]:.1f}" if ok and pd.notna(r.get(k)) else "-"   # noqa: E731
        ci = (f"{r['diff']:+.1f} [{r['lo']:+.1f}, {r['hi']:+.1f}]" if ok and pd.notna(r.get("lo")) else
              f"{r['diff']:+.1f}" if ok and pd.notna(r.get("diff")) else "-")
        fixed = (f"[{r['fixed_lo']:+.1f}, {r['fixed_hi']:+.1f}]" if ok and pd.notna(r.get("fixed_lo")) else "-")
        row = {"family": r["family"], "mode": r["mode"], "fraction": r["fraction"],
               "eps": f"{r['eps_255']:g}/255" if pd.notna(r.get("eps_255")) else "-",
               "comparison": r["comparison"].replace("best other (Hsu)", r.get("comparator", "best other"))
               if ok else r["comparison"],
               "K x n": f"{int(r['k'])} x {int(r['n'])}" if ok else "-",
               "method % (clean)": f"{pct('method_pct')} ({pct('method_clean_pct')})",
               "comparator % (clean)": f"{pct('comparator_pct')} ({pct('comparator_clean_pct')})",
               "diff [CI] (points)": ci,
               "CI": (f"{100 * r['ci_level']:.2f}%, {r['ci_kind']}" if ok and pd.notna(r.get("lo")) else "-"),
               "these images [CI]": fixed,
               "p (Holm)": _p(r.get("p_holm")) if r["family"] == "primary" else "secondary",
               "MDE": f"{r['mde']:.1f}" if pd.notna(r.get("mde")) else "-",
               "K for MDE 2": _k_for(r.get("k_for_mde2")),
               "verdict": r["verdict"],
               "full data % (clean)": f"{pct('full_pct')} ({pct('full_clean_pct')})",
               "chance %": pct("chance_pct")}
        rows.append(row)
    return pd.DataFrame(rows)


def _k_for(k) -> str:
    """'K for MDE 2' as printed: a count, 'more test images' where replicates alone cannot reach it, '-'."""
    if k is None or pd.isna(k):
        return "-"
    return "more test images" if math.isinf(k) else f"{int(k)}"


def verdict_headline(v: pd.DataFrame) -> pd.DataFrame:
    """The primary family in the fewest columns a reader needs (the README's table): the cell, K x n, both methods'
    robust (clean) accuracy, the deciding interval, the fixed-test-set interval, the MDE and the word."""
    md = verdict_markdown(v, "primary")
    if md.empty:
        return md
    out = md[["mode", "fraction", "eps", "K x n", "method % (clean)", "comparator % (clean)", "diff [CI] (points)",
              "these images [CI]", "MDE", "K for MDE 2", "verdict"]].copy()
    prim = v[v.family == "primary"].iloc[0]
    return out.rename(columns={"method % (clean)": f"{_label(prim['method'])} % (clean)",
                               "comparator % (clean)": f"{_label(prim['comparator'])} % (clean)",
                               "diff [CI] (points)": "difference [CI] (points)"})
