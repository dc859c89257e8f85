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
the group size; N = at most N. On the CPU each worker gets cores // N threads; the runs a group leaves over
(len % N) then train with the cores shared among them (`_in_processes`). The evaluation stage shares a group's
evaluations the same way (`evaluate_group`). The proxy stage does not: its replicates train on all 50,000 images,
where two at once gain 7 % (measured), which a few replicates' DeepFool passes falling unevenly on the workers use up.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from typing import Callable, Optional, Sequence

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


def _worker(job) -> list:
    """A worker process: its share of the items, one after the other (spawned: imports fresh)."""
    fn, params, items, progress, threads = job
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return fn(params, items, progress)


def _in_processes(params: Params, items: Sequence, n: int, progress: bool, fn: Callable) -> dict:
    """fn(params, share, progress) -> one result per item, run on `items` (picklable run keys, at least n of them:
    n comes from auto_concurrency) in n spawned workers (round-robin shares, cores // n threads each); {item: result}.

    A group that does not divide into the workers leaves a tail: the last len(items) % n. Shared round-robin, a
    worker would train its tail run alone on cores // n threads while the others idle; instead the tail runs after
    the shared part in len(items) % n workers with cores // (len(items) % n) threads each (one item: in this
    process, on every core). Which items form the tail, and so every item's thread count, follows from the group
    alone (deterministic, the same on a resumed group)."""
    items = list(items)
    k = len(items) - len(items) % n
    got = _shared(params, items[:k], n, progress, fn)
    tail = items[k:]
    if len(tail) == 1:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(_threads_for(1))
        try:
            got[tail[0]] = fn(params, tail, progress)[0]
        finally:
            torch.set_num_threads(before)
    elif tail:
        got.update(_shared(params, tail, len(tail), progress, fn))
    return got


def _shared(params: Params, items: Sequence, n: int, progress: bool, fn: Callable) -> dict:
    """fn on `items` in n spawned workers, round-robin shares at cores // n threads each; {item: result}."""
    shares = [list(items[i::n]) for i in range(n)]
    jobs = [(fn, params, share, progress, _threads_for(n)) for share in shares if share]
    log.info("%d runs in %d processes", len(items), len(jobs))
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(_worker, jobs, chunksize=1)
        pool.close()    # let the workers exit on their own before the context manager's terminate(): a killed
        pool.join()     # worker could leave the resource tracker's "leaked semaphore" warning (seen in the study log)
    return {k: res for share, out in zip(shares, results) for k, res in zip(share, out)}


def _train_keys(params: Params, keys: Sequence[str], progress: bool) -> list[dict]:
    return _train_each(params, [runs.parse(k) for k in keys], progress=progress)


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
        got = _in_processes(params, [r.key for r in rest], n, progress, _train_keys)
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
    """Evaluate every run of a group, on test images decoded once per process (see benchmarks/eval_bulk.py for why
    the models are attacked one after the other rather than stacked): in this process, or with
    runtime.concurrent > 1 shared among that many worker processes like the training runs (the same tail rule)."""
    group_runs = list(group_runs)
    n = auto_concurrency(params, len(group_runs)) if params.runtime.concurrent else 1
    if n > 1:
        got = _in_processes(params, [r.key for r in group_runs], n, progress, _evaluate_keys)
        return [got[r.key] for r in group_runs]
    return _evaluate_each(params, group_runs, progress)


def _evaluate_keys(params: Params, keys: Sequence[str], progress: bool) -> list[dict]:
    return _evaluate_each(params, [runs.parse(k) for k in keys], progress)


def _evaluate_each(params: Params, group_runs: Sequence[runs.Run], progress: bool) -> list[dict]:
    from easycore.pipeline.stages import eval_n, evaluate_named, load_test

    test = load_test(params, n=eval_n(params, group_runs[0])) if group_runs else None
    return [evaluate_named(params, r, progress=progress, test=test) for r in group_runs]
