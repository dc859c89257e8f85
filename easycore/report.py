"""Report helpers for the notebooks: collect the evaluation metrics of the runs a params file declares, build
the paper's tables (mean ± std over seeds, best per column marked), and save tables / figures.

Run folders (see pipeline.py): runs/eval/<method>-<fraction>[-<proxy>]-<mode>-s<seed>/metrics.json, the
full-data reference as method "full", fraction 1. Only the runs the params declare are read, so stale
folders left from an earlier params setting never leak into a table.
"""
from __future__ import annotations

import math
import os
import platform
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from .config import Params
from .pipeline import fmt_fraction, run_name
from .store import atomic_path, read_json

TABLES = Path("reports/tables")
FIGURES = Path("reports/figures")
FULL = "full"
BEST_MARK = "**"
RUN_RE = re.compile(r"^(?P<method>[A-Za-z0-9_]+)-(?P<fraction>[0-9.e+-]+?)(?:-(?P<proxy>transfer))?"
                    r"-(?P<mode>standard|pgd_at|trades|fgsm_rs)-s(?P<seed>\d+)$")
# metrics entries that are accuracies, in column order (others, e.g. pgd50x5, are appended as found)
ATTACK_ORDER = ("clean", "fgsm", "pgd20", "pgd10", "l2_pgd20", "autoattack")


def parse_run(name: str) -> Optional[dict]:
    """'easycore-0.3-trades-s1' -> {method, fraction, proxy ('main' | 'transfer'), mode, seed}; None if no match."""
    m = RUN_RE.match(name)
    if not m:
        return None
    d = m.groupdict()
    return {"method": d["method"], "fraction": float(d["fraction"]), "proxy": d["proxy"] or "main",
            "mode": d["mode"], "seed": int(d["seed"])}


def expected_runs(params: Params, *, transfer_methods: Sequence[str] = ("easycore",),
                  transfer_modes: Sequence[str] = ("standard",)) -> list[str]:
    """The run names the DVC pipeline trains for `params` (coreset matrix, full-data reference, transfer)."""
    c, t = params.coreset, params.train
    runs = [run_name(m, f, mode, s) for m in c.methods for f in c.fractions for mode in t.modes for s in t.seeds]
    runs += [run_name(FULL, 1.0, mode, s) for mode in t.modes for s in t.seeds]
    if params.proxy.transfer_model is not None:
        runs += [f"{m}-{fmt_fraction(f)}-transfer-{mode}-s{s}" for m in transfer_methods for f in c.fractions
                 for mode in transfer_modes for s in t.seeds]
    return runs


def collect_metrics(eval_dir: str | os.PathLike = "runs/eval", runs: Optional[Iterable[str]] = None, *,
                    missing: str = "raise") -> pd.DataFrame:
    """One row per run: run, method, fraction, proxy, mode, seed, n_test and one accuracy column per attack
    entry of metrics.json (clean, fgsm, pgd20, autoattack, ...). `runs`: the run names to read (default: every
    folder under eval_dir whose name parses); missing='raise' | 'skip' for declared runs without metrics."""
    eval_dir = Path(eval_dir)
    if runs is None:
        runs = sorted(p.name for p in eval_dir.iterdir() if p.is_dir() and parse_run(p.name)) if eval_dir.is_dir() else []
    rows = []
    for run in runs:
        info = parse_run(run)
        if info is None:
            raise ValueError(f"run name {run!r} does not look like <method>-<fraction>[-transfer]-<mode>-s<seed>")
        path = eval_dir / run / "metrics.json"
        if not path.exists():
            if missing == "skip":
                continue
            raise FileNotFoundError(f"missing {path}; run `dvc repro` (the evaluate stage of {run})")
        m = read_json(path)
        row = {"run": run, **info}
        for k, v in m.items():
            if isinstance(v, dict) and "accuracy" in v:
                row[k] = v["accuracy"]
                row["n_test"] = v.get("n", row.get("n_test"))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    acc = [a for a in ATTACK_ORDER if a in df] + sorted(c for c in df if c not in ATTACK_ORDER and c not in
                                                         ("run", "method", "fraction", "proxy", "mode", "seed", "n_test"))
    return df[["run", "method", "fraction", "proxy", "mode", "seed", "n_test"] + acc]


def attack_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in ("run", "method", "fraction", "proxy", "mode", "seed", "n_test")]


def _fmt(mean: float, std: float, n: int, pct: bool) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    k = 100.0 if pct else 1.0
    return f"{k * mean:.1f} ± {k * std:.1f}" if n > 1 else f"{k * mean:.1f}"


def _std0(s: pd.Series) -> float:
    """Population std (ddof=0) over seeds: 0 for a single seed, so one seed prints no '± nan'."""
    return float(s.std(ddof=0))


def _cell(stats: pd.DataFrame, key: tuple, attack: str, pct: bool) -> str:
    """'mean ± std' for one (method, fraction) group and attack, from the aggregated stats."""
    return _fmt(stats.loc[key, (attack, "mean")], stats.loc[key, (attack, "_std0")],
                int(stats.loc[key, (attack, "count")]), pct)


