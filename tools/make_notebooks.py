"""Regenerate notebooks/*.ipynb (clean: no outputs) from the cell sources below.

    python tools/make_notebooks.py

The notebooks are the report stages of dvc.yaml; papermill executes them into reports/notebooks/.
Edit here (or in Jupyter, then clear outputs: tests/test_notebooks_clean.py checks it).
"""
from pathlib import Path

import nbformat as nbf

HEAD = """import warnings
warnings.filterwarnings("ignore", category=UserWarning)
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from easycore import coresets, report
from easycore.aign import spearman
from easycore.config import load_params
from easycore.store import load_arrays, read_json

sns.set_theme(style="whitegrid", context="notebook")
P = load_params(params_path)
FMT = P.report.formats
"""

NB = {}

NB["aign_scores"] = ("# AIGN scores of the proxy run\n\nDistribution of the average input-gradient norm (AIGN) per class, "
                     "the easiest / hardest training images, how stable the per-epoch ranking is, and how well the "
                     "almost-free *inline* AIGN (from the training step's own backward) agrees with the *exact* pass.",
 'params_path = "params.yaml"\nproxy_dir = "runs/proxy/main"\n', [
HEAD + """from easycore.data import ArrayDataset
FIG = "reports/figures/aign_scores"
arrays, meta = load_arrays(f"{proxy_dir}/dynamics.npz")
tr = ArrayDataset.load("data/prepared/train.pt")
labels = arrays["labels"]
classes = tr.classes
aign = coresets.aign(arrays, window=P.coreset.window, p=P.coreset.p, squared=P.coreset.squared)
E = arrays[coresets.norm_key(P.coreset.p)].shape[0]
print(f"proxy {meta['model']}, {meta['epochs']} epochs, {E} tracked, N={len(labels)}, test acc {meta['test_acc']:.3f}")
""",
"""df = pd.DataFrame({"AIGN": aign, "class": [classes[c] for c in labels]})
fig, ax = plt.subplots(figsize=(10, 4))
sns.boxplot(data=df, x="class", y="AIGN", ax=ax, color="#9ecae1", fliersize=2)
ax.set_yscale("log"); ax.set_title("AIGN per class (proxy run; low = easy)"); ax.tick_params(axis="x", rotation=30)
report.save_figure(fig, "aign_per_class", FMT, out_dir=FIG); plt.show()
display(df.groupby("class")["AIGN"].describe()[["mean", "50%", "min", "max"]].round(3))
""",
"""k = P.report.grid_per_class
fig, axes = plt.subplots(len(classes), 2 * k, figsize=(2 * k * 0.9, len(classes) * 0.95))
for c in range(len(classes)):
    idx = np.flatnonzero(labels == c)
    order = idx[np.argsort(aign[idx], kind="stable")]
    pick = list(order[:k]) + list(order[::-1][:k][::-1])
    for j, i in enumerate(pick):
        ax = axes[c, j]
        ax.imshow(tr.x[i].permute(1, 2, 0).numpy()); ax.set_xticks([]); ax.set_yticks([])
        if j == 0: ax.set_ylabel(classes[c], rotation=0, ha="right", va="center", fontsize=8)
        for s in ax.spines.values(): s.set_color("tab:green" if j < k else "tab:red"); s.set_linewidth(2)
fig.suptitle(f"{k} easiest (green, lowest AIGN) and {k} hardest (red) training images per class", y=1.0)
report.save_figure(fig, "easiest_hardest_grid", FMT, out_dir=FIG); plt.show()
""",
"""M = arrays[coresets.norm_key(P.coreset.p)].astype(float)
ep = [int(e) + 1 for e in arrays["tracked_epochs"]]
R = report.spearman_matrix({f"ep{e}": M[i] for i, e in enumerate(ep)})
fig, ax = plt.subplots(figsize=(1 + 0.6 * len(ep), 0.8 + 0.5 * len(ep)))
sns.heatmap(R, annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="vlag", ax=ax)
ax.set_title("Spearman between per-epoch input-gradient norms")
report.save_figure(fig, "epoch_rank_stability", FMT, out_dir=FIG); plt.show()
budget = coresets.budget(P.coreset.fractions[0], len(aign))
final_sel = set(np.argsort(aign, kind="stable")[:budget])
rows = []
for i, e in enumerate(ep):
    row = {"epoch": e, "spearman_vs_AIGN": spearman(M[i], aign),
           "spearman_vs_next_epoch": spearman(M[i], M[i + 1]) if i + 1 < len(ep) else np.nan,
           f"jaccard_easiest_{P.coreset.fractions[0]:g}_vs_AIGN": report.jaccard(np.argsort(M[i], kind="stable")[:budget], final_sel)}
    if "aign_inline_l2" in arrays:
        row["spearman_inline_vs_exact"] = spearman(arrays["aign_inline_l2"][i], arrays["aign_l2"][i])
    rows.append(row)
stab = pd.DataFrame(rows).set_index("epoch").round(3)
report.save_table(stab, "aign_stability", caption=f"*Per-epoch AIGN stability (proxy {meta['model']}, {meta['epochs']} epochs, N={len(aign)}).*")
display(stab)
""",
"""if "aign_inline_l2" in arrays:
    inline = np.nanmean(arrays["aign_inline_l2"].astype(float), axis=0)
    exact = np.nanmean(arrays["aign_l2"].astype(float), axis=0)
    rho = spearman(inline, exact)
    b = coresets.budget(P.coreset.fractions[0], len(exact))
    jac = report.jaccard(np.argsort(inline, kind="stable")[:b], np.argsort(exact, kind="stable")[:b])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(exact, inline, s=4, alpha=0.5); ax.set_xscale("log"); ax.set_yscale("log")
    ax.set_xlabel("exact AIGN (eval-mode pass)"); ax.set_ylabel("inline AIGN (training step)")
    ax.set_title(f"Spearman {rho:.3f}; Jaccard of easiest {P.coreset.fractions[0]:g}: {jac:.3f}")
    report.save_figure(fig, "inline_vs_exact", FMT, out_dir=FIG); plt.show()
    display(Markdown(f"**Inline vs exact AIGN**: Spearman {rho:.3f}, overlap (Jaccard) of the EasyCore selections {jac:.3f}."))
else:
    print("proxy.aign.mode is not 'both': no inline/exact comparison")
"""])

