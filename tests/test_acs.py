"""ACS selectors and helpers (easycore/core/acs.py) against brute force, scipy and autograd."""
import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import nnls

from easycore.core import acs
from easycore.core.coresets import budget, class_quotas
from easycore.core.models import Classifier


# ----------------------------------------------------------------------------- references
def _pairwise(g, metric="euclidean"):
    sq = ((g[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    return sq if metric == "sqeuclidean" else np.sqrt(sq)


def _plain_greedy(g, k, metric="euclidean"):
    """Textbook greedy on F(S) = sum_i max_{j in S} (d_max - d_ij), d_max the exact max distance;
    lowest index among equal gains (within acs.TIE_RTOL of the best); weights = nearest chosen one
    (ties -> lowest index)."""
    d = _pairwise(g, metric)
    sim = d.max() - d
    cur = np.zeros(len(g))
    chosen = []
    for _ in range(k):
        gains = np.maximum(sim - cur[:, None], 0.0).sum(0)
        gains[chosen] = -np.inf
        best = gains.max()
        j = int(np.flatnonzero(gains >= best - acs.TIE_RTOL * abs(best))[0])
        chosen.append(j)
        cur = np.maximum(cur, sim[:, j])
    asc = np.sort(chosen)
    owner = asc[np.argmin(d[:, asc], axis=1)]
    w = np.array([(owner == j).sum() for j in chosen], dtype=float)
    return np.array(chosen), w


def _facility(g, s):
    d = _pairwise(g)
    return (d.max() - d[:, list(s)]).max(1).sum() if len(s) else 0.0


def _residual(g, idx, w):
    b = g.sum(0)
    return np.linalg.norm(b - (w[:, None] * g[idx]).sum(0)) / np.linalg.norm(b)


# ----------------------------------------------------------------------------- CRAIG
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_craig_equals_plain_greedy(seed, metric):
    rng = np.random.default_rng(seed)
    for n, d in [(6, 2), (17, 3), (40, 5)]:
        g = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0)
        for k in sorted({1, 2, 3, n // 2, n - 1}):
            idx, w = acs.craig(g, k, metric=metric)
            ref_idx, ref_w = _plain_greedy(g, k, metric)
            np.testing.assert_array_equal(idx, ref_idx)
            np.testing.assert_array_equal(w, ref_w)
            assert idx.dtype == np.int64 and w.sum() == n


def test_craig_ties_go_to_lowest_index():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(6, 3))
    g = np.concatenate([base, base, base[:2]])  # exact duplicates: equal gains, equal distances
    for k in (1, 3, 6, 9):
        idx, w = acs.craig(g, k)
        ref_idx, ref_w = _plain_greedy(g, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(w, ref_w)
        assert idx.max() < 6 or k > 6  # a duplicate's twin with the lower index wins


def test_craig_exact_ties_on_integer_grid():
    # integer points, squared distances: every gain is an exact integer, so ties are real ties and both
    # the greedy choice and the nearest-chosen assignment must go to the lowest index
    for seed in range(25):
        rng = np.random.default_rng(seed)
        g = rng.integers(0, 4, size=(14, 2)).astype(float)
        for k in (1, 2, 4, 7):
            idx, w = acs.craig(g, k, metric="sqeuclidean", probe=2)
            ref_idx, ref_w = _plain_greedy(g, k, "sqeuclidean")
            np.testing.assert_array_equal(idx, ref_idx)
            np.testing.assert_array_equal(w, ref_w)


def test_craig_within_1_minus_1_over_e_of_optimum():
    rng = np.random.default_rng(11)
    for trial in range(6):
        n = int(rng.integers(5, 13))
        g = rng.normal(size=(n, 2)) + (rng.random((n, 1)) > 0.5) * 4.0
        for k in (1, 2, 3):
            opt = max(_facility(g, s) for s in itertools.combinations(range(n), k))
            idx, _ = acs.craig(g, k)
            assert _facility(g, idx) >= (1 - 1 / math.e) * opt - 1e-9
            if k == 1:
                assert _facility(g, idx) == pytest.approx(opt)  # greedy is exact for one element


def test_craig_chunk_probe_and_input_type_do_not_change_the_result():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(150, 4))
    idx, w = acs.craig(g, 20)
    assert w.sum() == 150 and len(np.unique(idx)) == 20
    for kw in ({"chunk": 2}, {"chunk": 7}, {"probe": 1}, {"probe": 150}, {"chunk": 13, "probe": 3}):
        i2, w2 = acs.craig(g, 20, **kw)
        np.testing.assert_array_equal(i2, idx)
        np.testing.assert_array_equal(w2, w)
    i3, w3 = acs.craig(torch.tensor(g, dtype=torch.float64), 20)
    np.testing.assert_array_equal(i3, idx)
    np.testing.assert_array_equal(w3, w)


def test_craig_edge_cases():
    g = np.random.default_rng(0).normal(size=(5, 2))
    idx, w = acs.craig(g, 5)
    np.testing.assert_array_equal(idx, np.arange(5))
    np.testing.assert_array_equal(w, np.ones(5))
    assert len(acs.craig(g, 9)[0]) == 5
    assert len(acs.craig(g, 0)[0]) == 0
    with pytest.raises(ValueError, match="2-D"):
        acs.craig(np.zeros(4), 1)
    with pytest.raises(ValueError, match="metric"):
        acs.craig(g, 1, metric="cosine")


# ----------------------------------------------------------------------------- GradMatch
def test_gradmatch_recovers_an_exact_nonnegative_combination():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        n, d, k = 40, 60, 4
        signal = rng.normal(size=(k, d)) * 2.0
        noise = rng.normal(size=(n - k, d))
        noise -= noise.mean(0)  # the non-signal rows sum to zero: sum(g) = sum(signal rows)
        g = np.concatenate([noise, signal])[rng.permutation(n)]
        idx, w = acs.gradmatch(g, k)
        assert len(idx) <= k and (w > 0).all()
        assert _residual(g, idx, w) < 1e-4


@pytest.mark.parametrize("seed", range(3))
def test_gradmatch_beats_median_random_subset_with_nnls_weights(seed):
    rng = np.random.default_rng(seed)
    n, d, k = 80, 20, 6
    g = rng.normal(size=(n, d)) + rng.normal(size=d) * 0.5
    idx, w = acs.gradmatch(g, k)
    assert len(idx) == k and (w >= 0).all()
    b = g.sum(0)
    rand = [nnls(g[s].T, b)[1] / np.linalg.norm(b)
            for s in (rng.choice(n, k, replace=False) for _ in range(50))]
    assert _residual(g, idx, w) < np.median(rand)


def test_gradmatch_residual_non_increasing_in_k_and_weights_nonnegative():
    rng = np.random.default_rng(7)
    g = rng.normal(size=(60, 12)) + 0.3
    res = []
    for k in range(1, 16):
        idx, w = acs.gradmatch(g, k)
        assert (w >= 0).all() and len(np.unique(idx)) == len(idx) <= k
        res.append(_residual(g, idx, w))
    assert all(b <= a + 1e-12 for a, b in zip(res, res[1:]))
    assert res[-1] < 1e-8  # d = 12 atoms suffice for an exact fit (Caratheodory); it stops there


def test_gradmatch_one_atom_known_answer_with_ridge():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(30, 5)) + 0.2
    b = g.sum(0)
    for lam in (0.0, 0.5, 10.0):
        idx, w = acs.gradmatch(g, 1, lam=lam)
        j = int(np.argmax(g @ b))
        assert idx.tolist() == [j]
        assert w[0] == pytest.approx(g[j] @ b / (g[j] @ g[j] + lam), rel=1e-9)
    idx, w = acs.gradmatch(g, 8, lam=1.0)
    assert (w > 0).all() and len(idx) <= 8


def test_gradmatch_edge_cases():
    g = np.random.default_rng(0).normal(size=(4, 6))
    assert len(acs.gradmatch(g, 0)[0]) == 0
    assert len(acs.gradmatch(g, 10)[0]) <= 4
    assert len(acs.gradmatch(np.zeros((3, 2)), 2)[0]) == 0  # zero target: nothing to match
    with pytest.raises(ValueError, match="lam"):
        acs.gradmatch(g, 1, lam=-1.0)


# ----------------------------------------------------------------------------- per class / per batch
@pytest.mark.parametrize("method", ["craig", "gradmatch"])
def test_per_class_budgets_exact(method):
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1, 2, 5], [7, 13, 20, 3])
    rng.shuffle(labels)
    g = rng.normal(size=(len(labels), 2))  # d = 2: GradMatch stops after <= 2 atoms -> topped up
    fn = acs.craig if method == "craig" else acs.gradmatch
    for fraction in (0.1, 0.3, 0.77):
        idx, w = acs.per_class(fn, g, labels, fraction, seed=1)
        quotas = class_quotas(labels, fraction, 1)
        assert len(idx) == budget(fraction, len(labels)) == sum(quotas.values())
        assert len(np.unique(idx)) == len(idx) and (w >= 0).all()
        for c, q in quotas.items():
            assert (labels[idx] == c).sum() == q
        if method == "craig":  # weights = members represented: they sum to the class sizes
            for c, q in quotas.items():
                if q:
                    assert w[labels[idx] == c].sum() == (labels == c).sum()


