"""Runs in bulk (easycore/pipeline/group.py): a group of runs trained in one process (or in several worker processes) gives
each run exactly what it gets alone, keeps each run's own outputs and resume point, and a group killed mid-way
resumes every run where it stopped."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from easycore.pipeline import group, stages as pipeline, runs
from easycore.config import params_from_dict
from easycore.store import load_state

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "data": {"dataset": "synthetic", "n_per_class": 8, "test_n_per_class": 4, "seed": 0},
    "runtime": {"device": "cpu"},
    "proxy": {"model": "cnn_tiny", "transfer_models": [], "epochs": 1, "batch_size": 64, "deepfool_steps": 1},
    "coreset": {"methods": ["random"], "fractions": [0.5], "transfer_methods": [], "adaptive": []},
    "train": {"model": "cnn_tiny", "epochs": 3, "batch_size": 16, "modes": ["trades"], "seeds": [0, 1, 2],
              "attack": {"steps": 1}},
    "eval": {"n_test": 40, "pgd_steps": 2, "sanity": False, "attacks": ["pgd"], "eps_grid": [0.0]},
}
GROUP = runs.Group(runs.NONE, runs.FULL, 1.0, "trades")     # TRADES: random starts in every step
STD = runs.Group(runs.NONE, runs.FULL, 1.0, "standard")


def _digest(path: Path) -> dict[str, str]:
    """{relative file: sha256} of every file under `path`."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = params_from_dict(TINY)
    pipeline.prepare(params, Path("data/prepared"))
    return params


def test_a_run_inside_a_group_is_byte_identical_to_the_run_alone(prepared, tmp_path):
    """Three seeds trained and evaluated as one group in one process; then seed 1 alone (a fresh group of one, in
    another folder tree): the same weights, history and per-image outcomes, byte for byte. Every run has its own
    folder, and no resume point is left once the group is written."""
    params = prepared
    members = GROUP.runs(params.train.seeds)
    group.train_group(params, members, progress=False)
    group.evaluate_group(params, members, progress=False)
    assert sorted(p.name for p in GROUP.train_dir().iterdir()) == ["s0", "s1", "s2"]
    assert not list(GROUP.train_dir().parent.glob(".*.state.pt"))
    together = {r.seed: (_digest(r.train_dir()), _digest(r.eval_dir())) for r in members}
    assert together[0] != together[1]                        # the seeds differ ...
    os.rename("runs", "runs_group")
    alone = GROUP.runs([1])
    group.train_group(params, alone, progress=False)
    group.evaluate_group(params, alone, progress=False)
    assert (_digest(alone[0].train_dir()), _digest(alone[0].eval_dir())) == together[1]   # ... a run does not


def test_concurrent_workers_match_one_process(prepared):
    """runtime.concurrent 2: the group's runs shared by two spawned worker processes (one thread each) give the
    bytes one process gives with one thread; a third run (the group's tail) trains after them on every core and
    gives the bytes of a process with that many threads."""
    params = prepared
    members = STD.runs([0, 1, 2])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        group.train_group(params, members[:2], progress=False)
    finally:
        torch.set_num_threads(threads)
    torch.set_num_threads(group._threads_for(1))
    try:
        group.train_group(params, members[2:], progress=False)
    finally:
        torch.set_num_threads(threads)
    one = {r.seed: _digest(r.train_dir()) for r in members}
    os.rename("runs", "runs_one")
    params.runtime.concurrent = 2
    assert group.auto_concurrency(params, 3) == 2 and group.auto_concurrency(params, 1) == 1
    group.train_group(params, members, progress=False)
    assert {r.seed: _digest(r.train_dir()) for r in members} == one
    assert torch.get_num_threads() == threads                 # the tail leaves this process's threads as it found them
    # the evaluation stage shares the group the same way: the outcomes of one process with those thread counts
    group.evaluate_group(params, members, progress=False)
    shared = {r.seed: _digest(r.eval_dir()) for r in members}
    params.runtime.concurrent = 0
    for seed, n in ((0, 1), (1, 1), (2, group._threads_for(1))):
        torch.set_num_threads(n)
        try:
            group.evaluate_group(params, [members[seed]], progress=False)
        finally:
            torch.set_num_threads(threads)
    assert {r.seed: _digest(r.eval_dir()) for r in members} == shared


