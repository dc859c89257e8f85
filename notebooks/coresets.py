# %% [markdown]
# # Coresets: robustness tables, the verdict and robustness curves
#
# Models trained on each coreset (static methods scored by the main proxy, adaptive ACS methods, the full-data
# reference) under every training mode, evaluated on the same test images (paired). Cells are mean [95 % CI] with the
# whole-pipeline replicate as the unit (over test images alone where a cell has one replicate); robust accuracy is the
# per-image worst case over every attack run at that eps or below. The verdict: the pre-registered primary family
# (report.primary) with Holm over it alone, and secondary comparisons labelled so.

# %% tags=["parameters"]
params_path = "params.yaml"
n_boot = 10000
outcomes_path = None   # an export_outcomes file (e.g. reports/outcomes.npz): re-render without runs/ (no pass counts)

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from easycore.report import conclude, headline, plots
from easycore import report
from easycore.config import load_params
from easycore.core.evaluate import ATTACKS, eps_name
from easycore.store import read_json

sns.set_theme(style="whitegrid", context="notebook")
P = load_params(params_path)
FIG, TAB = report.out_dirs(P, "coresets")
# the data's description: the prepared data's, or (rendering from an outcomes file on a fresh clone) the one the
# outcomes file carries
info = (read_json("data/prepared/info.json") if not outcomes_path or os.path.exists("data/prepared/info.json")
        else report.outcomes_data(outcomes_path))
if outcomes_path:
    results, aa_outcomes = report.read_outcomes(outcomes_path, P)
    display(Markdown(f"Rendered from `{outcomes_path}` (every run's per-image outcomes), not from `runs/`: the "
                     "training pass counts and per-run metrics are not in that file."))
else:
    results, aa_outcomes = report.load_results(P), None
missing = [f"{r.run.key}: {r.status}" for r in results if not r.ok]
display(Markdown(f"{len(results)} runs declared, {len(results) - len(missing)} evaluated." +
                 ("" if not missing else " **Missing:** " + "; ".join(missing))))
runs_df = report.runs_frame(results)
report.save_table(runs_df.set_index(["scores", "method", "fraction", "mode", "seed"]), "runs", out_dir=TAB,
                  caption="*Every declared run: accuracies (fractions in [0, 1]), sample passes.*")
# wall times are a log beside the runs, not a report output (a re-run gives other ones): runs/timings/report/
report.save_table(report.timing_table(results), "coresets_train_minutes", out_dir="runs/timings/report",
                  caption="*Mean train wall time per run (minutes), by mode and method.*");
keys = ["clean"] + [ATTACKS.get(a).label(P.eval) for a in P.eval.attacks] + ["robust"]
labels = report.read_labels(outcomes_path) if outcomes_path else report.attacked_labels(P)

# %%
for mode in P.train.modes:
    frame = report.cell_frame(results, P, mode, keys, n_boot=n_boot)
    table = report.accuracy_table(results, P, mode, keys, n_boot=n_boot, frame=frame, labels=labels)
    cap = report.scale_caption(P, info, what=f"{mode} training. ")
    report.save_table(table, f"coresets_{mode}", caption=cap, out_dir=TAB, csv=frame)
    display(Markdown(f"### {mode}\n\n" + report.to_markdown(table, cap)))

# %% [markdown]
# ## The verdict
# The unit of replication is the whole pipeline (proxy seed -> scores -> selection -> training seed): a comparison is
# the paired difference over the replicates both methods hold and the same test images, with a t interval whose
# variance counts replicates and images (crossed random effects; `easycore/inference.py`).
#
# **Primary** (`report.primary`): the primary method minus its comparator for every training mode at the primary
# fractions (`report.primary.fractions`, every replicate), at the mode's primary eps (`eval.mode_eps`,
# `report.primary.eps`, or the rule: the largest eps where the full-data model keeps `min_full_robust` robust
# accuracy). Holm over this family alone; the interval printed beside each verdict is the one that decided it (at its
# Holm step's level; a Holm-step interval, not a simultaneous one): its target is new test images AND new replicates.
# Beside it, at the same level, the interval for these test images only (new replicates). The MDE is the difference
# the cell could detect at the stated power. **Secondary** (unadjusted 95 %, labelled so): the pair at the other
# fractions, other eps, the class-balanced pair, and EasyCore against the best other method (Hsu's comparison with the
# best, simultaneous over the m methods printed). Rows with fewer than 5 replicates are indicative. A cell whose
# models are at or below a constant classifier on the attacked images is uninformative, never ranked.

