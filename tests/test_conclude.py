"""The notebooks' closing sentences (easycore/report/conclude.py) come from their numbers: change the numbers and the
sentence changes with them, whichever way they fall."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from easycore.report import conclude

ROOT = Path(__file__).resolve().parents[1]


def _stability(rho, jac, fraction=0.1):
    return pd.DataFrame({"epoch": range(1, len(rho) + 1), "spearman_vs_AIGN": rho,
                         f"jaccard_easiest_{fraction:g}_vs_AIGN": jac}).set_index("epoch")


def test_aign_scores_sentence_follows_the_numbers():
    st = _stability([0.3, 0.8, 0.93], [0.2, 0.4, 0.55])
    a = conclude.aign_scores({"cat": 2.0, "frog": 0.5, "ship": 1.0}, st, fraction=0.1)
    assert a.startswith("**Conclusion.**") and "easiest class by median AIGN is **frog** (0.5)" in a
    assert "the hardest **cat** (2), 4.0 times as large: a global EasyCore coreset takes" in a
    assert "from 0.30 (epoch 1) to 0.93 (epoch 3)" in a and "no single epoch picks" in a and "0.05 for a random" in a
    b = conclude.aign_scores({"cat": 1.1, "frog": 1.0}, _stability([0.9, 0.99], [0.8, 0.95]), fraction=0.1,
                             inline=(0.97, 0.93))
    assert "**frog**" in b and "1.1 times as large: the classes are scored alike" in b
    assert "epoch 2 alone picks nearly the same coreset" in b and "Jaccard 0.93: nearly the same coreset." in b
    c = conclude.aign_scores({"cat": 1.0, "frog": 3.0}, st, fraction=0.1, inline=(0.6, 0.4))
    assert "easiest class by median AIGN is **cat**" in c and "a different coreset" in c


def _hvv(r_df, r_flip, r_ok=-0.5):
    return pd.DataFrame({"pair": ["AIGN vs DeepFool distance", "AIGN vs min flipping eps (PGD)",
                                  "AIGN vs min flipping eps (PGD)", "DeepFool distance vs min flipping eps"],
                         "samples": ["all", "subset", "subset, correct", "subset"], "n": [2500, 200, 112, 200],
                         "spearman": [r_df, r_flip, r_ok, 0.66], "p_value": [1e-100, 1e-20, 1e-10, 1e-25]})


def test_hardness_vs_vulnerability_sentence_follows_the_signs():
    a = conclude.hardness_vs_vulnerability(_hvv(-0.50, -0.61))
    assert "Spearman -0.50 over 2500" in a and "which supports the premise" in a and "(supports)" in a
    assert "Both measures of vulnerability agree with the premise" in a
    b = conclude.hardness_vs_vulnerability(_hvv(0.40, -0.61))
    assert "Spearman 0.40" in b and "which contradicts the premise" in b and "contradicts the premise on these" in b
    c = conclude.hardness_vs_vulnerability(_hvv(-0.05, -0.61))
    assert "neither supports nor contradicts" in c and "do not agree with each other" in c


def test_score_correlations_sentence_follows_the_matrices():
    names = ["easycore (aign)", "hard (aign)", "el2n (el2n)", "aum (aum)", "moderate (moderate)"]
    r = pd.DataFrame(np.eye(5), index=names, columns=names)
    for x, y, v in (("easycore (aign)", "hard (aign)", 1.0), ("easycore (aign)", "el2n (el2n)", 0.8),
                    ("easycore (aign)", "aum (aum)", -0.7), ("easycore (aign)", "moderate (moderate)", 0.1)):
        r.loc[x, y] = r.loc[y, x] = v
    j = pd.DataFrame([[1, 0.05, 0.3], [0.05, 1, 0.1], [0.3, 0.1, 1]], index=["easycore", "random", "el2n"],
                     columns=["easycore", "random", "el2n"])
    a = conclude.score_correlations(r, j, fraction=0.1)
    assert "most like el2n (el2n) (Spearman 0.80) and least like aum (aum) (-0.70)" in a   # hard (same score) left out
    assert "2 of 3 scores correlate with it at |rho| >= 0.5" in a
    assert "overlaps most with el2n's (Jaccard 0.30) and least with random's (0.05)" in a
    assert "about 0.05, and 1 of 2 coresets" in a
    r.loc["easycore (aign)", "moderate (moderate)"] = r.loc["moderate (moderate)", "easycore (aign)"] = 0.95
    j.loc["easycore", "random"] = j.loc["random", "easycore"] = 0.5
    b = conclude.score_correlations(r, j, fraction=0.1)
    assert "most like moderate (moderate) (Spearman 0.95)" in b and "overlaps most with random's (Jaccard 0.50)" in b


def test_ablations_sentence_follows_the_table():
    t = pd.DataFrame({"jaccard_vs_default": [1.0, 0.5, 0.95, 0.39], "spearman_vs_default": [1, 0.8, 0.99, 1],
                      "min_class_share": [0.012, 0.0, 0.016, 0.1]},
                     index=pd.Index(["default", "window first:3", "norm L1", "balanced"], name="variant"))
    a = conclude.ablations(t, fraction=0.1)
    assert "changes most under **balanced** (Jaccard 0.39" in a and "least under norm L1 (0.95)" in a
    assert "1 of 3 variants pick nearly the same coreset (Jaccard >= 0.9): norm L1." in a
    assert "keeps 1.2 % of its coreset from its rarest class, the class-balanced variant 10.0 %" in a
    t.loc["window first:3", "jaccard_vs_default"] = 0.2
    t.loc["balanced", "jaccard_vs_default"] = 0.92
    b = conclude.ablations(t, fraction=0.1)
    assert "changes most under **window first:3** (Jaccard 0.20" in b and "2 of 3 variants" in b


def test_transfer_sentence_follows_the_numbers():
    assert "answers nothing here" in conclude.transfer(pd.DataFrame(), {})
    agree = pd.DataFrame({"transfer proxy": ["resnet_tiny"], "fraction": [0.3],
                          "spearman_AIGN_main_vs_transfer": [0.79], "jaccard_easycore_main_vs_transfer": [0.587]})
    a = conclude.transfer(agree, {"main": (2.5, 0.5, 5.0), "resnet_tiny": (1.5, 0.0, 3.5)})
    assert "Spearman 0.79" in a and "Jaccard 0.59 (random: 0.18)" in a and "the intervals overlap" in a
    b = conclude.transfer(agree, {"main": (2.5, 0.5, 5.0), "resnet_tiny": (9.5, 7.0, 12.0)})
    assert "do not overlap, so the transferred scores train a more robust model" in b


def _ver(cells, best=None):
    rows = []
    for mode, f, d, lo, hi, word, k in cells:
        rows.append({"family": "primary", "mode": mode, "fraction": f, "eps_255": 2.0, "method": "easycore",
                     "comparator": "random", "comparison": "easycore - random", "k": k, "diff": d, "lo": lo, "hi": hi,
                     "verdict": word, "status": "ok"})
    if best:
        rows.append({"family": "secondary", "mode": "trades", "fraction": 0.1, "eps_255": 8.0, "method": "easycore",
                     "comparator": f"best other: {best[0]}", "comparison": "easycore - best other (Hsu)", "k": 3,
                     "diff": best[1], "lo": best[1] - 5, "hi": best[1] + 5, "verdict": best[2], "status": "ok"})
    return pd.DataFrame(rows)


def test_coresets_sentence_follows_the_verdict():
    claim = {"standard": 7.0, "trades": 5.0}
    a = conclude.coresets(_ver([("standard", 0.1, 2.5, -1.7, 6.7, "no detectable difference", 10),
                                ("trades", 0.1, 3.0, 0.6, 5.5, "EasyCore better", 10)],
                               best=("deepfool_far", -1.2, "no detectable difference")), paper_claim=claim)
    assert "Of the 2 pre-registered primary cells (EasyCore minus random, Holm over the family), 1 favours EasyCore, " \
           "1 detect no difference." in a
    assert "Where a difference is found it is in EasyCore's favour." in a
    assert "trades, fraction 0.1, 2/255: +3.0 points [+0.6, +5.5], EasyCore better (K = 10)" in a
    assert "up to +5 points under trades; the largest primary difference here is +3.0 (fraction 0.1), and its " \
           "interval reaches +5" in a
    assert "up to +7 points under standard; the largest primary difference here is +2.5 (fraction 0.1), and its " \
           "interval stays below +7" in a
    assert "Against the best other method (deepfool_far; trades, fraction 0.1, secondary): -1.2 points" in a
    b = conclude.coresets(_ver([("standard", 0.1, -2.7, -4.7, -0.8, "EasyCore worse", 10),
                                ("trades", 0.1, -1.0, -3.0, 1.0, "no detectable difference", 10)]), paper_claim=claim)
    assert "1 favours random, 1 detect no difference" in b and "it is against EasyCore" in b
    c = conclude.coresets(_ver([("standard", 0.3, -5.0, np.nan, np.nan, "not replicated (K=1)", 1),
                                ("trades", 0.3, 4.5, np.nan, np.nan, "not replicated (K=1)", 1)]), paper_claim=claim)
    assert "None of the 2 primary cells" in c and "(not replicated)" in c and "not whether the claim holds" in c
    d = conclude.coresets(_ver([("standard", 0.1, 2.0, -1.0, 5.0, "no detectable difference", 10),
                                ("trades", 0.1, 1.0, -2.0, 4.0, "no detectable difference", 10)]))
    assert "No cell detects a difference" in d and "paper reports" not in d
    e = conclude.coresets(_ver([("standard", 0.1, -3.0, -5.0, -1.0, "EasyCore worse", 10),
                                ("trades", 0.1, 3.0, 1.0, 5.0, "EasyCore better", 10)]))
    assert "disagree in sign" in e


def test_coresets_conclusion_of_the_committed_study():
    """On the committed study's outcomes (reports/study-small): the sentence states the verdict the table holds."""
    from easycore import report
    from easycore.config import load_params

    path = ROOT / "reports/study-small/outcomes.npz"
    if not path.exists():
        pytest.skip("reports/study-small/outcomes.npz is not committed")
    P = load_params(ROOT / "params-study-small.yaml")
    results, _ = report.read_outcomes(path, P)
    ver = report.verdict(results, P, labels=report.read_labels(path))
    text = conclude.coresets(ver, paper_claim=report.PAPER_CLAIM)
    prim = ver[ver.family == "primary"]
    assert f"Of the {len(prim)} pre-registered primary cells" in text
    for r in prim.itertuples():
        assert f"{r.mode}, fraction {r.fraction:g}, {r.eps_255:g}/255: {r.diff:+.1f} points" in text


