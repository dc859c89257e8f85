"""The public API for one's own data (easycore.api): AIGN recorded inside a plain PyTorch loop equals the
pipeline's exact pass, inline records equal per-sample gradients, and the selection is the pipeline's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import easycore.api as ec
from easycore.core import coresets
from easycore.core.aign import exact_pass
from easycore.core.models import build_model


def _data(n=60, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.5 + y[:, None, None, None] * 0.2
    return x, y


def _train_with_recorder(device="cpu", epochs=2):
    torch.manual_seed(0)
    x, y = _data()
    model = build_model("cnn_tiny", 3, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    score = DataLoader(TensorDataset(x, y), batch_size=25)                 # in order, (x, y): positions implied
    indexed = DataLoader(TensorDataset(x, y, torch.arange(len(y))), batch_size=25)
    rec = ec.AIGNRecorder(n=len(y), labels=y.numpy())
    pipeline_rows = []
    for _ in range(epochs):
        model.train()
        for xb, yb in train:
            loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        rec.end_epoch(model, score)
        pipeline_rows.append(exact_pass(model, indexed)["aign_l2"].numpy())
    return rec, np.stack(pipeline_rows), y.numpy()


def test_exact_records_equal_the_pipelines_exact_pass():
    rec, rows, _ = _train_with_recorder()
    r = rec.records()
    assert r["aign_l2"].shape == (2, 60) and rec.tracked_epochs == [0, 1]
    np.testing.assert_allclose(r["aign_l2"], rows, rtol=1e-4, atol=1e-7)
    assert not np.allclose(r["aign_l2"][0], r["aign_l2"][1])                # the model moved between epochs
    np.testing.assert_allclose(rec.scores(), rows.mean(0), rtol=1e-4, atol=1e-7)
    assert (r["aign_linf"] <= r["aign_l2"] + 1e-7).all() and (r["aign_l2"] <= r["aign_l1"] + 1e-6).all()


@pytest.mark.parametrize("balanced", [False, True])
def test_select_is_the_pipelines_selection(balanced):
    rec, _, labels = _train_with_recorder()
    mine = ec.select(rec.scores(), 0.2, labels=labels, balanced=balanced, seed=3)
    theirs = coresets.select("easycore", rec.records(), labels, 0.2, balanced=balanced, seed=3)
    assert np.array_equal(mine, theirs) and len(mine) == 12
    s = rec.scores()
    if balanced:
        assert np.bincount(labels[mine], minlength=3).tolist() == [4, 4, 4]
    else:                                                              # the 12 lowest scores
        assert set(mine) == set(np.argsort(s, kind="stable")[:12])
    hard = ec.select(s, 0.2, keep="high", seed=3)
    assert s[hard].min() >= s[mine].max() or balanced


def test_inline_records_equal_per_sample_gradients():
    torch.manual_seed(0)
    x, y = _data()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3))   # no batch-coupled layers
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = ec.AIGNRecorder(n=len(y), mode="inline")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    expect = torch.zeros(len(y))
    for b in perm.split(16):
        xb = x[b].clone().requires_grad_(True)
        expect[b] = ec.input_grad_norms(model, x[b], y[b])["aign_l2"]
        loss = F.cross_entropy(model(xb), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.batch(b, xb.grad)
    rec.end_epoch()
    np.testing.assert_allclose(rec.scores(), expect.numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="inline mode records L2 only"):
        rec.scores(p=1)


def test_mistakes_are_named():
    x, y = _data()
    model = build_model("cnn_tiny", 3, 3, (0.5,) * 3, (0.25,) * 3)
    rec = ec.AIGNRecorder(n=len(y))
    with pytest.raises(ValueError, match="covered 48 of 60"):
        rec.end_epoch(model, DataLoader(TensorDataset(x, y), batch_size=16, drop_last=True))
    with pytest.raises(ValueError, match="needs the model"):
        rec.end_epoch()
    with pytest.raises(ValueError, match="no epoch recorded"):
        rec.scores()
    inline = ec.AIGNRecorder(n=len(y), mode="inline")
    inline.batch(torch.arange(10), torch.ones(10, 3, 8, 8))
    with pytest.raises(ValueError, match="50 of 60 samples got no batch"):
        inline.end_epoch()
    with pytest.raises(ValueError, match="balanced=True needs labels"):
        ec.select(np.arange(10.0), 0.5, balanced=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_exact_records_on_cuda_match_cpu():
    cpu, _, _ = _train_with_recorder("cpu", epochs=1)
    cuda, rows, _ = _train_with_recorder("cuda", epochs=1)
    np.testing.assert_allclose(cuda.records()["aign_l2"], rows, rtol=1e-4, atol=1e-6)
    assert cuda.records()["aign_l2"].shape == cpu.records()["aign_l2"].shape


# ----------------------------------------------------------------------------- every static method, one call
def _linear_known(seed=0, n=20, d=4):
    """A fixed two-class linear model (no training) on random inputs: every record has a closed form."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g), torch.randint(0, 2, (n,), generator=g)
    model = torch.nn.Linear(d, 2)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, d, generator=g))
        model.bias.copy_(torch.randn(2, generator=g))
    return model, x, y


