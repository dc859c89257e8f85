# %% [markdown]
# # Correlations between coreset scores
#
# Spearman rank correlation between the per-sample score of every static method that has one
# (`coresets.method_scores`, raw orientation: the `keeps` column of `easycore methods` says which end a method keeps),
# and the overlap (Jaccard) of the coresets the select stage made for the first replicate (every static method of the
# profile at the fraction most of them share). Methods left out are listed with the reason.
#
# **What it answers:** is AIGN a new ranking of the training images, or one the baselines already give, and does the
# EasyCore coreset share its images with theirs? The last cell states the answer from these numbers.

# %% tags=["parameters"]
params_path = "params.yaml"
proxy_dir = ""                   # default: the main proxy of the first replicate (runs/proxy/main/s<seed>)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from easycore.report import conclude, plots
from easycore.core import coresets
from easycore import report
from easycore.pipeline import runs
from easycore.core.methods import METHODS
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
fig = plots.overlap_figure(R, f"Spearman between coreset scores (proxy {meta['model']}, N={len(labels)})", vmin=-1,
                           vmax=1, cmap="RdBu_r")
report.save_figure(fig, "spearman_heatmap", P.report.formats, out_dir=FIG); plt.show()
report.save_table(R.round(3), "score_correlations", out_dir=TAB,
                  caption=f"*Spearman rank correlation between coreset scores (proxy {meta['model']}, "
                          f"{meta['epochs']} epochs, N={len(labels)}).*")
display(R.round(3))

# %%
# the coresets the select stage made for the first replicate (what its models were trained on), at the fraction the
# most methods share: the primary pair and the survey methods alike
s0 = P.train.seeds[0]
made = [(m, ff) for m, ff, s in runs.selections(P, "main") if s == s0]
f = max(dict.fromkeys(ff for _, ff in made), key=lambda ff: sum(x == ff for _, x in made))
sel = {m: np.load(runs.selection_dir("main", m, f, s0) / "indices.npy") for m, ff in made if ff == f}
J = pd.DataFrame([[report.jaccard(sel[a], sel[b]) for b in sel] for a in sel], index=list(sel), columns=list(sel))
fig = plots.overlap_figure(J, f"Jaccard overlap of the selected coresets (fraction {f:g}, replicate {s0}; two random "
                              f"coresets of this size: {conclude.random_jaccard(f):.2f})")
report.save_figure(fig, "coreset_overlap", P.report.formats, out_dir=FIG); plt.show()

# %% [markdown]
# ## Conclusion (generated from the numbers above: `easycore/report/conclude.py`)

# %%
display(Markdown(conclude.score_correlations(R, J, fraction=f)))