NB["hardness_vs_vulnerability"] = ("# Hardness vs vulnerability\n\nThe paper's core claim: samples with low AIGN (easy) are "
 "far from the decision boundary and hard to flip adversarially. Tested on the proxy's final model with (a) the DeepFool "
 "L2 distance of every training sample and (b) the smallest Linf eps at which PGD flips the sample "
 "(`attacks.min_flip_eps`, bisection) for a random subset. Spearman correlations are reported as they come out.",
 'params_path = "params.yaml"\nproxy_dir = "runs/proxy/main"\nn_flip = 200\nflip_steps = 10\nflip_iters = 6\neps_max = 32 / 255\nseed = 0\n', [
HEAD + """import torch
from easycore.attacks import min_flip_eps
from easycore.data import ArrayDataset
from easycore.train import load_model
FIG = "reports/figures/hardness_vs_vulnerability"
torch.manual_seed(seed)
arrays, meta = load_arrays(f"{proxy_dir}/dynamics.npz")
tr = ArrayDataset.load("data/prepared/train.pt")
aign = coresets.aign(arrays, window=P.coreset.window, p=P.coreset.p, squared=P.coreset.squared).astype(float)
df_dist = arrays["deepfool"].astype(float)
net, _ = load_model(f"{proxy_dir}/model.pt", "cpu")
net.eval()
""",
"""rng = np.random.default_rng(seed)
sub = np.sort(rng.choice(len(aign), size=min(n_flip, len(aign)), replace=False))
x = tr.x[sub].float() / 255
y = tr.y[sub]
with torch.no_grad():
    correct = (net(x).argmax(1) == y).numpy()
eps = min_flip_eps(net, x, y, eps_max=eps_max, steps=flip_steps, iters=flip_iters).numpy().astype(float)
print(f"{len(sub)} samples: {correct.mean():.1%} correctly classified, {np.isinf(eps).mean():.1%} not flipped at eps_max={eps_max*255:.0f}/255")
""",
"""ok = correct.astype(bool)
res = [
    {"pair": "AIGN vs DeepFool distance", "samples": "all training samples", "n": len(aign), "spearman": spearman(aign, df_dist)},
    {"pair": "AIGN vs min flipping eps (PGD)", "samples": "random subset", "n": len(sub), "spearman": spearman(aign[sub], eps)},
    {"pair": "AIGN vs min flipping eps (PGD)", "samples": "subset, correctly classified", "n": int(ok.sum()),
     "spearman": spearman(aign[sub][ok], eps[ok]) if ok.sum() > 2 else np.nan},
    {"pair": "DeepFool distance vs min flipping eps", "samples": "random subset", "n": len(sub), "spearman": spearman(df_dist[sub], eps)},
]
from scipy.stats import spearmanr
for r in res:
    if r["pair"].startswith("AIGN vs DeepFool"):
        r["p_value"] = spearmanr(aign, df_dist).pvalue
    elif "correctly" in r["samples"]:
        r["p_value"] = spearmanr(aign[sub][ok], eps[ok]).pvalue if ok.sum() > 2 else np.nan
    elif r["pair"].startswith("AIGN"):
        r["p_value"] = spearmanr(aign[sub], eps).pvalue
    else:
        r["p_value"] = spearmanr(df_dist[sub], eps).pvalue
tab = pd.DataFrame(res).round({"spearman": 3})
tab["p_value"] = tab["p_value"].map(lambda v: f"{v:.1e}")
cap = (f"*Proxy {meta['model']} ({meta['epochs']} epochs, {P.data.dataset} N={len(aign)}); min flipping eps by PGD-{flip_steps} "
       f"bisection ({flip_iters} halvings, eps_max {eps_max*255:.0f}/255; unflipped = +inf, misclassified = 0). "
       f"The claim predicts a NEGATIVE correlation (low AIGN = far from the boundary).*")
report.save_table(tab.set_index("pair"), "hardness_vs_vulnerability", caption=cap)
display(Markdown(cap)); display(tab)
""",
"""fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].scatter(aign, df_dist, s=4, alpha=0.4)
axes[0].set_xscale("log"); axes[0].set_xlabel("AIGN"); axes[0].set_ylabel("DeepFool L2 distance")
axes[0].set_title(f"Spearman {res[0]['spearman']:.3f} (N={len(aign)})")
e_plot = np.where(np.isinf(eps), eps_max * 1.1, eps) * 255
axes[1].scatter(aign[sub], e_plot, s=8, alpha=0.6, c=np.where(ok, "tab:blue", "tab:red"))
axes[1].axhline(P.eval.eps * 255, ls="--", c="gray", lw=1)
axes[1].set_xscale("log"); axes[1].xaxis.set_minor_formatter(plt.NullFormatter()); axes[1].set_xlabel("AIGN"); axes[1].set_ylabel("min flipping Linf eps (x255)")
axes[1].set_title(f"Spearman {res[1]['spearman']:.3f} (n={len(sub)}; red: misclassified, top: unflipped)")
report.save_figure(fig, "aign_vs_vulnerability", FMT, out_dir=FIG); plt.show()
q = pd.qcut(aign[sub], 5, labels=[f"Q{i}" for i in range(1, 6)])
byq = pd.DataFrame({"AIGN quintile": q, "flipped at eval eps": (eps <= P.eval.eps), "deepfool": df_dist[sub]}).groupby(
    "AIGN quintile", observed=True).mean().round(3)
display(Markdown("Fraction of subset samples flipped at the evaluation eps, by AIGN quintile (Q1 = easiest):")); display(byq)
""",
"""r0, r1 = res[0]["spearman"], res[1]["spearman"]
verdict = lambda r: "supports" if r < -0.1 else ("contradicts" if r > 0.1 else "neither supports nor contradicts (|rho| <= 0.1)")
display(Markdown(f"**Result.** AIGN vs DeepFool distance: Spearman {r0:.3f}, which {verdict(r0)} the claim that easy samples lie far "
                 f"from the boundary. AIGN vs minimal PGD flipping eps: Spearman {r1:.3f} ({verdict(r1)}). "
                 "At demo scale (small subset, few epochs, small CPU model) these numbers are indicative only."))
"""])