def test_batch_gradients_and_per_batch_expansion():
    rng = np.random.default_rng(8)
    g = rng.normal(size=(50, 3))
    bg, members = acs.batch_gradients(g, 8, seed=2)
    assert len(members) == 7 and [len(m) for m in members] == [8] * 6 + [2]
    np.testing.assert_array_equal(np.sort(np.concatenate(members)), np.arange(50))
    for b, m in enumerate(members):
        np.testing.assert_allclose(bg[b].numpy(), g[m].mean(0))
    again = acs.batch_partition(50, 8, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(members, again))

    idx, w = acs.per_batch(acs.craig, g, 0.3, batch_size=8, seed=2)
    k = math.ceil(budget(0.3, 50) / 8)
    bsel, bw = acs.craig(bg, k)
    np.testing.assert_array_equal(idx, np.concatenate([members[b] for b in bsel]))
    np.testing.assert_array_equal(w, np.repeat(bw, [len(members[b]) for b in bsel]))
    assert bw.sum() == 7


# ----------------------------------------------------------------------------- last-layer gradients
def _tiny_model(k=3, seed=0):
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = Classifier(body, 4, k, [0.5] * 3, [0.25] * 3).double()
    with torch.no_grad():  # non-trivial BN running statistics
        model.body[1].running_mean.uniform_(-0.2, 0.2)
        model.body[1].running_var.uniform_(0.5, 2.0)
    return model


