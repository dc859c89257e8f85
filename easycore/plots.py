"""The report figures: one fixed colour per method in every figure, small multiples instead of many lines on one
axis, legends outside the data, and a check that no two text artists overlap at the saved size.

Inputs are the frames `easycore.report` computes (`curves`, `cell_frame`, `verdict`), so a figure never computes a
number itself. Colours: `color(method)`; EasyCore is always red, random always grey, the full-data reference
always black (dashed); every other registered method has its own colour from a fixed list in registry order.
"""
from __future__ import annotations

import itertools
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

EASYCORE, RANDOM, FULL = "easycore", "random", "full"
_FIXED = {EASYCORE: "#d62728", RANDOM: "#7f7f7f", FULL: "#000000"}
# colour-blind-safe-ish, distinct from the three fixed ones; assigned in registry order, then by name
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79",
            "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]
LABEL = {EASYCORE: "EasyCore", RANDOM: "random", FULL: "full data"}


def _method_order() -> list[str]:
    try:
        from .registry import registry

        return [m for m in registry("methods").names() if m not in _FIXED]
    except Exception:  # pragma: no cover - the registry always imports in this package
        return []


def colors(methods: Optional[Sequence[str]] = None) -> dict[str, str]:
    """{method: colour} for every registered method (and any extra names given, after them, in sorted order)."""
    order = _method_order()
    extra = sorted(set(methods or ()) - set(order) - set(_FIXED))
    out = dict(_FIXED)
    out.update({m: c for m, c in zip(order + extra, itertools.cycle(_PALETTE))})
    return out


def color(method: str) -> str:
    return colors([method])[method]


def label(method: str) -> str:
    return LABEL.get(method, method)


def _style(ax) -> None:
    ax.grid(True, lw=0.5, alpha=0.5)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)


def _pct(x):
    return 100 * np.asarray(x, dtype=float)


