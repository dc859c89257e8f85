"""A seed is a whole-pipeline replicate: proxy (proxy.seed + s) -> scores -> selection (coreset.seed + s, random
redrawn) -> training (seed s). Checked on a tiny synthetic set through the pipeline's own functions: the replicates'
proxies and selections differ, each selection is exactly the one its own proxy's records give, each run trains on
its replicate's selection, and the secondary groups take the first train.survey_seeds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from easycore.core import coresets
from easycore.pipeline import group, stages as pipeline, runs
from easycore.config import ConfigError, params_from_dict
from easycore.store import load_arrays, read_json
from easycore.core.train import load_model

TINY = {
    "data": {"dataset": "synthetic", "n_per_class": 8, "test_n_per_class": 4, "seed": 0},
    "runtime": {"device": "cpu"},
    "proxy": {"model": "cnn_tiny", "transfer_models": [], "epochs": 2, "batch_size": 32, "deepfool_steps": 1,
              "seed": 5},
    "coreset": {"methods": ["easycore", "random"], "fractions": [0.5], "transfer_methods": [], "adaptive": [],
                "survey_methods": ["hard"], "survey_fractions": [0.5], "survey_modes": ["standard"], "seed": 3},
    "train": {"model": "cnn_tiny", "epochs": 1, "batch_size": 16, "modes": ["standard"], "seeds": [0, 1],
              "survey_seeds": 1},
    "eval": {"n_test": 40, "pgd_steps": 2, "sanity": False, "attacks": ["pgd"], "eps_grid": [0.0]},
}


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """prepare -> proxy_all -> select_all for two replicates, in a temporary folder."""
    import os

    work = tmp_path_factory.mktemp("replicates")
    old = os.getcwd()
    os.chdir(work)
    try:
        params = params_from_dict(TINY)
        pipeline.prepare(params, Path("data/prepared"))
        pipeline.proxy_all(params, "main", progress=False)
        pipeline.select_all(params, "main")
        yield params, work
    finally:
        os.chdir(old)


def test_every_replicate_has_its_own_proxy_and_selections(replicated):
    params, work = replicated
    proxies = {s: load_arrays(work / runs.proxy_dir("main", s) / "dynamics.npz") for s in (0, 1)}
    assert {s: m["seed"] for s, (_, m) in proxies.items()} == {0: 5, 1: 6}      # proxy.seed + s
    assert {s: m["replicate"] for s, (_, m) in proxies.items()} == {0: 0, 1: 1}
    assert not np.array_equal(proxies[0][0]["aign_l2"], proxies[1][0]["aign_l2"])  # another proxy training
    assert not (work / "runs/proxy/.main-s0.state.pt").exists()                    # resume points removed
    labels = proxies[0][0]["labels"]
    idx = {}
    for method in ("easycore", "random"):
        for s in (0, 1):
            d = work / runs.selection_dir("main", method, 0.5, s)
            idx[method, s] = np.load(d / "indices.npy")
            assert read_json(d / "summary.json")["seed"] == 3 + s                   # coreset.seed + s
            # exactly what replicate s's own proxy records give (not replicate 0's)
            want = coresets.select(method, proxies[s][0], labels, 0.5, seed=3 + s)
            assert np.array_equal(idx[method, s], want)
        assert set(idx[method, 0]) != set(idx[method, 1])                           # redrawn / re-scored
    # the survey method is selected for the secondary replicates only (train.survey_seeds = 1)
    assert (work / runs.selection_dir("main", "hard", 0.5, 0) / "indices.npy").exists()
    assert not runs.selection_dir("main", "hard", 0.5, 1).exists()


def test_each_run_trains_on_its_replicates_selection(replicated):
    params, work = replicated
    members = runs.expected_groups(params)[runs.Group("main", "random", 0.5, "standard")]
    assert [r.seed for r in members] == [0, 1]
    group.train_group(params, members, progress=False)
    tr, _ = pipeline.load_prepared(work / "data/prepared")
    prints = set()
    for r in members:
        _, meta = load_model(work / r.train_dir() / "model.safetensors", "cpu")
        sel = np.load(work / r.selection_dir() / "indices.npy")
        assert meta["source"] == str(r.selection_dir() / "indices.npy") and meta["seed"] == r.seed
        assert meta["fingerprint"] == tr.subset(np.sort(sel)).fingerprint, r    # trained on exactly that subset
        prints.add(meta["fingerprint"])
    assert len(prints) == 2


def test_secondary_groups_take_the_first_survey_seeds():
    params = params_from_dict(TINY | {"coreset": TINY["coreset"] | {"adaptive": ["acs_craig"], "adaptive_modes": ["standard"]}})
    seeds = {g.key: [r.seed for r in m] for g, m in runs.expected_groups(params).items()}
    assert seeds["main/easycore-0.5-standard"] == seeds["main/random-0.5-standard"] == [0, 1]
    assert seeds["main/hard-0.5-standard"] == seeds["none/full-1.0-standard"] == [0]
    assert seeds["none/acs_craig-0.5-standard"] == [0]
    assert runs.proxy_seeds(params, "main") == [0, 1]
    with pytest.raises(ConfigError, match="survey_seeds"):
        params_from_dict(TINY | {"train": TINY["train"] | {"survey_seeds": 3}})
