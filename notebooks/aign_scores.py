# %% [markdown]
# # AIGN scores of the proxy run
#
# Distribution of the average input-gradient norm (AIGN) per class, the easiest / hardest training images, how stable
# the per-epoch ranking is, and how well the almost-free *inline* AIGN (from the training step's own backward) agrees
# with the *exact* pass.
#
# **What it answers:** which training images AIGN calls easy, class by class; whether one epoch's ranking already
# gives the coreset the average over epochs gives; and, where both were recorded, whether the nearly free inline AIGN
# selects what the exact pass selects. The last cell states the answer from these numbers.

# %% tags=["parameters"]
params_path = "params.yaml"
proxy_dir = ""                   # default: the main proxy of the first replicate (runs/proxy/main/s<seed>)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from easycore.report import conclude
from easycore.core import coresets
from easycore import report
from easycore.pipeline import runs
from easycore.core.aign import spearman
from easycore.config import load_params
from easycore.pipeline.stages import decode_at, load_prepared
from easycore.store import load_arrays

sns.set_theme(style="whitegrid", context="notebook")
P = load_params(params_path)
proxy_dir = proxy_dir or str(runs.proxy_dir("main", P.train.seeds[0]))
c = P.coreset
FIG, TAB = report.out_dirs(P, "aign_scores")
arrays, meta = load_arrays(f"{proxy_dir}/dynamics.npz")
tr, _ = load_prepared(params=P)   # pixels, or for streamed data (ImageNet) a manifest: decode_at reads the images
labels, classes = arrays["labels"], tr.classes
aign = coresets.aign(arrays, window=c.window, p=c.p, squared=c.squared)
print(f"proxy {meta['model']}, {meta['epochs']} epochs, N={len(labels)}, test accuracy {meta['test_acc']:.3f}")

# %%
df = pd.DataFrame({"AIGN": aign, "class": [classes[i] for i in labels]})
fig, ax = plt.subplots(figsize=(10, 4))
sns.boxplot(data=df, x="class", y="AIGN", ax=ax, color="#9ecae1", fliersize=2)
ax.set_yscale("log"); ax.set_title("AIGN per class (proxy run; low = easy)"); ax.tick_params(axis="x", rotation=30)
report.save_figure(fig, "aign_per_class", P.report.formats, out_dir=FIG); plt.show()
display(df.groupby("class")["AIGN"].describe()[["mean", "50%", "min", "max"]].round(3))

# %%
k = P.report.grid_per_class
shown = [ci for ci in range(len(classes)) if (labels == ci).any()][:20]   # at most 20 class rows (ImageNet: 1000)
picks = {}
for ci in shown:
    order = np.flatnonzero(labels == ci)[np.argsort(aign[labels == ci], kind="stable")]
    picks[ci] = list(order[:k]) + list(order[-k:])
wanted = np.unique(np.concatenate([np.asarray(v, dtype=np.int64) for v in picks.values()]))
pixels = dict(zip(wanted.tolist(), decode_at(P, tr, wanted)[0]))        # only the images shown are decoded
fig, axes = plt.subplots(len(shown), 2 * k, figsize=(2 * k * 0.9, len(shown) * 0.95), squeeze=False)
for row, ci in enumerate(shown):
    for j, i in enumerate(picks[ci]):
        ax = axes[row, j]
        ax.imshow(pixels[int(i)].permute(1, 2, 0).squeeze().numpy(), cmap="gray"); ax.set_xticks([]); ax.set_yticks([])
        if j == 0:
            ax.set_ylabel(classes[ci], rotation=0, ha="right", va="center", fontsize=8)
        for s in ax.spines.values():
            s.set_color("tab:green" if j < k else "tab:red"); s.set_linewidth(2)
fig.suptitle(f"{k} easiest (green, lowest AIGN) and {k} hardest (red) training images per class", y=1.0)
report.save_figure(fig, "easiest_hardest_grid", P.report.formats, out_dir=FIG); plt.show()

# %%
stab = report.aign_stability(arrays, p=c.p, window=c.window, squared=c.squared, fraction=c.fractions[0]).round(3)
report.save_table(stab, "aign_stability", out_dir=TAB,
                  caption=f"*Per-epoch AIGN stability (proxy {meta['model']}, {meta['epochs']} epochs, N={len(aign)}).*")
display(stab)

# %%
if "aign_inline_l2" in arrays:
    inline = np.nanmean(arrays["aign_inline_l2"].astype(float), axis=0)
    exact = np.nanmean(arrays["aign_l2"].astype(float), axis=0)
    b = coresets.budget(c.fractions[0], len(exact))
    rho = spearman(inline, exact)
    jac = report.jaccard(np.argsort(inline, kind="stable")[:b], np.argsort(exact, kind="stable")[:b])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(exact, inline, s=4, alpha=0.5); ax.set_xscale("log"); ax.set_yscale("log")
    ax.set_xlabel("exact AIGN (eval-mode pass)"); ax.set_ylabel("inline AIGN (training step)")
    ax.set_title(f"Spearman {rho:.3f}; Jaccard of easiest {c.fractions[0]:g}: {jac:.3f}")
    report.save_figure(fig, "inline_vs_exact", P.report.formats, out_dir=FIG); plt.show()
    display(Markdown(f"**Inline vs exact AIGN**: Spearman {rho:.3f}, overlap (Jaccard) of the EasyCore selections {jac:.3f}."))
else:
    display(Markdown("proxy.aign.mode is not `both`: no inline/exact comparison."))

# %% [markdown]
# ## Conclusion (generated from the numbers above: `easycore/report/conclude.py`)

# %%
display(Markdown(conclude.aign_scores(df.groupby("class")["AIGN"].median().to_dict(), stab, fraction=c.fractions[0],
                                      inline=(rho, jac) if "aign_inline_l2" in arrays else None)))