def test_the_tail_of_a_group_trains_on_every_core(monkeypatch):
    """Which items the workers share and which form the tail: 3 runs on 2 workers -> 2 shared, 1 alone on every core
    (in this process); 5 on 4 -> 4 shared, 1; 5 on 2 -> 4 shared, 1; 7 on 4 -> 4 shared, then 3 in 3 workers;
    4 on 2 -> no tail. Every item gets its own result."""
    calls = []

    def shared(params, items, n, progress, fn):
        calls.append((len(items), n))
        return {i: i * 10 for i in items}

    def here(params, items, progress):
        calls.append((len(items), "here", torch.get_num_threads()))
        return [i * 10 for i in items]

    monkeypatch.setattr(group, "_shared", shared)
    every = group._threads_for(1)
    for n_runs, n, want in [(3, 2, [(2, 2), (1, "here", every)]), (5, 4, [(4, 4), (1, "here", every)]),
                            (5, 2, [(4, 2), (1, "here", every)]), (7, 4, [(4, 4), (3, 3)]), (4, 2, [(4, 2)])]:
        calls.clear()
        got = group._in_processes(None, list(range(n_runs)), n, False, here)
        assert calls == want, (n_runs, n, calls)
        assert got == {i: i * 10 for i in range(n_runs)}


def test_auto_concurrency_is_one_on_the_cpu(prepared):
    params = prepared
    assert params.runtime.concurrent == 0
    assert group.auto_concurrency(params, 8, peak_bytes=1 << 20) == 1


_CHILD = """
import os, signal, sys
from easycore.pipeline import group, runs
from easycore.core import train
from easycore.config import params_from_dict
sys.path.insert(0, {tests!r})
from test_group import STD, TINY
save = train.save_state

def save_then_die(path, state):  # SIGKILL right after the second run's first checkpoint (load-independent)
    save(path, state)
    if "-s1.state" in str(path):
        os.kill(os.getpid(), signal.SIGKILL)

if {die}:
    train.save_state = save_then_die
p = params_from_dict(TINY)
group.train_group(p, STD.runs(p.train.seeds), progress=False)
"""


@pytest.mark.slow
def test_a_killed_group_resumes_each_run_where_it_stopped(prepared, tmp_path):
    """The group's process is SIGKILLed right after its second run checkpointed its first epoch: the first run (finished) is
    restored from its final checkpoint without training again, the second continues after its saved epoch, the
    third starts; every run ends byte-identical to an uninterrupted group's."""
    params = prepared
    members = STD.runs(params.train.seeds)
    def child(die: bool):  # each in a fresh process (the suite's earlier tests may leave other numerics behind)
        return subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=str(ROOT / "tests"), die=die)],
                                cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.DEVNULL)

    killed = child(True)
    second = members[1].state_path()
    assert killed.wait(timeout=300) == -signal.SIGKILL
    assert second.exists() and load_state(second)["epoch"] == 1
    first_state = members[0].state_path()
    assert first_state.exists()                               # kept: the group was not finished
    timing = Path("runs/timings/train") / f"{members[0].key}.json"
    first_timing = timing.read_bytes()
    assert child(False).wait(timeout=300) == 0                # the same group again: resumes
    assert timing.read_bytes() == first_timing                # the finished run was not trained again
    assert not first_state.exists() and not second.exists()   # the group is written: no resume points left
    resumed = {r.seed: _digest(r.train_dir()) for r in members}
    assert sorted(resumed) == [0, 1, 2]
    os.rename("runs", "runs_killed")
    assert child(False).wait(timeout=300) == 0                # uninterrupted, for reference
    assert {r.seed: _digest(r.train_dir()) for r in members} == resumed