# ----------------------------------------------------------------------------- robustness curves (small multiples)
def curves_figure(curves: Mapping[float, pd.DataFrame], title: str = "", *, ncols: int = 4):
    """Robust accuracy vs eps for one training mode: one row of small multiples per fraction, one panel per method
    other than EasyCore, each showing EasyCore (red), that method (its colour), random (grey, thin, when it is not
    the panel's method) and the full-data reference (black, dashed), with 95 % CI bands for EasyCore and the
    panel's method. `curves`: {fraction: report.curves(...) frame (method, eps, mean, lo, hi)}. All panels share
    the y axis."""
    import matplotlib.pyplot as plt

    blocks = []
    for f, cur in curves.items():
        others = [m for m in dict.fromkeys(cur.method) if m not in (EASYCORE, FULL)]
        blocks.append((f, cur, others or [None]))
    per_row = min(ncols, max(len(o) for _, _, o in blocks)) if blocks else 1
    rows = sum(-(-len(o) // per_row) for _, _, o in blocks) or 1
    fig, axes = plt.subplots(rows, per_row, figsize=(3.1 * per_row, 2.5 * rows + 0.9), squeeze=False,
                             sharex=True, sharey=True)
    r = 0
    for f, cur, others in blocks:
        by = {m: d.sort_values("eps") for m, d in cur.groupby("method", sort=False)}
        for k, m in enumerate(others):
            ax = axes[r + k // per_row][k % per_row]
            _style(ax)
            if FULL in by:
                d = by[FULL]
                ax.plot(d.eps * 255, _pct(d["mean"]), color=color(FULL), ls="--", lw=1)
            if RANDOM in by and m != RANDOM:
                d = by[RANDOM]
                ax.plot(d.eps * 255, _pct(d["mean"]), color=color(RANDOM), lw=1, alpha=0.8)
            for name, lw in ((m, 1.6), (EASYCORE, 2.0)):
                if name is None or name not in by:
                    continue
                d = by[name]
                ax.fill_between(d.eps * 255, _pct(d.lo), _pct(d.hi), color=color(name), alpha=0.18, lw=0)
                ax.plot(d.eps * 255, _pct(d["mean"]), color=color(name), lw=lw, marker="o", ms=3)
            ax.set_title(f"f={f:g}: EasyCore vs {label(m) if m else '-'}", fontsize=9,
                         color=color(m) if m else "black")
        for k in range(len(others), -(-len(others) // per_row) * per_row):
            axes[r + k // per_row][k % per_row].set_visible(False)
        r += -(-len(others) // per_row)
    for ax in axes[:, 0]:
        ax.set_ylabel("robust acc. (%)", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("Linf eps (x255)", fontsize=9)
    for ax in axes.flat:
        ax.tick_params(labelsize=8, labelbottom=True)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color(EASYCORE), lw=2, marker="o", ms=3, label="EasyCore (95% CI band)"),
               Line2D([], [], color=color(RANDOM), lw=1, label="random"),
               Line2D([], [], color=color(FULL), lw=1, ls="--", label="full data"),
               Line2D([], [], color="#555555", lw=1.6, marker="o", ms=3, label="the panel's method (its colour)")]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    if title:
        fig.suptitle(title, fontsize=10, y=1.0 + 0.35 / fig.get_figheight())
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


# ----------------------------------------------------------------------------- robust accuracy vs fraction
def fraction_figure(frames: Mapping[str, pd.DataFrame], key: str = "robust", title: str = ""):
    """`key` accuracy vs coreset fraction, one panel per training mode (shared y): a line per method with more
    than one fraction, a point per method with one, the full-data reference as a dashed line, 95 % CI bars.
    `frames`: {mode: report.cell_frame(...) (method, fraction, key, mean, lo, hi, status)}. One legend outside
    the panels."""
    import matplotlib.pyplot as plt

    modes = list(frames)
    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes) + 1.8, 3.6), squeeze=False, sharey=True)
    seen: dict[str, object] = {}
    for ax, mode in zip(axes[0], modes):
        _style(ax)
        fr = frames[mode]
        fr = fr[(fr.key == key) & (fr.status == "ok")] if "status" in fr else fr[fr.key == key]
        fracs = sorted(fr[fr.method != FULL].fraction.unique())
        methods = list(dict.fromkeys(fr.method))
        n = max(len(methods) - 1, 1)
        for j, m in enumerate(methods):
            d = fr[fr.method == m].sort_values("fraction")
            if m == FULL:
                y = float(_pct(d["mean"].iloc[0]))
                h = ax.axhline(y, color=color(FULL), ls="--", lw=1)
                ax.axhspan(float(_pct(d.lo.iloc[0])), float(_pct(d.hi.iloc[0])), color=color(FULL), alpha=0.06, lw=0)
                seen.setdefault(label(FULL), h)
                continue
            # fractions at evenly spaced positions; methods spread a little around each so CI bars stay apart
            x = np.array([fracs.index(f) for f in d.fraction]) + (j - (n - 1) / 2) * min(0.06, 0.7 / n)
            h = ax.errorbar(x, _pct(d["mean"]), yerr=[_pct(d["mean"]) - _pct(d.lo), _pct(d.hi) - _pct(d["mean"])],
                            color=color(m), marker="o", ms=4 if m not in (EASYCORE, RANDOM) else 5,
                            lw=2 if m == EASYCORE else 1.2, ls="-" if len(d) > 1 else "none", capsize=2,
                            zorder=3 if m == EASYCORE else 2)
            seen.setdefault(label(m), h)
        ax.set_xticks(range(len(fracs)))
        ax.set_xticklabels([f"{f:g}" for f in fracs], fontsize=8)
        ax.set_xlim(-0.5, len(fracs) - 0.5)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("coreset fraction", fontsize=9)
        ax.set_title(mode, fontsize=10)
    axes[0][0].set_ylabel(f"{key} accuracy (%), 95% CI", fontsize=9)
    fig.legend(list(seen.values()), list(seen), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False, ncol=1 if len(seen) <= 14 else 2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- accuracy per method (dot + CI)
def accuracy_figure(frame: pd.DataFrame, keys: Sequence[str] = ("robust", "clean"), title: str = ""):
    """Mean [95 % CI] per method x fraction for each of `keys` (one panel each, methods on a shared y axis in the
    frame's order, coloured by method); the full-data reference as a dashed vertical line."""
    import matplotlib.pyplot as plt

    ok = frame[frame.status == "ok"] if "status" in frame else frame
    rows = ok[(ok.key == keys[0]) & (ok.method != FULL)][["method", "fraction"]].drop_duplicates()
    rows = list(rows.itertuples(index=False, name=None))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys) + 1.6, 0.9 + 0.24 * max(len(rows), 3)),
                             squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys):
        _style(ax)
        d = ok[ok.key == key].set_index(["method", "fraction"])
        for i, (m, f) in enumerate(rows):
            if (m, f) not in d.index:
                continue
            r = d.loc[(m, f)]
            ax.errorbar(_pct(r["mean"]), i, xerr=[[_pct(r["mean"] - r.lo)], [_pct(r.hi - r["mean"])]], fmt="o",
                        color=color(m), ms=5 if m == EASYCORE else 4, capsize=2)
        full = ok[(ok.key == key) & (ok.method == FULL)]
        if len(full):
            ax.axvline(float(_pct(full["mean"].iloc[0])), color=color(FULL), ls="--", lw=1)
        ax.set_xlabel(f"{key} accuracy (%)", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0][0].set_yticks(range(len(rows)))
    axes[0][0].set_yticklabels([f"{label(m)}  f={f:g}" for m, f in rows], fontsize=8)
    for t, (m, _) in zip(axes[0][0].get_yticklabels(), rows):
        t.set_color(color(m))
    axes[0][0].invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.text(0.99, 0.005, "dots: mean, bars: 95% CI; dashed: full data", ha="right", va="bottom", fontsize=7,
             color="#555555")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


# ----------------------------------------------------------------------------- the verdict
def verdict_figure(ver: pd.DataFrame, title: str = "", *, paper_claim: Optional[Mapping[str, float]] = None):
    """Every comparison of the verdict (`report.verdict`), paired difference in points with the interval that
    decides it: a panel per training mode, one row per comparison; the primary family first (bold labels), then the
    secondary ones. Filled markers: a difference found; hollow: none detectable; grey: not decidable (one
    replicate, or a model at or below a constant classifier). The paper's claim as a dotted line."""
    import matplotlib.pyplot as plt

    ver = ver[(ver["status"] == "ok") & ver["diff"].notna()] if len(ver) else ver
    modes = list(dict.fromkeys(ver["mode"])) if len(ver) else []
    nrow = max([(ver["mode"] == m).sum() for m in modes] or [1])
    fig, axes = plt.subplots(len(modes) or 1, 1, squeeze=False, sharex=True,
                             figsize=(8.5, (0.6 + 0.28 * nrow) * max(len(modes), 1) + 1.0))
    for i, mode in enumerate(modes):
        ax = axes[i][0]
        d = ver[ver["mode"] == mode].sort_values(["family", "fraction", "eps_255"], kind="stable").reset_index(drop=True)
        _style(ax)
        ax.axvline(0, color="#444444", lw=1)
        if paper_claim and mode in paper_claim:
            ax.axvline(paper_claim[mode], color="black", ls=":", lw=1)
        labs = []
        for k, r in d.iterrows():
            who = str(r["comparator"]).removeprefix("best other: ")
            c = color(who)
            decided = str(r["verdict"]).endswith(("better", "worse", "better than every other", "worse than the best other"))
            undecidable = not (decided or r["verdict"] == "no detectable difference")
            if pd.notna(r.get("lo")):
                ax.errorbar(r["diff"], k, xerr=[[r["diff"] - r["lo"]], [r["hi"] - r["diff"]]], fmt="o",
                            color="#aaaaaa" if undecidable else c, mfc=c if decided else "white", ms=5, capsize=2)
            else:
                ax.plot(r["diff"], k, "x", color="#aaaaaa")
            best = str(r["comparator"]).startswith("best other: ")
            labs.append(f"{'PRIMARY ' if r['family'] == 'primary' else ''}f={r['fraction']:g}, {r['eps_255']:g}/255: "
                        f"{r['method']} - {'best other (Hsu): ' if best else ''}{who} (K={int(r['k'])})")
        ax.set_yticks(np.arange(len(d)))
        ax.set_yticklabels(labs, fontsize=7)
        for t, r in zip(ax.get_yticklabels(), d.itertuples()):
            if r.family == "primary":
                t.set_fontweight("bold")
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(f"{mode}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("paired difference in robust accuracy (points); primary: Holm-step interval, secondary: 95%",
                      fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="#444444", marker="o", ls="none", label="difference found"),
               Line2D([], [], color="#444444", marker="o", mfc="white", ls="none", label="no detectable difference"),
               Line2D([], [], color="#aaaaaa", marker="o", mfc="white", ls="none", label="not decidable")]
    if paper_claim:
        handles.append(Line2D([], [], color="black", ls=":", label="paper: up to +N points"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight() + 0.02, 1, 1))
    return fig

