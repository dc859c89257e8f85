"""Coreset selection on hand-made data where the right answer is known."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from easycore.core import coresets as cs
from easycore.store import ArtifactError, save_arrays

N_PER = 200
E = 4


def _blobs(seed: int = 0):
    """Two 2-D Gaussian blobs split by the line x = 0; artifacts built so that hardness = nearness to it."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], N_PER).astype(np.int64)
    centers = np.where(labels[:, None] == 0, [-1.5, 0.0], [1.5, 0.0])
    x = (centers + rng.normal(size=(2 * N_PER, 2))).astype(np.float32)
    n = len(labels)
    dist = np.abs(x[:, 0]).astype(np.float64)                       # distance to the boundary
    side = np.where(labels == 1, x[:, 0], -x[:, 0])                  # > 0: correct side
    noise = lambda s=0.05: 1.0 + s * rng.normal(size=(E, n))         # noqa: E731
    hard = np.exp(-dist)[None, :] * noise()                          # decreasing in the distance
    margin = side[None, :] * noise() * np.linspace(0.5, 2.0, E)[:, None]
    correct = margin > 0
    correct[1, :20] = ~correct[1, :20]                               # a few forgetting events
    art = {
        "aign_l2": hard.astype(np.float32),
        "aign_l1": (3.0 * hard * noise()).astype(np.float32),
        "aign_linf": (0.2 * hard * noise()).astype(np.float32),
        "loss": np.log1p(np.exp(-margin)).astype(np.float32),
        "margin": margin.astype(np.float32),
        "el2n": (hard * noise()).astype(np.float32),
        "grand": (2 * hard * noise()).astype(np.float32),
        "entropy": (0.7 * hard * noise()).astype(np.float32),
        "correct": correct,
        "features": x,
        "deepfool": dist.astype(np.float32),
        "labels": labels,
    }
    return art, labels, dist


@pytest.fixture(scope="module")
def blobs():
    return _blobs()


def _kept_vs_dropped(idx, dist):
    kept = np.zeros(len(dist), bool)
    kept[idx] = True
    return dist[kept].mean(), dist[~kept].mean()


# ----------------------------------------------------------------------------- directions
@pytest.mark.parametrize("method,far", [("easycore", True), ("hard", False), ("deepfool", False),
                                        ("deepfool_far", True), ("el2n", False), ("grand", False),
                                        ("entropy", False), ("margin", False), ("aum", False)])
@pytest.mark.parametrize("balanced", [False, True])
def test_direction_on_blobs(blobs, method, far, balanced):
    art, labels, dist = blobs
    idx = cs.select(method, art, labels, 0.3, balanced=balanced, seed=1)
    kept, dropped = _kept_vs_dropped(idx, dist)
    assert (kept > dropped) if far else (kept < dropped), (method, kept, dropped)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_easycore_all_norms_and_windows(blobs, p):
    art, labels, dist = blobs
    for window in ("all", "first:2", "last:1"):
        for squared in (False, True):
            idx = cs.select("easycore", art, labels, 0.2, p=p, window=window, squared=squared)
            kept, dropped = _kept_vs_dropped(idx, dist)
            assert kept > dropped + 0.5


# ----------------------------------------------------------------------------- select_by_score
def test_select_by_score_global_exact():
    rng = np.random.default_rng(0)
    s = rng.permutation(103).astype(float)
    labels = rng.integers(0, 4, 103)
    idx = cs.select_by_score(s, labels, 0.3, keep="low", seed=0)
    assert len(idx) == round(0.3 * 103) == 31 and idx.dtype == np.int64
    assert set(idx.tolist()) == set(np.argsort(s)[:31].tolist())
    idx = cs.select_by_score(s, labels, 0.3, keep="high", seed=0)
    assert set(idx.tolist()) == set(np.argsort(s)[-31:].tolist())
    assert len(cs.select_by_score(s, labels, 1.0)) == 103


