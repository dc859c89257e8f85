"""DDP equal to one process with BatchNorm (runtime.sync_bn; easycore/core/syncbn.py), 2 CPU ranks on gloo:
  the layer   a BatchNorm CNN on the two halves of a batch vs one process on the whole batch: outputs, input and
              parameter gradients, running statistics;
  the stage   the proxy (cnn_tiny, BatchNorm) under 2 ranks vs 1 process: its exact-AIGN matrices and the EasyCore
              coreset selected from them; and without sync_bn the 2-rank AIGN visibly differs (what the option fixes).
Also: `torchrun ... eval` is refused instead of evaluating everything on every rank.

The stage runs without augmentation: the 2-rank and 1-process runs then agree to ~1e-5 (float rounding of the
differently ordered sums). With random crops both drift apart after a few steps (1e-4 in the weights after 3 steps
on this data), and so does ONE process whose BatchNorm merely sums in float64 instead of torch's float32: the
drift is the training's sensitivity to rounding, not the sharding (docs/scale.md gives the measured figures)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from _reliability import one_thread, spawn_ranks
from easycore.pipeline import stages as pipeline
from easycore.core import syncbn

WORLD = 2
SPEC = {"data": {"dataset": "synthetic", "n_per_class": 4, "test_n_per_class": 2},
        "runtime": {"device": "cpu", "sync_bn": True},
        "proxy": {"model": "cnn_tiny", "transfer_models": [], "epochs": 3, "batch_size": 8, "augment": False,
                  "optim": {"lr": 0.05}, "aign": {"mode": "exact", "every": 1, "batch_size": 8}, "deepfool_steps": 1}}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.BatchNorm2d(4, momentum=None), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(10, 3, 6, 6, generator=g) * 2 + 1, torch.randint(0, 3, (10,), generator=g)


def _step(net, x, y, n_global):
    """Two training steps' forwards (running stats twice) and one backward of the global-batch mean loss's share."""
    net.train()
    net(x)
    x = x.clone().requires_grad_(True)
    out = net(x)
    loss = nn.functional.cross_entropy(out, y, reduction="sum") / n_global
    loss.backward()
    return out.detach(), x.grad


def _layer_worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from easycore.core import dist

    with dist.session("cpu"):
        x, y = _batch()
        rows = torch.arange(rank, len(y), world)
        net = syncbn.for_world(_net(), torch.device("cpu"), True, world)
        assert sum(isinstance(m, syncbn.GlobalBatchNorm) for m in net.modules()) == 2
        out, gx = _step(net, x[rows], y[rows], len(y))
        grads = [dist.all_reduce(p.grad) for p in net.parameters()]      # what DDP's gradient averaging sums
        torch.save({"rows": rows, "out": out, "gx": gx, "grads": grads,
                    "buffers": [b.clone() for b in net.buffers()]}, Path(folder) / f"layer-{rank}.pt")


def _proxy_worker(rank: int, world: int, port: int, job: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    os.chdir(job["cwd"])
    from easycore.config import params_from_dict

    pipeline.proxy(params_from_dict(job["spec"]), "main", Path(job["out"]), prepared=Path(job["prepared"]),
                   progress=False)


def spawn(fn, arg, timeout: float = 180) -> list:
    return spawn_ranks(fn, WORLD, arg, timeout)


def test_global_batchnorm_on_two_ranks_is_batchnorm_on_the_whole_batch(tmp_path):
    assert spawn(_layer_worker, str(tmp_path)) == [0, 0]
    x, y = _batch()
    ref = _net()
    out, gx = _step(ref, x, y, len(y))
    parts = [torch.load(tmp_path / f"layer-{r}.pt") for r in range(WORLD)]
    for p in parts:
        torch.testing.assert_close(p["out"], out[p["rows"]], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(p["gx"], gx[p["rows"]], atol=1e-6, rtol=1e-5)
        for g, q in zip(p["grads"], ref.parameters()):
            torch.testing.assert_close(g, q.grad, atol=1e-6, rtol=1e-5)
        for b, q in zip(p["buffers"], ref.buffers()):
            torch.testing.assert_close(b, q, atol=1e-6, rtol=1e-5)
    # and a plain per-rank BatchNorm would not be (what the test could catch)
    half = _net()
    o_half, _ = _step(half, x[parts[0]["rows"]], y[parts[0]["rows"]], len(y))
    assert (o_half - out[parts[0]["rows"]]).abs().max() > 1e-2


def test_one_process_global_batchnorm_is_plain_batchnorm():
    x, y = _batch()
    a, b = _net(), syncbn.convert(_net())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in b.modules())
    oa, ga = _step(a, x, y, len(y))
    ob, gb = _step(b, x, y, len(y))
    assert torch.equal(oa, ob) and torch.equal(ga, gb)
    assert all(torch.equal(p, q) for p, q in zip(a.buffers(), b.buffers()))


@pytest.fixture(scope="module")
def proxies(tmp_path_factory):
    from easycore.config import params_from_dict

    base = tmp_path_factory.mktemp("syncbn")
    params = params_from_dict(SPEC)
    cwd = Path.cwd()
    try:
        os.chdir(base)
        pipeline.prepare(params, base / "prepared")
        with one_thread():
            pipeline.proxy(params, "main", base / "single", prepared=base / "prepared", progress=False)
    finally:
        os.chdir(cwd)
    out = {}
    for name, sync in (("sync", True), ("plain", False)):
        spec = {**SPEC, "runtime": {"device": "cpu", "sync_bn": sync}}
        job = {"cwd": str(base), "spec": spec, "prepared": str(base / "prepared"), "out": str(base / name)}
        assert spawn(_proxy_worker, job) == [0, 0]
    for name in ("single", "sync", "plain"):
        out[name] = dict(np.load(base / name / "dynamics.npz"))
    return out


def _rel(a, b) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.mark.slow
def test_two_rank_proxy_with_sync_bn_equals_one_process_and_selects_the_same_coreset(proxies):
    from easycore.core.coresets import select

    one, two, plain = proxies["single"], proxies["sync"], proxies["plain"]
    assert one["aign_l2"].shape == (3, 40)
    rel_sync, rel_plain = _rel(two["aign_l2"], one["aign_l2"]), _rel(plain["aign_l2"], one["aign_l2"])
    print(f"max relative AIGN difference to one process: sync_bn {rel_sync:.2e}, per-rank BatchNorm {rel_plain:.2e}")
    assert rel_sync < 1e-3 and rel_plain > 1e-2
    labels = one["labels"]
    for f in (0.25, 0.5):
        want = select("easycore", one, labels, f, seed=0)
        assert np.array_equal(np.sort(select("easycore", two, labels, f, seed=0)), np.sort(want))


def test_eval_under_torchrun_is_refused(monkeypatch, capsys):
    from easycore import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["eval", "-q", "--method", "full", "--fraction", "1.0", "--scores", "none", "--mode",
                     "standard"]) == 2
    assert "runs in one process" in capsys.readouterr().err
