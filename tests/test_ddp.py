"""Multi-process training (DDP, easycore/core/dist.py) on the CPU: 2 processes on the gloo backend, tiny synthetic data.

Two launches of the proxy stage (pipeline.proxy, as `torchrun -m easycore proxy` runs it) with a BatchNorm-free model:
  killed   rank 1 SIGKILLs itself in epoch 2 (after two failure probes: a batch size the world does not divide,
           and a NaN loss on rank 1 only);
  resumed  the same command again: it resumes from rank 0's checkpoint and finishes.
Against the same stage run in one process (global batch = the per-rank batch x 2), the resumed 2-rank run has the
same exact-AIGN matrices and losses, and rank 1 never writes a file.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from _reliability import one_thread, spawn_ranks
from easycore.core import dist
from easycore.pipeline import stages as pipeline
from easycore.data import streaming
from easycore.data.loaders import DeviceLoader, load_dataset
from easycore.store import load_arrays, load_state, load_tensors, read_json

WORLD, EPOCHS, BATCH = 2, 2, 8                        # 40 samples: 5 global batches of 8 = 2 x 4 per rank
SPEC = {"data": {"dataset": "synthetic", "n_per_class": 4, "test_n_per_class": 2},
        "runtime": {"device": "cpu"},
        "proxy": {"model": "ddp_plain", "transfer_models": [], "epochs": EPOCHS, "batch_size": BATCH,
                  "augment": True, "optim": {"lr": 0.05}, "aign": {"mode": "exact", "every": 1, "batch_size": 6},
                  "deepfool_steps": 2}}
KILL_AT = (2, 1)                                      # (epoch 1-based, batch): rank 1 dies there


def _register() -> None:
    """A BatchNorm-free CNN: with it, W processes at per-rank batch B/W follow one process at batch B."""
    import torch.nn as nn

    from easycore.core.models import MODELS

    if "ddp_plain" not in MODELS:
        @MODELS.register("ddp_plain")
        def _plain(c):
            body = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                                 nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            return body, 16


@pytest.fixture(scope="module", autouse=True)
def plain_model():
    _register()
    yield
    from easycore.core.models import MODELS

    MODELS.unregister("ddp_plain")


# ----------------------------------------------------------------------------- the worker (one per rank)
def _worker(rank: int, world: int, port: int, job: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _register()
    os.chdir(job["cwd"])
    from easycore import store
    from easycore.config import ConfigError, RuntimeConfig, params_from_dict
    from easycore.core.train import Callback, NonFiniteLoss, train

    tag = f"{job['name']}-{rank}"
    writes = Path(f"writes-{tag}.txt")
    real_atomic_path = store.atomic_path

    def logged_atomic_path(path, *a, **kw):  # every writer of easycore.store goes through here
        with open(writes, "a") as f:
            f.write(f"{Path(path).resolve()}\n")
        return real_atomic_path(path, *a, **kw)

    store.atomic_path = logged_atomic_path
    logs: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: logs.append(r.getMessage())
    logging.getLogger("easycore").addHandler(handler)
    logging.getLogger("easycore").setLevel(logging.INFO)
    report: dict = {"rank": rank}
    with dist.session("cpu"):
        report["world"] = dist.world()
        if job.get("probe"):
            tiny = load_dataset("synthetic", "train", ".", n_per_class=2, seed=0)
            from easycore.config import OptimConfig, TrainConfig

            cfg = TrainConfig(model="ddp_plain", epochs=1, batch_size=3, optim=OptimConfig(lr=0.05))
            try:
                train(cfg, tiny, runtime=RuntimeConfig(device="cpu"), progress=False)
            except ConfigError as e:
                report["batch_error"] = str(e)

            class NaNOnRank1(Callback):
                def before_batch(self, loop, x, y, idx):
                    if dist.rank() == 1:
                        x.fill_(float("nan"))

            try:
                train(TrainConfig(model="ddp_plain", epochs=1, batch_size=4), tiny, runtime=RuntimeConfig(device="cpu"),
                      callbacks=[NaNOnRank1()], progress=False)
            except NonFiniteLoss as e:
                report["nonfinite"] = str(e)
            # written now: rank 1 of the killed launch dies later and rank 0 fails with it, so neither writes its
            # report at the end
            Path(f"probes-{tag}.json").write_text(json.dumps(report))
        if job.get("kill") and rank == 1:
            from _reliability import kill_callback

            real_train = pipeline.train
            pipeline.train = lambda *a, **kw: real_train(*a, **kw, callbacks=[kill_callback()(*KILL_AT)])
        params = params_from_dict(job["spec"])
        t0 = time.perf_counter()
        report["meta"] = pipeline.proxy(params, "main", Path("runs/proxy/main"), prepared=Path(job["prepared"]),
                                        progress=False)
        report["seconds"] = time.perf_counter() - t0
    report["log"] = logs
    Path(f"report-{tag}.json").write_text(json.dumps(report, default=str))


def launch(job: dict, timeout: float = 120) -> list:
    """Run `_worker` on WORLD spawned processes, as torchrun would (`spawn_ranks`). Returns the exit codes."""
    return spawn_ranks(_worker, WORLD, job, timeout)


def written(folder: Path, name: str, rank: int) -> list[str]:
    f = folder / f"writes-{name}-{rank}.txt"
    return f.read_text().split() if f.exists() else []


@pytest.fixture(scope="module")
def runs2(tmp_path_factory):
    """The killed and the resumed 2-rank launch, and the same stage in this process (one process, batch 8)."""
    from easycore.config import params_from_dict

    base = tmp_path_factory.mktemp("ddp")
    params = params_from_dict(SPEC)
    pipeline.prepare(params, base / "prepared")
    t = {}
    cwd = Path.cwd()
    try:
        os.chdir(base / "prepared")  # the single-process run's timings log lands here, not in the repo
        t0 = time.perf_counter()
        with one_thread():
            pipeline.proxy(params, "main", base / "single", prepared=base / "prepared", progress=False)
        t["single"] = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
    job = {"cwd": str(base), "spec": SPEC, "prepared": str(base / "prepared")}
    t0 = time.perf_counter()
    codes = {"killed": launch(dict(job, name="killed", kill=True, probe=True))}
    t["killed"] = time.perf_counter() - t0
    state = base / "runs" / "proxy" / ".main.state.pt"
    checkpoint = load_state(state) if state.exists() else None
    records = sorted(p.name for p in (base / "runs" / "proxy" / ".main.state.records").rglob("*.npz"))
    outputs_after_kill = sorted(p.name for p in (base / "runs" / "proxy").glob("main/*"))
    t0 = time.perf_counter()
    codes["resumed"] = launch(dict(job, name="resumed"))
    t["resumed"] = time.perf_counter() - t0
    print("wall seconds:", {k: round(v, 1) for k, v in t.items()})
    return {"base": base, "codes": codes, "checkpoint": checkpoint, "records": records,
            "outputs_after_kill": outputs_after_kill,
            "reports": {(n, r): json.loads(p.read_text()) for n in ("killed", "resumed") for r in range(WORLD)
                        if (p := base / f"report-{n}-{r}.json").exists()},
            "probes": {r: json.loads(p.read_text()) for r in range(WORLD)
                       if (p := base / f"probes-killed-{r}.json").exists()}}


# ----------------------------------------------------------------------------- multi-process tests
@pytest.mark.slow
def test_killed_rank_stops_the_job_and_the_run_resumes_to_the_end(runs2):
    codes = runs2["codes"]
    assert codes["killed"][1] == -signal.SIGKILL, codes
    assert codes["killed"][0] != 0, "rank 0 must not finish when rank 1 is gone"
    assert runs2["outputs_after_kill"] == []
    st = runs2["checkpoint"]
    assert st is not None and st["epoch"] == KILL_AT[0] - 1, "rank 0's checkpoint after epoch 1"
    assert st["callbacks"]["aign"] == {"tracked_epochs": [0]}, "the checkpoint lists the records, not holds them"
    assert runs2["records"] == ["epoch-0000.npz"]
    assert codes["resumed"] == [0, 0], codes
    rep = runs2["reports"][("resumed", 0)]
    assert rep["world"] == WORLD and any("resumed from" in m and "after epoch 1/2" in m for m in rep["log"])
    out = runs2["base"] / "runs" / "proxy"
    assert (out / "main" / "dynamics.npz").exists() and (out / "main" / "model.safetensors").exists()
    assert not (out / ".main.state.pt").exists() and not (out / ".main.state.records").exists()


def test_failing_rank_raises_on_every_rank(runs2):
    assert sorted(runs2["probes"]) == list(range(WORLD)), "every rank of the killed launch ran the probes"
    for r in range(WORLD):
        rep = runs2["probes"][r]
        assert rep["rank"] == r and rep["world"] == WORLD
        assert rep["batch_error"] == ("params: batch_size = 3 is not allowed; with 2 processes the global batch is "
                                      "split evenly over the ranks (batch_size // 2 each): use a multiple of 2")
        assert "non-finite training loss" in rep["nonfinite"] and "batch 0 (0-based) on rank 1 of 2" in rep["nonfinite"]
    assert not any(n == "killed" for n, _ in runs2["reports"]), "neither rank of the killed launch finishes"


def test_only_rank_0_writes(runs2):
    base = runs2["base"]
    for name in ("killed", "resumed"):
        assert written(base, name, 1) == [], f"rank 1 of the {name} launch wrote files"
    w0 = {Path(p).relative_to(base.resolve()).as_posix() for p in written(base, "killed", 0) + written(base, "resumed", 0)}
    assert {"runs/proxy/.main.state.pt", "runs/proxy/main/dynamics.npz", "runs/proxy/main/model.safetensors",
            "runs/proxy/main/history.json", "runs/proxy/main/summary.json", "runs/timings/proxy/main-s0.json"} <= w0
    assert any(p.startswith("runs/proxy/.main.state.records/") and p.endswith("/epoch-0000.npz") for p in w0)
    assert runs2["reports"][("resumed", 1)]["meta"] == {}


def test_two_rank_exact_aign_equals_single_process(runs2):
    base = runs2["base"]
    one, meta1 = load_arrays(base / "single" / "dynamics.npz")
    two, meta2 = load_arrays(base / "runs" / "proxy" / "main" / "dynamics.npz")
    assert one.keys() == two.keys() and meta1["n"] == meta2["n"] == 40
    np.testing.assert_array_equal(one["tracked_epochs"], [0, 1])
    np.testing.assert_array_equal(two["tracked_epochs"], [0, 1])
    for k in ("aign_l1", "aign_l2", "aign_linf", "loss", "margin", "el2n", "grand", "entropy"):
        assert one[k].shape == two[k].shape == (EPOCHS, 40) and np.isfinite(two[k]).all(), k
        rel = np.abs(one[k] - two[k]).max() / np.abs(one[k]).max()
        assert rel < 1e-5, (k, rel)
    np.testing.assert_array_equal(one["correct"], two["correct"])


def test_two_rank_run_follows_the_one_process_run(runs2):
    base = runs2["base"]
    h1 = read_json(base / "single" / "history.json")
    h2 = read_json(base / "runs" / "proxy" / "main" / "history.json")
    assert [h["epoch"] for h in h1] == [h["epoch"] for h in h2] == [1, 2]
    for a, b in zip(h1, h2):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
        assert a["train_acc"] == b["train_acc"] and a["lr"] == b["lr"]
    w1, _ = load_tensors(base / "single" / "model.safetensors")
    w2, _ = load_tensors(base / "runs" / "proxy" / "main" / "model.safetensors")
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5
    t1 = read_json(base / "prepared" / "runs" / "timings" / "proxy" / "main-s0.json")
    t2 = read_json(base / "runs" / "timings" / "proxy" / "main-s0.json")
    assert t2["examples"] == t1["examples"] == EPOCHS * 40, "the counts are the whole job's"


# ----------------------------------------------------------------------------- one process: the sharding rule
@pytest.mark.parametrize("m", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("w", [1, 2, 3, 4])
def test_shard_is_the_streaming_rule_and_padded_order_interleaves_it(m, w):
    """data.base.shard (DeviceLoader's and the streaming loader's one rule) takes what DistributedSampler
    (drop_last False, no shuffling) gives rank r; padded_order interleaves the ranks' parts."""
    from torch.utils.data import DistributedSampler

    from easycore.data.base import padded_order, shard

    order = torch.randperm(m, generator=torch.Generator().manual_seed(m))
    padded = padded_order(order, w)
    for r in range(w):
        ref = order[list(DistributedSampler(range(m), num_replicas=w, rank=r, shuffle=False))] if m else order
        assert torch.equal(shard(order, r, w), ref)
        assert torch.equal(padded[r::w], shard(order, r, w))
        assert streaming.shard is shard
    if m and w > 1:  # DistributedSampler's count per rank, and every sample kept
        assert len(padded) == -(-m // w) * w and set(padded.tolist()) == set(order.tolist())


@pytest.mark.parametrize("subset", [None, [3, 5, 6, 11, 12, 17, 18, 19, 25, 30, 31]])
def test_device_loader_ranks_together_yield_the_one_process_batches(subset):
    """W ranks at per-rank batch b: batch k of every rank, interleaved, is the one-process batch k at batch W*b
    (positions, labels and augmented pixels)."""
    ds = load_dataset("synthetic", "train", ".", n_per_class=4, seed=0)
    kw = dict(device="cpu", shuffle=True, augment=True, seed=3)
    one = DeviceLoader(ds.x, ds.y, batch_size=8, **kw)
    ranks = [DeviceLoader(ds.x, ds.y, batch_size=4, rank=r, world_size=2, **kw) for r in range(2)]
    for dl in [one] + ranks:
        dl.set_epoch(5)
        dl.set_subset(None if subset is None else torch.tensor(subset))
    assert len(ranks[0]) == len(ranks[1]) == len(one)
    n = 40 if subset is None else len(subset)
    for (x, y, i), (x0, y0, i0), (x1, y1, i1) in zip(one, *ranks):
        assert len(i0) == len(i1)
        if len(i) == len(i0) + len(i1):  # every batch but a padded last one
            assert torch.equal(torch.stack([i0, i1], 1).reshape(-1), i)
            assert torch.equal(torch.stack([x0, x1], 1).reshape(x.shape), x)
            assert torch.equal(torch.stack([y0, y1], 1).reshape(-1), y)
    seen = torch.cat([i for dl in ranks for _, _, i in dl])
    assert len(seen) == -(-n // 2) * 2 and set(seen.tolist()) == set(range(40) if subset is None else subset)


def test_all_gather_by_index_one_process():
    v = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = dist.all_gather_by_index(v, torch.tensor([4, 0, 4, 2]), 6)
    assert torch.equal(out.isnan(), torch.tensor([False, True, False, True, False, True]))
    assert out[0] == 2 and out[2] == 4 and out[4] == 1, "the first occurrence of a repeated position wins"
    b = dist.all_gather_by_index(torch.tensor([True, True]), torch.tensor([1, 3]), 4)
    assert b.dtype == torch.bool and b.tolist() == [False, True, False, True]
    with pytest.raises(IndexError):
        dist.all_gather_by_index(v, torch.tensor([0, 1, 2, 6]), 6)
    assert dist.world() == 1 and dist.rank() == 0 and dist.is_main() and not dist.active()
    assert dist.init("cpu") is False, "no WORLD_SIZE: a no-op"


def test_aign_records_live_beside_the_checkpoint_and_missing_ones_restart_the_run(tmp_path, caplog):
    """One process: the checkpoint lists the tracked epochs, their records are files in records_dir(state); a
    checkpoint whose records are gone is not resumed."""
    from easycore.core.aign import AIGNTracker
    from easycore.config import OptimConfig, RuntimeConfig, TrainConfig
    from easycore.core.train import Callback, records_dir, train

    class Stop(Exception):
        pass

    class StopInEpoch2(Callback):
        def before_batch(self, loop, x, y, idx):
            if loop.epoch == 1:
                raise Stop

    ds = load_dataset("synthetic", "train", ".", n_per_class=2, seed=0)
    cfg = TrainConfig(model="ddp_plain", epochs=2, batch_size=10, optim=OptimConfig(lr=0.05))
    state = tmp_path / ".run.state.pt"
    kw = dict(runtime=RuntimeConfig(device="cpu"), state_path=state, progress=False, aign_batch_size=8)
    with one_thread(), pytest.raises(Stop):
        train(cfg, ds, tracker=AIGNTracker(n=20, epochs=2), callbacks=[StopInEpoch2()], **kw)
    assert load_state(state)["callbacks"]["aign"] == {"tracked_epochs": [0]}
    files = sorted(records_dir(state).rglob("*.npz"))
    assert [f.name for f in files] == ["epoch-0000.npz"]
    first, _ = load_arrays(files[0], length=20)
    with one_thread():
        tracker = AIGNTracker(n=20, epochs=2)
        assert train(cfg, ds, tracker=tracker, **kw).epochs_run == 1
    np.testing.assert_array_equal(tracker.matrices()["aign_l2"][0], first["aign_l2"])
    assert tracker.matrices()["aign_l2"].shape == (2, 20)

    import shutil

    shutil.rmtree(records_dir(state))
    with one_thread(), caplog.at_level(logging.WARNING, logger="easycore.core.train"):
        tracker = AIGNTracker(n=20, epochs=2)
        assert train(cfg, ds, tracker=tracker, **kw).epochs_run == 2
    assert "ignoring checkpoint" in caplog.text and "AIGN records of epoch 1 missing" in caplog.text
    assert tracker.tracked_epochs == [0, 1]