def test_records_have_their_closed_form_on_a_linear_model():
    model, x, y = _linear_known()
    rec = ec.Recorder(n=len(y), features=lambda m, xb: xb)     # the last (only) layer reads the input itself
    loader = DataLoader(TensorDataset(x, y), batch_size=7)
    for _ in range(2):                                          # the model does not move: both rows equal
        rec.end_epoch(model, loader)
    rec.final(model, loader, deepfool_steps=50)
    r = rec.records()
    W, b = model.weight.detach().double(), model.bias.detach().double()
    z = x.double() @ W.T + b
    p = z.softmax(1)
    onehot = F.one_hot(y, 2).double()
    grad_x = (p - onehot) @ W                                   # d CE / d x for a linear model
    other = z.gather(1, (1 - y)[:, None]).squeeze(1)
    expect = {"aign_l2": grad_x.norm(dim=1), "aign_l1": grad_x.abs().sum(1), "aign_linf": grad_x.abs().amax(1),
              "el2n": (p - onehot).norm(dim=1), "margin": z.gather(1, y[:, None]).squeeze(1) - other,
              "loss": -p.log().gather(1, y[:, None]).squeeze(1), "entropy": -(p * p.log()).sum(1),
              "grand": (p - onehot).norm(dim=1) * (x.double().pow(2).sum(1) + 1).sqrt()}
    for k, v in expect.items():
        assert r[k].shape == (2, 20), k
        np.testing.assert_allclose(r[k], np.stack([v.numpy()] * 2), rtol=1e-4, atol=1e-6, err_msg=k)
    assert np.array_equal(r["correct"][0], (z.argmax(1) == y).numpy())
    np.testing.assert_array_equal(r["labels"], y.numpy())      # seen in the first pass
    w, c = W[1] - W[0], b[1] - b[0]                             # DeepFool of a linear binary model: one exact step
    dist = (x.double() @ w + c).abs() / w.norm()
    np.testing.assert_allclose(r["deepfool"], 1.02 * (dist + 1e-4).numpy(), rtol=1e-4)
    np.testing.assert_allclose(r["features"], x.numpy())
    # the selections these records give, by their closed form
    near = set(np.argsort(dist.numpy(), kind="stable")[:5])
    assert set(ec.select_method("deepfool", rec, 0.25)) == near
    assert set(ec.select_method("deepfool_far", rec, 0.25)) == set(np.argsort(-dist.numpy(), kind="stable")[:5])
    assert set(ec.select_method("margin", rec, 0.25)) == set(np.argsort(expect["margin"].numpy(), kind="stable")[:5])
    assert set(ec.select_method("el2n", rec, 0.25)) == set(np.argsort(-expect["el2n"].numpy(), kind="stable")[:5])
    wrong = np.flatnonzero((z.argmax(1) != y).numpy())         # never learned: forgetting ranks them first
    kept = ec.select_method("forgetting", rec, len(wrong) / 20)
    assert set(kept) == set(wrong)


