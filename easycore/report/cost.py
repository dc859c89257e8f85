"""Training cost as work, not wall time: the sample-forward and sample-backward passes a run's training loop counted
(model metadata `counts`, recorded by the loop's hooks; an adversarial step counts its attack's passes too),
relative to the full-data run of the same training mode. Wall time on a shared machine measures the machine's load
as much as the method (EasyCore and random at the same fraction have identical pass counts); a quiet, dedicated
measurement lives in `benchmarks/` (reports/benchmarks.md)."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from easycore.config import fraction_name
from easycore.pipeline.runs import FULL


def relative_passes(runs_df: pd.DataFrame, mode: str) -> dict[tuple[str, float], float]:
    """{(method, fraction): mean over seeds of (forward + backward sample passes) / the full-data run's mean, same
    mode}; {} when the full-data run or the counts are missing."""
    need = {"passes_forward", "passes_backward", "method", "fraction", "mode"}
    if runs_df.empty or not need <= set(runs_df.columns):
        return {}
    d = runs_df[(runs_df["mode"] == mode) & runs_df.passes_forward.notna() & runs_df.passes_backward.notna()]
    d = d.assign(passes=d.passes_forward + d.passes_backward)
    per = d.groupby(["method", "fraction"])["passes"].mean()
    full = per.get((FULL, 1.0))
    if full is None or not full > 0:
        return {}
    return {k: float(v / full) for k, v in per.items()}


def cost_columns(table: pd.DataFrame, runs_df: pd.DataFrame, mode: str, fractions: Sequence[float]) -> pd.DataFrame:
    """`table` (rows: methods, 'full data (reference)' last) with one column per fraction, 'passes vs full @
    f=<f>': the relative training passes of that method at that fraction ('1.00' for the reference, '-' where the
    method did not run at that fraction or counts are missing)."""
    rel = relative_passes(runs_df, mode)
    out = table.copy()
    for f in fractions:
        col = f"passes vs full @ f={fraction_name(f)}"
        vals = []
        for label in out.index:
            key = (FULL, 1.0) if str(label).startswith("full data") else (label, f)
            vals.append(f"{rel[key]:.2f}" if key in rel else "-")
        out[col] = vals
    return out