# %%
ver = report.verdict(results, P, labels=labels)
cap = report.scale_caption(P, info, what="Verdict. ")
report.save_table(report.verdict_markdown(ver, "primary"), "verdict_primary", caption=cap, out_dir=TAB, index=False)
report.save_table(report.verdict_markdown(ver, "secondary"), "verdict_secondary", caption=cap + " Secondary: unadjusted.",
                  out_dir=TAB, index=False)
report.save_table(report.verdict_markdown(ver), "verdict", caption=cap, out_dir=TAB, index=False, csv=ver.round(4))
report.save_table(report.verdict_headline(ver), "verdict_headline", out_dir=TAB, index=False,
                  caption="*The primary family (pre-registered): EasyCore minus random, robust accuracy at each mode's "
                          "primary eps, points; the interval that decided the word (new images and replicates) and the "
                          "one for these test images.*")
display(Markdown(report.to_markdown(report.verdict_markdown(ver, "primary"), "**Primary family** " + cap, index=False)))
display(Markdown(report.to_markdown(report.verdict_markdown(ver, "secondary"), "**Secondary** (unadjusted)", index=False)))
# the one DVC metric holds the headline only (easycore/report/headline.py); every cell goes to a plain output
report.save_json(headline.headline(ver, P, n_test=min(P.eval.n_for(True), info["test"]["n"])), f"{P.report.dir}/summary.json")
report.save_json(report.summary(results, P), TAB / "summary_full.json")
if not outcomes_path:
    report.export_outcomes(results, f"{P.report.dir}/outcomes.npz", labels=labels, scale=cap, data=info)
print(f"wrote {P.report.dir}/summary.json and {P.report.dir}/outcomes.npz (every run's per-image outcomes: "
      "report.read_outcomes recomputes the verdict without retraining)")

# %% [markdown]
# ### The regime: where every primary model stands
# Clean and robust accuracy of every model of the primary family and of the full-data reference, with each model's
# weakest class; then the conditions a comparison needs to mean something (issue 31: full data >= 65 % / 50 % clean,
# the comparator's coresets >= 45 % / 35 % with no class below 15 %), measured, whichever way they fall.

# %%
if labels is not None:
    regime = report.regime_table(results, P, labels, classes=info.get("classes"))
    if not regime.empty:
        checks = report.regime_checks(regime, P)
        report.save_table(regime.round(2), "regime_models", out_dir=TAB, index=False,
                          caption="*Every primary and full-data model: clean and robust accuracy (%, at its mode's "
                                  "primary eps) on its evaluated images, and its weakest class.*")
        report.save_table(checks, "regime_checks", out_dir=TAB, index=False,
                          caption="*The regime conditions (issue 31 item 1), measured.*")
        display(checks)

# %% [markdown]
# ### Per class, for the primary cells (pre-specified)
# The regime: clean and robust accuracy per class of both methods (mean over their replicates). Then the analysis
# fixed before the run (`report.per_class_analysis`): the class x method interaction test with the replicate as the
# unit (do the classes disagree about the difference? target: these test images), every class's difference with
# intervals simultaneous over the classes, and the difference without each class in turn (every class, intervals
# simultaneous over the leave-outs, each judged against 0).

