"""The public API for one's own data (easycore.api): AIGN recorded inside a plain PyTorch loop equals the
pipeline's exact pass, inline records equal per-sample gradients, and the selection is the pipeline's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import easycore.api as ec
from easycore import coresets
from easycore.aign import exact_pass
from easycore.models import build_model


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