def test_every_static_method_selects_from_a_recorder_as_the_pipeline_does():
    from easycore.core.aign import exact_pass
    from easycore.core.attacks import deepfool_distance

    torch.manual_seed(0)
    x, y = _data()
    model = build_model("cnn_tiny", 3, 3, (0.5,) * 3, (0.25,) * 3)   # features + fc: GraNd from the same pass
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    score = DataLoader(TensorDataset(x, y), batch_size=25)
    indexed = DataLoader(TensorDataset(x, y, torch.arange(len(y))), batch_size=25)
    rec = ec.Recorder(n=len(y))
    rows = []
    for _ in range(3):
        for xb, yb in DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True,
                                 generator=torch.Generator().manual_seed(0)):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        rec.end_epoch(model, score)
        rows.append(exact_pass(model, indexed))
    rec.final(model, score, deepfool_steps=10)
    r = rec.records()
    pipeline = {k: np.stack([row[k].numpy() for row in rows]) for k in rows[0] if k != "index"}
    for k, v in pipeline.items():                                   # the pipeline proxy's exact pass, every key
        if k == "correct":
            assert np.array_equal(r[k], v)
        else:
            np.testing.assert_allclose(r[k], v, rtol=1e-4, atol=1e-6, err_msg=k)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(r["features"], model.features(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["deepfool"], deepfool_distance(model, x, steps=10).numpy(), rtol=1e-4, atol=1e-6)
    pipeline.update(features=r["features"], deepfool=r["deepfool"], labels=y.numpy())
    static = coresets.METHODS.names(kind="static")
    assert len(static) == 17
    for m in static:
        mine = ec.select_method(m, rec, 0.2, seed=1, device="cpu")
        assert np.array_equal(mine, coresets.select(m, pipeline, y.numpy(), 0.2, seed=1, device="cpu")), m
        assert len(mine) == 12 and len(set(mine.tolist())) == 12, m


def test_a_method_names_what_it_needs():
    model, x, y = _linear_known()
    rec = ec.Recorder(n=len(y))                        # a plain model: no features, so no GraNd and no final()
    rec.end_epoch(model, DataLoader(TensorDataset(x, y), batch_size=7))
    assert "grand" not in rec.records()
    with pytest.raises(ValueError, match=r"'grand' needs `grand` \(end_epoch.*Recorder\(features=fn\)"):
        ec.select_method("grand", rec, 0.5)
    with pytest.raises(ValueError, match=r"'kcenter' needs `features` \(the final model's features: final"):
        ec.select_method("kcenter", rec, 0.5)
    with pytest.raises(ValueError, match="needs the penultimate features"):
        rec.final(model, DataLoader(TensorDataset(x, y), batch_size=7))
    inline = ec.Recorder(n=len(y), mode="inline")
    inline.batch(torch.arange(20), torch.ones(20, 4))
    inline.end_epoch()
    with pytest.raises(ValueError, match=r"'el2n' needs `el2n` \(the dynamics: end_epoch\(model, loader\) in exact"):
        ec.select_method("el2n", inline, 0.5, labels=y)
    assert len(ec.select_method("easycore", inline, 0.5, labels=y)) == 10
    assert len(ec.select_method("random", inline, 0.5, labels=y)) == 10    # the labels only
    assert ec.needs("random") == "" and "aign_l2" in ec.needs("ccs") and "el2n" in ec.needs("ccs", ccs_score="el2n")
    with pytest.raises(ValueError, match="not a static method"):
        ec.select_method("acs_craig", rec, 0.5)
    with pytest.raises(ValueError, match="did you mean 'el2n'"):
        ec.select_method("el2m", rec, 0.5)
    with pytest.raises(ValueError, match="unknown coreset method 'forgeting'; did you mean 'forgetting'"):
        coresets.select("forgeting", rec.records(), y.numpy(), 0.5)


def test_a_shuffled_scoring_loader_is_refused_or_caught_by_its_labels():
    """DataLoader(shuffle=True) without positions: refused (every record would go to another sample); another
    sampler without positions: a warning, and the labels catch a wrong order."""
    from torch.utils.data import SubsetRandomSampler

    model, x, y = _linear_known()
    rec = ec.Recorder(n=len(y))
    shuffled = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="shuffles .* yields no positions"):
        rec.end_epoch(model, shuffled)
    rec.end_epoch(model, DataLoader(TensorDataset(x, y), batch_size=7))          # in order: fine, labels seen
    other = DataLoader(TensorDataset(x, y), batch_size=7,
                       sampler=SubsetRandomSampler(range(len(y)), generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="labels disagree.*shuffled"), pytest.warns(UserWarning, match="Subset"):
        rec.end_epoch(model, other)                     # the labels the first pass saw expose the other order
    given = ec.Recorder(n=len(y), labels=y)
    indexed = DataLoader(TensorDataset(x, y, torch.arange(20)), batch_size=7, shuffle=True,
                         generator=torch.Generator().manual_seed(0))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning):                # a shuffled loader that yields positions is still warned
            given.end_epoch(model, indexed)


def _blobs(n=60, flipped=6, seed=0):
    """Two well separated clusters with `flipped` labels swapped: the flipped samples are the hard ones."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.5 + (y[:, None] * 2 - 1) * 3.0
    bad = torch.randperm(n, generator=g)[:flipped]
    y = y.clone()
    y[bad] = 1 - y[bad]
    return TensorDataset(x, y), set(bad.tolist())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_one_call_coreset_finds_the_flipped_labels(device):
    ds, bad = _blobs()
    make = lambda: torch.nn.Linear(2, 2)                       # noqa: E731
    kw = dict(epochs=8, batch_size=16, lr=0.5, device=device)
    hard = ec.coreset(ds, make, 0.1, method="hard", **kw)
    assert set(hard.tolist()) == bad                            # the 6 highest-AIGN samples: the flipped labels
    for m in ("el2n", "forgetting", "aum"):
        assert set(ec.coreset(ds, make, 0.1, method=m, **kw).tolist()) == bad, m
    easy, rec = ec.coreset(ds, make, 0.5, return_records=True, **kw)    # EasyCore keeps none of them
    assert len(easy) == 30 and not set(easy.tolist()) & bad
    assert rec.records()["aign_l2"].shape == (8, 60)
    assert np.array_equal(easy, ec.coreset(ds, make, 0.5, **kw))         # seeded: the same call, the same coreset
    near = ec.coreset(ds, make, 0.1, method="deepfool", deepfool_steps=20, **kw)   # final() ran for DeepFool
    assert len(near) == 6
