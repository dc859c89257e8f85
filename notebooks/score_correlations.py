# %% [markdown]
# # Correlations between coreset scores
#
# Spearman rank correlation between the per-sample score of every static method that has one
# (`coresets.method_scores`, raw orientation: the `keeps` column of `easycore methods` says which end a method keeps),
# and the overlap (Jaccard) of the coresets the configured methods select. Methods left out are listed with the reason.

# %% tags=["parameters"]
params_path = "params.yaml"
proxy_dir = ""                   # default: the main proxy of the first replicate (runs/proxy/main/s<seed>)

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from easycore import coresets, report, runs
from easycore.methods import METHODS
from easycore.config import load_params
from easycore.store import load_arrays

P = load_params(params_path)
proxy_dir = proxy_dir or str(runs.proxy_dir("main", P.train.seeds[0]))
c = P.coreset
FIG, TAB = report.out_dirs(P, "score_correlations")
arrays, meta = load_arrays(f"{proxy_dir}/dynamics.npz")
labels = arrays["labels"]
opts = coresets.Options(window=c.window, p=c.p, squared=c.squared, score_epochs=c.score_epochs, ccs_score=c.ccs_score,
                        balanced=c.balanced)
scores, skipped = report.method_score_table(arrays, labels, opts)
display(Markdown("Not in the matrix: " + "; ".join(f"`{m}`: {why}" for m, why in skipped.items())))

# %%
R = report.spearman_matrix({f"{m} ({METHODS[m].score})": s for m, s in scores.items()})
fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(R), 1 + 0.7 * len(R)))
sns.heatmap(R, annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="vlag", ax=ax)
ax.set_title(f"Spearman between coreset scores (proxy {meta['model']}, N={len(labels)})")
report.save_figure(fig, "spearman_heatmap", P.report.formats, out_dir=FIG); plt.show()
report.save_table(R.round(3), "score_correlations", out_dir=TAB,
                  caption=f"*Spearman rank correlation between coreset scores (proxy {meta['model']}, "
                          f"{meta['epochs']} epochs, N={len(labels)}).*")
display(R.round(3))

# %%
f = c.fractions[0]
sel = {m: coresets.select(m, arrays, labels, f, balanced=c.balanced, seed=c.seed + P.train.seeds[0], window=c.window, p=c.p,
                          squared=c.squared, score_epochs=c.score_epochs, ccs_score=c.ccs_score,
                          ccs_cutoff=c.ccs_cutoff, moderate_band=c.moderate_band, device="cpu") for m in c.methods}
J = pd.DataFrame([[report.jaccard(sel[a], sel[b]) for b in sel] for a in sel], index=list(sel), columns=list(sel))
fig, ax = plt.subplots(figsize=(1 + 0.8 * len(J), 0.8 + 0.6 * len(J)))
sns.heatmap(J, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="mako", ax=ax)
ax.set_title(f"Jaccard overlap of the selected coresets (fraction {f:g})")
report.save_figure(fig, "coreset_overlap", P.report.formats, out_dir=FIG); plt.show()