def _autograd_rows(model, x, x_adv, y, mode, beta):
    model.eval()
    rows = {"bias": [], "full": [], "label_row": []}
    for i in range(len(x)):
        z = model(x[i:i + 1])
        if mode == "standard":
            loss = F.cross_entropy(z, y[i:i + 1])
        elif mode == "pgd_at":
            loss = F.cross_entropy(model(x_adv[i:i + 1]), y[i:i + 1])
        else:
            loss = F.cross_entropy(z, y[i:i + 1]) + beta * F.kl_div(
                F.log_softmax(model(x_adv[i:i + 1]), 1), F.softmax(z, 1), reduction="sum")
        gw, gb = torch.autograd.grad(loss, [model.fc.weight, model.fc.bias])
        rows["bias"].append(gb)
        rows["full"].append(torch.cat([gb, gw.flatten()]))
        c = int(y[i])
        rows["label_row"].append(torch.cat([gb[c:c + 1], gw[c]]))
    return {k: torch.stack(v) for k, v in rows.items()}


@pytest.mark.parametrize("mode", ["trades", "pgd_at", "standard"])
def test_last_layer_grads_match_autograd(mode):
    model = _tiny_model()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=g, dtype=torch.float64)
    x_adv = (x + 0.03 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    model.train()
    ref = _autograd_rows(model, x, x_adv, y, mode, beta=6.0)
    model.train()
    for part in acs.PARTS:
        got = acs.last_layer_grads(model, x, y, mode=mode, beta=6.0, part=part, x_adv=x_adv)
        assert got.shape == ref[part].shape
        torch.testing.assert_close(got.double(), ref[part], rtol=1e-5, atol=1e-6)
    assert model.training and model.body[1].training  # mode restored


def test_last_layer_grads_runs_the_attack():
    model = _tiny_model().float()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    for mode in ("trades", "pgd_at"):
        gen = torch.Generator().manual_seed(3)
        a = acs.last_layer_grads(model, x, y, mode=mode, eps=8 / 255, alpha=2 / 255, steps=2, generator=gen)
        b = acs.last_layer_grads(model, x, y, mode=mode, eps=8 / 255, alpha=2 / 255, steps=2,
                                 generator=torch.Generator().manual_seed(3))
        assert a.shape == (5, 3) and torch.isfinite(a).all()
        torch.testing.assert_close(a, b)  # seeded attack: reproducible
    with pytest.raises(ValueError, match="mode"):
        acs.last_layer_grads(model, x, y, mode="fgsm")


# ----------------------------------------------------------------------------- driver
def _batches(x, y, order, size):
    for s in range(0, len(order), size):
        i = torch.as_tensor(order[s:s + size])
        yield x[i], y[i], i


def test_score_and_select_matches_direct_selection():
    model = _tiny_model(k=3).float()
    n = 45
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(n) % 3
    order = np.random.default_rng(0).permutation(n)  # batches arrive out of position order
    grads = acs.last_layer_grads(model, x, y, mode="standard", part="bias")
    for method, fn in (("craig", lambda g, k: acs.craig(g, k, metric="sqeuclidean")), ("gradmatch", None)):
        idx, w = acs.score_and_select(model, _batches(x, y, order, 8), method=method, fraction=0.2,
                                      mode="standard", seed=4)
        assert len(idx) == budget(0.2, n) and len(np.unique(idx)) == len(idx)
        assert w.dtype == np.float32 and w.mean() == pytest.approx(1.0) and (w >= 0).all()
        for c, q in class_quotas(y.numpy(), 0.2, 4).items():
            assert (y.numpy()[idx] == c).sum() == q
        if fn is not None:
            ref_idx, ref_w = acs.per_class(fn, grads, y.numpy(), 0.2, seed=4)
            np.testing.assert_array_equal(idx, ref_idx)
            np.testing.assert_allclose(w, ref_w / ref_w.mean(), rtol=1e-6)
    # per batch, full gradient (GradMatchPB): whole batches, each sample with its batch's weight
    idx, w = acs.score_and_select(model, _batches(x, y, order, 8), method="gradmatch", fraction=0.2,
                                  per_batch=True, batch_size=4, mode="standard", seed=4)
    members = acs.batch_partition(n, 4, seed=4)
    chosen = {b for b, m in enumerate(members) if np.isin(m, idx).any()}
    assert all(np.isin(members[b], idx).all() for b in chosen)
    assert len(chosen) == math.ceil(budget(0.2, n) / 4) and w.mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="exactly once"):
        acs.score_and_select(model, _batches(x, y, order[:-1], 8), method="craig", fraction=0.2, mode="standard")


