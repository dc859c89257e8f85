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

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from easycore import report
from easycore.config import load_params
from easycore.evaluate import ATTACKS, eps_name
from easycore.store import read_json

sns.set_theme(style="whitegrid", context="notebook")
P = load_params(params_path)
FIG, TAB = report.out_dirs(P, "coresets")
info = read_json("data/prepared/info.json")
results = report.load_results(P)
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
report.save_json(report.summary(results, P), f"{P.report.dir}/summary.json")
report.export_outcomes(results, f"{P.report.dir}/outcomes.npz", scale=cap)
print(f"wrote {P.report.dir}/summary.json and {P.report.dir}/outcomes.npz (every run's per-image outcomes: "
      "report.read_outcomes recomputes the verdict without retraining)")

# %%
decided = ver[ver.verdict_best != "missing runs"] if "verdict_best" in ver else ver.iloc[0:0]
if len(decided):
    fig, axes = plt.subplots(1, len(P.train.modes), squeeze=False,
                             figsize=(6.5 * len(P.train.modes), 1.2 + 0.45 * len(decided) / len(P.train.modes)))
    for ax, mode in zip(axes[0], P.train.modes):
        d = decided[decided["mode"] == mode].reset_index(drop=True)
        lab = [f"f={r.fraction:g}, eps {r.eps_255:g}/255" for r in d.itertuples()]
        for k, (col, color, off) in enumerate((("best", "tab:red", -0.15), ("random", "tab:blue", 0.15))):
            if f"diff_{col}" in d:
                ax.errorbar(d[f"diff_{col}"], np.arange(len(d)) + off, xerr=[d[f"diff_{col}"] - d[f"lo_{col}"],
                            d[f"hi_{col}"] - d[f"diff_{col}"]], fmt="o", color=color,
                            label="EasyCore - best other" if col == "best" else "EasyCore - random")
        ax.axvline(0, color="gray", lw=1)
        if mode in report.PAPER_CLAIM:
            ax.axvline(report.PAPER_CLAIM[mode], color="black", ls=":", lw=1, label=f"paper: up to +{report.PAPER_CLAIM[mode]:g}")
        ax.set_yticks(range(len(d))); ax.set_yticklabels(lab, fontsize=8); ax.invert_yaxis()
        ax.set_xlabel("paired difference in robust accuracy (points), 95% CI"); ax.set_title(mode)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"The verdict: n = {min(P.eval.n_test, info['test']['n'])} test images x seeds {P.train.seeds}; "
                 "robust = worst case over every attack run", y=1.02)
    report.save_figure(fig, "verdict", P.report.formats, out_dir=FIG); plt.show()

# %% [markdown]
# ## Does the ranking survive AutoAttack?
# Standard AutoAttack (torchattacks) at the headline eps on `eval.autoattack_n` test images spread over the classes
# (the first of each class, then the second, ...), for the models
# the verdict compares (`eval.autoattack_modes`; the `autoattack` stage). Robust accuracy on those images before
# (the evaluation's attacks) and after adding AutoAttack, pooled over seeds.

# %%
aa = report.autoattack_table(P)
if aa.empty:
    display(Markdown("AutoAttack was not run (`eval.autoattack_modes` is empty)."))
else:
    report.save_table(aa, "autoattack", out_dir=TAB, index=False,
                      caption=f"*AutoAttack (standard, torchattacks) at eps {P.eval.eps * 255:.0f}/255 on "
                              f"{P.eval.autoattack_n} test images spread over the classes: robust accuracy before / after, mean [95% CI] in %.*")
    display(aa)

# %%
for mode in P.train.modes:
    fr = report.fractions(P)
    fig, axes = plt.subplots(1, len(fr), figsize=(6 * len(fr), 4.2), squeeze=False)
    for ax, f in zip(axes[0], fr):
        cur = report.curves(results, P, mode, f, n_boot=2000)
        for method, d in cur.groupby("method", sort=False):
            full = method == "full"
            ax.plot(d.eps * 255, 100 * d["mean"], marker="o", lw=2.5 if method == "easycore" else 1.2,
                    ls="--" if full else "-", color="black" if full else None, label="full data" if full else method)
            ax.fill_between(d.eps * 255, 100 * d.lo, 100 * d.hi, alpha=0.12, color="black" if full else None)
        ax.set_xlabel("Linf eps (x255)"); ax.set_ylabel("robust accuracy (%)")
        ax.set_title(f"{mode}, fraction {f:g}: worst case over attacks, 95% CI")
    axes[0][-1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(f"n = {min(P.eval.n_test, info['test']['n'])} test images, seeds {P.train.seeds}", y=1.02)
    report.save_figure(fig, f"curves_{mode}", P.report.formats, out_dir=FIG); plt.show()

# %%
for mode in P.train.modes:
    frame = report.cell_frame(results, P, mode, ["robust", "clean"], n_boot=2000)
    ok = frame[frame.status == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.0 + 0.3 * len(ok) / 2))
    for ax, key in zip(axes, ["robust", "clean"]):
        d = ok[(ok.key == key) & (ok.method != "full")].reset_index(drop=True)
        lab = [f"{m} f={f:g}" for m, f in zip(d.method, d.fraction)]
        ax.errorbar(100 * d["mean"], range(len(d)), xerr=[100 * (d["mean"] - d.lo), 100 * (d.hi - d["mean"])],
                    fmt="o", color="tab:blue")
        ax.set_yticks(range(len(d))); ax.set_yticklabels(lab, fontsize=8); ax.invert_yaxis()
        full = ok[(ok.key == key) & (ok.method == "full")]
        if len(full):
            ax.axvline(100 * full["mean"].iloc[0], color="black", ls="--", lw=1, label="full data")
            ax.legend(fontsize=8)
        ax.set_xlabel(f"{key} accuracy (%)")
    axes[0].set_title(f"{mode}: robust = worst case at eps {P.eval.eps * 255:.0f}/255 over {', '.join(keys[1:-1])}")
    fig.suptitle(f"n = {min(P.eval.n_test, info['test']['n'])} test images, seeds {P.train.seeds}; bars: 95% CI", y=1.0)
    report.save_figure(fig, f"accuracy_{mode}", P.report.formats, out_dir=FIG); plt.show()

# %%
for _, r in decided[decided.eps_255 == round(P.eval.eps * 255, 3)].iterrows():
    print(f"{r['mode']} f={r['fraction']:g} eps {r['eps_255']:g}/255: EasyCore {r['easycore_pct']:.1f}% vs best other "
          f"{r['best_other']} {r['best_other_pct']:.1f}% -> {r['verdict_best']} ({r['diff_best']:+.1f} "
          f"[{r['lo_best']:+.1f}, {r['hi_best']:+.1f}] points)")