NB["score_correlations"] = ("# Correlations between coreset scores\n\nSpearman rank correlation between the per-sample score "
 "of every method that has one (`coresets.method_scores`, raw orientation; the `keeps` column says which end a method keeps), "
 "and the overlap (Jaccard) of the coresets the configured methods select.",
 'params_path = "params.yaml"\nproxy_dir = "runs/proxy/main"\n', [
HEAD + """FIG = "reports/figures/score_correlations"
arrays, meta = load_arrays(f"{proxy_dir}/dynamics.npz")
labels = arrays["labels"]
c = P.coreset
opts = dict(window=c.window, p=c.p, squared=c.squared, score_epochs=c.score_epochs, ccs_score=c.ccs_score)
scores, keeps = {}, {}
for name, spec in coresets.METHODS.items():
    if spec.score in ("",) or spec.score in {coresets.METHODS[n].score for n in scores}:
        continue  # no score (random, kcenter, herding) or the same score as an earlier method (hard = easycore's AIGN)
    if name == "ccs" and c.ccs_score in {coresets.METHODS[n].score for n in scores}:
        continue  # ccs ranks by its ccs_score (here already a column)
    try:
        s = coresets.method_scores(name, arrays, labels=labels, balanced=c.balanced, **opts)
    except Exception as e:
        print(f"skip {name}: {e}"); continue
    scores[name], keeps[name] = s, spec.keep
label = {n: f"{n} ({coresets.METHODS[n].score}, keeps {keeps[n]})" for n in scores}
R = report.spearman_matrix({label[n]: s for n, s in scores.items()})
fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(R), 1 + 0.7 * len(R)))
sns.heatmap(R, annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="vlag", ax=ax)
ax.set_title(f"Spearman between coreset scores (proxy {meta['model']}, N={len(labels)})")
report.save_figure(fig, "spearman_heatmap", FMT, out_dir=FIG); plt.show()
report.save_table(R.round(3), "score_correlations",
                  caption=f"*Spearman rank correlation between coreset scores (proxy {meta['model']}, {meta['epochs']} epochs, N={len(labels)}).*")
display(R.round(3))
""",
"""f = c.fractions[0]
sel = {m: coresets.select(m, arrays, labels, f, balanced=c.balanced, seed=c.seed, ccs_cutoff=c.ccs_cutoff,
                          moderate_band=c.moderate_band, device="cpu", **opts) for m in c.methods}
J = pd.DataFrame([[report.jaccard(sel[a], sel[b]) for b in sel] for a in sel], index=list(sel), columns=list(sel))
fig, ax = plt.subplots(figsize=(1 + 0.8 * len(J), 0.8 + 0.6 * len(J)))
sns.heatmap(J, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="mako", ax=ax)
ax.set_title(f"Jaccard overlap of the selected coresets (fraction {f:g})")
report.save_figure(fig, "coreset_overlap", FMT, out_dir=FIG); plt.show()
"""])

