"""Accuracy tables, curves and summaries of every cell."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from easycore import inference
from easycore.config import Params, fraction_name
from easycore.pipeline import runs
from easycore.report.outcomes import (
    RunResult,
    _cell_status,
    autoattack_outcomes,
    cells,
    fractions,
    outcome_matrix,
    paired_rows,
    seed_rows,
)

BOLD = "**"


TIMINGS = Path("runs/timings")


def runs_frame(results: Sequence[RunResult], timings: Optional[Path] = None) -> pd.DataFrame:
    """One row per declared run: identity, status, n_test, every accuracy in its metrics and sample-forward/backward
    passes (from the run's model metadata via the metrics' meta); with `timings` (runs/timings) also the train
    minutes, which are wall-clock values: for `timing_table`, never for a report output (it would change on every
    re-run)."""
    rows = []
    for r in results:
        row = {"scores": r.run.scores, "method": r.run.method, "fraction": r.run.fraction, "mode": r.run.mode,
               "seed": r.run.seed, "status": r.status}
        for k, v in r.metrics.items():
            if isinstance(v, dict) and "accuracy" in v:
                row[k] = v["accuracy"]
                row["n_test"] = max(row.get("n_test", 0), v.get("n", 0))
        counts = (r.metrics.get("meta", {}).get("train") or {}).get("counts") or {}
        row.update({f"passes_{k}": v for k, v in counts.items() if k in ("forward", "backward")})
        row["examples"] = counts.get("examples")
        if timings:
            row["train_minutes"] = _minutes(timings, "train", r.run)
        rows.append(row)
    return pd.DataFrame(rows)


def timing_table(results: Sequence[RunResult], timings: Path = TIMINGS) -> pd.DataFrame:
    """Mean train minutes per run by (mode, method) from runs/timings (a log beside the runs, not a DVC output);
    the coresets notebook writes it to runs/timings/report/, outside the report (its outputs hold no wall time)."""
    df = runs_frame(results, timings)
    if df.empty:
        return df
    out = df.groupby(["mode", "method"])["train_minutes"].agg(["mean", "count"]).round(3)
    return out.rename(columns={"mean": "train min/run", "count": "runs"})


def _minutes(timings: Path, stage: str, run: runs.Run) -> Optional[float]:
    p = Path(timings) / stage / run.scores / f"{run.name}.json"
    try:
        return round(json.loads(p.read_text())["seconds"] / 60, 3)
    except (OSError, ValueError, KeyError):
        return None


def cell_frame(results: Sequence[RunResult], params: Params, mode: str, keys: Sequence[str], *,
               n_boot: int = 4000) -> pd.DataFrame:
    """Long numeric frame: one row per (method, fraction, key): mean, lo, hi (95 % CI, bootstrap over test images
    and seeds), std over seeds, n_seeds, n_test, status."""
    rows = []
    for scores, method, f in cells(params, mode):
        for key in keys:
            m = outcome_matrix(results, scores=scores, method=method, fraction=f, mode=mode, key=key)
            row = {"method": method, "fraction": f, "key": key}
            if m is None:
                rows.append(row | {"status": _cell_status(results, scores, method, f, mode)})
                continue
            s = accuracy_stat(m, n_boot=n_boot)
            rows.append(row | {"mean": s.mean, "lo": s.lo, "hi": s.hi, "std_seeds": s.std_seeds,
                               "n_seeds": s.n_seeds, "n_test": s.n_test, "status": "ok"})
    return pd.DataFrame(rows)


def accuracy_stat(m: np.ndarray, *, n_boot: int = 4000) -> "inference.CellStat":
    """Mean accuracy of a [K, n] outcome matrix with its 95 % interval: the replicate as the unit (crossed images x
    replicates, inference.crossed; clipped to [0, 1]) when K >= 2; with one replicate the interval over test images alone
    (inference.cell_stat), conditional on that one run."""
    from easycore import inference

    if m.shape[0] < 2:
        return inference.cell_stat(m, n_boot=n_boot)
    d = inference.crossed(m.astype(np.float64))
    return inference.CellStat(mean=d.diff, lo=max(0.0, d.lo), hi=min(1.0, d.hi), std_seeds=float(m.mean(1).std()),
                          n_seeds=m.shape[0], n_test=m.shape[1])


def best_marks(outs: Mapping[str, Mapping[int, np.ndarray]], *, level: float = 0.95, labels=None) -> list[str]:
    """The method with the highest accuracy, when its paired interval against the runner-up (on the replicates both
    hold, inference.paired) excludes 0; [] otherwise or with fewer than 2 common replicates."""
    from easycore import inference

    if len(outs) < 2:
        return []
    acc = {m: float(np.mean([v.mean() for v in r.values()])) for m, r in outs.items()}
    first, second = sorted(acc, key=acc.get, reverse=True)[:2]
    seeds, a, b = paired_rows(outs[first], outs[second], labels)
    if len(seeds) < 2:
        return []
    return [first] if inference.paired(a, b, level=level).lo > 0 else []


def _fmt(row) -> str:
    if row.get("status") != "ok":
        return str(row.get("status"))
    return f"{100 * row['mean']:.1f} [{100 * row['lo']:.1f}, {100 * row['hi']:.1f}]"


def accuracy_table(results: Sequence[RunResult], params: Params, mode: str, keys: Sequence[str], *,
                   n_boot: int = 4000, frame: Optional[pd.DataFrame] = None, labels=None) -> pd.DataFrame:
    """The paper's table for one mode, for reading: rows = methods (full data last), columns '<key> @ f=<f>',
    cells 'mean [95 % CI]' in %. In each column the best coreset method is bold only when its paired CI against
    the runner-up excludes 0 (`best_marks`); missing runs say why. No wall times (see `timing_table`); the
    training cost per fraction as sample passes relative to full-data training (easycore/report/cost.py)."""
    frame = cell_frame(results, params, mode, keys, n_boot=n_boot) if frame is None else frame
    table: dict[str, dict[str, str]] = {}
    for (method, f, key), row in frame.set_index(["method", "fraction", "key"]).iterrows():
        label = "full data (reference)" if method == runs.FULL else method
        col = f"{key} @ f={fraction_name(f)}" if method != runs.FULL else None
        cell = _fmt(row.to_dict())
        if col is None:
            for ff in fractions(params):
                table.setdefault(label, {})[f"{key} @ f={fraction_name(ff)}"] = cell
        else:
            table.setdefault(label, {})[col] = cell
    for f in fractions(params):
        for key in keys:
            outs = {}
            for scores, method, ff in cells(params, mode):
                if ff == f and method != runs.FULL:
                    m = seed_rows(results, scores=scores, method=method, fraction=f, mode=mode, key=key)
                    if m is not None:
                        outs[method] = m
            for method in best_marks(outs, labels=labels) if len(outs) > 1 else ():
                col = f"{key} @ f={fraction_name(f)}"
                table[method][col] = f"{BOLD}{table[method][col]}{BOLD}"
    cols = [f"{key} @ f={fraction_name(f)}" for f in fractions(params) for key in keys]
    out = pd.DataFrame.from_dict(table, orient="index").reindex(columns=cols).fillna("not run")
    from easycore.report.cost import (
        cost_columns,  # training cost as sample passes relative to full-data training (not wall time)
    )

    out = cost_columns(out, runs_frame(results, timings=None), mode, fractions(params))
    out.index.name = "method"
    return out


def autoattack_table(params: Params, root: Path = runs.ROOT / "autoattack", *, outcomes: Optional[dict] = None,
                     n_boot: int = 4000) -> pd.DataFrame:
    """Does the ranking survive AutoAttack? For each model the autoattack stage attacked (the verdict's: full data,
    EasyCore, random, best other; per mode and fraction, pooled over seeds): robust accuracy on the
    eval.autoattack_n test images spread over the classes before and after AutoAttack, mean [95 % CI] in %.
    `outcomes` ({run key: {robust, robust_aa}}, as `read_outcomes` returns) replaces reading the stage's files
    under `root`."""
    if outcomes is None:
        outcomes = autoattack_outcomes(root)
    cells: dict = {}
    for key in sorted(outcomes):
        r = runs.parse(key)
        cells.setdefault((r.mode, r.fraction, r.method), []).append((r.seed, outcomes[key]))
    rows = []
    for (mode, f, method), seeds in sorted(cells.items()):
        seeds.sort(key=lambda t: t[0])
        row = {"mode": mode, "fraction": f, "method": method, "n_seeds": len(seeds), "n_test": len(seeds[0][1]["robust"])}
        for k in ("robust", "robust_aa"):
            st = accuracy_stat(np.stack([a[k] for _, a in seeds]), n_boot=n_boot)
            row[k] = f"{100 * st.mean:.1f} [{100 * st.lo:.1f}, {100 * st.hi:.1f}]"
            row[f"{k}_mean"] = st.mean
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["rank before"] = df.groupby(["mode", "fraction"])["robust_mean"].rank(ascending=False, method="min")
    df["rank with AutoAttack"] = df.groupby(["mode", "fraction"])["robust_aa_mean"].rank(ascending=False, method="min")
    return df.drop(columns=["robust_mean", "robust_aa_mean"])


def curves(results: Sequence[RunResult], params: Params, mode: str, fraction: float, *,
           n_boot: int = 2000) -> pd.DataFrame:
    """Robust accuracy vs eps (worst case, monotone) per method with 95 % CIs, for (mode, fraction); the full-data
    reference included. Long frame: method, eps, mean, lo, hi (fractions in [0, 1]), n_seeds. The eps: eval.eps_grid
    and the mode's headline eps (eval.mode_eps, else eval.eps: the eps its models were attacked at)."""
    from easycore.core.evaluate import eps_name

    rows = []
    grid = sorted(set(params.eval.eps_grid) | {params.eval.for_mode(mode).eps})
    for scores, method, f in cells(params, mode):
        if f not in (fraction, 1.0) or (f == 1.0 and method != runs.FULL):
            continue
        for eps in grid:
            m = outcome_matrix(results, scores=scores, method=method, fraction=f, mode=mode, key=eps_name(eps))
            if m is not None:
                s = accuracy_stat(m, n_boot=n_boot)
                rows.append({"method": method, "eps": eps, "mean": s.mean, "lo": s.lo, "hi": s.hi,
                             "n_seeds": s.n_seeds})
    return pd.DataFrame(rows)


def summary(results: Sequence[RunResult], params: Params, *, n_boot: int = 2000) -> dict:
    """The top-level DVC metric: mode -> method -> fraction -> {robust, clean: {mean, lo, hi}, n_seeds, n_test}
    (numbers only, rounded), so `dvc exp show` / `dvc metrics diff` fit on a screen."""
    out: dict = {}
    for mode in params.train.modes:
        for scores, method, f in cells(params, mode):
            cell = {}
            for key in ("robust", "clean"):
                m = outcome_matrix(results, scores=scores, method=method, fraction=f, mode=mode, key=key)
                if m is None:
                    continue
                s = accuracy_stat(m, n_boot=n_boot)
                cell[key] = {"mean": round(s.mean, 4), "lo": round(s.lo, 4), "hi": round(s.hi, 4)}
                cell["n_seeds"], cell["n_test"] = s.n_seeds, s.n_test
            if cell:
                out.setdefault(mode, {}).setdefault(method, {})[fraction_name(f)] = cell
    return out