def results_table(df: pd.DataFrame, mode: str, *, attacks: Optional[Sequence[str]] = None, proxy: str = "main",
                  methods: Optional[Sequence[str]] = None, pct: bool = True, mark_best: bool = True) -> pd.DataFrame:
    """The paper's table for one training mode: rows = methods (+ the full-data reference row last), columns =
    '<attack> @ f=<fraction>'; cells 'mean ± std' over seeds in percent (std only with > 1 seed, ddof=0).
    The best coreset method per column (highest mean; the reference row does not compete) is wrapped in
    BEST_MARK (Markdown bold); ties are all marked."""
    d = df[(df["mode"] == mode) & ((df["proxy"] == proxy) | (df["method"] == FULL))]
    if d.empty:
        raise ValueError(f"no runs with mode {mode!r} in the metrics")
    attacks = list(attacks) if attacks is not None else [a for a in attack_columns(d) if d[a].notna().any()]
    g = d.groupby(["method", "fraction"])
    stats = g[attacks].agg(["mean", _std0, "count"])
    core_methods = [m for m in (methods or list(dict.fromkeys(d["method"]))) if m != FULL]
    fractions = sorted(d.loc[d["method"] != FULL, "fraction"].unique())
    cols, rows = [], {}
    for f in fractions:
        for a in attacks:
            col = f"{a} @ f={fmt_fraction(f)}"
            cols.append(col)
            means = {m: stats.loc[(m, f), (a, "mean")] for m in core_methods if (m, f) in stats.index}
            finite = [v for v in means.values() if v is not None and not math.isnan(v)]
            best = max(finite) if finite else None
            for m in core_methods:
                if (m, f) not in stats.index:
                    rows.setdefault(m, {})[col] = "–"
                    continue
                mean = stats.loc[(m, f), (a, "mean")]
                cell = _cell(stats, (m, f), a, pct)
                if mark_best and best is not None and not math.isnan(mean) and np.isclose(mean, best) and len(finite) > 1:
                    cell = f"{BEST_MARK}{cell}{BEST_MARK}"
                rows.setdefault(m, {})[col] = cell
            if (FULL, 1.0) in stats.index:
                rows.setdefault("full data (reference)", {})[col] = _cell(stats, (FULL, 1.0), a, pct)
    out = pd.DataFrame.from_dict(rows, orient="index")[cols]
    out.index.name = "method"
    return out


def numeric_summary(df: pd.DataFrame, group: Sequence[str] = ("proxy", "method", "fraction", "mode")) -> pd.DataFrame:
    """mean / std (ddof=0) / n_seeds per group and attack, numeric (for CSV export and plots)."""
    attacks = attack_columns(df)
    g = df.groupby(list(group))[attacks]
    out = pd.concat({"mean": g.mean(), "std": g.std(ddof=0).fillna(0.0), "n_seeds": g.count()}, axis=1)
    out.columns = [f"{a}_{s}" for s, a in out.columns]
    return out.reset_index()


def to_markdown(df: pd.DataFrame, caption: Optional[str] = None) -> str:
    md = df.to_markdown()
    return (f"{caption}\n\n{md}\n" if caption else f"{md}\n")


def save_table(df: pd.DataFrame, stem: str, *, caption: Optional[str] = None, out_dir: str | os.PathLike = TABLES,
               index: bool = True) -> tuple[Path, Path]:
    """Write out_dir/<stem>.md (caption line, blank line, Markdown table) and out_dir/<stem>.csv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    with atomic_path(md) as tmp:
        tmp.write_text(to_markdown(df if index else df.set_index(df.columns[0]), caption))
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=index)
    return md, csv


def save_figure(fig, stem: str, formats: Sequence[str] = ("png", "svg"), *,
                out_dir: str | os.PathLike = FIGURES, dpi: int = 150) -> list[Path]:
    """Save `fig` as out_dir/<stem>.<fmt> for each format (PNG at `dpi`). Returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = out_dir / f"{stem}.{fmt}"
        fig.savefig(p, dpi=dpi, bbox_inches="tight", **({"metadata": {"Date": None}} if fmt == "svg" else {}))
        paths.append(p)
    return paths


def hardware() -> str:
    """'<n> CPU cores (<processor>)' or the CUDA device name(s)."""
    import torch

    if torch.cuda.is_available():
        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU"


def scale_caption(params: Params, info: Optional[dict] = None, *, what: str = "") -> str:
    """One caption line stating the scale: dataset, subset sizes, model, epochs, seeds, attacks, hardware."""
    d, t, e = params.data, params.train, params.eval
    n_tr = info["train"]["n"] if info else None
    n_te = info["test"]["n"] if info else None
    sub = "full training set" if d.n_per_class is None else f"{d.n_per_class}/class"
    aa = f", AutoAttack on {e.autoattack_n}" if e.autoattack else ""
    return (f"*{what}Scale: {d.dataset} {sub} ({n_tr} train samples), test subset {n_te} "
            f"(first {min(e.n_test, n_te or e.n_test)} attacked); model {t.model}, {t.epochs} epochs "
            f"(batch {t.batch_size}); TRADES beta {t.attack.beta}, {t.attack.steps} steps; eval Linf eps "
            f"{e.eps * 255:.0f}/255, PGD-{e.pgd_steps}{aa}; proxy {params.proxy.model} {params.proxy.epochs} epochs; "
            f"seeds {t.seeds}; hardware: {hardware()}. Accuracies in %, best coreset per column in bold.*")


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