# %%
if labels is not None and len(ver):
    pc = report.per_class_table(results, P, ver, labels, classes=info.get("classes"))
    if not pc.empty:
        report.save_table(pc.round(2), "verdict_per_class", out_dir=TAB, index=False,
                          caption="*Per class, every primary cell: clean and robust accuracy (%) of both methods "
                                  "(mean over their replicates), robust difference in points.*")
        display(pc.round(1))
    tests, per = report.per_class_analysis(results, P, ver, labels, classes=info.get("classes"))
    if not tests.empty:
        report.save_table(tests.round(4), "per_class_tests", out_dir=TAB, index=False,
                          caption="*Class x method interaction (repeated-measures ANOVA over the replicates, "
                                  "Greenhouse-Geisser; target: these test images) and how many per-class and "
                                  "leave-one-class-out intervals exclude 0, per primary cell.*")
        report.save_table(per.round(2), "per_class_intervals", out_dir=TAB, index=False,
                          caption="*Per class (points): the class's difference with its interval simultaneous over "
                                  "the classes; the difference without the class (leave-one-class-out) with its "
                                  "interval simultaneous over the leave-outs. Target: new images and replicates.*")
        display(tests.round(4))

# %%
n_img = min(P.eval.n_for(True), info["test"]["n"])          # the primary family's; other groups: eval.n_test
eps_of = {mode: f"{P.eval.for_mode(mode).eps * 255:g}/255" for mode in P.train.modes}   # each mode's headline eps
# the figures are drawn at each mode's primary eps (report.primary_eps: eval.mode_eps, report.primary.eps or the rule)
eps0 = {mode: report.primary_eps(results, P, mode)[0] for mode in P.train.modes}
eps_key = {mode: eps_name(e) if e == e else "robust" for mode, e in eps0.items()}      # nan (missing runs): eval eps
eps_txt = {mode: f"{e * 255:g}/255" if e == e else eps_of[mode] for mode, e in eps0.items()}
if len(ver) and (ver.status == "ok").any():
    fig = plots.verdict_figure(ver, f"The verdict: paired differences over up to {n_img} test images, K replicates per "
                               f"row; robust = worst case over every attack run", paper_claim=report.PAPER_CLAIM)
    report.save_figure(fig, "verdict", P.report.formats, out_dir=FIG); plt.show()

# %% [markdown]
# ## Secondary: every method against EasyCore and random at the headline eps
# Paired on the replicates both hold; unadjusted 95 % intervals (secondary).

# %%
comps = []
for mode in P.train.modes:
    for f in report.fractions(P):
        for ref in ("easycore", "random"):
            comps.append(report.comparisons(results, P, mode, f, "robust", reference=ref, labels=labels))
comps = pd.concat([c for c in comps if not c.empty], ignore_index=True) if any(not c.empty for c in comps) else pd.DataFrame()
if not comps.empty:
    report.save_table(comps.round(4), "comparisons", out_dir=TAB, index=False,
                      caption=f"*Secondary (unadjusted): paired differences in robust accuracy at each mode's "
                              f"headline eps (points).*")
    display(comps.round(3))

# %% [markdown]
# ## Does the ranking survive AutoAttack?
# Standard AutoAttack (torchattacks) at the headline eps on `eval.autoattack_n` test images spread over the classes
# (the first of each class, then the second, ...), for the models
# the verdict compares (`eval.autoattack_modes`; the `autoattack` stage). Robust accuracy on those images before
# (the evaluation's attacks) and after adding AutoAttack, pooled over seeds.

# %%
aa = report.autoattack_table(P, outcomes=aa_outcomes)
if aa.empty:
    display(Markdown("AutoAttack was not run (`eval.autoattack_modes` is empty)."))
else:
    report.save_table(aa, "autoattack", out_dir=TAB, index=False,
                      caption=f"*AutoAttack (standard, torchattacks) at eps {', '.join(f'{m} {e}' for m, e in eps_of.items())} on "
                              f"{P.eval.autoattack_n} test images spread over the classes: robust accuracy before / after, mean [95% CI] in %.*")
    display(aa)

