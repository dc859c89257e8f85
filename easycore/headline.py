"""The one DVC metric, `<report.dir>/summary.json`: the headline only, so `dvc exp show` and `dvc metrics diff` fit
on a screen. The full per-cell numbers go to `tables/coresets/summary_full.json` (`report.summary`), a plain output.

For every (training mode, fraction) at the headline eps (`eval.eps`), the primary comparison of the verdict:
EasyCore minus the best other method, in points, with its 95 % CI and the verdict code (+1 EasyCore better,
-1 worse, 0 no detectable difference, Holm-adjusted), plus the sample size. Keys, flat:

    <mode>_f<fraction>: {diff, lo, hi, verdict}     e.g. trades_f0.1: {diff: -0.3, lo: -3.2, hi: 2.7, verdict: 0}
    n_test, n_seeds

4 x (modes x fractions) + 2 numbers: 10 for the demo (2 modes, 1 fraction), 18 for the study (2 x 2).
"""
from __future__ import annotations

import math

import pandas as pd

from .config import Params, fraction_name

VERDICT_CODE = {"EasyCore better": 1, "EasyCore worse": -1, "no detectable difference": 0}


def headline(ver: pd.DataFrame, params: Params, n_test: int | None = None) -> dict:
    """The headline dict from a `report.verdict` frame (rows at eps = eval.eps; missing cells are left out)."""
    out: dict = {}
    eps = round(params.eval.eps * 255, 3)
    rows = ver[(ver["eps_255"] == eps)] if len(ver) else ver
    for r in rows.itertuples(index=False):
        if getattr(r, "verdict_best", None) not in VERDICT_CODE or pd.isna(getattr(r, "diff_best", math.nan)):
            continue
        out[f"{r.mode}_f{fraction_name(r.fraction)}"] = {
            "diff": round(float(r.diff_best), 2), "lo": round(float(r.lo_best), 2), "hi": round(float(r.hi_best), 2),
            "verdict": VERDICT_CODE[r.verdict_best]}
    out["n_test"] = int(n_test if n_test is not None else params.eval.n_test)
    out["n_seeds"] = len(params.train.seeds)
    return out


def n_keys(d: dict) -> int:
    """The number of leaf values (= columns in `dvc exp show` / `dvc metrics show`)."""
    return sum(n_keys(v) if isinstance(v, dict) else 1 for v in d.values())
