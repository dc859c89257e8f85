# %% [markdown]
# # Ablations of the AIGN score (no retraining)
#
# How much the EasyCore selection changes with the AIGN epoch window (first K / last K / all), the norm (L1 / L2 /
# Linf, squared) and per-class (balanced) vs global selection: Jaccard overlap of the selected coresets and Spearman of
# the scores against the default, from the stored per-epoch matrices. The trained versions are `dvc exp run -S`
# recipes (below).
#
# **What it answers:** how much the EasyCore coreset depends on the choices the paper leaves open (which epochs, which
# norm, global or per class): a variant that keeps nearly the same images needs no retraining to compare. The last
# cell states the answer from these numbers.

# %% tags=["parameters"]
params_path = "params.yaml"
proxy_dir = ""                   # default: the main proxy of the first replicate (runs/proxy/main/s<seed>)

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from easycore.report import conclude, plots
from easycore import report
from easycore.pipeline import runs
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
same = report.default_variants(arrays, c)           # e.g. 'window all' when the default is all: the default again
names = [n for (ff, n) in sels if ff == f and n not in same]
J = pd.DataFrame([[report.jaccard(sels[(f, a)], sels[(f, b)]) for b in names] for a in names], index=names, columns=names)
fig = plots.overlap_figure(J, f"Jaccard overlap between EasyCore variants (fraction {f:g}; the default: window "
                              f"{c.window}, p {c.p:g}, squared {c.squared}, balanced {c.balanced})")
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

# %% [markdown]
# ## Conclusion (generated from the numbers above: `easycore/report/conclude.py`)

# %%
display(Markdown(conclude.ablations(tab.loc[f].drop(index=same), fraction=f)))
