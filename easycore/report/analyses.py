"""Analyses of the proxy's scores: correlations, stability, ablations, hardness vs vulnerability, replicate summaries."""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    a, b = set(map(int, a)), set(map(int, b))
    return len(a & b) / len(a | b) if (a or b) else 1.0


def spearman_matrix(scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """Spearman rank correlation between every pair of score vectors (same length), as a DataFrame."""
    from scipy.stats import spearmanr

    names = list(scores)
    m = np.eye(len(names))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = np.asarray(scores[names[i]], float), np.asarray(scores[names[j]], float)
            ok = np.isfinite(a) & np.isfinite(b)
            m[i, j] = m[j, i] = spearmanr(a[ok], b[ok]).statistic if ok.sum() > 2 else np.nan
    return pd.DataFrame(m, index=names, columns=names)


# ----------------------------------------------------------------------------- proxy-side tables (no training)
def aign_stability(arrays: Mapping[str, np.ndarray], *, p: float = 2.0, window: str = "all", squared: bool = False,
                   fraction: float = 0.3) -> pd.DataFrame:
    """Per tracked epoch: Spearman of that epoch's input-gradient norms with the final AIGN and with the next epoch,
    Jaccard of the easiest `fraction` by that epoch vs by AIGN, and (mode both) inline vs exact Spearman."""
    from easycore.core.aign import spearman
    from easycore.core.coresets import aign, budget, norm_key

    score = aign(arrays, window=window, p=p, squared=squared)
    m = np.asarray(arrays[norm_key(p)], dtype=float)
    epochs = [int(e) + 1 for e in arrays["tracked_epochs"]]
    k = budget(fraction, len(score))
    final = np.argsort(score, kind="stable")[:k]
    rows = []
    for i, e in enumerate(epochs):
        row = {"epoch": e, "spearman_vs_AIGN": spearman(m[i], score),
               "spearman_vs_next_epoch": spearman(m[i], m[i + 1]) if i + 1 < len(epochs) else np.nan,
               f"jaccard_easiest_{fraction:g}_vs_AIGN": jaccard(np.argsort(m[i], kind="stable")[:k], final)}
        if "aign_inline_l2" in arrays:
            row["spearman_inline_vs_exact"] = spearman(arrays["aign_inline_l2"][i], arrays["aign_l2"][i])
        rows.append(row)
    return pd.DataFrame(rows).set_index("epoch")


def method_score_table(arrays: Mapping[str, np.ndarray], labels: np.ndarray, opts) -> tuple[dict, dict]:
    """The per-sample score of every static method that has its own (one column per distinct score), and, for
    every method left out, why: ({name: scores}, {name: reason}). Nothing is dropped without a reason."""
    from easycore.core.coresets import method_scores
    from easycore.core.methods import METHODS

    scores, skipped, seen = {}, {}, {}
    for name, e in METHODS.items():
        if e.kind != "static":
            continue
        if not e.score:
            skipped[name] = "no per-sample score (its own selection rule)"
            continue
        key = opts.ccs_score if name == "ccs" else e.score
        if key in seen:
            skipped[name] = f"same score as {seen[key]}"
            continue
        missing = [k for k in e.needs if k not in ("aign", "ccs_score") and k not in arrays]
        if missing:
            skipped[name] = f"the proxy artifact lacks {missing}"
            continue
        scores[name] = method_scores(name, arrays, labels=labels, balanced=opts.balanced, window=opts.window,
                                     p=opts.p, squared=opts.squared, score_epochs=opts.score_epochs,
                                     ccs_score=opts.ccs_score)
        seen[key] = name
    return scores, skipped


def ablation_variants(arrays: Mapping[str, np.ndarray], coreset) -> dict[str, dict]:
    """The AIGN variants of `ablation_table`: {name: the coreset options it changes} (window first / last K = a third
    of the tracked epochs, all; norm L1, L2, Linf; squared L2; balanced, global), those of norms the proxy did not
    record left out (inline AIGN has L2 alone)."""
    from easycore.core.aign import norm_key

    e = np.asarray(arrays["aign_l2"]).shape[0]
    k = max(1, e // 3)
    variants = {"default": {}, f"window first:{k}": {"window": f"first:{k}"}, f"window last:{k}": {"window": f"last:{k}"},
                "window all": {"window": "all"}, "norm L1": {"p": 1.0}, "norm L2": {"p": 2.0},
                "norm Linf": {"p": math.inf}, "squared L2": {"squared": True, "p": 2.0}, "balanced": {"balanced": True},
                "global": {"balanced": False}}
    return {n: v for n, v in variants.items() if norm_key(float(v.get("p", coreset.p))) in arrays}


def default_variants(arrays: Mapping[str, np.ndarray], coreset) -> list[str]:
    """The variants of `ablation_variants` other than 'default' whose options equal the default's (e.g. 'window
    all' when coreset.window is all): the default again under another name."""
    base = dict(window=coreset.window, p=float(coreset.p), squared=coreset.squared, balanced=coreset.balanced)
    return [n for n, ch in ablation_variants(arrays, coreset).items()
            if n != "default" and {**base, **{k: (float(v) if k == "p" else v) for k, v in ch.items()}} == base]


def ablation_table(arrays: Mapping[str, np.ndarray], labels: np.ndarray, coreset) -> tuple[pd.DataFrame, dict]:
    """EasyCore's selection under AIGN variants (window first/last K, norm, squared, balanced vs global) against the
    configured default, per fraction: Jaccard and Spearman vs the default, smallest class share (only the norms the
    proxy recorded: inline AIGN has L2 alone). Returns (table,
    {(fraction, variant): indices})."""
    from easycore.core.aign import spearman
    from easycore.core.coresets import aign, select

    base = dict(window=coreset.window, p=coreset.p, squared=coreset.squared, balanced=coreset.balanced)
    variants = ablation_variants(arrays, coreset)
    rows, sels = [], {}
    for f in coreset.fractions:
        ref_score = aign(arrays, window=base["window"], p=base["p"], squared=base["squared"])
        ref_sel = select("easycore", arrays, labels, f, seed=coreset.seed, **base)
        for name, ch in variants.items():
            o = {**base, **ch}
            s = aign(arrays, window=o["window"], p=o["p"], squared=o["squared"])
            sel = select("easycore", arrays, labels, f, seed=coreset.seed, **o)
            sels[(f, name)] = sel
            rows.append({"fraction": f, "variant": name, "jaccard_vs_default": jaccard(sel, ref_sel),
                         "spearman_vs_default": spearman(s, ref_score),
                         "min_class_share": np.bincount(labels[sel], minlength=labels.max() + 1).min() / len(sel)})
    return pd.DataFrame(rows).set_index(["fraction", "variant"]), sels


def hardness_vs_vulnerability(aign: np.ndarray, deepfool: np.ndarray, sub: np.ndarray, flip_eps: np.ndarray,
                              correct: np.ndarray) -> pd.DataFrame:
    """Spearman (and p-value) of AIGN against the DeepFool distance (all samples) and against the smallest flipping
    eps (a subset; also only its correctly classified samples), and DeepFool vs flipping eps. The paper's claim
    predicts negative AIGN correlations (low AIGN = far from the boundary)."""
    from scipy.stats import spearmanr

    ok = np.asarray(correct, bool)
    pairs = [("AIGN vs DeepFool distance", "all training samples", aign, deepfool),
             ("AIGN vs min flipping eps (PGD)", "random subset", aign[sub], flip_eps),
             ("AIGN vs min flipping eps (PGD)", "subset, correctly classified", aign[sub][ok], flip_eps[ok]),
             ("DeepFool distance vs min flipping eps", "random subset", deepfool[sub], flip_eps)]
    rows = []
    for pair, samples, a, b in pairs:
        r = spearmanr(a, b) if len(a) > 2 else None
        rows.append({"pair": pair, "samples": samples, "n": len(a),
                     "spearman": float(r.statistic) if r is not None else np.nan,
                     "p_value": float(r.pvalue) if r is not None else np.nan})
    return pd.DataFrame(rows)


def replicate_summary(per_rep: pd.DataFrame, by: Sequence[str], value: str, *, level: float = 0.95) -> pd.DataFrame:
    """Mean over replicates of `value` per group `by`, with the t interval whose unit is the replicate (K - 1 df;
    nan with one replicate): columns by..., K, mean, lo, hi, values (each replicate's, in order)."""
    from scipy import stats as st

    rows = []
    for key, g in per_rep.groupby(list(by), sort=False):
        v = g[value].astype(float).to_numpy()
        k = len(v)
        m = float(v.mean()) if k else math.nan
        if k > 1:
            h = float(st.t.ppf(0.5 + level / 2, k - 1) * v.std(ddof=1) / math.sqrt(k))
            lo, hi = m - h, m + h
        else:
            lo = hi = math.nan
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)), K=k, mean=m, lo=lo, hi=hi,
                         values=", ".join(f"{x:.3f}" for x in v)))
    return pd.DataFrame(rows)


def claim_reading(rho: float) -> str:
    """How a correlation reads against the claim that easy (low-AIGN) samples are the less vulnerable ones."""
    if rho < -0.1:
        return "supports"
    return "contradicts" if rho > 0.1 else "neither supports nor contradicts (|rho| <= 0.1)"