# %% [markdown]
# ## Robust accuracy vs eps and vs the coreset fraction
# Small multiples: each panel is EasyCore (red) against one other method (its colour, the same in every figure),
# with random (grey) and the full-data reference (black, dashed) behind; bands are 95 % CIs. The curves and the
# fraction figure's numbers are also written as CSVs under `<report.dir>/plots/`, which dvc.yaml declares as plots
# (`dvc plots show`, `dvc plots diff`).

# %%
attacks = ", ".join(keys[1:-1] + [f"{a} (on survivors)" for a in P.eval.strong])
curve_rows = []
for mode in P.train.modes:
    cur = {f: report.curves(results, P, mode, f, n_boot=2000) for f in report.fractions(P)}
    curve_rows += [c.assign(mode=mode, fraction=f) for f, c in cur.items() if not c.empty]
    if max([c.eps.nunique() for c in cur.values() if not c.empty] or [0]) >= 3:   # eval.eps_grid: a curve to draw
        fig = plots.curves_figure(cur, f"{mode}: robust accuracy vs Linf eps (worst case over {attacks}), up to "
                                       f"{n_img} test images; K: replicates",
                                  eps_mark=eps0[mode] if eps0[mode] == eps0[mode] else None)
        report.save_figure(fig, f"curves_{mode}", P.report.formats, out_dir=FIG); plt.show()
    else:
        display(Markdown(f"{mode}: no robustness curve (its models were attacked at fewer than 3 eps)."))
cv = pd.concat(curve_rows, ignore_index=True) if curve_rows else pd.DataFrame(columns=["mode", "method", "fraction", "eps", "mean", "lo", "hi"])
cv = cv.assign(eps_255=(cv.eps * 255).round(3), robust_pct=100 * cv["mean"], lo_pct=100 * cv.lo, hi_pct=100 * cv.hi)

# %%
frames = {mode: report.cell_frame(results, P, mode, list(dict.fromkeys(["robust", "clean", eps_key[mode]])), n_boot=2000)
          for mode in P.train.modes}
fig = plots.fraction_figure(frames, eps_key, f"Robust accuracy at each mode's primary eps vs coreset fraction (up to "
                                             f"{n_img} test images; K: replicates)",
                            key_label={m: f"robust at {e}" for m, e in eps_txt.items()})
report.save_figure(fig, "robust_vs_fraction", P.report.formats, out_dir=FIG); plt.show()
rf = pd.concat([f.assign(mode=m) for m, f in frames.items()], ignore_index=True)
rf = rf[(rf.key == "robust") & (rf.status == "ok")]
rf = rf.assign(robust_pct=100 * rf["mean"], lo_pct=100 * rf.lo, hi_pct=100 * rf.hi)
# the CSVs dvc.yaml declares as plots (`dvc plots show` needs no runs; `dvc plots diff` compares experiments)
for p in plots.write_dvc_plots(cv, rf, ver, f"{P.report.dir}/plots"):
    print("wrote", p)

# %%
for mode in P.train.modes:
    fig = plots.accuracy_figure(frames[mode], (eps_key[mode], "clean"),
                                title=f"{mode}: robust accuracy at {eps_txt[mode]} (the primary eps; worst case over "
                                      f"{attacks}) and clean accuracy, up to {n_img} test images",
                                key_labels={eps_key[mode]: f"robust accuracy at {eps_txt[mode]} (%)",
                                            "clean": "clean accuracy (%)"})
    report.save_figure(fig, f"accuracy_{mode}", P.report.formats, out_dir=FIG); plt.show()

# %%
for r in ver[ver.family == "primary"].itertuples():
    print(f"PRIMARY {r.mode} f={r.fraction:g} eps {r.eps_255:g}/255 ({r.comparison}): {r.verdict}"
          + (f" ({r.diff:+.1f} [{r.lo:+.1f}, {r.hi:+.1f}] points, K={int(r.k)}, MDE {r.mde:.1f})" if r.status == "ok" and r.k > 1 else ""))

# %% [markdown]
# ## Conclusion (generated from the verdict above: `easycore/report/conclude.py`)

# %%
display(Markdown(conclude.coresets(ver, paper_claim=report.PAPER_CLAIM)))