def test_select_by_score_balanced_quotas_and_small_class():
    labels = np.repeat([0, 1, 2, 3], [50, 40, 10, 3])          # N = 103; class 3 is too small for 0.25
    rng = np.random.default_rng(1)
    s = rng.normal(size=len(labels))
    seen_extra = set()
    for seed in range(12):
        idx = cs.select_by_score(s, labels, 0.25, balanced=True, seed=seed)
        assert len(idx) == math.floor(0.25 * 103 + 0.5) == 26
        assert len(np.unique(idx)) == len(idx) and idx.min() >= 0 and idx.max() < 103
        counts = np.bincount(labels[idx], minlength=4)
        # floors 12, 10, 2, 0; fractional parts .5, 0, .5, .75 -> class 3 first, then one of the .5 ties
        assert counts[1] == 10 and counts[3] == 1
        assert (counts[0], counts[2]) in ((13, 2), (12, 3))
        seen_extra.add(int(counts[0]))
        for c in range(4):                                       # inside a class: its lowest scores
            members = np.flatnonzero(labels == c)
            want = members[np.argsort(s[members])[:counts[c]]]
            assert set(idx[labels[idx] == c].tolist()) == set(want.tolist())
    assert seen_extra == {12, 13}                                # the tie goes either way by seed


def test_class_quotas_tiny_classes():
    labels = np.array([0] * 7 + [1] + [2] + [3] * 2)
    for f in (0.05, 0.1, 0.3, 0.5, 0.9, 1.0):
        q = cs.class_quotas(labels, f, seed=3)
        assert sum(q.values()) == cs.budget(f, len(labels))
        assert all(q[c] <= np.sum(labels == c) for c in q)


def test_select_by_score_seed_determinism_and_shuffle():
    rng = np.random.default_rng(2)
    s = rng.normal(size=300)
    labels = rng.integers(0, 3, 300)
    a = cs.select_by_score(s, labels, 0.4, seed=5)
    b = cs.select_by_score(s, labels, 0.4, seed=5)
    c = cs.select_by_score(s, labels, 0.4, seed=6)
    assert np.array_equal(a, b)
    assert set(a.tolist()) == set(c.tolist()) and not np.array_equal(a, c)   # same set, other order
    assert not np.all(np.diff(a) > 0)                                        # shuffled, not sorted


def test_ties_broken_by_seed():
    s = np.zeros(200)
    s[:20] = -1.0                                               # 20 clear winners, 180 tied
    labels = np.zeros(200, int)
    sets = [frozenset(cs.select_by_score(s, labels, 0.25, seed=k).tolist()) for k in range(5)]
    assert all(set(range(20)) <= x for x in sets)
    assert len(set(sets)) > 1
    assert sets[0] == frozenset(cs.select_by_score(s, labels, 0.25, seed=0).tolist())


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), True, "0.3"])
def test_bad_fraction(bad):
    with pytest.raises(ValueError, match="fraction"):
        cs.select_by_score(np.arange(10.0), np.zeros(10, int), bad)


