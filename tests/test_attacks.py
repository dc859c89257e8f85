"""Attacks and evaluation on a tiny synthetic problem (CPU, a few seconds of training).

Data: 4 classes of 3x8x8 images = a smooth random prototype per class + gaussian noise, clamped to [0, 1].
Model: a small conv net with BatchNorm (to test eval-mode use and mode restoration).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from easycore.core import attacks
from easycore.config import EvalConfig
from easycore.core.models import Normalize
from easycore.core.evaluate import evaluate_model, sanity_checks, write_eval
from easycore.store import load_arrays, read_json

K = 4
EPS = 8 / 255


def make_data(n: int, seed: int = 0, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    protos = torch.rand(K, 3, size, size, generator=g)
    g.manual_seed(seed)
    y = torch.arange(n) % K
    x = 0.5 + 0.6 * (protos[y] - 0.5) + 0.15 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 1), y


def tiny_net() -> nn.Sequential:
    return nn.Sequential(
        Normalize((0.5,) * 3, (0.25,) * 3), nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, K))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine they cost ~5x (spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(one_thread):
    torch.manual_seed(0)
    x, y = make_data(800, seed=0)
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(5):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 100):
            idx = perm[i:i + 100]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    xt, yt = make_data(256, seed=1)
    return model, xt, yt


def acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# ----------------------------------------------------------------------------- PGD vs torchattacks
def test_model_trained(trained):
    model, x, y = trained
    assert acc(model, x, y) > 0.9


def test_pgd_matches_torchattacks(trained):
    import torchattacks

    model, x, y = trained
    torch.manual_seed(7)
    ours = acc(model, attacks.pgd(model, x, y, eps=EPS, alpha=2 / 255, steps=10), y)
    torch.manual_seed(7)
    theirs = acc(model, torchattacks.PGD(model, eps=EPS, alpha=2 / 255, steps=10, random_start=True)(x, y), y)
    assert 0.05 < theirs < acc(model, x, y), "eps should give a non-trivial robust accuracy"
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


# ----------------------------------------------------------------------------- budgets
def _linf(a, b):
    return (a - b).flatten(1).abs().amax(1)


def _l2(a, b):
    return (a - b).flatten(1).norm(dim=1)


@pytest.mark.parametrize("name", ["pgd_linf", "pgd_linf_per_sample", "pgd_l2", "pgd_l2_per_sample", "fgsm",
                                  "fgsm_rs", "trades_adv", "pgd_restarts"])
def test_budget_and_box(trained, name):
    model, x, y = trained
    x, y = x[:64], y[:64]
    per = torch.linspace(0.0, 16 / 255, len(x))
    if name == "pgd_linf":
        adv, dist, bound = attacks.pgd(model, x, y, eps=EPS, alpha=2 / 255, steps=5), _linf, EPS
    elif name == "pgd_linf_per_sample":
        adv, dist, bound = attacks.pgd(model, x, y, eps=per, alpha=per / 4, steps=5), _linf, per
    elif name == "pgd_l2":
        adv, dist, bound = attacks.pgd(model, x, y, eps=0.5, alpha=0.2, steps=5, norm="l2"), _l2, 0.5
    elif name == "pgd_l2_per_sample":
        e = per * 10
        adv, dist, bound = attacks.pgd(model, x, y, eps=e, alpha=e / 3, steps=5, norm="l2"), _l2, e
    elif name == "fgsm":
        adv, dist, bound = attacks.fgsm(model, x, y, eps=EPS), _linf, EPS
    elif name == "fgsm_rs":
        adv, dist, bound = attacks.fgsm_rs(model, x, y, eps=EPS), _linf, EPS
    elif name == "trades_adv":
        adv, dist, bound = attacks.trades_adv(model, x, eps=EPS, alpha=2 / 255, steps=5), _linf, EPS
    else:
        adv, dist, bound = attacks.pgd(model, x, y, eps=EPS, alpha=2 / 255, steps=3, restarts=3), _linf, EPS
    assert adv.shape == x.shape and not adv.requires_grad
    assert adv.min() >= 0 and adv.max() <= 1
    assert bool((dist(adv, x) <= torch.as_tensor(bound) + 1e-6).all())
    assert bool((adv != x).any())


# ----------------------------------------------------------------------------- TRADES
@pytest.mark.parametrize("train_mode", [False, True])
def test_trades_beta0_is_ce(trained, train_mode):
    model, x, y = trained
    x, y = x[:32], y[:32]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        model.train(train_mode)
        loss, logits = attacks.trades_loss(model, x, y, eps=EPS, alpha=2 / 255, steps=3, beta=0.0)
        model.load_state_dict(state)  # undo the BN running-stat update of the train-mode forward
        ref = F.cross_entropy(model(x), y)
        assert abs(float(loss.detach()) - float(ref.detach())) < 1e-6
        assert logits.shape == (32, K)
        model.load_state_dict(state)
        loss6, _ = attacks.trades_loss(model, x, y, eps=EPS, alpha=2 / 255, steps=3, beta=6.0)
        assert float(loss6.detach()) > float(ref.detach()) - 1e-6  # KL >= 0
        assert model.training == train_mode
        loss6.backward()
        assert all(p.grad is not None for p in model.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(state)
        model.eval()


# ----------------------------------------------------------------------------- modes and gradients
ATTACKS = {
    "fgsm": lambda m, x, y: attacks.fgsm(m, x, y, eps=EPS),
    "fgsm_rs": lambda m, x, y: attacks.fgsm_rs(m, x, y, eps=EPS),
    "pgd": lambda m, x, y: attacks.pgd(m, x, y, eps=EPS, alpha=2 / 255, steps=2, restarts=2),
    "pgd_l2": lambda m, x, y: attacks.pgd(m, x, y, eps=0.5, alpha=0.2, steps=2, norm="l2"),
    "trades_adv": lambda m, x, y: attacks.trades_adv(m, x, eps=EPS, alpha=2 / 255, steps=2),
    "deepfool": lambda m, x, y: attacks.deepfool_distance(m, x, steps=3),
    "min_flip_eps": lambda m, x, y: attacks.min_flip_eps(m, x, y, steps=2, iters=2),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_mode_restored_and_no_param_grads(trained, name, mode):
    model, x, y = trained
    x, y = x[:16], y[:16]
    model.zero_grad(set_to_none=True)
    model.train(mode != "eval")
    if mode == "mixed":
        model[2].eval()  # a frozen BN inside a training model must stay frozen
    before = [m.training for m in model.modules()]
    bn = model[2]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    try:
        ATTACKS[name](model, x, y)
        assert [m.training for m in model.modules()] == before
        assert all(p.grad is None for p in model.parameters())
        # the attack ran in eval mode: BN running statistics untouched
        assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
        assert int(bn.num_batches_tracked) == stats[2]
    finally:
        model.eval()


def test_mode_restored_on_error(trained):
    model, x, y = trained
    model.train()
    try:
        with pytest.raises(ValueError):
            attacks.pgd(model, x[:4], y[:4], eps=EPS, alpha=2 / 255, steps=1, loss="nope")
        assert all(m.training for m in model.modules())
    finally:
        model.eval()


# ----------------------------------------------------------------------------- restarts
def test_restarts_never_help_the_model(trained):
    model, x, y = trained
    g1 = torch.Generator().manual_seed(3)
    a1 = acc(model, attacks.pgd(model, x, y, eps=EPS, alpha=2 / 255, steps=5, generator=g1), y)
    g3 = torch.Generator().manual_seed(3)  # same first restart
    a3 = acc(model, attacks.pgd(model, x, y, eps=EPS, alpha=2 / 255, steps=5, restarts=3, generator=g3), y)
    assert a3 <= a1


def test_generator_makes_pgd_deterministic(trained):
    model, x, y = trained
    a = attacks.pgd(model, x[:32], y[:32], eps=EPS, alpha=2 / 255, steps=2, generator=torch.Generator().manual_seed(5))
    b = attacks.pgd(model, x[:32], y[:32], eps=EPS, alpha=2 / 255, steps=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- DeepFool / min-eps on linear models
class LinearNet(nn.Module):
    """logits = W x + b on the flattened input: the decision boundaries are hyperplanes."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.fc = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(w)
            self.fc.bias.copy_(b)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _linear_problem(k: int, n: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = 3 * 4 * 4
    w = torch.randn(k, d, generator=g)
    b = torch.randn(k, generator=g) * 0.1
    x = 0.3 + 0.4 * torch.rand(n, 3, 4, 4, generator=g)
    return LinearNet(w, b).double(), x.double(), w.double(), b.double()


@pytest.mark.parametrize("k", [2, 4])
def test_deepfool_exact_on_linear_model(k):
    model, x, w, b = _linear_problem(k)
    overshoot = 0.02
    with torch.no_grad():
        z = model(x)
    pred = z.argmax(1)
    # distance to the nearest facet of the predicted class's polytope: min_k |z_k - z_p| / ||w_k - w_p||
    dk = (z - z.gather(1, pred[:, None])).abs() / (w[None] - w[pred][:, None]).norm(dim=2).clamp_min(1e-30)
    dk = dk.masked_fill(F.one_hot(pred, k).bool(), math.inf)
    exact = dk.amin(1)
    dist, flipped = attacks.deepfool_distance(model, x, overshoot=overshoot, return_flipped=True)
    assert bool(flipped.all())
    assert torch.allclose(dist.double() / (1 + overshoot), exact, atol=1e-3), (dist[:5], exact[:5])


def test_deepfool_on_trained_model(trained):
    model, x, _ = trained
    d, flipped = attacks.deepfool_distance(model, x[:32], num_classes=3, return_flipped=True)
    assert d.shape == (32,) and bool(torch.isfinite(d).all()) and bool((d > 0).all())
    assert flipped.float().mean() > 0.9


def test_min_flip_eps_linear_model():
    model, x, w, b = _linear_problem(2, n=40, seed=1)
    wd = w[1] - w[0]
    far = 0.5 + 0.3 * wd.sign().view(3, 4, 4)  # far on the class-1 side of the boundary
    x = torch.cat([x, far[None]])
    with torch.no_grad():
        margin = model(x) @ torch.tensor([-1.0, 1.0], dtype=x.dtype)
    pred = (margin > 0).long()
    y = pred.clone()
    y[:3] = 1 - y[:3]  # three misclassified samples
    exact = margin.abs() / wd.abs().sum()  # Linf distance to the hyperplane
    eps_max, iters = 0.1, 12
    tol = eps_max / 2 ** iters
    e = attacks.min_flip_eps(model, x, y, eps_max=eps_max, iters=iters)
    assert bool((e[:3] == 0).all())
    assert math.isinf(float(e[-1])) and float(exact[-1]) > eps_max
    inside = (exact[3:-1] < eps_max).nonzero().squeeze(1) + 3
    assert len(inside) > 20
    assert bool((e[inside] >= exact[inside] - 1e-9).all()) and bool((e[inside] <= exact[inside] + tol + 1e-9).all())
    # monotone consistency: PGD just above the value flips, just below (the exact distance) does not
    for scale, should_flip in ((1.0 + 1e-6, True), (None, False)):
        eps = e[inside] * scale if scale else exact[inside] * (1 - 1e-3)
        adv = attacks.pgd(model, x[inside], y[inside], eps=eps, alpha=eps / 4, steps=10, random_start=False)
        with torch.no_grad():
            flipped = model(adv).argmax(1) != y[inside]
        assert bool(flipped.all()) if should_flip else not bool(flipped.any())


def test_min_flip_eps_trained_model(trained):
    model, x, y = trained
    e = attacks.min_flip_eps(model, x[:32], y[:32], eps_max=16 / 255, steps=3, iters=4)
    finite = torch.isfinite(e)
    assert e.shape == (32,) and bool((e[finite] <= 16 / 255).all()) and bool((e >= 0).all())
    with torch.no_grad():
        wrong = model(x[:32]).argmax(1) != y[:32]
    assert bool((e[wrong] == 0).all()) and bool((e[~wrong] > 0).all())


# ----------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def evaluated(trained):
    model, x, y = trained
    cfg = EvalConfig(n_test=64, batch_size=64, eps=EPS, alpha=2 / 255, pgd_steps=10, attacks=["fgsm", "pgd"],
                     strong=["pgd_cw"], strong_steps=10, eps_grid=[0.0, 1 / 255, 2 / 255, 4 / 255], l2_eps=0.5,
                     sanity=True, sanity_n=48)
    xu8 = (x * 255).round().to(torch.uint8)  # uint8 input is accepted (divided by 255)
    metrics, outcomes = evaluate_model(model, xu8, y, cfg, seed=0, progress=False)
    return cfg, metrics, outcomes


def test_evaluate_metrics(evaluated):
    cfg, metrics, outcomes = evaluated
    for name in ("clean", "fgsm", "pgd10", "pgd10_cw", "l2_pgd20", "eps0", "eps1", "eps2", "eps4", "eps8", "robust"):
        m = metrics[name]
        assert set(m) == {"accuracy", "n", "attack"} and 0 <= m["accuracy"] <= 1
        assert len(outcomes[name]) == m["n"] == 64 and outcomes[name].dtype == np.bool_
        assert abs(outcomes[name].mean() - m["accuracy"]) < 1e-9
        assert not (outcomes[name] & ~outcomes["clean"]).any()  # robust => clean-correct
    assert metrics["pgd10"]["accuracy"] <= metrics["fgsm"]["accuracy"] + 0.01
    assert metrics["l2_pgd20"]["attack"]["norm"] == "l2"


def test_evaluate_timing_changes_nothing_and_names_every_pass(trained, evaluated):
    """evaluate_model(seconds=...) times each pass by its label for the timing log; what it computes is the same."""
    model, x, y = trained
    cfg, metrics, outcomes = evaluated
    seconds = {}
    xu8 = (x * 255).round().to(torch.uint8)
    m2, o2 = evaluate_model(model, xu8, y, cfg, seed=0, progress=False, seconds=seconds)
    assert m2 == metrics and set(o2) == set(outcomes)
    assert all(np.array_equal(o2[k], outcomes[k]) for k in outcomes)
    assert {"clean", "fgsm", "pgd10", "pgd10_cw", "l2 pgd", "sanity"} <= set(seconds)
    assert all(v >= 0 for v in seconds.values())


def test_eps0_is_clean_and_curve_is_monotone_per_image(evaluated):
    cfg, metrics, outcomes = evaluated
    assert np.array_equal(outcomes["eps0"], outcomes["clean"])
    grid = ["eps0", "eps1", "eps2", "eps4", "eps8"]
    for small, large in zip(grid, grid[1:]):
        assert not (outcomes[large] & ~outcomes[small]).any(), f"{large} robust where {small} was broken"
    assert np.array_equal(outcomes["robust"], outcomes["eps8"])


def test_robust_is_the_worst_case_over_every_attack(evaluated):
    _, metrics, outcomes = evaluated
    for name in ("fgsm", "pgd10", "pgd10_cw", "eps4"):
        assert not (outcomes["robust"] & ~outcomes[name]).any(), name
    expected = outcomes["fgsm"] & outcomes["pgd10"] & outcomes["eps4"] & outcomes["pgd10_cw"]
    assert np.array_equal(outcomes["robust"], expected)
    assert metrics["robust"]["accuracy"] <= min(metrics["fgsm"]["accuracy"], metrics["pgd10"]["accuracy"])


def test_autoattack_runs(trained):
    """torchattacks' standard AutoAttack on 8 samples. eps is large so APGD breaks every sample and the
    Square attack (5000 queries per robust sample: ~1 min on CPU) has nothing left to do."""
    from easycore.core.evaluate import autoattack

    model, x, y = trained
    ok = autoattack(model, x[:8], y[:8], eps=32 / 255, seed=0, batch_size=8)
    assert ok.dtype == torch.bool and len(ok) == 8
    pgd = attacks.pgd(model, x[:8], y[:8], eps=32 / 255, alpha=4 / 255, steps=10)
    pgd_ok = attacks.predict(model, pgd) == y[:8]
    # AutoAttack is at least as strong as PGD on the same samples (tolerance: one sample of eight)
    assert int(ok.sum()) <= int(pgd_ok.sum()) + 1


def test_sanity_checks_pass(evaluated):
    _, metrics, _ = evaluated
    assert set(metrics["sanity"]) == {"eps0", "pgd_le_fgsm", "more_steps", "large_eps"}
    for name, r in metrics["sanity"].items():
        assert r["passed"], (name, r["detail"])


def test_sanity_checks_flag_masked_gradients(trained, capsys):
    """A model whose input gradient is zero (a detached 'defence') must fail the large-eps check."""
    model, x, y = trained

    class Masked(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.detach()) + 0 * x.sum()

    cfg = EvalConfig(n_test=32, batch_size=32, pgd_steps=3, attacks=["pgd"], sanity=True)
    m = Masked(model)
    metrics = {"clean": {"accuracy": acc(model, x[:32], y[:32])}, "pgd3": {"accuracy": acc(model, x[:32], y[:32])}}
    res = sanity_checks(m, x, y, cfg, metrics)
    assert not res["large_eps"]["passed"]
    assert "WARNING" in capsys.readouterr().out


def test_write_eval_roundtrip(evaluated, tmp_path):
    _, metrics, outcomes = evaluated
    meta = {"fingerprint": "abc", "model": "tiny", "checkpoint": "runs/x/model.pt", "n": 64}
    write_eval(tmp_path / "ev", metrics, outcomes, meta)
    js = read_json(tmp_path / "ev" / "metrics.json")
    assert js["meta"] == meta and js["pgd10"]["accuracy"] == metrics["pgd10"]["accuracy"]
    arrays, m2 = load_arrays(tmp_path / "ev" / "outcomes.npz", fingerprint="abc")
    assert m2 == meta and set(arrays) == set(outcomes)
    assert all(np.array_equal(arrays[k], outcomes[k]) for k in outcomes)


def test_attacks_work_under_no_grad(trained):
    model, x, y = trained
    x, y = x[:8], y[:8]
    with torch.no_grad():
        for name, f in ATTACKS.items():
            out = f(model, x, y)
            assert out.shape[0] == 8, name
        adv = attacks.pgd(model, x, y, eps=EPS, alpha=2 / 255, steps=3)
    assert bool((adv != x).any())


def test_survivors_only_is_cumulative_and_keeps_the_sanity_checks(trained):
    """eval.survivors_only: each attack runs on what the ones before it left correct, so the recorded accuracies
    are the worst case so far; the sanity checks still compare single attacks (their own PGD and FGSM)."""
    model, x, y = trained
    cfg = EvalConfig(n_test=64, batch_size=64, eps=EPS, alpha=2 / 255, pgd_steps=10, attacks=["fgsm", "pgd"],
                     survivors_only=True, eps_grid=[0.0, 2 / 255], sanity=True, sanity_n=32)
    metrics, out = evaluate_model(model, x, y, cfg, seed=0, progress=False)
    assert not (out["pgd10"] & ~out["fgsm"]).any() and not (out["fgsm"] & ~out["clean"]).any()
    assert np.array_equal(out["robust"], out["pgd10"] & out["eps2"])
    assert set(metrics["sanity"]) == {"eps0", "pgd_le_fgsm", "more_steps", "large_eps"}