# ----------------------------------------------------------------------------- checks
def text_overlaps(fig, *, pad: float = 0.0) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty text artists (titles, labels, tick labels, legend entries, annotations) whose
    rendered bounding boxes intersect at the figure's size and dpi: [] for a figure a reader can read."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks, drawn = set(), set()      # tick labels outside the view limits exist but are not drawn
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in list(axis.majorTicks) + list(axis.minorTicks):
                ticks.update((id(tick.label1), id(tick.label2)))
            for tick in axis._update_ticks():
                drawn.update((id(tick.label1), id(tick.label2)))
    boxes = []
    for t in fig.findobj(lambda a: a.__class__.__name__ in ("Text", "Annotation")):
        if not t.get_visible() or not t.get_text().strip() or (id(t) in ticks and id(t) not in drawn):
            continue
        ax = getattr(t, "axes", None)
        if ax is not None and not ax.get_visible():
            continue
        bb = t.get_window_extent(renderer)
        if bb.width <= 0 or bb.height <= 0:
            continue
        boxes.append((t.get_text(), bb.expanded(1 + pad, 1 + pad)))
    out = []
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1:
            out.append((ta, tb))
    return out


# ----------------------------------------------------------------------------- CSVs for `dvc plots`
def _write_csv(df: pd.DataFrame, path) -> None:
    import io
    from pathlib import Path

    from .store import atomic_path

    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.4g")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(buf.getvalue())