# ----------------------------------------------------------------------------- plan and loss
def test_acs_plan_known_layout():
    assert acs.acs_plan(10, 0.5, kappa=0.4, R=2) == ["full", "full", "skip", "skip", "select", "coreset",
                                                      "select", "coreset", "select", "coreset"]
    plan = acs.acs_plan(100, 0.1, kappa=0.5, R=20)  # S = 50, T_w = 5
    assert plan[:5] == ["full"] * 5 and plan[5:50] == ["skip"] * 45
    assert [i for i, p in enumerate(plan) if p == "select"] == [50, 70, 90]
    assert acs.acs_plan(5, 0.3, kappa=0.0, R=2) == ["select", "coreset", "select", "coreset", "select"]
    assert acs.acs_plan(100, 0.25, kappa=0.5).count("full") == 12  # round(12.5) = 12, as ACS (Python round)


def test_acs_plan_matches_static_coreset_examples():
    n, batch = 50000, 128
    for e, f, kappa in [(100, 0.1, 0.5), (120, 0.5, 0.5), (200, 0.3, 0.6), (100, 0.2, 0.6), (40, 0.25, 0.4)]:
        plan = acs.acs_plan(e, f, kappa=kappa, R=20)
        assert abs(acs.examples_seen(plan, n, f) - e * budget(f, n)) <= e * batch
    for e, f, kappa in [(100, 0.25, 0.5), (37, 0.13, 0.7), (90, 0.05, 0.3)]:  # whole warm-up epochs
        plan = acs.acs_plan(e, f, kappa=kappa, R=10)
        assert abs(acs.examples_seen(plan, n, f) - e * budget(f, n)) <= n / 2 + e
    with pytest.raises(ValueError, match="kappa"):
        acs.acs_plan(10, 0.5, kappa=1.0)


