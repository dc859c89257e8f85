"""Many runs in one process: a group (every seed of one method, fraction and mode; `runs.Group`) is trained by one
stage and one process, and evaluated by one more, instead of one process and one DVC stage per run.

Each run keeps what it had alone: its own folder (model, history, outcomes, metrics), its own resume point
(`Run.state_path`, beside the group's folder) and its provenance. The runs of a group are trained one after the
other with the same seeding as alone, so on one machine a run trained inside a group is byte-identical to the
same run trained alone (tests/test_group.py). A finished run's checkpoint is kept until the whole group is written:
a group killed mid-way (or whose stage DVC re-runs, removing the group's folder first) resumes every run after its
last complete epoch, and restores the finished ones from their final checkpoint without training.

Several runs at once (`runtime.concurrent`): the runs are shared among N worker processes on the same device
(each trains its share one after the other, as above). 0 = automatic: 1 on the CPU (two cores are busy with one
run), and on CUDA as many as the free memory holds by the first run's measured peak (`auto_concurrency`), at most
the group size; N = at most N. On the CPU each worker gets cores // N threads.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from typing import Optional, Sequence

from easycore.config import Params
from easycore.pipeline import runs

log = logging.getLogger("easycore")

MAX_CONCURRENT = 16
LAST_WORKERS = 0        # how many runs the last train_group trained at once (for the benchmarks' tables)


def auto_concurrency(params: Params, n_runs: int, peak_bytes: Optional[int] = None) -> int:
    """How many runs of a group train at once: runtime.concurrent when set (capped at the group size), else 1 on
    the CPU, and on CUDA floor(0.8 * free memory / the first run's peak), at most the group size and
    MAX_CONCURRENT (1 when no peak is known yet)."""
    want = params.runtime.concurrent
    if want:
        return max(1, min(want, n_runs))
    import torch

    from easycore.core.runtime import resolve_device

    if resolve_device(params.runtime.device).type != "cuda" or not peak_bytes:
        return 1
    free, _ = torch.cuda.mem_get_info()
    # each worker process also holds its own CUDA context (~0.5 GiB)
    return max(1, min(n_runs, MAX_CONCURRENT, int(0.8 * free // (peak_bytes + (512 << 20)))))


def _threads_for(n_workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // n_workers)


def _worker(job) -> list[dict]:
    """A worker process: its share of the group's runs, trained one after the other (spawned: imports fresh)."""
    params, keys, progress, threads = job
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return _train_each(params, [runs.parse(k) for k in keys], progress=progress)


def _in_processes(params: Params, todo: Sequence[runs.Run], n: int, progress: bool) -> dict:
    """Train `todo` in n spawned workers (round-robin shares); {run key: result}."""
    shares = [[r.key for r in todo[i::n]] for i in range(n)]
    jobs = [(params, keys, progress, _threads_for(n)) for keys in shares if keys]
    log.info("train: %d runs in %d processes", len(todo), len(jobs))
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(_worker, jobs, chunksize=1)
    return {k: res for keys, out in zip(shares, results) for k, res in zip(keys, out)}


def _train_each(params: Params, group_runs: Sequence[runs.Run], *, progress: bool = True) -> list[dict]:
    from easycore.pipeline.stages import train_named

    return [train_named(params, r, progress=progress, keep_state=True) for r in group_runs]


def train_group(params: Params, group_runs: Sequence[runs.Run], *, progress: bool = True) -> list[dict]:
    """Train every run of a group (one process, or runtime.concurrent workers), then remove their checkpoints.
    Returns each run's model metadata, in the order given."""
    from easycore.core.checkpoint import remove_state

    group_runs = list(group_runs)
    done: list[dict] = []
    if params.runtime.concurrent:
        n = auto_concurrency(params, len(group_runs))
    else:  # automatic: the first run alone, then as many at once as its measured peak memory allows
        done = _train_each(params, group_runs[:1], progress=progress)
        n = auto_concurrency(params, len(group_runs) - 1, _peak_memory())
    rest = group_runs[len(done):]
    global LAST_WORKERS
    LAST_WORKERS = n if len(rest) > 1 else 1
    if n <= 1 or len(rest) <= 1:
        out = done + _train_each(params, rest, progress=progress)
    else:
        got = _in_processes(params, rest, n, progress)
        out = done + [got[r.key] for r in rest]
    for r in group_runs:  # every run written: no resume point is needed any more
        remove_state(r.state_path())
    return out


def _peak_memory() -> Optional[int]:
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.max_memory_allocated())


def evaluate_group(params: Params, group_runs: Sequence[runs.Run], *, progress: bool = True) -> list[dict]:
    """Evaluate every run of a group in one process, on test images decoded once (see benchmarks/eval_bulk.py for
    why the models are attacked one after the other rather than stacked)."""
    from easycore.pipeline.stages import eval_n, evaluate_named, load_test

    test = load_test(params, n=eval_n(params, group_runs[0])) if group_runs else None
    return [evaluate_named(params, r, progress=progress, test=test) for r in group_runs]
