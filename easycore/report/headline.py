"""The one DVC metric, `<report.dir>/summary.json`: the headline only, so `dvc exp show` and `dvc metrics diff` fit
on a screen. The full per-cell numbers go to `tables/coresets/summary_full.json` (`report.summary`), a plain output.

For every cell of the pre-registered primary family (report.primary: method - comparator per training mode and
fraction, at the mode's primary eps): the paired difference in points, the verdict code and the MDE at the family's
power; plus the sample sizes. Every value is a number (`dvc metrics show` drops nulls, so an undecided cell would
vanish from it): a cell that cannot be decided carries a code instead. Keys, flat:

    <mode>_f<fraction>: {diff, verdict, mde}     e.g. trades_f0.1: {diff: -0.3, verdict: 0, mde: 2.1}
    n_test, n_replicates

verdict (VERDICT_CODES): +1 method better, -1 method worse, 0 no detectable difference (Holm over the family);
    2 not replicated (one replicate: never decided), 3 uninformative (a model at or below a constant classifier).
mde: the difference (points) the cell could detect; -1 where it cannot be computed (fewer than 2 replicates).
A cell whose runs are missing is left out (it has no number); its table row says which runs.

3 x (modes x fractions) + 2 numbers: 8 for the demo (2 modes, 1 fraction), 14 for the study (2 x 2).
"""
from __future__ import annotations

import math

import pandas as pd

from easycore.config import Params, fraction_name

VERDICT_CODES = {1: "method better", -1: "method worse", 0: "no detectable difference",
                 2: "not replicated (one replicate: never decided)",
                 3: "uninformative (a model at or below a constant classifier)"}
NO_MDE = -1          # the mde of a cell with fewer than 2 replicates: not computable


def verdict_code(word: str) -> int:
    """The number of a verdict word (VERDICT_CODES); ValueError for a word of a cell that has no number."""
    word = word.split(" (K = ")[0]          # "... (K = 3: indicative)": the word itself
    if word.endswith(" better"):
        return 1
    if word.endswith(" worse"):
        return -1
    if word == "no detectable difference":
        return 0
    if word.startswith("not replicated"):
        return 2
    if word.startswith("uninformative"):
        return 3
    raise ValueError(f"no verdict code for {word!r}")


def _num(x, nd=2, missing=None):
    return missing if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def headline(ver: pd.DataFrame, params: Params, n_test: int | None = None) -> dict:
    """The headline dict from a `report.verdict` frame (its primary rows; missing cells are left out), numbers
    only."""
    out: dict = {}
    rows = ver[ver["family"] == "primary"] if len(ver) else ver
    for r in rows.itertuples(index=False):
        if r.status != "ok":
            continue
        out[f"{r.mode}_f{fraction_name(r.fraction)}"] = {
            "diff": _num(r.diff), "verdict": verdict_code(r.verdict),
            "mde": _num(getattr(r, "mde", math.nan), missing=NO_MDE)}
    out["n_test"] = int(n_test if n_test is not None else params.eval.n_for(True))
    out["n_replicates"] = len(params.train.seeds)
    return out


def n_keys(d: dict) -> int:
    """The number of leaf values (= columns in `dvc exp show` / `dvc metrics show`)."""
    return sum(n_keys(v) if isinstance(v, dict) else 1 for v in d.values())