def test_weighted_mean_and_normalised_weights():
    losses = torch.tensor([0.5, 2.0, 1.0, 4.0])
    assert acs.weighted_mean(losses, torch.ones(4)).item() == pytest.approx(losses.mean().item())
    w = torch.tensor([1.0, 3.0, 0.0, 2.0])
    assert acs.weighted_mean(losses, w).item() == pytest.approx((0.5 + 6.0 + 8.0) / 6.0)
    assert acs.weighted_mean(losses, 7 * w).item() == pytest.approx(acs.weighted_mean(losses, w).item())
    nw = acs.normalise_weights([2.0, 6.0, 4.0])
    assert nw.dtype == np.float32 and np.allclose(nw, [0.5, 1.5, 1.0])


# ----------------------------------------------------------------------------- ACS inside the training loop
def _acs_run(tmp_path=None, *, method="acs_craig", mode="trades", callbacks=(), epochs=6, state=None):
    from easycore.config import params_from_dict, RuntimeConfig
    from easycore.data.loaders import load_dataset
    from easycore.core.train import train

    P = params_from_dict({"train": {"model": "cnn_tiny", "epochs": epochs, "batch_size": 16, "attack": {"steps": 1},
                                    "optim": {"lr": 0.05}},
                          "coreset": {"acs": {"every": 2, "kappa": 0.5, "batch_size": 8}}})
    from easycore.data.loaders import DeviceLoader

    ds = load_dataset("synthetic", "train", ".", n_per_class=8)
    score = DeviceLoader(ds.x, ds.y, batch_size=32, device="cpu", shuffle=False, info=ds.info)
    cb = acs.schedule_callback(P, method, 0.3, ds.labels, score, mode=mode, seed=1)
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        res = train(P.train, ds, mode=mode, seed=1, callbacks=[cb, *callbacks], state_path=state, progress=False,
                    runtime=RuntimeConfig(device="cpu"))
    return res, cb, ds


@pytest.mark.parametrize("method", ["acs_craig", "acs_gradmatch"])
def test_acs_run_sees_a_static_coresets_examples(method):
    res, cb, ds = _acs_run(method=method)
    assert [h["schedule"] for h in res.history] == ["partial", "skip", "skip", "select", "coreset", "select"]
    static = 6 * budget(0.3, len(ds))
    # per-batch selection rounds the budget up to whole mini-batches (8): within one batch per epoch
    assert abs(res.counts["examples"] - static) <= 6 * 8, (res.counts, static)
    assert cb.selections == 2 and len(cb.positions) == res.history[-1]["n_train"]
    assert res.history[1]["n_train"] == 0 and "loss" not in res.history[1]          # skipped epochs train nothing


def test_acs_killed_after_a_reselection_resumes_bit_identical(tmp_path):
    from easycore.core.train import Callback

    class Stop(Exception):
        pass

    class StopIn(Callback):
        def before_batch(self, loop, x, y, idx):
            if loop.epoch == 4:         # a 'coreset' epoch after the re-selection of epoch 3
                raise Stop

    ref, ref_cb, _ = _acs_run()
    state = tmp_path / ".acs.state.pt"
    with pytest.raises(Stop):
        _acs_run(callbacks=[StopIn()], state=state)
    got, cb, _ = _acs_run(state=state)
    assert got.epochs_run == 2
    assert torch.equal(cb.positions, ref_cb.positions) and torch.equal(cb.weights, ref_cb.weights)
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, got.model.state_dict()[k]), k
    assert got.counts == ref.counts


@pytest.mark.parametrize("mode", ["standard", "pgd_at", "trades", "fgsm_rs"])
def test_mode_loss_with_unit_weights_equals_unweighted(mode):
    from easycore.config import AttackConfig
    from easycore.core.models import build_model
    from easycore.core.modes import MODES

    torch.manual_seed(0)
    model = build_model("cnn_tiny", 10, 3, (0.5,) * 3, (0.25,) * 3).train()
    x, y = torch.rand(12, 3, 32, 32), torch.randint(0, 10, (12,))
    fn = MODES.get(mode).fn
    w = torch.rand(12) + 0.5

    def loss(weights):  # a fresh copy each time: train-mode forwards update BN running statistics
        with torch.random.fork_rng():
            return fn(copy.deepcopy(model), x, y, weights, attack=AttackConfig(steps=2)).loss

    a, b, c = loss(None), loss(torch.ones(12)), loss(w)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert not torch.isclose(a, c)                     # weights do change the loss
