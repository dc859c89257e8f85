"""The closing cell of each report notebook: sentences generated from the notebook's own numbers, one function per
notebook. Nothing here holds a result: each sentence is chosen by the numbers, whichever way they fall, and
tests/test_conclude.py changes the numbers and sees the sentences change.

Each function returns Markdown beginning with "**Conclusion.**"; the notebook displays it as its last cell. The
wording follows the verdict's rules (easycore/report.py): a difference is claimed only where the interval that
decides it excludes 0; overlapping unpaired intervals separate nothing; a correlation within +-0.1 supports nothing.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import pandas as pd

HEAD = "**Conclusion.** "
SAME = 0.9        # a variant / another proxy picks "nearly the same coreset" at Jaccard >= SAME


def _f(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}"


def random_jaccard(fraction: float) -> float:
    """The expected Jaccard overlap of two independent uniform coresets of the same `fraction`: f / (2 - f)."""
    return fraction / (2 - fraction)


def _corr_word(rho: float) -> str:
    """How a rank correlation reads against the claim that easy (low-AIGN) samples are the less vulnerable ones."""
    from easycore.report import claim_reading

    return claim_reading(rho)


# ----------------------------------------------------------------------------- aign_scores
def aign_scores(per_class_median: Mapping[str, float], stability: pd.DataFrame, *, fraction: float,
                inline: Optional[tuple[float, float]] = None) -> str:
    """`per_class_median`: {class name: median AIGN}; `stability`: report.aign_stability (per epoch: Spearman with
    the final AIGN, Jaccard of the easiest `fraction` with the AIGN coreset); `inline`: (Spearman, Jaccard) of inline
    vs exact AIGN, when recorded."""
    med = pd.Series(per_class_median, dtype=float).dropna()
    easy, hard = med.idxmin(), med.idxmax()
    out = [f"The easiest class by median AIGN is **{easy}** ({med[easy]:.3g}), the hardest **{hard}** "
           f"({med[hard]:.3g}), {med[hard] / med[easy]:.1f} times as large"
           + (": a global EasyCore coreset takes its easy images unevenly from the classes (the ablations notebook "
              "gives each variant's smallest class share)." if med[hard] / med[easy] >= 1.5 else
              ": the classes are scored alike, so a global EasyCore coreset draws on every class.")]
    jcol = next(c for c in stability.columns if c.startswith("jaccard_easiest"))
    rho = stability["spearman_vs_AIGN"].astype(float)
    jac = stability[jcol].astype(float)
    first, last = stability.index[0], stability.index[-1]
    best = int(jac.idxmax())
    out.append(f"Epoch by epoch, the ranking's Spearman correlation with the final AIGN goes from {_f(rho.iloc[0])} "
               f"(epoch {first}) to {_f(rho.iloc[-1])} (epoch {last}); the easiest {fraction:g} of one epoch overlaps "
               f"the AIGN coreset by Jaccard {_f(jac.min())} to {_f(jac.max())} (epoch {best}), against "
               f"{_f(random_jaccard(fraction))} for a random coreset of that size"
               + (": no single epoch picks the coreset the average over epochs picks." if jac.max() < SAME else
                  f": epoch {best} alone picks nearly the same coreset (Jaccard >= {SAME:g})."))
    if inline is not None:
        r, j = inline
        out.append(f"Inline AIGN (from the training step) ranks the images like the exact pass at Spearman {_f(r)}, "
                   f"and their EasyCore coresets overlap by Jaccard {_f(j)}: "
                   + ("nearly the same coreset." if j >= SAME else "a different coreset, so inline is an "
                      "approximation with its own selection, not a free copy of exact AIGN."))
    return HEAD + " ".join(out)


# ----------------------------------------------------------------------------- hardness_vs_vulnerability
def _across(across: Optional[pd.DataFrame], label: str, **where) -> Optional[str]:
    """'mean [lo, hi] over K replicates' of the row of a report.replicate_summary frame matching `where`."""
    if across is None or len(across) == 0:
        return None
    m = across
    for k, v in where.items():
        m = m[m[k] == v]
    if not len(m):
        return None
    r = m.iloc[0]
    if int(r["K"]) < 2:
        return None
    return f"{label} {_f(r['mean'])} [{_f(r['lo'])}, {_f(r['hi'])}] over {int(r['K'])} replicates"


def hardness_vs_vulnerability(tab: pd.DataFrame, across: Optional[pd.DataFrame] = None) -> str:
    """`tab`: report.hardness_vs_vulnerability (pair, samples, n, spearman, p_value), rows in its order: AIGN vs
    DeepFool distance (all), AIGN vs min flipping eps (subset; its correctly classified part), DeepFool vs flipping
    eps."""
    rows = list(tab.itertuples(index=False))
    df, flip = rows[0], rows[1]
    reads = [_corr_word(float(df.spearman)), _corr_word(float(flip.spearman))]
    out = [f"AIGN against the DeepFool distance to the boundary: Spearman {_f(df.spearman)} over {df.n} training "
           f"images (p = {df.p_value:.2g}), which {reads[0]} the premise that easy (low-AIGN) images lie far from the "
           f"boundary; against the smallest eps at which PGD flips an image: {_f(flip.spearman)} over {flip.n} "
           f"({reads[1]})."]
    if len(rows) > 2 and rows[2].n > 2 and np.isfinite(rows[2].spearman):
        out.append(f"Among the correctly classified images of that subset it is {_f(rows[2].spearman)} "
                   f"(n = {rows[2].n}).")
    if reads[0] == reads[1] == "supports":
        out.append("Both measures of vulnerability agree with the premise, on the proxy's own training images: a "
                   "statement about scores, not yet about the robustness of models trained on a coreset (the "
                   "coresets notebook tests that).")
    elif "contradicts" in reads:
        out.append("At least one measure contradicts the premise on these images.")
    else:
        out.append("The two measures do not agree with each other about the premise.")
    rep = [x for x in (_across(across, "AIGN vs DeepFool distance:", pair=df.pair, samples=df.samples),
                       _across(across, "AIGN vs the smallest flipping eps:", pair=flip.pair, samples=flip.samples))
           if x]
    if rep:
        out.append("Across replicates (mean Spearman, 95 % t interval, the replicate as the unit): " + "; ".join(rep)
                   + ".")
    return HEAD + " ".join(out)


# ----------------------------------------------------------------------------- score_correlations
def score_correlations(spearman: pd.DataFrame, jaccard: pd.DataFrame, *, fraction: float,
                       method: str = "easycore") -> str:
    """`spearman`: report.spearman_matrix over labels '<method> (<score>)'; `jaccard`: the overlap of the coresets
    the configured methods select at `fraction` (index = method names)."""
    label = next((c for c in spearman.columns if c.split(" (")[0] == method), None)
    out = []
    if label is not None:
        score = label.split(" (", 1)[1]
        rho = spearman[label].drop(index=[c for c in spearman.index if c.endswith(f"({score}")]).astype(float)
        rho = rho.dropna()
        if len(rho):
            hi, lo = rho.idxmax(), rho.idxmin()
            out.append(f"Among the other scores, AIGN ranks the training images most like {hi} "
                       f"(Spearman {_f(rho[hi])}) and least like {lo} ({_f(rho[lo])})"
                       + (f"; {int((rho.abs() >= 0.5).sum())} of {len(rho)} scores correlate with it at "
                          f"|rho| >= 0.5." if len(rho) > 2 else "."))
    if method in jaccard.index and len(jaccard) > 1:
        j = jaccard.loc[method].drop(index=method).astype(float)
        base = random_jaccard(fraction)
        hi, lo = j.idxmax(), j.idxmin()
        out.append(f"At fraction {fraction:g} the EasyCore coreset overlaps most with {hi}'s (Jaccard {_f(j[hi])}) "
                   f"and least with {lo}'s ({_f(j[lo])}); two random coresets of that size overlap by about "
                   f"{_f(base)}, and {int((j > 2 * base).sum())} of {len(j)} coresets overlap EasyCore's by more than "
                   f"twice that.")
    if not out:
        out.append("No score or coreset to compare (the configured methods have none).")
    return HEAD + " ".join(out)


# ----------------------------------------------------------------------------- ablations
def ablations(tab: pd.DataFrame, *, fraction: float) -> str:
    """`tab`: report.ablation_table at one fraction (index: variant; jaccard_vs_default, spearman_vs_default,
    min_class_share), the variants identical to the default in their settings left out."""
    t = tab.drop(index="default", errors="ignore")
    if t.empty:
        return HEAD + "No variant of AIGN to compare with the default (the proxy recorded one norm and few epochs)."
    j = t["jaccard_vs_default"].astype(float)
    hi, lo = j.idxmax(), j.idxmin()
    same = [v for v in j.index if j[v] >= SAME]
    out = [f"At fraction {fraction:g} the EasyCore coreset changes most under **{lo}** (Jaccard {_f(j[lo])} with "
           f"the default's) and least under {hi} ({_f(j[hi])}); random would give {_f(random_jaccard(fraction))}."]
    out.append(f"{len(same)} of {len(j)} variants pick nearly the same coreset (Jaccard >= {SAME:g})"
               + (f": {', '.join(same)}." if same else "."))
    if "default" in tab.index and "balanced" in tab.index:
        d, b = float(tab.loc["default", "min_class_share"]), float(tab.loc["balanced", "min_class_share"])
        out.append(f"The default keeps {100 * d:.1f} % of its coreset from its rarest class, the class-balanced "
                   f"variant {100 * b:.1f} %.")
    return HEAD + " ".join(out)


# ----------------------------------------------------------------------------- transfer
def transfer(agreement: pd.DataFrame, robust: Mapping[str, tuple[float, float, float]],
             across: Optional[pd.DataFrame] = None) -> str:
    """`agreement`: rows (transfer proxy, fraction, spearman_AIGN_main_vs_transfer, jaccard_easycore_main_vs_transfer);
    `robust`: {run label: (mean, lo, hi) robust accuracy in %} with the keys 'main' (EasyCore scored by the main
    proxy) and one per transfer proxy name."""
    if agreement is None or len(agreement) == 0:
        return HEAD + ("This profile declares no transfer proxy (`proxy.transfer_models` is empty): the notebook "
                       "answers nothing here; the demo profile runs one.")
    out = []
    for proxy, rows in agreement.groupby("transfer proxy", sort=False):
        r = rows.iloc[0]
        f = float(r["fraction"])
        out.append(f"AIGN from the {proxy} proxy ranks the training images like the main proxy's at Spearman "
                   f"{_f(r['spearman_AIGN_main_vs_transfer'])}; at fraction {f:g} their EasyCore coresets overlap by "
                   f"Jaccard {_f(r['jaccard_easycore_main_vs_transfer'])} (random: {_f(random_jaccard(f))}).")
        if proxy in robust and "main" in robust:
            (a, alo, ahi), (b, blo, bhi) = robust[proxy], robust["main"]
            apart = alo > bhi or blo > ahi
            out.append(f"Trained on the main architecture, EasyCore scored by {proxy} reaches {a:.1f} % robust "
                       f"accuracy [{alo:.1f}, {ahi:.1f}] against {b:.1f} % [{blo:.1f}, {bhi:.1f}] scored by the main "
                       "proxy: " + ("the intervals do not overlap, so the transferred scores train a "
                                    f"{'more' if a > b else 'less'} robust model here." if apart else
                                    "the intervals overlap, and this unpaired view cannot separate them."))
        rep = [x for x in (_across(across, "Spearman", **{"transfer proxy": proxy, "fraction": f,
                                                           "measure": "spearman_AIGN_main_vs_transfer"}),
                           _across(across, f"Jaccard at {f:g}", **{"transfer proxy": proxy, "fraction": f,
                                                                   "measure": "jaccard_easycore_main_vs_transfer"}))
               if x]
        if rep:
            out.append(f"Across replicates (95 % t interval, the replicate as the unit): {'; '.join(rep)}.")
    return HEAD + " ".join(out)


# ----------------------------------------------------------------------------- coresets
def _cell(r) -> str:
    where = f"{r['mode']}, fraction {r['fraction']:g}, {r['eps_255']:g}/255"
    if r.get("status") != "ok":
        return f"{where}: {r['verdict']}"
    ci = f" [{r['lo']:+.1f}, {r['hi']:+.1f}]" if pd.notna(r.get("lo")) else ""
    k = "" if "K" in str(r["verdict"]) else f" (K = {int(r['k'])})"      # the word may say K itself
    return f"{where}: {r['diff']:+.1f} points{ci}, {r['verdict']}{k}"


def coresets(ver: pd.DataFrame, *, paper_claim: Optional[Mapping[str, float]] = None) -> str:
    """`ver`: report.verdict. The primary family cell by cell, what it adds up to, and the paper's claim beside it;
    then EasyCore against the best other method where the secondary rows hold one."""
    from easycore.report.headline import verdict_code

    if ver is None or len(ver) == 0:
        return HEAD + "No comparison could be made: no evaluated runs."
    prim = ver[ver["family"] == "primary"]
    codes = []
    for w in prim["verdict"]:
        try:
            codes.append(verdict_code(str(w)))
        except ValueError:
            codes.append(None)                      # missing runs: no number
    n = len(prim)
    better, worse, none_ = codes.count(1), codes.count(-1), codes.count(0)
    undecided = n - better - worse - none_
    method = prim["method"].iloc[0] if n else "easycore"
    comp = prim["comparator"].iloc[0] if n else "random"
    name = "EasyCore" if method == "easycore" else method
    out = []
    if n == 0:
        out.append("The primary family is empty.")
    elif undecided == n:
        out.append(f"None of the {n} primary cells ({name} minus {comp}) can be decided here "
                   f"({'; '.join(sorted(set(str(w).split(' (')[0] for w in prim['verdict'])))}): this profile "
                   "shows that the pipeline runs, not whether the claim holds.")
    else:
        parts = [f"{k} {w}" for k, w in ((better, f"favour{'s' if better == 1 else ''} {name}"),
                                          (worse, f"favour{'s' if worse == 1 else ''} {comp}"),
                                          (none_, "detect no difference"), (undecided, "cannot be decided"))
                 if k]
        out.append(f"Of the {n} pre-registered primary cells ({name} minus {comp}, Holm over the family), "
                   + ", ".join(parts) + ".")
        if better and not worse:
            out.append(f"Where a difference is found it is in {name}'s favour.")
        elif worse and not better:
            out.append(f"Where a difference is found it is against {name}.")
        elif better and worse:
            out.append("The cells disagree in sign: the answer depends on the training mode or fraction.")
        else:
            out.append("No cell detects a difference; each cell's MDE says how large a difference it could have "
                       "missed.")
    out.append("Cell by cell: " + "; ".join(_cell(r) for _, r in prim.iterrows()) + ".")
    if paper_claim and n and "diff" in prim:   # no cell with runs: no diff column
        ok = prim[(prim["status"] == "ok") & prim["diff"].notna()]
        for mode, claim in paper_claim.items():
            d = ok[ok["mode"] == mode]
            if len(d):
                top = d.loc[d["diff"].idxmax()]
                reach = pd.notna(top.get("hi")) and top["hi"] >= claim
                out.append(f"The paper reports up to +{claim:g} points under {mode}; the largest primary difference "
                           f"here is {top['diff']:+.1f} (fraction {top['fraction']:g})"
                           + ("" if pd.isna(top.get("hi")) else
                              f", and its interval {'reaches' if reach else 'stays below'} +{claim:g}") + ".")
    best = ver[(ver["family"] == "secondary") & ver["comparison"].str.contains("best other", na=False)
               & (ver["status"] == "ok")]
    for _, r in best.iterrows():
        other = str(r["comparator"]).removeprefix("best other: ")
        out.append(f"Against the best other method ({other}; {r['mode']}, fraction {r['fraction']:g}, secondary): "
                   f"{r['diff']:+.1f} points, {r['verdict']}.")
    return HEAD + " ".join(out)