NB["coreset_table"] = ("# Coreset robustness table\n\nClean and adversarial accuracy of models trained on each coreset "
 "(one table per training mode; the `mode` parameter), mean ± std over seeds, best coreset per column in bold, with the "
 "full-data reference row. Exported as Markdown + CSV under `reports/tables/`.",
 'params_path = "params.yaml"\nmode = "standard"\neval_dir = "runs/eval"\n', [
HEAD + """FIG = f"reports/figures/coreset_{mode}"
info = read_json("data/prepared/info.json")
runs = [r for r in report.expected_runs(P) if report.parse_run(r)["mode"] == mode and report.parse_run(r)["proxy"] == "main"]
cap = report.scale_caption(P, info, what=f"{mode} training. ")
if not runs:  # this mode is not in train.modes: an explicit empty table, so the stage's outputs still exist
    df = pd.DataFrame(columns=["run", "method", "fraction", "seed"])
    table = pd.DataFrame({"note": [f"mode {mode!r} is not in train.modes {P.train.modes}: nothing trained"]})
else:
    df = report.collect_metrics(eval_dir, runs)
    attacks = [a for a in ("clean", "fgsm", f"pgd{P.eval.pgd_steps}", "autoattack") if a in df]
    table = report.results_table(df, mode, attacks=attacks, methods=P.coreset.methods)
report.save_table(table, f"coreset_{mode}", caption=cap)
df.to_csv(f"reports/tables/coreset_{mode}_runs.csv", index=False)
display(Markdown(report.to_markdown(table, cap)))
""",
"""if runs:
  long = df.melt(id_vars=["method", "fraction", "seed"], value_vars=attacks, var_name="attack", value_name="accuracy")
  long["accuracy"] *= 100
  g = sns.catplot(data=long, x="method", y="accuracy", hue="attack", col="fraction", kind="bar", errorbar="sd",
                  height=3.8, aspect=1.6, order=list(P.coreset.methods) + ["full"])
  g.set_xticklabels(rotation=30); g.figure.suptitle(f"{mode} training: accuracy (%) per coreset method", y=1.03)
  report.save_figure(g.figure, "accuracy_bars", FMT, out_dir=FIG); plt.show()
else:
  import os; os.makedirs(FIG, exist_ok=True); open(f"{FIG}/NOT_TRAINED.txt", "w").write(f"mode {mode} not in train.modes")
""",
"""pgd = f"pgd{P.eval.pgd_steps}"
for f in (sorted(df.loc[df.method != "full", "fraction"].unique()) if runs else []):
    d = df[(df.fraction == f) & (df.method != "full")].groupby("method")[pgd].mean().sort_values(ascending=False)
    rank = list(d.index).index("easycore") + 1 if "easycore" in d.index else None
    display(Markdown(f"fraction {f:g}: EasyCore ranks **{rank} of {len(d)}** on PGD accuracy "
                     f"({100 * d.get('easycore', np.nan):.1f}% vs best {d.index[0]} {100 * d.iloc[0]:.1f}%, random {100 * d.get('random', np.nan):.1f}%)."))
"""])