def test_nan_scores():
    s = np.arange(10.0)
    s[4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cs.select_by_score(s, np.zeros(10, int), 0.5)


# ----------------------------------------------------------------------------- feature methods
def _cover_radius(x, idx):
    d = np.linalg.norm(x[:, None, :] - x[idx][None, :, :], axis=2)
    return d.min(1).max()


def test_kcenter_covers_better_than_random(blobs):
    art, labels, _ = blobs
    x = art["features"].astype(np.float64)
    for seed in range(4):
        for balanced in (False, True):
            kc = cs.select("kcenter", art, labels, 0.1, balanced=balanced, seed=seed, device="cpu")
            rnd = cs.select("random", art, labels, 0.1, balanced=balanced, seed=seed)
            assert len(kc) == len(rnd) == 40
            assert _cover_radius(x, kc) < _cover_radius(x, rnd)


def test_herding_matches_mean_better_than_random(blobs):
    art, labels, _ = blobs
    x = art["features"].astype(np.float64)
    for seed in range(4):
        h = cs.select("herding", art, labels, 0.1, seed=seed, device="cpu")
        r = cs.select("random", art, labels, 0.1, seed=seed)
        err = lambda i: np.linalg.norm(x[i].mean(0) - x.mean(0))   # noqa: E731
        assert err(h) < err(r)
        assert err(h) < 0.02
    hb = cs.select("herding", art, labels, 0.1, balanced=True, seed=0, device="cpu")
    for c in (0, 1):
        k = hb[labels[hb] == c]
        assert np.linalg.norm(x[k].mean(0) - x[labels == c].mean(0)) < 0.05


def test_moderate_keeps_the_median_band(blobs):
    art, labels, _ = blobs
    score = cs.method_scores("moderate", art, labels=labels)
    idx = cs.select("moderate", art, labels, 0.3, seed=0)
    kept = np.zeros(len(labels), bool)
    kept[idx] = True
    assert score[kept].max() <= score[~kept].min()
    # with a band: drawn at random from the 60% closest to the median distance
    idx2 = cs.select("moderate", art, labels, 0.3, seed=0, moderate_band=0.6)
    band = np.argsort(score)[:240]
    assert len(idx2) == 120 and set(idx2.tolist()) <= set(band.tolist())
    assert set(idx2.tolist()) != set(idx.tolist())


# ----------------------------------------------------------------------------- dynamics scores
def test_forgetting_events_hand_counted():
    seq = np.array([
        [1, 1, 1, 1, 1],   # always right: 0
        [1, 0, 1, 0, 1],   # forgotten twice: 2
        [0, 0, 0, 0, 0],   # never learned: above every learned sample
        [0, 1, 1, 0, 0],   # 1
        [1, 0, 0, 0, 0],   # 1
        [0, 0, 0, 0, 1],   # learned at the end: 0
    ], dtype=bool).T       # -> [E=5, N=6]
    f = cs.forgetting_events(seq)
    assert f.tolist() == [0, 2, 6, 1, 1, 0]
    art = {"correct": seq}
    top = cs.select("forgetting", art, np.zeros(6, int), 2 / 6)
    assert set(top.tolist()) == {1, 2}
    top1 = cs.select("forgetting", art, np.zeros(6, int), 1 / 6)
    assert top1.tolist() == [2]


def test_el2n_grand_aum_by_hand():
    el2n = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 10.0]], np.float32)       # [E=3, N=2]
    art = {"el2n": el2n, "grand": el2n * 2, "margin": np.array([[1, -2], [2, 0], [6, 5]], np.float32),
           "entropy": el2n, "correct": np.ones((3, 2), bool)}
    assert cs.el2n(art, score_epochs=2).tolist() == [2.0, 1.0]
    assert cs.el2n(art, score_epochs=1).tolist() == [1.0, 0.0]
    assert cs.el2n(art, score_epochs=99).tolist() == [3.0, 4.0]               # clipped to E
    assert cs.grand(art, score_epochs=2).tolist() == [6.0, 4.0]               # epoch 2 -> row 1
    assert cs.grand(art, score_epochs=99).tolist() == [10.0, 20.0]
    assert cs.aum(art).tolist() == [3.0, 1.0]
    assert cs.margin(art).tolist() == [6.0, 5.0]
    assert cs.entropy(art).tolist() == [5.0, 10.0]
    assert cs.select("el2n", art, np.zeros(2, int), 0.5, score_epochs=2).tolist() == [0]
    assert cs.select("aum", art, np.zeros(2, int), 0.5).tolist() == [1]
    assert cs.method_scores("random", art) is None


def test_ccs_allocate_smallest_first():
    assert cs.ccs_allocate(np.array([100, 1, 10]), 30).tolist() == [19, 1, 10]
    assert cs.ccs_allocate(np.array([5, 5, 5]), 15).tolist() == [5, 5, 5]
    assert cs.ccs_allocate(np.array([0, 7, 3]), 4).sum() == 4