def write_dvc_plots(curves: pd.DataFrame, fractions: pd.DataFrame, ver: pd.DataFrame, out_dir) -> list:
    """The committed CSVs dvc.yaml declares as plots (they need no runs: `dvc plots show` works on a fresh clone,
    `dvc plots diff` compares experiments), long format, drawn by the templates in dvc_plots/ (one colour per
    `series` / `comparator`):
      robust_vs_eps_<mode>.csv       eps_255, robust_pct, lo_pct, hi_pct, series ('<method> f=<fraction>')
      robust_vs_fraction_<mode>.csv  fraction, robust_pct, lo_pct, hi_pct, series (method)
      verdict.csv                    row ('<family> <mode> f=<f> <eps>/255'), comparator, diff, lo, hi (points,
                                     the deciding interval), verdict
    `curves` / `fractions`: long frames with mode, method, fraction, (eps_255,) robust_pct, lo_pct, hi_pct;
    `ver`: report.verdict. Under `easycore notebook` they are written into its staging folder (report.staged) and
    published with the notebook's other outputs only when every cell ran (a late failure replaces none of them);
    the returned paths are the published ones."""
    from pathlib import Path

    from .report import staged

    out_dir = Path(out_dir)
    written = []
    cols = ["robust_pct", "lo_pct", "hi_pct"]
    for mode, d in curves.groupby("mode", sort=False):
        d = d.assign(series=[label(m) if m == FULL else f"{label(m)} f={f:g}" for m, f in zip(d.method, d.fraction)])
        d = d.drop_duplicates(["series", "eps_255"])        # the full-data curve comes with every fraction
        p = out_dir / f"robust_vs_eps_{mode}.csv"
        _write_csv(d[["eps_255"] + cols + ["series"]].round(3), staged(p))
        written.append(p)
    for mode, d in fractions.groupby("mode", sort=False):
        d = d.assign(series=[label(m) for m in d.method]).sort_values(["series", "fraction"], kind="stable")
        p = out_dir / f"robust_vs_fraction_{mode}.csv"
        _write_csv(d[["fraction"] + cols + ["series"]].round(3), staged(p))
        written.append(p)
    if len(ver) and "diff" in ver:
        rows = []
        for r in ver[ver.status == "ok"].itertuples():
            rows.append({"row": f"{r.family} {r.mode} f={r.fraction:g} {r.eps_255:g}/255", "comparator": r.comparator,
                         "diff": r.diff, "lo": r.lo, "hi": r.hi, "verdict": r.verdict})
        p = out_dir / "verdict.csv"
        _write_csv(pd.DataFrame(rows, columns=["row", "comparator", "diff", "lo", "hi", "verdict"]).round(2), staged(p))
        written.append(p)
    return written