NB["transfer"] = ("# Transfer: scores from another architecture\n\nEasyCore selected with AIGN from the *transfer* proxy "
 "architecture (`proxy.transfer_model`), then trained on the main architecture (`train.model`, standard mode), against "
 "EasyCore from the main proxy, random, and the full-data reference.",
 'params_path = "params.yaml"\neval_dir = "runs/eval"\nmode = "standard"\n', [
HEAD + """FIG = "reports/figures/transfer"
info = read_json("data/prepared/info.json")
main, mmeta = load_arrays("runs/proxy/main/dynamics.npz")
other, tmeta = load_arrays("runs/proxy/transfer/dynamics.npz")
c = P.coreset
kw = dict(window=c.window, p=c.p, squared=c.squared)
a_main, a_tr = coresets.aign(main, **kw), coresets.aign(other, **kw)
rows = [{"fraction": f, "spearman_AIGN_main_vs_transfer": spearman(a_main, a_tr),
         "jaccard_easycore_main_vs_transfer": report.jaccard(
             coresets.select("easycore", main, main["labels"], f, balanced=c.balanced, seed=c.seed, **kw),
             coresets.select("easycore", other, other["labels"], f, balanced=c.balanced, seed=c.seed, **kw))}
        for f in c.fractions]
display(pd.DataFrame(rows).round(3))
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.scatter(a_main, a_tr, s=4, alpha=0.5); ax.set_xscale("log"); ax.set_yscale("log")
ax.set_xlabel(f"AIGN, proxy {mmeta['model']}"); ax.set_ylabel(f"AIGN, proxy {tmeta['model']}")
ax.set_title(f"Spearman {rows[0]['spearman_AIGN_main_vs_transfer']:.3f}")
report.save_figure(fig, "aign_main_vs_transfer", FMT, out_dir=FIG); plt.show()
""",
"""from easycore.pipeline import fmt_fraction, run_name
runs = [r for r in report.expected_runs(P) if report.parse_run(r)["mode"] == mode and
        (report.parse_run(r)["proxy"] == "transfer" or report.parse_run(r)["method"] in ("easycore", "random", "full"))]
df = report.collect_metrics(eval_dir, runs)
df.loc[df.proxy == "transfer", "method"] = f"easycore (scored by {tmeta['model']})"
df.loc[(df.proxy == "main") & (df.method == "easycore"), "method"] = f"easycore (scored by {mmeta['model']})"
df["proxy"] = "main"
attacks = [a for a in ("clean", "fgsm", f"pgd{P.eval.pgd_steps}", "autoattack") if a in df]
table = report.results_table(df, mode, attacks=attacks)
cap = report.scale_caption(P, info, what=f"Transfer ({tmeta['model']} scores -> {P.train.model} training), {mode} training. ")
report.save_table(table, "transfer", caption=cap)
display(Markdown(report.to_markdown(table, cap)))
"""])