def test_the_replicate_intervals_enter_the_hardness_and_transfer_conclusions():
    """report.replicate_summary's t interval over replicates appears in the sentences and follows the numbers."""
    import pandas as pd

    from easycore.report import conclude
    from easycore import report

    tab = pd.DataFrame([{"pair": "AIGN vs DeepFool distance", "samples": "all training samples", "n": 50000,
                         "spearman": -0.6, "p_value": 0.0},
                        {"pair": "AIGN vs min flipping eps (PGD)", "samples": "random subset", "n": 500,
                         "spearman": -0.4, "p_value": 1e-9}])
    per = pd.concat([tab.assign(replicate=s, spearman=tab.spearman + 0.01 * s) for s in range(3)])
    across = report.replicate_summary(per, ["pair", "samples"], "spearman")
    assert across.K.tolist() == [3, 3] and across.lo[0] < across["mean"][0] < across.hi[0]
    text = conclude.hardness_vs_vulnerability(tab, across)
    assert "-0.59 [" in text and "over 3 replicates" in text
    per2 = per.assign(spearman=per.spearman - 0.2)
    assert "-0.79 [" in conclude.hardness_vs_vulnerability(tab, report.replicate_summary(per2, ["pair", "samples"],
                                                                                          "spearman"))
    agree = pd.DataFrame([{"transfer proxy": "resnet_tiny", "fraction": 0.1, "spearman_AIGN_main_vs_transfer": 0.8,
                           "jaccard_easycore_main_vs_transfer": 0.5}])
    reps = pd.DataFrame([{"transfer proxy": "resnet_tiny", "fraction": 0.1, "replicate": s,
                          "spearman_AIGN_main_vs_transfer": 0.8 + 0.01 * s,
                          "jaccard_easycore_main_vs_transfer": 0.5 - 0.01 * s} for s in range(3)])
    acr = pd.concat([report.replicate_summary(reps, ["transfer proxy", "fraction"], v).assign(measure=v)
                     for v in ("spearman_AIGN_main_vs_transfer", "jaccard_easycore_main_vs_transfer")])
    t = conclude.transfer(agree, {}, acr)
    assert "Spearman 0.81 [" in t and "Jaccard at 0.1 0.49 [" in t


def test_coresets_conclusion_when_no_primary_cell_has_runs():
    """A profile whose primary cells all miss runs (one seed, a fraction with no comparator run) has no `diff`
    column in its verdict table: the conclusion says the cells cannot be decided instead of failing (the
    cluster rehearsal's tiny profile stopped the coresets notebook with KeyError 'diff')."""
    ver = pd.DataFrame({"family": ["primary"] * 2, "mode": ["standard", "trades"], "fraction": [0.5, 0.5], "eps_255": [2.0, 8.0],
                        "method": ["easycore"] * 2, "comparator": ["random"] * 2, "status": ["missing"] * 2,
                        "verdict": ["missing runs (random, replicate 0)"] * 2, "comparison": ["easycore - random"] * 2})
    from easycore import report
    text = conclude.coresets(ver, paper_claim=report.PAPER_CLAIM)
    assert "None of the 2 primary cells (EasyCore minus random) can be decided here" in text
    assert "The paper reports" not in text
