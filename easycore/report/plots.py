"""The report figures: one fixed colour per method in every figure, small multiples instead of many lines on one
axis, legends outside the data that explain every mark, and a check that no two text artists overlap at the saved
size.

Inputs are the frames `easycore.report` computes (`curves`, `cell_frame`, `verdict`), so a figure never computes a
number itself. Colours: `color(method)`, one per method, grouped by family (`FAMILIES`: EasyCore's AIGN in reds,
random in greys, the training-dynamics scores in blues and teals, the feature / coverage methods in greens and
browns, DeepFool in violets, ACS in pinks; the full-data reference black, dashed). No two registered methods are
closer than MIN_DELTA_E in CIEDE2000 (`delta_e`; tests/test_plots.py checks it), nor closer than MIN_DELTA_E_WHITE to
the white background. A method registered later gets a colour from a fallback list, in registry order.
"""
from __future__ import annotations

import itertools
import textwrap
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

EASYCORE, RANDOM, FULL = "easycore", "random", "full"
# family -> {method: colour}; the colours chosen by a greedy farthest-point search in CIEDE2000 (chroma < 60,
# L* in [18, 78]) around the three fixed ones (EasyCore red, random grey, full-data black), then assigned by hue
FAMILIES: dict[str, dict[str, str]] = {
    "AIGN (EasyCore's score)": {EASYCORE: "#d62728", "easycore_balanced": "#ffa596", "hard": "#690000"},
    "random": {RANDOM: "#7f7f7f", "random_balanced": "#bdbdbd"},
    "training dynamics": {"el2n": "#0f5a96", "grand": "#4b96ff", "forgetting": "#2dd2f0", "aum": "#009687",
                          "entropy": "#004b4b", "margin": "#78d278"},
    "features / coverage": {"ccs": "#78870f", "moderate": "#e1b44b", "kcenter": "#1e4b00", "herding": "#5a3c00"},
    "DeepFool distance": {"deepfool": "#8769c3", "deepfool_far": "#3c1e78"},
    "adaptive (ACS)": {"acs_craig": "#e15a96", "acs_gradmatch": "#960f5a"},
    "reference": {FULL: "#000000"},
}
_FIXED = {m: c for fam in FAMILIES.values() for m, c in fam.items()}
FAMILY_OF = {m: f for f, fam in FAMILIES.items() for m in fam}
# for methods registered after these (a user's own): distinct from the ones above where the list allows
_FALLBACK = ["#d2b4f0", "#3c1e78", "#e1b44b", "#2dd2f0", "#960f5a", "#78d278", "#5a3c00", "#4b96ff"]
MIN_DELTA_E = 15.0          # CIEDE2000 between any two method colours
MIN_DELTA_E_WHITE = 12.0    # CIEDE2000 between a method colour and the white background
LABEL = {EASYCORE: "EasyCore", RANDOM: "random", FULL: "full data"}


def _method_order() -> list[str]:
    try:
        from easycore.registry import registry

        return [m for m in registry("methods").names() if m not in _FIXED]
    except Exception:  # pragma: no cover - the registry always imports in this package
        return []


def colors(methods: Optional[Sequence[str]] = None) -> dict[str, str]:
    """{method: colour} for every registered method (and any extra names given, after them, in sorted order)."""
    order = _method_order()
    extra = sorted(set(methods or ()) - set(order) - set(_FIXED))
    out = dict(_FIXED)
    out.update({m: c for m, c in zip(order + extra, itertools.cycle(_FALLBACK))})
    return out


def color(method: str) -> str:
    return colors([method])[method]


def label(method: str) -> str:
    return LABEL.get(method, method)


