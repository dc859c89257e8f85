"""The report figures (easycore/plots.py): no overlapping text at the saved size, one fixed colour per method in
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

from easycore import plots, report  # noqa: E402
from easycore.config import load_params  # noqa: E402
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
    frames = {m: report.cell_frame(results, P, m, ["robust", "clean"], n_boot=200) for m in P.train.modes}
    curves = {m: {f: report.curves(results, P, m, f, n_boot=200) for f in report.fractions(P)} for m in P.train.modes}
    return P, ver, frames, curves


def _figures(ver, frames, curves):
    figs = {"verdict": plots.verdict_figure(ver, "The verdict: EasyCore minus its comparator, paired over 1000 test "
                                                 "images x 3 seeds", paper_claim=report.PAPER_CLAIM),
            "robust_vs_fraction": plots.fraction_figure(frames, "robust", "Robust accuracy vs coreset fraction")}
    for m in frames:
        figs[f"curves_{m}"] = plots.curves_figure(curves[m], f"{m}: robust accuracy vs Linf eps (worst case over "
                                                             "fgsm, pgd20, apgd_dlr (on survivors))")
        figs[f"accuracy_{m}"] = plots.accuracy_figure(frames[m], title=f"{m}: robust (worst case at 8/255 over fgsm, "
                                                                       "pgd20, apgd_dlr) and clean accuracy")
    return figs


def _colors_used(fig) -> set[str]:
    out = set()
    for ax in fig.axes:
        for ln in ax.get_lines():
            if ln.get_visible() and len(ln.get_xdata()):
                out.add(mcolors.to_hex(ln.get_color()))
    return out


def test_study_figures_have_no_overlapping_text_and_fixed_colours(study):
    P, ver, frames, curves = study
    figs = _figures(ver, frames, curves)
    try:
        for name, fig in figs.items():
            assert plots.text_overlaps(fig) == [], name
            if name != "verdict":                                         # (the verdict colours the comparator)
                assert plots.color("easycore") in _colors_used(fig), name   # EasyCore drawn, always in its colour
        # every method's colour is one colour, distinct from every other method's
        c = plots.colors()
        assert len(set(c.values())) == len(c) >= len(registry("methods"))
        assert (c["easycore"], c["random"], c["full"]) == ("#d62728", "#7f7f7f", "#000000")
        # the verdict draws every comparison with its comparator named, the primary family marked
        labels = [t.get_text() for ax in figs["verdict"].axes for t in ax.get_yticklabels()]
        ok = ver[ver.status == "ok"]
        assert len(labels) == len(ok)
        assert sum(lab.startswith("PRIMARY") for lab in labels) == (ok.family == "primary").sum()
        for c in ok.comparator:
            assert any(c.removeprefix("best other: ") in lab for lab in labels), c
        # curves: small multiples, at most 4 lines of data per panel (EasyCore, one method, random, full data)
        for ax in figs["curves_trades"].axes:
            if ax.get_visible():
                assert len([ln for ln in ax.get_lines() if len(ln.get_xdata()) > 1]) <= 4
    finally:
        for fig in figs.values():
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
