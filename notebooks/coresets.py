# %% [markdown]
# # Coresets: robustness tables, the verdict and robustness curves
#
# Models trained on each coreset (static methods scored by the main proxy, adaptive ACS methods, the full-data
# reference) under every training mode, evaluated on the same test images (paired). Cells are mean [95 % CI] over
# test images and seeds; robust accuracy is the per-image worst case over every attack run at that eps or below. The
# verdict compares EasyCore with the best other method and with random by paired differences whose CIs decide.

# %% tags=["parameters"]
params_path = "params.yaml"
n_boot = 10000
outcomes_path = None   # an export_outcomes file (e.g. reports/outcomes.npz): re-render without runs/ (no pass counts)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from easycore import headline, plots, report
from easycore.config import load_params
from easycore.evaluate import ATTACKS, eps_name
from easycore.store import read_json

sns.set_theme(style="whitegrid", context="notebook")
P = load_params(params_path)
FIG, TAB = report.out_dirs(P, "coresets")
info = read_json("data/prepared/info.json")
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

# %%
for mode in P.train.modes:
    frame = report.cell_frame(results, P, mode, keys, n_boot=n_boot)
    table = report.accuracy_table(results, P, mode, keys, n_boot=n_boot, frame=frame)
    cap = report.scale_caption(P, info, what=f"{mode} training. ")
    report.save_table(table, f"coresets_{mode}", caption=cap, out_dir=TAB, csv=frame)
    display(Markdown(f"### {mode}\n\n" + report.to_markdown(table, cap)))

# %% [markdown]
# ## Paired comparisons at the headline eps
# Every method against EasyCore and against random: difference in robust accuracy (reference minus other, points)
# with its 95 % CI (bootstrap over test images and seeds, pairing kept), p-value, Holm correction over each table.

# %%
comps = []
for mode in P.train.modes:
    for f in report.fractions(P):
        for ref in ("easycore", "random"):
            comps.append(report.comparisons(results, P, mode, f, "robust", reference=ref, n_boot=n_boot))
comps = pd.concat([c for c in comps if not c.empty], ignore_index=True) if any(not c.empty for c in comps) else pd.DataFrame()
if not comps.empty:
    cols = ["mode", "fraction", "reference", "method", "diff", "lo", "hi", "p_value", "p_holm", "verdict"]
    report.save_table(comps[cols].round(4), "comparisons", out_dir=TAB, index=False,
                      caption=f"*Paired differences in robust accuracy at eps {P.eval.eps * 255:.0f}/255 (points).*")
    display(comps[cols].round(3))

# %% [markdown]
# ## The verdict
# For every training mode, fraction and eps of the grid: EasyCore vs the best other coreset method and vs random.
# "no detectable difference" means the 95 % CI of the paired difference includes 0 (after Holm correction over
# EasyCore's comparisons in that cell); the paper claims up to +7 points (standard) and +5 points (TRADES).

# %%
ver = report.verdict(results, P, n_boot=n_boot)
cap = report.scale_caption(P, info, what="Verdict. ")
report.save_table(report.verdict_markdown(ver), "verdict", caption=cap, out_dir=TAB, index=False, csv=ver.round(4))
display(Markdown(report.to_markdown(report.verdict_markdown(ver), cap, index=False)))
# the one DVC metric holds the headline only (easycore/headline.py); every cell goes to a plain output
report.save_json(headline.headline(ver, P, n_test=min(P.eval.n_test, info["test"]["n"])), f"{P.report.dir}/summary.json")
report.save_json(report.summary(results, P), TAB / "summary_full.json")
if not outcomes_path:
    report.export_outcomes(results, f"{P.report.dir}/outcomes.npz", scale=cap)
print(f"wrote {P.report.dir}/summary.json and {P.report.dir}/outcomes.npz (every run's per-image outcomes: "
      "report.read_outcomes recomputes the verdict without retraining)")

# %%
decided = ver[ver.verdict_best != "missing runs"] if "verdict_best" in ver else ver.iloc[0:0]
n_img = min(P.eval.n_test, info["test"]["n"])
seeds = f"{len(P.train.seeds)} seed{'s' if len(P.train.seeds) > 1 else ''}"
if len(decided):
    fig = plots.verdict_figure(decided, f"The verdict: EasyCore minus its comparator, paired over {n_img} test images "
                               f"x {seeds}; robust = worst case over every attack run", paper_claim=report.PAPER_CLAIM)
    report.save_figure(fig, "verdict", P.report.formats, out_dir=FIG); plt.show()

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
                      caption=f"*AutoAttack (standard, torchattacks) at eps {P.eval.eps * 255:.0f}/255 on "
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
    fig = plots.curves_figure(cur, f"{mode}: robust accuracy vs Linf eps (worst case over {attacks}), "
                                   f"{n_img} test images x {seeds}")
    report.save_figure(fig, f"curves_{mode}", P.report.formats, out_dir=FIG); plt.show()
cv = pd.concat(curve_rows, ignore_index=True) if curve_rows else pd.DataFrame(columns=["mode", "method", "fraction", "eps", "mean", "lo", "hi"])
cv = cv.assign(eps_255=(cv.eps * 255).round(3), robust_pct=100 * cv["mean"], lo_pct=100 * cv.lo, hi_pct=100 * cv.hi)

# %%
frames = {mode: report.cell_frame(results, P, mode, ["robust", "clean"], n_boot=2000) for mode in P.train.modes}
fig = plots.fraction_figure(frames, "robust", f"Robust accuracy at eps {P.eval.eps * 255:.0f}/255 vs coreset "
                                              f"fraction ({n_img} test images x {seeds})")
report.save_figure(fig, "robust_vs_fraction", P.report.formats, out_dir=FIG); plt.show()
rf = pd.concat([f.assign(mode=m) for m, f in frames.items()], ignore_index=True)
rf = rf[(rf.key == "robust") & (rf.status == "ok")]
rf = rf.assign(robust_pct=100 * rf["mean"], lo_pct=100 * rf.lo, hi_pct=100 * rf.hi)
# the CSVs dvc.yaml declares as plots (`dvc plots show` needs no runs; `dvc plots diff` compares experiments)
for p in plots.write_dvc_plots(cv, rf, ver, f"{P.report.dir}/plots"):
    print("wrote", p)

# %%
for mode in P.train.modes:
    fig = plots.accuracy_figure(frames[mode], title=f"{mode}: robust (worst case at {P.eval.eps * 255:.0f}/255 over "
                                                    f"{attacks}) and clean accuracy, {n_img} test images x {seeds}")
    report.save_figure(fig, f"accuracy_{mode}", P.report.formats, out_dir=FIG); plt.show()

# %%
for _, r in decided[decided.eps_255 == round(P.eval.eps * 255, 3)].iterrows():
    print(f"{r['mode']} f={r['fraction']:g} eps {r['eps_255']:g}/255: EasyCore {r['easycore_pct']:.1f}% vs best other "
          f"{r['best_other']} {r['best_other_pct']:.1f}% -> {r['verdict_best']} ({r['diff_best']:+.1f} "
          f"[{r['lo_best']:+.1f}, {r['hi_best']:+.1f}] points)")