def _lab(hex_colors: Sequence[str]) -> np.ndarray:
    """sRGB hex colours -> CIELAB (D65), [n, 3]."""
    import matplotlib.colors as mcolors

    rgb = np.array([mcolors.to_rgb(h) for h in hex_colors], dtype=np.float64)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def delta_e(lab1, lab2) -> np.ndarray:
    """CIEDE2000 colour difference between CIELAB colours (broadcasting over leading axes; Sharma, Wu, Dalal 2005)."""
    lab1, lab2 = np.asarray(lab1, dtype=np.float64), np.asarray(lab2, dtype=np.float64)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    cb = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(cb ** 7 / (cb ** 7 + 25.0 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p, h2p = np.degrees(np.arctan2(b1, a1p)) % 360, np.degrees(np.arctan2(b2, a2p)) % 360
    dl, dc = l2 - l1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0.0, dh)
    dhh = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    lbp, cbp = (l1 + l2) / 2, (c1p + c2p) / 2
    hs = h1p + h2p
    hbp = np.where(np.abs(h1p - h2p) > 180, np.where(hs < 360, (hs + 360) / 2, (hs - 360) / 2), hs / 2)
    hbp = np.where(c1p * c2p == 0, hs, hbp)
    t = (1 - 0.17 * np.cos(np.radians(hbp - 30)) + 0.24 * np.cos(np.radians(2 * hbp))
         + 0.32 * np.cos(np.radians(3 * hbp + 6)) - 0.20 * np.cos(np.radians(4 * hbp - 63)))
    dth = 30 * np.exp(-(((hbp - 275) / 25) ** 2))
    rc = 2 * np.sqrt(cbp ** 7 / (cbp ** 7 + 25.0 ** 7))
    sl = 1 + 0.015 * (lbp - 50) ** 2 / np.sqrt(20 + (lbp - 50) ** 2)
    sc, sh = 1 + 0.045 * cbp, 1 + 0.015 * cbp * t
    rt = -np.sin(np.radians(2 * dth)) * rc
    return np.sqrt((dl / sl) ** 2 + (dc / sc) ** 2 + (dhh / sh) ** 2 + rt * (dc / sc) * (dhh / sh))


def closest_pair(palette: Mapping[str, str]) -> tuple[float, str, str]:
    """(CIEDE2000, a, b) of the two closest colours of {name: colour}."""
    names = list(palette)
    lab = _lab([palette[n] for n in names])
    d = delta_e(lab[:, None], lab[None])
    np.fill_diagonal(d, np.inf)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return float(d[i, j]), names[i], names[j]


def family_handles(methods: Sequence[str], *, marker: str = "o", counts: Optional[Mapping[str, str]] = None):
    """Legend (handles, labels) for `methods` grouped by family: a bold-less header line per family (no mark) and
    one entry per method in its colour; `counts`: {method: text} appended to a label (e.g. the replicates)."""
    from matplotlib.lines import Line2D

    handles, labels = [], []
    fams = list(dict.fromkeys(FAMILY_OF.get(m, "other") for m in methods))
    for fam in fams:
        members = [m for m in methods if FAMILY_OF.get(m, "other") == fam]
        handles.append(Line2D([], [], ls="none", marker=None))
        labels.append(fam)
        for m in members:
            ls = "--" if m == FULL else "-"
            handles.append(Line2D([], [], color=color(m), marker=None if m == FULL else marker, ms=4, lw=1.4, ls=ls))
            labels.append(f"  {label(m)}" + (f" {counts[m]}" if counts and m in counts else ""))
    return handles, labels


def wrap(text: str, fig, fontsize: float = 10) -> str:
    """`text` wrapped to the width of `fig` (about 0.55 * fontsize points per character)."""
    width = max(30, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    return textwrap.fill(text, width)


def _style(ax) -> None:
    ax.grid(True, lw=0.5, alpha=0.5)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)


def _pct(x):
    return 100 * np.asarray(x, dtype=float)


def _k_text(d: pd.DataFrame) -> str:
    """'K=10' from a frame's n_seeds column ('' without one)."""
    if "n_seeds" not in d or d["n_seeds"].isna().all():
        return ""
    ks = sorted({int(k) for k in d["n_seeds"].dropna()})
    return "K=" + "/".join(map(str, ks))


# ----------------------------------------------------------------------------- robustness curves (small multiples)
def curves_figure(curves: Mapping[float, pd.DataFrame], title: str = "", *, ncols: int = 4,
                  eps_mark: Optional[float] = None):
    """Robust accuracy vs eps for one training mode: small multiples, one panel per (fraction, method other than
    EasyCore), each showing EasyCore (red), that method (its colour), random (grey, thin, when it is not the
    panel's method) and the full-data reference (black, dashed), with 95 % CI bands for EasyCore and the panel's
    method; each panel's title gives both methods' replicate counts K. `curves`: {fraction: report.curves(...) frame
    (method, eps, mean, lo, hi, n_seeds)}. `eps_mark`: the mode's primary eps (a dotted vertical line). All panels
    share the axes. A row per fraction when a fraction has more than two other methods; else the panels flow in
    one grid (no small panels on a large canvas)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    blocks = []
    for f, cur in curves.items():
        others = [m for m in dict.fromkeys(cur.method) if m not in (EASYCORE, FULL)]
        blocks.append((f, cur, others or [None]))
    panels = [(f, cur, m) for f, cur, others in blocks for m in others]
    if blocks and max(len(o) for _, _, o in blocks) > 2:        # a row (or rows) per fraction
        per_row = min(ncols, max(len(o) for _, _, o in blocks))
        slots, r = [], 0
        for f, cur, others in blocks:
            slots += [(r + k // per_row, k % per_row) for k in range(len(others))]
            r += -(-len(others) // per_row)
        rows = r
    else:                                                       # few panels: one grid
        per_row = max(1, min(ncols, len(panels)))
        rows = max(1, -(-len(panels) // per_row))
        slots = [(k // per_row, k % per_row) for k in range(len(panels))]
    fig, axes = plt.subplots(rows, per_row, figsize=(max(3.3 * per_row, 6.4), 2.5 * rows), squeeze=False,
                             sharex=True, sharey=True)
    used = set(slots)
    for (f, cur, m), (i, j) in zip(panels, slots):
        ax = axes[i][j]
        _style(ax)
        by = {name: d.sort_values("eps") for name, d in cur.groupby("method", sort=False)}
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
        if eps_mark is not None:
            ax.axvline(eps_mark * 255, color="#444444", ls=":", lw=1)
        ke = _k_text(by.get(EASYCORE, pd.DataFrame()))
        km = _k_text(by.get(m, pd.DataFrame())) if m else ""
        ax.set_title(f"f={f:g}: EasyCore{f' ({ke})' if ke else ''} vs {label(m) if m else '-'}"
                     f"{f' ({km})' if km else ''}", fontsize=8.5, color=color(m) if m else "black")
    for i in range(rows):
        for j in range(per_row):
            if (i, j) not in used:
                axes[i][j].set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("robust acc. (%)", fontsize=9)
    for i, j in used:                   # the x label under the lowest panel of each column
        axes[i][j].tick_params(labelsize=8, labelbottom=True)
        if (i + 1, j) not in used:
            axes[i][j].set_xlabel("Linf eps (x255)", fontsize=9)
    handles = [Line2D([], [], color=color(EASYCORE), lw=2, marker="o", ms=3, label="EasyCore (band: 95% CI)"),
               Line2D([], [], color="#555555", lw=1.6, marker="o", ms=3, label="the panel's method, in its colour"),
               Line2D([], [], color=color(RANDOM), lw=1, label="random"),
               Line2D([], [], color=color(FULL), lw=1, ls="--", label="full data")]
    if eps_mark is not None:
        handles.append(Line2D([], [], color="#444444", lw=1, ls=":", label=f"primary eps {eps_mark * 255:g}/255"))
    ncol = len(handles) if fig.get_figwidth() >= 11 else 3 if fig.get_figwidth() >= 8 else 2
    title_in = 0.22 * (1 + wrap(title, fig).count("\n")) + 0.1 if title else 0.0
    legend_in = 0.2 * -(-len(handles) // ncol) + 0.15
    fig.set_figheight(fig.get_figheight() + title_in + legend_in)   # the panels keep their size
    h = fig.get_figheight()
    fig.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - title_in / h))
    fig.tight_layout(rect=(0, 0, 1, 1 - (title_in + legend_in) / h))    # before the title: it has its room
    if title:
        fig.suptitle(wrap(title, fig), fontsize=10, y=1 - 0.05 / h, va="top")
    return fig


# ----------------------------------------------------------------------------- robust accuracy vs fraction
DODGE = 0.12      # the largest offset of a method from its fraction (in units of the distance between fractions)


def fraction_figure(frames: Mapping[str, pd.DataFrame], key="robust", title: str = "", *,
                    key_label: Optional[Mapping[str, str]] = None):
    """`key` accuracy vs coreset fraction, one panel per training mode (shared y): a line per method run at more
    than one fraction (methods run at one fraction are in the accuracy figures), the full-data reference as a
    dashed line with its band, 95 % CI bars. The methods are dodged by at most DODGE around each fraction (in units
    of the distance between fractions). `frames`: {mode: report.cell_frame(...) (method, fraction, key, mean, lo,
    hi, n_seeds, status)}; `key`: one key, or {mode: key} (each mode's primary eps); `key_label`: {mode: text} for
    the panel titles. The legend names each method with its replicate count K."""
    import matplotlib.pyplot as plt

    modes = list(frames)
    keys = key if isinstance(key, Mapping) else {m: key for m in modes}
    fig, axes = plt.subplots(1, len(modes), figsize=(3.6 * len(modes) + 2.6, 3.6), squeeze=False, sharey=True)
    seen: dict[str, object] = {}
    skipped: set[str] = set()
    for ax, mode in zip(axes[0], modes):
        _style(ax)
        fr = frames[mode]
        fr = fr[(fr.key == keys[mode]) & (fr.status == "ok")] if "status" in fr else fr[fr.key == keys[mode]]
        fracs = sorted(fr[fr.method != FULL].fraction.unique())
        counts = fr[fr.method != FULL].groupby("method", sort=False).fraction.nunique()
        methods = [m for m in dict.fromkeys(fr.method) if m == FULL or counts.get(m, 0) > 1 or len(fracs) == 1]
        skipped |= set(counts.index) - set(methods)
        drawn = [m for m in methods if m != FULL]
        step = DODGE * 2 / max(len(drawn) - 1, 1) if len(drawn) > 1 else 0.0
        for m in methods:
            d = fr[fr.method == m].sort_values("fraction")
            k = _k_text(d)
            name = f"{label(m)}{f' ({k})' if k else ''}"
            if m == FULL:
                y = float(_pct(d["mean"].iloc[0]))
                h = ax.axhline(y, color=color(FULL), ls="--", lw=1)
                ax.axhspan(float(_pct(d.lo.iloc[0])), float(_pct(d.hi.iloc[0])), color=color(FULL), alpha=0.06, lw=0)
                seen.setdefault(f"{name}, band: 95% CI", h)
                continue
            j = drawn.index(m)
            x = np.array([fracs.index(f) for f in d.fraction]) + (j * step - DODGE if len(drawn) > 1 else 0.0)
            h = ax.errorbar(x, _pct(d["mean"]), yerr=[_pct(d["mean"]) - _pct(d.lo), _pct(d.hi) - _pct(d["mean"])],
                            color=color(m), marker="o", ms=5 if m in (EASYCORE, RANDOM) else 4,
                            lw=2 if m == EASYCORE else 1.2, ls="-" if len(d) > 1 else "none", capsize=2,
                            zorder=3 if m == EASYCORE else 2)
            seen.setdefault(name, h)
        ax.set_xticks(range(len(fracs)))
        ax.set_xticklabels([f"{f:g}" for f in fracs], fontsize=8)
        ax.set_xlim(-0.5, len(fracs) - 0.5)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("coreset fraction", fontsize=9)
        ax.set_title(f"{mode}: {key_label[mode]}" if key_label and mode in key_label else mode, fontsize=9.5)
    axes[0][0].set_ylabel("robust accuracy (%), 95% CI", fontsize=9)
    lg = fig.legend(list(seen.values()), list(seen), loc="center right", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                    frameon=False, title="dots: mean; bars: 95% CI", title_fontsize=8)
    if skipped:
        fig.text(0.01, 0.005, wrap(f"Not drawn (one fraction each, see the accuracy figures): {len(skipped)} methods.",
                                   fig, 7.5), fontsize=7.5, color="#555555", ha="left", va="bottom")
    if title:
        fig.suptitle(wrap(title, fig), fontsize=10)
    fig.canvas.draw()                    # the legend's width decides the panels' room, inside the canvas
    right = 1 - (lg.get_window_extent().width + 8) / (fig.get_figwidth() * fig.dpi)
    fig.tight_layout(rect=(0, 0.05 if skipped else 0, right, 1))
    return fig


# ----------------------------------------------------------------------------- accuracy per method (dot + CI)
def accuracy_figure(frame: pd.DataFrame, keys: Sequence[str] = ("robust", "clean"), title: str = "", *,
                    key_labels: Optional[Mapping[str, str]] = None):
    """Mean [95 % CI] per method x fraction for each of `keys` (one panel each, methods on a shared y axis in the
    frame's order, coloured by method, each row labelled with its replicate count K); the full-data reference as a
    dashed vertical line. `key_labels`: {key: axis label} (e.g. {'eps2': 'robust accuracy at 2/255 (%)'})."""
    import matplotlib.pyplot as plt

    ok = frame[frame.status == "ok"] if "status" in frame else frame
    rows = ok[(ok.key == keys[0]) & (ok.method != FULL)][["method", "fraction"]].drop_duplicates()
    rows = list(rows.itertuples(index=False, name=None))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys) + 2.0, 1.0 + 0.26 * max(len(rows), 4)),
                             squeeze=False, sharey=True)
    if title:                            # room for the title's lines at the width it is wrapped to
        fig.set_figheight(fig.get_figheight() + 0.2 * (1 + wrap(title, fig).count("\n")))
    kk = {}
    for ax, key in zip(axes[0], keys):
        _style(ax)
        d = ok[ok.key == key].set_index(["method", "fraction"])
        for i, (m, f) in enumerate(rows):
            if (m, f) not in d.index:
                continue
            r = d.loc[(m, f)]
            if "n_seeds" in r and pd.notna(r["n_seeds"]):
                kk[(m, f)] = int(r["n_seeds"])
            ax.errorbar(_pct(r["mean"]), i, xerr=[[_pct(r["mean"] - r.lo)], [_pct(r.hi - r["mean"])]], fmt="o",
                        color=color(m), ms=5 if m == EASYCORE else 4, capsize=2)
        full = ok[(ok.key == key) & (ok.method == FULL)]
        if len(full):
            ax.axvline(float(_pct(full["mean"].iloc[0])), color=color(FULL), ls="--", lw=1)
        ax.set_xlabel((key_labels or {}).get(key, f"{key} accuracy (%)"), fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0][0].set_yticks(range(len(rows)))
    axes[0][0].set_yticklabels([f"{label(m)}  f={f:g}" + (f"  (K={kk[(m, f)]})" if (m, f) in kk else "")
                                for m, f in rows], fontsize=8)
    for t, (m, _) in zip(axes[0][0].get_yticklabels(), rows):
        t.set_color(color(m))
    axes[0][0].invert_yaxis()
    if title:
        fig.suptitle(wrap(title, fig), fontsize=10)
    full = ok[(ok.method == FULL) & (ok.key == keys[0])]
    kf = f" (K={int(full.n_seeds.iloc[0])})" if len(full) and "n_seeds" in full and pd.notna(full.n_seeds.iloc[0]) else ""
    fig.text(0.99, 0.005, f"dots: mean; bars: 95% CI; K: replicates; dashed: full data{kf}", ha="right",
             va="bottom", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.25 / fig.get_figheight(), 1, 1))
    return fig


# ----------------------------------------------------------------------------- the verdict
def _decided(word: str) -> bool:
    return str(word).split(" (K = ")[0].endswith(("better", "worse", "better than every other",
                                                  "worse than the best other"))


def verdict_figure(ver: pd.DataFrame, title: str = "", *, paper_claim: Optional[Mapping[str, float]] = None):
    """Every comparison of the verdict (`report.verdict`), paired difference in points with the interval that
    decides it: a panel per training mode, one row per comparison; the primary family first (bold labels), then the
    secondary ones. Colour: the comparator (random grey, ...). Filled circle: a difference found; hollow circle: none
    detectable; hollow square on a dotted bar: not decidable (a model at or below a constant classifier); a cross:
    no interval (one replicate). The paper's claim for each mode as a dotted line. The legend explains each mark."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    ver = ver[(ver["status"] == "ok") & ver["diff"].notna()] if len(ver) else ver
    modes = list(dict.fromkeys(ver["mode"])) if len(ver) else []
    nrow = max([(ver["mode"] == m).sum() for m in modes] or [1])
    fig, axes = plt.subplots(len(modes) or 1, 1, squeeze=False, sharex=True,
                             figsize=(9.0, (0.6 + 0.28 * nrow) * max(len(modes), 1) + 1.6))
    comparators: dict[str, str] = {}
    kinds = set()
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
            best = str(r["comparator"]).startswith("best other: ")
            comparators.setdefault(f"best other (Hsu): {label(who)}" if best else label(who), c)
            decided = _decided(r["verdict"])
            none = str(r["verdict"]).split(" (K = ")[0] == "no detectable difference"
            if pd.notna(r.get("lo")) and (decided or none):
                kinds.add("found" if decided else "none")
                ax.errorbar(r["diff"], k, xerr=[[r["diff"] - r["lo"]], [r["hi"] - r["diff"]]], fmt="o", color=c,
                            mfc=c if decided else "white", ms=5.5, capsize=2)
            elif pd.notna(r.get("lo")):
                kinds.add("undecidable")
                eb = ax.errorbar(r["diff"], k, xerr=[[r["diff"] - r["lo"]], [r["hi"] - r["diff"]]], fmt="s", color=c,
                                 mfc="white", ms=5, capsize=2)
                eb[-1][0].set_linestyle(":")
            else:
                kinds.add("no interval")
                ax.plot(r["diff"], k, "x", color=c, ms=6, mew=1.5)
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
    g = "#444444"
    marks = {"found": Line2D([], [], color=g, marker="o", ls="none", label="filled: a difference found"),
             "none": Line2D([], [], color=g, marker="o", mfc="white", ls="none", label="hollow: no detectable difference"),
             "undecidable": Line2D([], [], color=g, marker="s", mfc="white", ls=":",
                                   label="square, dotted: not decidable (a model at or below chance)"),
             "no interval": Line2D([], [], color=g, marker="x", ls="none", label="cross: no interval (one replicate)")}
    handles = [marks[k] for k in ("found", "none", "undecidable", "no interval") if k in kinds]
    handles += [Line2D([], [], color=c, lw=1.5, marker="o", label=f"minus {name}") for name, c in comparators.items()]
    if paper_claim and any(m in paper_claim for m in modes):
        claims = ", ".join(f"+{paper_claim[m]:g} ({m})" for m in modes if m in paper_claim)
        handles.append(Line2D([], [], color="black", ls=":", label=f"dotted: the paper's claim, up to {claims} points"))
    ncol = 2
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7.5, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(wrap(title, fig), fontsize=10)
    rows = -(-len(handles) // ncol)
    fig.tight_layout(rect=(0, (0.2 * rows + 0.15) / fig.get_figheight(), 1, 1))
    return fig

# ----------------------------------------------------------------------------- overlap of coresets (Jaccard)
def overlap_figure(matrix: pd.DataFrame, title: str = "", *, vmin: float = 0.0, vmax: float = 1.0,
                   cmap: str = "YlGnBu", fmt: str = "{:.2f}", label_colors: Optional[Mapping[str, str]] = None):
    """A square matrix (Jaccard overlap of coresets, a rank correlation) as an annotated heatmap: labels on the left
    and below (rotated 45 degrees), sized so every label and cell value fits at the saved size. `label_colors`:
    {row / column name: colour} (a method's colour)."""
    import matplotlib.pyplot as plt

    n = len(matrix)
    longest = max([len(str(x)) for x in matrix.index] + [1])
    label_in = 0.075 * longest + 0.3                     # room for the longest label at fontsize 8
    cell = 0.5 if n <= 12 else 0.42
    fig, ax = plt.subplots(figsize=(label_in + cell * n + 1.4, label_in * 0.75 + cell * n + 0.8))
    im = ax.imshow(matrix.to_numpy(dtype=float), vmin=vmin, vmax=vmax, cmap=cmap, aspect="equal")
    norm = im.norm
    for i in range(n):
        for j in range(n):
            v = float(matrix.iat[i, j])
            if np.isfinite(v):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7 if n <= 12 else 6,
                        color="white" if norm(v) > 0.6 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels([str(c) for c in matrix.columns], rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticklabels([str(r) for r in matrix.index], fontsize=8)
    if label_colors:
        for t in list(ax.get_xticklabels()) + list(ax.get_yticklabels()):
            t.set_color(label_colors.get(t.get_text(), "black"))
    ax.tick_params(length=0)
    for sp in ax.spines.values():
        sp.set_visible(False)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=8)
    if title:
        ax.set_title(wrap(title, fig, 10), fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- checks
def _drawn_texts(fig) -> list:
    """(text, window bbox) of every visible, non-empty text artist drawn at the figure's size and dpi (tick labels
    outside the view limits exist but are not drawn: left out)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks, drawn = set(), set()
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
        boxes.append((t.get_text(), bb))
    return boxes


def text_overlaps(fig, *, pad: float = 0.0) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty text artists (titles, labels, tick labels, legend entries, annotations) whose
    rendered bounding boxes intersect at the figure's size and dpi: [] for a figure a reader can read."""
    boxes = [(t, bb.expanded(1 + pad, 1 + pad)) for t, bb in _drawn_texts(fig)]
    out = []
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1:
            out.append((ta, tb))
    return out


def clipped_texts(fig) -> list[str]:
    """Drawn text artists that reach outside the figure's canvas at its size and dpi (what a figure shown or saved
    at its own size cuts off): [] for a figure whose every label is whole."""
    w, h = fig.canvas.get_width_height()
    return [t for t, bb in _drawn_texts(fig) if bb.x0 < -1 or bb.y0 < -1 or bb.x1 > w + 1 or bb.y1 > h + 1]


# ----------------------------------------------------------------------------- CSVs for `dvc plots`
def _write_csv(df: pd.DataFrame, path) -> None:
    import io
    from pathlib import Path

    from easycore.store import atomic_path

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

    from easycore.report import staged

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
