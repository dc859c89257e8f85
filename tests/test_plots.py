"""The report figures (easycore/report/plots.py): no overlapping text at the saved size, one fixed colour per method in
every figure, the verdict names each row's comparator; rendered from the study's committed per-image outcomes
(reports/study-small/outcomes.npz: 17 methods, 2 fractions, 2 modes, 3 seeds) and from a small synthetic set."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from easycore.report import plots
from easycore import report# noqa: E402
from easycore.config import load_params  # noqa: E402
from easycore.core.evaluate import eps_name  # noqa: E402
from easycore.registry import registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "reports/study-small/outcomes.npz"


@pytest.fixture(scope="module")
def study():
    if not STUDY.exists():
        pytest.skip("reports/study-small/outcomes.npz is not committed")
    P = load_params(ROOT / "params-study-small.yaml")
    results, _ = report.read_outcomes(STUDY, P)
    ver = report.verdict(results, P, labels=report.read_labels(STUDY))
    eps0 = {m: report.primary_eps(results, P, m)[0] for m in P.train.modes}
    frames = {m: report.cell_frame(results, P, m, ["robust", "clean", eps_name(eps0[m])], n_boot=200)
              for m in P.train.modes}
    curves = {m: {f: report.curves(results, P, m, f, n_boot=200) for f in report.fractions(P)} for m in P.train.modes}
    return P, ver, frames, curves, eps0


def _figures(ver, frames, curves, eps0=None):
    """The coresets notebook's figures, each drawn at its mode's primary eps (`eps0`: {mode: eps}; 8/255 without)."""
    eps0 = eps0 or {m: 8 / 255 for m in frames}
    key = {m: eps_name(e) if (frames[m].key == eps_name(e)).any() else "robust" for m, e in eps0.items()}
    figs = {"verdict": plots.verdict_figure(ver, "The verdict: EasyCore minus its comparator, paired over 1000 test "
                                                 "images, K replicates per row", paper_claim=report.PAPER_CLAIM),
            "robust_vs_fraction": plots.fraction_figure(frames, key, "Robust accuracy vs coreset fraction",
                                                        key_label={m: f"at {e * 255:g}/255" for m, e in eps0.items()})}
    for m in frames:
        figs[f"curves_{m}"] = plots.curves_figure(curves[m], f"{m}: robust accuracy vs Linf eps (worst case over "
                                                             "fgsm, pgd20, apgd_dlr (on survivors))", eps_mark=eps0[m])
        figs[f"accuracy_{m}"] = plots.accuracy_figure(
            frames[m], (key[m], "clean"), title=f"{m}: robust (worst case at {eps0[m] * 255:g}/255 over fgsm, pgd20, "
                                               "apgd_dlr) and clean accuracy",
            key_labels={key[m]: f"robust accuracy at {eps0[m] * 255:g}/255 (%)"})
    return figs


def _colors_used(fig) -> set[str]:
    out = set()
    for ax in fig.axes:
        for ln in ax.get_lines():
            if ln.get_visible() and len(ln.get_xdata()):
                out.add(mcolors.to_hex(ln.get_color()))
    return out


def test_study_figures_have_no_overlapping_text_and_fixed_colours(study):
    P, ver, frames, curves, eps0 = study
    assert {m: round(e * 255) for m, e in eps0.items()} == {"standard": 2, "trades": 4}   # the full-data rule
    figs = _figures(ver, frames, curves, eps0)
    try:
        for name, fig in figs.items():
            assert plots.text_overlaps(fig) == [], name
            assert plots.clipped_texts(fig) == [], name
            if name != "verdict":                                         # (the verdict colours the comparator)
                assert plots.color("easycore") in _colors_used(fig), name   # EasyCore drawn, always in its colour
        c = plots.colors()
        assert (c["easycore"], c["random"], c["full"]) == ("#d62728", "#7f7f7f", "#000000")
        # the verdict draws every comparison with its comparator named, the primary family marked
        labels = [t.get_text() for ax in figs["verdict"].axes for t in ax.get_yticklabels()]
        ok = ver[ver.status == "ok"]
        assert len(labels) == len(ok)
        assert sum(lab.startswith("PRIMARY") for lab in labels) == (ok.family == "primary").sum()
        for c in ok.comparator:
            assert any(c.removeprefix("best other: ") in lab for lab in labels), c
        # ... and its legend explains every mark it draws: fill, square, colours (each comparator), the claim
        legend = [t.get_text() for lg in figs["verdict"].legends for t in lg.get_texts()]
        for needle in ("filled: a difference found", "hollow: no detectable difference", "square, dotted: not "
                       "decidable", "minus random", "minus random_balanced", "minus best other (Hsu): deepfool_far",
                       "the paper's claim, up to +7 (standard), +5 (trades) points"):
            assert any(needle in t for t in legend), (needle, legend)
        # every accuracy row and curve panel says its replicate count: 10 for the primary pair, 3 for the survey
        rows = [t.get_text() for t in figs["accuracy_trades"].axes[0].get_yticklabels()]
        assert "EasyCore  f=0.1  (K=10)" in rows and "el2n  f=0.1  (K=3)" in rows, rows
        assert figs["accuracy_trades"].axes[0].get_xlabel() == "robust accuracy at 4/255 (%)"
        titles = [ax.get_title() for ax in figs["curves_trades"].axes if ax.get_visible()]
        assert "f=0.1: EasyCore (K=10) vs hard (K=3)" in titles
        # curves: small multiples, at most 4 lines of data per panel (EasyCore, one method, random, full data)
        for ax in figs["curves_trades"].axes:
            if ax.get_visible():
                assert len([ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]) <= 4
        # few panels fill their canvas (with clipped_texts above: the title fits the figure, no wide empty canvas)
        f = figs["curves_standard"]
        area = sum(ax.get_position().width * ax.get_position().height for ax in f.axes if ax.get_visible())
        assert len([ax for ax in f.axes if ax.get_visible()]) == 2 and area > 0.3, area
        # robust vs fraction: methods dodged by at most DODGE (of the distance between fractions) around each
        for ax in figs["robust_vs_fraction"].axes:
            xs = np.concatenate([ln.get_xdata() for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "")])
            assert len(xs) and np.abs(xs - np.round(xs)).max() <= plots.DODGE + 1e-9
    finally:
        for fig in figs.values():
            plt.close(fig)


def test_ciede2000_has_the_published_values():
    """Sharma, Wu, Dalal (2005), Table 1: pairs 1, 2, 7, 4, 9 and 34 of their test data."""
    lab1 = [[50, 2.6772, -79.7751], [50, 3.1571, -77.2803], [50, 2.5, 0], [50, -1.3802, -84.2814], [50, 0, 0],
            [2.0776, 0.0795, -1.1350]]
    lab2 = [[50, 0, -82.7485], [50, 0, -82.7485], [50, 0, -2.5], [50, 0, -82.7485], [50, -1, 2],
            [0.9033, -0.0636, -0.5514]]
    np.testing.assert_allclose(plots.delta_e(lab1, lab2), [2.0425, 2.8615, 4.3065, 1.0000, 2.3669, 0.9082], atol=1e-4)
    np.testing.assert_allclose(plots._lab(["#ffffff", "#000000"]), [[100, 0, 0], [0, 0, 0]], atol=1e-3)


def test_no_two_methods_share_a_colour_a_reader_could_confuse():
    """Every registered method (and the full-data reference) has one colour, grouped by family, no two closer
    than MIN_DELTA_E in CIEDE2000 and none closer than MIN_DELTA_E_WHITE to the white page."""
    c = plots.colors()
    assert set(registry("methods").names()) <= set(c) and len(set(c.values())) == len(c)
    d, a, b = plots.closest_pair(c)
    print(f"closest method colours: {a} / {b}, CIEDE2000 {d:.1f}")
    assert d >= plots.MIN_DELTA_E, (a, b, d)
    white = plots.delta_e(plots._lab(list(c.values())), plots._lab(["#ffffff"])[0])
    assert white.min() >= plots.MIN_DELTA_E_WHITE, list(c)[int(white.argmin())]
    assert set(plots.FAMILY_OF) == set(c)                       # every method in a family
    # the pairs issue 35 found near-identical before
    for x, y in (("hard", "deepfool"), ("random_balanced", "acs_craig"), ("easycore_balanced", "deepfool_far"),
                 ("el2n", "acs_gradmatch"), ("grand", "moderate")):
        assert plots.delta_e(*plots._lab([c[x], c[y]])) >= plots.MIN_DELTA_E, (x, y)


def test_overlap_heatmap_keeps_every_label_whole():
    names = ["default", "window first:3", "window last:3", "norm L1", "norm Linf", "squared L2", "balanced"]
    many = list(registry("methods").names(kind="static"))
    for idx in (names, many):
        j = pd.DataFrame(np.random.default_rng(0).uniform(0, 1, (len(idx), len(idx))), index=idx, columns=idx)
        fig = plots.overlap_figure(j, "Jaccard overlap between EasyCore variants (fraction 0.1)")
        try:
            assert plots.clipped_texts(fig) == []
            ticks = {t.get_text() for t in fig.axes[0].get_xticklabels()}   # rotated: their boxes are not them
            assert [p for p in plots.text_overlaps(fig) if not set(p) & ticks] == []
        finally:
            plt.close(fig)


def test_overlap_check_finds_overlapping_text():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_yticks(range(40))
    ax.set_yticklabels([f"a long label {i}" for i in range(40)])
    ax.set_title("title")
    fig.text(0.5, 0.98, "title two", ha="center")
    bad = plots.text_overlaps(fig)
    plt.close(fig)
    assert ("a long label 0", "a long label 1") in bad or len(bad) > 10


def _synthetic():
    rng = np.random.default_rng(0)
    methods = ["easycore", "random", "hard", "el2n"]
    rows, cur = [], []
    for m in methods + ["full"]:
        for f in ([1.0] if m == "full" else [0.1, 0.3]):
            for key in ("robust", "clean"):
                mu = rng.uniform(0.1, 0.4)
                rows.append({"method": m, "fraction": f, "key": key, "mean": mu, "lo": mu - 0.03, "hi": mu + 0.03,
                             "status": "ok"})
    frame = pd.DataFrame(rows)
    curves = {f: pd.DataFrame([{"method": m, "eps": e / 255, "mean": 0.4 - e / 30, "lo": 0.35 - e / 30,
                                "hi": 0.45 - e / 30} for m in methods + ["full"] for e in (0, 2, 4, 8)])
              for f in (0.1, 0.3)}
    base = {"mode": "standard", "method": "easycore", "status": "ok", "k": 5}
    ver = pd.DataFrame([base | {"fraction": f, "eps_255": e, "family": fam, "comparator": comp, "diff": d,
                                "lo": d - 2.0, "hi": d + 2.0, "verdict": word}
                        for f in (0.1, 0.3) for e in (2, 8)
                        for fam, comp, d, word in (("primary" if e == 2 else "secondary", "random", 2.5,
                                                    "EasyCore better"),
                                                   ("secondary", "best other: hard", 1.0, "no detectable difference"))])
    return frame, curves, ver


def test_synthetic_figures_readable_and_dvc_plot_csvs(tmp_path):
    frame, curves, ver = _synthetic()
    figs = _figures(ver, {"standard": frame}, {"standard": curves})
    try:
        for name, fig in figs.items():
            assert plots.text_overlaps(fig) == [], name
    finally:
        for fig in figs.values():
            plt.close(fig)
    cv = pd.concat([c.assign(mode="standard", fraction=f) for f, c in curves.items()])
    cv = cv.assign(eps_255=cv.eps * 255, robust_pct=100 * cv["mean"], lo_pct=100 * cv.lo, hi_pct=100 * cv.hi)
    rf = frame[frame.key == "robust"].assign(mode="standard")
    rf = rf.assign(robust_pct=100 * rf["mean"], lo_pct=100 * rf.lo, hi_pct=100 * rf.hi)
    written = plots.write_dvc_plots(cv, rf, ver, tmp_path)
    assert sorted(p.name for p in written) == ["robust_vs_eps_standard.csv", "robust_vs_fraction_standard.csv",
                                                "verdict.csv"]
    eps = pd.read_csv(tmp_path / "robust_vs_eps_standard.csv")
    assert list(eps.columns) == ["eps_255", "robust_pct", "lo_pct", "hi_pct", "series"]
    assert set(eps.series) == {f"{m} f={f}" for m in ("EasyCore", "random", "hard", "el2n") for f in (0.1, 0.3)} | \
        {"full data"}
    assert len(eps) == 9 * 4                                   # 9 series x 4 eps, the full-data curve once
    v = pd.read_csv(tmp_path / "verdict.csv")
    assert set(v.comparator) == {"best other: hard", "random"} and len(v) == len(ver)
