# %% [markdown]
# # Ablations of the AIGN score (no retraining)
#
# How much the EasyCore selection changes with the AIGN epoch window (first K / last K / all), the norm (L1 / L2 /
# Linf, squared) and per-class (balanced) vs global selection: Jaccard overlap of the selected coresets and Spearman of
# the scores against the default, from the stored per-epoch matrices. The trained versions are `dvc exp run -S`
# recipes (last cell).

# %% tags=["parameters"]
params_path = "params.yaml"
proxy_dir = ""                   # default: the main proxy of the first replicate (runs/proxy/main/s<seed>)

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from easycore import report, runs
from easycore.config import load_params
from easycore.store import load_arrays

P = load_params(params_path)
proxy_dir = proxy_dir or str(runs.proxy_dir("main", P.train.seeds[0]))
c = P.coreset
FIG, TAB = report.out_dirs(P, "ablations")
arrays, meta = load_arrays(f"{proxy_dir}/dynamics.npz")
labels = arrays["labels"]
tab, sels = report.ablation_table(arrays, labels, c)
report.save_table(tab.round(3), "ablations", out_dir=TAB,
                  caption=f"*EasyCore selection under AIGN variants vs the default (window {c.window}, p {c.p:g}, "
                          f"squared {c.squared}, balanced {c.balanced}); proxy {meta['model']} {meta['epochs']} "
                          f"epochs, N={len(labels)}.*")
display(tab.round(3))

# %%
f = c.fractions[0]
names = [n for (ff, n) in sels if ff == f]
J = pd.DataFrame([[report.jaccard(sels[(f, a)], sels[(f, b)]) for b in names] for a in names], index=names, columns=names)
fig, ax = plt.subplots(figsize=(1 + 0.8 * len(J), 0.8 + 0.6 * len(J)))
sns.heatmap(J, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="mako", ax=ax)
ax.set_title(f"Jaccard overlap between EasyCore variants (fraction {f:g})")
report.save_figure(fig, "variant_overlap", P.report.formats, out_dir=FIG); plt.show()

# %% [markdown]
# **Trained ablations** (each re-runs only select / train / evaluate / report; the proxy is reused):
#
# ```
# dvc exp run -S 'coreset.window=last:3'
# dvc exp run -S 'coreset.p=inf'
# dvc exp run -S 'coreset.squared=true'
# dvc exp run -S 'coreset.balanced=true'
# dvc exp run -S 'coreset.methods=[easycore,random]' -S 'coreset.window=last:3'   # cheaper: two methods
# ```
# Compare with `dvc exp show --only-changed` or `dvc metrics diff` (reports/summary.json).
