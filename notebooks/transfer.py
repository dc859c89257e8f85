# %% [markdown]
# # Transfer: scores from another architecture
#
# EasyCore selected with AIGN from each transfer proxy architecture (`proxy.transfer_models`), then trained on the main
# architecture (`train.model`, standard mode), against EasyCore from the main proxy, random, and the full-data
# reference. The claim: AIGN is a property of the data, so the selections agree and train equally robust models.
#
# **What it answers:** does a proxy of another architecture rank the images and select the coreset as the main proxy
# does, and is the model trained on its coreset as robust? The last cell states the answer from these numbers.

# %% tags=["parameters"]
params_path = "params.yaml"
n_boot = 4000

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from easycore.report import conclude
from easycore.core import coresets
from easycore import inference, report
from easycore.pipeline import runs
from easycore.core.aign import spearman
from easycore.config import load_params
from easycore.store import load_arrays, read_json

P = load_params(params_path)
c = P.coreset
FIG, TAB = report.out_dirs(P, "transfer")
info = read_json("data/prepared/info.json")
s0 = P.train.seeds[0]   # the first replicate's proxies (main and each transfer model)
main, mmeta = load_arrays(runs.proxy_dir("main", s0) / "dynamics.npz")
kw = dict(window=c.window, p=c.p, squared=c.squared)
rows = []
for name in P.proxy.transfer_models:
    other, tmeta = load_arrays(runs.proxy_dir(name, s0) / "dynamics.npz")
    a_main, a_tr = coresets.aign(main, **kw), coresets.aign(other, **kw)
    for f in c.fractions:
        rows.append({"transfer proxy": name, "fraction": f, "spearman_AIGN_main_vs_transfer": spearman(a_main, a_tr),
                     "jaccard_easycore_main_vs_transfer": report.jaccard(
                         coresets.select("easycore", main, main["labels"], f, balanced=c.balanced, seed=c.seed + s0, **kw),
                         coresets.select("easycore", other, other["labels"], f, balanced=c.balanced, seed=c.seed + s0, **kw))})
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(a_main, a_tr, s=4, alpha=0.5); ax.set_xscale("log"); ax.set_yscale("log")
    ax.set_xlabel(f"AIGN, proxy {mmeta['model']}"); ax.set_ylabel(f"AIGN, proxy {tmeta['model']}")
    ax.set_title(f"Spearman {spearman(a_main, a_tr):.3f}")
    report.save_figure(fig, f"aign_main_vs_{name}", P.report.formats, out_dir=FIG); plt.show()
agree = pd.DataFrame(rows, columns=["transfer proxy", "fraction", "spearman_AIGN_main_vs_transfer",
                                    "jaccard_easycore_main_vs_transfer"]).round(3)
display(agree if len(agree) else Markdown("No transfer proxy in this profile (`proxy.transfer_models` is empty): "
                                          "the tables below hold the main proxy's runs only."))

# %% [markdown]
# ## Across replicates
# The agreement for every replicate that trained both proxies (a transfer proxy runs the secondary replicates), with
# the t interval over the replicates (the replicate is the unit), against the overlap two random coresets expect.

# %%
per_rep = []
for name in P.proxy.transfer_models:
    for s in runs.proxy_seeds(P, name):
        pm, pt = runs.proxy_dir("main", s) / "dynamics.npz", runs.proxy_dir(name, s) / "dynamics.npz"
        if not (pm.exists() and pt.exists()):
            continue
        am, at = load_arrays(pm)[0], load_arrays(pt)[0]
        x_m, x_t = coresets.aign(am, **kw), coresets.aign(at, **kw)
        for f in c.fractions:
            per_rep.append({"transfer proxy": name, "fraction": f, "replicate": s,
                            "spearman_AIGN_main_vs_transfer": spearman(x_m, x_t),
                            "jaccard_easycore_main_vs_transfer": report.jaccard(
                                coresets.select("easycore", am, am["labels"], f, balanced=c.balanced, seed=c.seed + s, **kw),
                                coresets.select("easycore", at, at["labels"], f, balanced=c.balanced, seed=c.seed + s, **kw)),
                            "jaccard_random_expected": conclude.random_jaccard(f)})
per_rep = pd.DataFrame(per_rep)
if len(per_rep):
    across = pd.concat([report.replicate_summary(per_rep, ["transfer proxy", "fraction"], v).assign(measure=v)
                        for v in ("spearman_AIGN_main_vs_transfer", "jaccard_easycore_main_vs_transfer")],
                       ignore_index=True)
    report.save_table(per_rep.set_index(["transfer proxy", "fraction", "replicate"]).round(4), "transfer_replicates",
                      out_dir=TAB, caption="*AIGN agreement between the main and each transfer proxy, per replicate.*")
    report.save_table(across.set_index(["transfer proxy", "fraction", "measure"]).round(4), "transfer_across_replicates",
                      out_dir=TAB, caption="*Mean over the replicates with its 95 % t interval (replicate as the unit).*")
    display(across.round(3))
else:
    across = pd.DataFrame()

# %%
results = report.load_results(P)
keys = ["clean", "robust"]
rows = []
for r in results:
    if r.run.mode != "standard" or (r.run.scores == "main" and r.run.method not in ("easycore", "random")) or \
            (r.run.scores == runs.NONE and r.run.method != runs.FULL):
        continue
    rows.append(r)
table, robust = [], {}          # robust: {'main' or a transfer proxy: (mean, lo, hi) %} of EasyCore, for the conclusion
for scores, method, f in sorted({(r.run.scores, r.run.method, r.run.fraction) for r in rows}):
    label = "full data" if method == runs.FULL else (f"{method} (scored by {scores})" if scores != "main" else
                                                     f"{method} (scored by main {mmeta['model']})")
    row = {"run": label, "fraction": f}
    for key in keys:
        m = report.outcome_matrix(results, scores=scores, method=method, fraction=f, mode="standard", key=key)
        if m is None:
            row[key] = "missing"
            continue
        s = inference.cell_stat(m, n_boot=n_boot)
        row[key] = f"{100 * s.mean:.1f} [{100 * s.lo:.1f}, {100 * s.hi:.1f}]"
        if key == "robust" and method == "easycore" and f == (agree.fraction.iloc[0] if len(agree) else f):
            robust[scores] = (100 * s.mean, 100 * s.lo, 100 * s.hi)
    table.append(row)
# the columns named: a profile without standard-mode training (train.modes: [trades]) has no rows, an empty table
table = pd.DataFrame(table, columns=["run", "fraction", *keys]).set_index("run")
cap = report.scale_caption(P, info, what="Transfer, standard training. " + (
    "" if len(table) else "No standard-mode runs (`train.modes` has no `standard`): nothing to compare. "))
report.save_table(table, "transfer", caption=cap, out_dir=TAB)
report.save_table(agree.set_index(["transfer proxy", "fraction"]), "transfer_agreement", out_dir=TAB,
                  caption="*Agreement of AIGN between the main and each transfer proxy.*")
display(Markdown(report.to_markdown(table, cap)))

# %% [markdown]
# ## Conclusion (generated from the numbers above: `easycore/report/conclude.py`)

# %%
display(Markdown(conclude.transfer(agree, robust, across)))