NB["ablations"] = ("# Ablations of the AIGN score (no retraining)\n\nHow much the EasyCore selection changes with the AIGN "
 "epoch window (first K / last K / all), the norm (L1 / L2 / Linf, squared) and per-class (balanced) vs global selection: "
 "Jaccard overlap of the selected coresets and Spearman of the scores against the default, from the stored per-epoch "
 "matrices. The trained versions are `dvc exp run -S` recipes (last cell).",
 'params_path = "params.yaml"\nproxy_dir = "runs/proxy/main"\n', [
HEAD + """FIG = "reports/figures/ablations"
arrays, meta = load_arrays(f"{proxy_dir}/dynamics.npz")
labels = arrays["labels"]
c = P.coreset
E = arrays["aign_l2"].shape[0]
K = max(1, E // 3)
base = dict(window=c.window, p=c.p, squared=c.squared, balanced=c.balanced)
variants = {"default": {}, f"window first:{K}": {"window": f"first:{K}"}, f"window last:{K}": {"window": f"last:{K}"},
            "window all": {"window": "all"}, "norm L1": {"p": 1.0}, "norm L2": {"p": 2.0}, "norm Linf": {"p": float("inf")},
            "squared L2": {"squared": True, "p": 2.0}, "balanced": {"balanced": True}, "global": {"balanced": False}}
rows, sels = [], {}
for f in c.fractions:
    ref_opts = dict(base)
    ref_score = coresets.aign(arrays, window=ref_opts["window"], p=ref_opts["p"], squared=ref_opts["squared"])
    ref_sel = coresets.select("easycore", arrays, labels, f, seed=c.seed, **ref_opts)
    for name, ch in variants.items():
        o = {**base, **ch}
        try:
            s = coresets.aign(arrays, window=o["window"], p=o["p"], squared=o["squared"])
            sel = coresets.select("easycore", arrays, labels, f, seed=c.seed, **o)
        except Exception as e:
            print(f"skip {name}: {e}"); continue
        sels[(f, name)] = sel
        rows.append({"fraction": f, "variant": name, "jaccard_vs_default": report.jaccard(sel, ref_sel),
                     "spearman_vs_default": spearman(s, ref_score),
                     "min_class_share": np.bincount(labels[sel], minlength=labels.max() + 1).min() / len(sel)})
tab = pd.DataFrame(rows).round(3).set_index(["fraction", "variant"])
report.save_table(tab, "ablations", caption=f"*EasyCore selection under AIGN variants vs the default (window {c.window}, "
                  f"p {c.p:g}, squared {c.squared}, balanced {c.balanced}); proxy {meta['model']} {meta['epochs']} epochs, N={len(labels)}.*")
display(tab)
""",
"""f = c.fractions[0]
names = [n for (ff, n) in sels if ff == f]
J = pd.DataFrame([[report.jaccard(sels[(f, a)], sels[(f, b)]) for b in names] for a in names], index=names, columns=names)
fig, ax = plt.subplots(figsize=(1 + 0.8 * len(J), 0.8 + 0.6 * len(J)))
sns.heatmap(J, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="mako", ax=ax)
ax.set_title(f"Jaccard overlap between EasyCore variants (fraction {f:g})")
report.save_figure(fig, "variant_overlap", FMT, out_dir=FIG); plt.show()
""",
"""recipes = [f"dvc exp run -S 'coreset.window=first:{K}'", f"dvc exp run -S 'coreset.window=last:{K}'",
           "dvc exp run -S 'coreset.p=1'", "dvc exp run -S 'coreset.p=inf'", "dvc exp run -S 'coreset.squared=true'",
           "dvc exp run -S 'coreset.balanced=true'",
           "dvc exp run -S 'coreset.methods=[easycore,random]' -S 'coreset.window=last:3'  # cheaper: only two methods"]
display(Markdown("**Trained ablations** (each re-runs only select / train / evaluate / report; the proxy is reused):\\n\\n```\\n" + "\\n".join(recipes) + "\\n```\\n\\nCompare with `dvc exp show --only-changed` or the tables under reports/tables/."))
"""])


def build(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (title, params, cells) in NB.items():
        nb = nbf.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nb.cells.append(nbf.v4.new_markdown_cell(title))
        pc = nbf.v4.new_code_cell(params)
        pc.metadata["tags"] = ["parameters"]
        nb.cells.append(pc)
        nb.cells += [nbf.v4.new_code_cell(c.strip("\n")) for c in cells]
        for i, c in enumerate(nb.cells):
            c["id"] = f"{name[:20]}-{i}"
        nbf.validate(nb)
        nbf.write(nb, out_dir / f"{name}.ipynb")


if __name__ == "__main__":
    build(Path(__file__).resolve().parent.parent / "notebooks")
