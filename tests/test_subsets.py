"""The subsets that the sanity checks and AutoAttack attack are spread over the classes (`class_interleaved`), not
the first N test images: an ImageFolder copy of CIFAR-10 lists its test images class by class, so the first 100
were all airplanes."""
from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from easycore.core import evaluate
from easycore.pipeline import stages as pipeline, runs
from easycore.config import EvalConfig, params_from_dict
from easycore.core.evaluate import class_interleaved
from easycore.store import load_arrays, read_json

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of scripts beside the package, not installed
    sys.path.insert(0, str(ROOT))
from benchmarks._pipeline import TINY as BENCH_TINY, merge  # noqa: E402


def brute_force(labels, n):
    """Sort positions by (rank within their class, position), with the rank counted by a plain loop."""
    seen: collections.Counter = collections.Counter()
    rank = []
    for c in labels:
        rank.append(seen[c])
        seen[c] += 1
    return sorted(range(len(labels)), key=lambda i: (rank[i], i))[:n]


@pytest.mark.parametrize("seed", range(6))
def test_class_interleaved_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 1 + seed * 2, size=int(rng.integers(0, 60)))
    if seed % 2:
        labels = np.sort(labels)                         # class-ordered, like an ImageFolder split
    for n in (0, 1, 7, len(labels), len(labels) + 5):
        assert class_interleaved(labels, n).tolist() == brute_force(labels.tolist(), n)


def test_class_ordered_split_gives_balanced_prefixes():
    labels = np.repeat(np.arange(10), 100)               # 1000 test images, class by class
    idx = class_interleaved(labels, 100)
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == 100
    assert np.bincount(labels[idx], minlength=10).tolist() == [10] * 10
    assert idx[:10].tolist() == list(range(0, 1000, 100))   # the first image of each class first
    # a class with fewer images runs out; the others fill the rest
    labels = np.array([0] * 3 + [1] * 20)
    assert np.bincount(labels[class_interleaved(labels, 10)]).tolist() == [3, 7]


def test_sanity_checks_get_a_class_balanced_subset(monkeypatch):
    seen = {}

    def fake_checks(model, x, y, cfg, metrics, **kw):
        seen["y"] = y.cpu().numpy()
        return {}

    monkeypatch.setattr(evaluate, "sanity_checks", fake_checks)
    torch.manual_seed(0)
    x = torch.rand(40, 1, 4, 4)
    y = torch.arange(4).repeat_interleave(10)            # class-ordered
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    cfg = EvalConfig(n_test=40, batch_size=40, pgd_steps=1, attacks=["pgd"], eps_grid=[0.0], sanity=True, sanity_n=8)
    evaluate.evaluate_model(model, x, y, cfg, progress=False)
    assert np.bincount(seen["y"], minlength=4).tolist() == [2, 2, 2, 2]


# the benchmarks' tiny synthetic pipeline (4 test images per class), evaluated on all 40 and AutoAttacked on 20
TINY = merge(BENCH_TINY, {"runtime": {"device": "cpu"}, "train": {"epochs": 1, "seeds": [0]},
                          "eval": {"n_test": 40, "pgd_steps": 1, "attacks": ["pgd"], "eps_grid": [0.0],
                                   "autoattack_modes": ["standard"], "autoattack_n": 20}})


def test_autoattack_stage_attacks_the_class_interleaved_subset(tmp_path, monkeypatch):
    """The stage on one trained full-data model (AutoAttack replaced by a recorder that keeps every image): the
    images it attacks are the class-interleaved subset of the evaluated ones, `robust` before is the evaluation's
    outcome at those positions, and summary.json records the positions."""
    params = params_from_dict(TINY)
    monkeypatch.chdir(tmp_path)
    prepared = Path("data/prepared")
    pipeline.prepare(params, prepared)
    run = runs.Run(runs.NONE, runs.FULL, 1.0, "standard", 0)
    pipeline.train_run(params, run.train_dir(), mode="standard", seed=0, prepared=prepared, progress=False)
    pipeline.evaluate_run(params, run.train_dir() / "model.safetensors", run.eval_dir(), prepared=prepared,
                          progress=False)
    attacked = {}

    def fake_autoattack(net, x, y, **kw):
        attacked["y"] = y.cpu().numpy()
        return torch.ones(len(x), dtype=torch.bool)

    monkeypatch.setattr(evaluate, "autoattack", fake_autoattack)
    monkeypatch.setattr(pipeline, "autoattack_targets", lambda p: [run])
    summary = pipeline.autoattack_stage(params, prepared=prepared, progress=False)

    _, te = pipeline.load_prepared(prepared, params)
    labels = te.labels[:40]
    want = class_interleaved(labels, 20)
    assert summary["index"] == want.tolist() and summary["n"] == 20
    assert np.bincount(labels[want], minlength=10).tolist() == [2] * 10
    before, _ = load_arrays(run.eval_dir() / "outcomes.npz", fingerprint=te.fingerprint)
    out, meta = load_arrays(Path("runs/autoattack") / run.key / "outcomes.npz")
    assert np.array_equal(out["robust"], before["robust"][want]) and np.array_equal(out["robust_aa"], out["robust"])
    if out["robust"].any():                                    # AutoAttack saw exactly the still-robust ones
        assert attacked["y"].tolist() == labels[want][out["robust"]].tolist()
    assert read_json(Path("runs/autoattack/summary.json"))["index"] == want.tolist()