def test_ccs_cutoff_budget_and_coverage():
    n = 500
    rng = np.random.default_rng(0)
    hardness = rng.permutation(n).astype(np.float32)
    art = {"aign_l2": np.stack([hardness, hardness]), "margin": np.stack([-hardness, -hardness])}
    labels = np.repeat([0, 1], n // 2)
    hardest = set(np.argsort(hardness)[-50:].tolist())           # cutoff 0.1
    for score in ("aign", "aum"):                                # aum: low margin = hard
        for balanced in (False, True):
            idx = cs.select("ccs", art, labels, 0.3, ccs_score=score, ccs_cutoff=0.1, balanced=balanced, seed=3)
            assert len(idx) == 150 and len(np.unique(idx)) == 150
            assert not hardest & set(idx.tolist())
            assert (hardness[idx] < 45).any()                    # strata cover the easy end too
            if balanced:
                assert np.bincount(labels[idx]).tolist() == [75, 75]
    # budget above what the cutoff leaves: the cutoff shrinks and the budget is still met
    idx = cs.select("ccs", art, labels, 0.95, ccs_cutoff=0.1, seed=0)
    assert len(idx) == 475 and set(np.argsort(hardness)[:475].tolist()) == set(idx.tolist())


# ----------------------------------------------------------------------------- every method, budgets, errors
@pytest.mark.parametrize("method", cs.METHODS.names(kind="static"))
def test_every_method_exact_budget(blobs, method):
    art, labels, _ = blobs
    for balanced in (False, True):
        for f in (0.1, 0.5, 1.0):
            idx = cs.select(method, art, labels, f, balanced=balanced, seed=0, device="cpu")
            assert idx.dtype == np.int64 and len(idx) == round(f * len(labels))
            assert len(np.unique(idx)) == len(idx) and idx.min() >= 0 and idx.max() < len(labels)
            if balanced:
                assert np.bincount(labels[idx], minlength=2).tolist() == [len(idx) // 2] * 2
    again = cs.select(method, art, labels, 0.1, seed=0, device="cpu")
    assert np.array_equal(again, cs.select(method, art, labels, 0.1, seed=0, device="cpu"))


def test_errors(blobs):
    art, labels, _ = blobs
    with pytest.raises(ValueError, match="unknown coreset method 'nope'.*easycore"):
        cs.select("nope", art, labels, 0.3)
    for f in (0, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            cs.select("easycore", art, labels, f)
    no_l1 = {k: v for k, v in art.items() if k != "aign_l1"}
    with pytest.raises(ArtifactError, match="'aign_l1'.*proxy.aign.mode"):
        cs.select("easycore", no_l1, labels, 0.3, p=1)
    no_feat = {k: v for k, v in art.items() if k != "features"}
    with pytest.raises(ArtifactError, match="'features'"):
        cs.select("kcenter", no_feat, labels, 0.3)
    with pytest.raises(ValueError, match="ccs_score"):
        cs.select("ccs", art, labels, 0.3, ccs_score="loss")


def test_table_and_config():
    md = cs.direction_table_markdown()
    rows = md.strip().splitlines()
    assert len(rows) == 2 + len(cs.METHODS)
    assert all(len(r.replace("\\|", "").split("|")) == 8 for r in rows)     # 6 cells, no stray pipes
    for name, spec in cs.METHODS.items():
        assert f"`{name}`" in md and spec.keep in ("low", "high", "custom", "adaptive", "all")
    assert cs.METHODS["easycore"].keep == "low" and cs.METHODS["hard"].keep == "high"
    from easycore.config import CoresetConfig, check

    check(CoresetConfig(methods=cs.METHODS.names(kind="static"), adaptive=cs.METHODS.names(kind="adaptive")), "coreset")


# ----------------------------------------------------------------------------- the stage
def _write_artifact(tmp_path, art, fingerprint="fp0"):
    path = tmp_path / "proxy" / "dynamics.npz"
    save_arrays(path, art, {"fingerprint": fingerprint, "n": len(art["labels"])})
    return path


def test_run_select_writes_nothing_on_bad_input(tmp_path, blobs):
    art, labels, _ = blobs
    src = _write_artifact(tmp_path, art)
    out = tmp_path / "out"
    kw = dict(fingerprint="fp0", labels=labels, balanced=False, seed=0)
    with pytest.raises(ValueError, match="unknown coreset method"):
        cs.run_select("nope", 0.3, src, out / "i.npy", out / "s.json", **kw)
    for f in (0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            cs.run_select("easycore", f, src, out / "i.npy", out / "s.json", **kw)
    with pytest.raises(ArtifactError, match="fingerprint"):
        cs.run_select("easycore", 0.3, src, out / "i.npy", out / "s.json", **{**kw, "fingerprint": "other"})
    with pytest.raises(ArtifactError, match="missing artifact"):
        cs.run_select("easycore", 0.3, tmp_path / "none.npz", out / "i.npy", out / "s.json", **kw)
    with pytest.raises(ArtifactError, match="labels"):
        cs.run_select("easycore", 0.3, src, out / "i.npy", out / "s.json", **{**kw, "labels": labels[::-1].copy()})
    assert not out.exists() or not any(out.iterdir())


def test_a_scoring_option_changes_only_the_selections_that_read_records(tmp_path, blobs):
    """coreset.p (or window, ...) is recorded in the summary of a method that scores records, not in random's: a
    changed p leaves random's selection files byte-identical, so DVC re-trains none of its models."""
    art, labels, _ = blobs
    src = _write_artifact(tmp_path, art)
    kw = dict(fingerprint="fp0", labels=labels, balanced=False, seed=0)
    files = {}
    for p in (2.0, math.inf):
        for m in ("random", "random_balanced", "easycore"):
            out = tmp_path / f"{m}-{p}"
            cs.run_select(m, 0.3, src, out / "i.npy", out / "s.json", p=p, **kw)
            files[m, p] = ((out / "i.npy").read_bytes(), (out / "s.json").read_bytes())
    assert files["random", 2.0] == files["random", math.inf]
    assert files["random_balanced", 2.0] == files["random_balanced", math.inf]
    assert files["easycore", 2.0][1] != files["easycore", math.inf][1]


def test_run_select_good(tmp_path, blobs):
    art, labels, dist = blobs
    src = _write_artifact(tmp_path, art)
    out = tmp_path / "out"
    summary = cs.run_select("easycore", 0.25, src, out / "i.npy", out / "s.json", fingerprint="fp0",
                            labels=labels, balanced=True, seed=4, window="all", p=2.0)
    idx = np.load(out / "i.npy")
    assert np.array_equal(idx, cs.select("easycore", art, labels, 0.25, balanced=True, seed=4))
    js = json.loads((out / "s.json").read_text())
    assert js == json.loads(json.dumps(summary))
    assert js["method"] == "easycore" and js["fraction"] == 0.25 and js["fingerprint"] == "fp0"
    assert js["n_selected"] == 100 and js["per_class"] == {"0": 50, "1": 50}
    assert js["scores"]["kept"]["max"] <= js["scores"]["dropped"]["max"]
    assert js["scores"]["kept"]["mean"] < js["scores"]["dropped"]["mean"]
    assert sorted(p.name for p in out.iterdir()) == ["i.npy", "s.json"]     # no temp files left
    s2 = cs.run_select("kcenter", 0.1, src, out / "k.npy", out / "k.json", fingerprint="fp0", labels=labels,
                       balanced=False, seed=0, device="cpu", p=math.inf)
    assert s2["scores"] is None and s2["n_selected"] == 40


def test_the_deepfool_methods_list_matches_the_registry():
    """runs.DEEPFOOL_METHODS (which proxy replicates compute DeepFool) names exactly the registered methods whose
    records need `deepfool`."""
    from easycore.pipeline import runs
    from easycore.core.methods import METHODS

    assert set(runs.DEEPFOOL_METHODS) == {e.name for e in METHODS.entries() if "deepfool" in e.needs}