# ----------------------------------------------------------------------------- one rule for every test subset
@pytest.mark.parametrize("seed", range(4))
def test_every_subset_is_a_prefix_of_one_class_interleaved_order(seed):
    """test_positions(labels, n) = the first n of class_interleaved(labels), in position order; the subsets taken
    over the evaluated images (sanity, AutoAttack: class_interleaved of their labels) are the first k of the same
    global order, whatever n."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3 + seed, size=int(rng.integers(1, 80)))
    if seed % 2:
        labels = np.sort(labels)
    order = brute_force(labels.tolist(), len(labels))                  # the independent reference
    for n in (1, 5, len(labels) // 2, len(labels) - 1):
        pos = evaluate.test_positions(labels, n)
        assert pos.tolist() == sorted(order[:n])
        for k in (0, 1, n // 2, n):
            assert pos[class_interleaved(labels[pos], k)].tolist() == order[:min(k, n)]
    for n in (len(labels), len(labels) + 7):                           # the whole set: 0..N-1 in order
        assert evaluate.test_positions(labels, n).tolist() == list(range(len(labels)))


def test_imagenet_like_class_sorted_split_is_evaluated_over_every_class():
    labels = np.repeat(np.arange(1000), 10)                             # params-imagenet: 10,000 val images
    pos = evaluate.test_positions(labels, 5000)
    assert np.bincount(labels[pos], minlength=1000).tolist() == [5] * 1000
    assert (np.diff(pos) > 0).all()


def test_evaluation_and_autoattack_take_the_same_rule_on_a_partial_test_set(tmp_path, monkeypatch):
    """The tiny pipeline's class-sorted test set (10 classes x 4), n_test 20 < 40: the evaluation sees 2 images of
    every class (not classes 0-4), in position order; AutoAttack (autoattack_n 10) attacks the first image of
    every class, the first 10 of the same order."""
    params = params_from_dict(merge(TINY, {"eval": {"n_test": 20, "autoattack_n": 10}}))
    monkeypatch.chdir(tmp_path)
    prepared = Path("data/prepared")
    pipeline.prepare(params, prepared)
    _, te = pipeline.load_prepared(prepared, params)
    assert (np.diff(te.labels) >= 0).all()                               # class-sorted
    run = runs.Run(runs.NONE, runs.FULL, 1.0, "standard", 0)
    pipeline.train_run(params, run.train_dir(), mode="standard", seed=0, prepared=prepared, progress=False)
    seen = {}
    real = evaluate.evaluate_model

    def spy(model, x, y, cfg, **kw):
        seen["x"], seen["y"] = x.cpu(), y.cpu()
        return real(model, x, y, cfg, **kw)

    monkeypatch.setattr(evaluate, "evaluate_model", spy)
    m = pipeline.evaluate_run(params, run.train_dir() / "model.safetensors", run.eval_dir(), prepared=prepared,
                              progress=False)
    want = brute_force(te.labels.tolist(), 40)
    evaluated = sorted(want[:20])
    assert m["clean"]["n"] == 20 and seen["y"].tolist() == te.labels[evaluated].tolist()
    assert torch.equal(seen["x"].to(torch.uint8), te.x[evaluated])
    assert np.bincount(seen["y"].numpy(), minlength=10).tolist() == [2] * 10

    attacked = {}
    monkeypatch.setattr(evaluate, "autoattack", lambda net, x, y, **kw: attacked.setdefault("y", y) is None
                        or torch.ones(len(x), dtype=torch.bool))
    monkeypatch.setattr(pipeline, "autoattack_targets", lambda p: [run])
    summary = pipeline.autoattack_stage(params, prepared=prepared, progress=False)
    assert [evaluated[i] for i in summary["index"]] == want[:10]       # positions among the evaluated images
    before, _ = load_arrays(run.eval_dir() / "outcomes.npz", fingerprint=te.fingerprint)
    out, _ = load_arrays(Path("runs/autoattack") / run.key / "outcomes.npz")
    assert np.array_equal(out["robust"], before["robust"][summary["index"]])
