"""Multi-process training (DistributedDataParallel under torchrun) in a few plain functions.

Launch (one machine, N GPUs or N CPU processes; several machines: add --nnodes, --node_rank and --rdzv_endpoint):
    torchrun --nproc_per_node=N -m easycore proxy ...
    torchrun --nproc_per_node=N -m easycore train ...
torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init()` joins that group (backend nccl when
the run uses CUDA, gloo on CPU) and is a no-op without WORLD_SIZE or with WORLD_SIZE 1, where every function below
acts as for one process. The pipeline's proxy and train stages call `init()` before training and `shutdown()` after.

The rules (easycore/core/train.py applies them):
  * global batch: `batch_size` is the GLOBAL batch. With W processes each rank takes batch_size // W samples per
    step, and a batch size that W does not divide is refused (`check_batch_size`, ConfigError). The epoch order is
    DeviceLoader's one-process order padded the way DistributedSampler pads it (`shard`): global batch k =
    order[k*B:(k+1)*B] and rank r takes its samples r, r+W, r+2W, ...; the union of the ranks' batches is the
    one-process batch (same samples, same augmentation), and DDP averages the ranks' mean-loss gradients, so
    without BatchNorm, or with runtime.sync_bn (easycore/core/syncbn.py: SyncBatchNorm on CUDA, an all-reduce of batch
    sums on the CPU), W processes follow the one-process run up to float rounding (docs/scale.md gives how far). When W does not
    divide the set size the last batch repeats a few head samples (as DistributedSampler does).
    Where W processes differ from one: BatchNorm batch statistics are per rank (unless sync_bn); attack random
    starts are drawn per rank; a weighted loss (adaptive coresets) is normalised by each rank's weight sum.
  * every rank starts from the same weights (same seed; DDP also broadcasts rank 0's at wrapping) and holds the same
    weights after every step; BatchNorm buffers are broadcast from rank 0 after each epoch (`sync_buffers`).
  * rank 0 alone writes (checkpoint, per-epoch AIGN records, every artifact, timings; atomically as always); on
    resume rank 0 reads the checkpoint and broadcasts it, so the other ranks need no access to rank 0's files.
  * AIGN: each rank scores its shard; the per-sample values are merged by sample index (`all_gather_by_index`), so
    the [epochs, N] matrices equal a one-process run's.
  * a failing rank stops the job: a non-finite loss is all-reduced, so every rank raises NonFiniteLoss at the same
    step (the CLI prints one line per rank and exits 2); any other error or a killed rank (OOM, SIGKILL, lost machine)
    ends that process, torchrun sees it and tears the whole group down (the other ranks get SIGTERM), and
    `torchrun ...` exits non-zero naming the failed rank. Run the same command again: it resumes from rank 0's last
    checkpoint (the number of processes may differ: the checkpoint holds no per-rank state).
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Optional

import torch
import torch.distributed as td

log = logging.getLogger("easycore.core.dist")


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE") or 1)
    except ValueError:
        return 1


def init(device: str = "auto") -> bool:
    """Join the process group that torchrun's environment describes. device: runtime.device ('auto' | 'cpu' |
    'cuda'): nccl when it resolves to CUDA (each process on GPU LOCAL_RANK), else gloo. Returns True when a group
    of more than one process is active, False (and does nothing) when WORLD_SIZE is unset or 1. Idempotent.
    Ranks other than 0 log warnings and errors only, so messages are not repeated W times."""
    if td.is_available() and td.is_initialized():
        return world() > 1
    if _env_world() <= 1:
        return False
    from easycore.config import ConfigError

    if not td.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK") or 0)
    kw: dict[str, Any] = {}
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"torchrun: LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} "
                              f"visible GPU(s): use --nproc_per_node <= {torch.cuda.device_count()}")
        torch.cuda.set_device(local)
        kw["device_id"] = torch.device("cuda", local)
    td.init_process_group("nccl" if use_cuda else "gloo", **kw)
    if rank() != 0:
        logging.getLogger("easycore").setLevel(logging.WARNING)
    log.info("process group: %d processes (%s)", world(), td.get_backend())
    return world() > 1


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[bool]:
    """`init(device)` for the block and `shutdown()` after it (also on error), when the block started the group; a
    group that is already running is left alone. Yields whether a group of several processes is active."""
    started = not (td.is_available() and td.is_initialized())
    on = init(device)
    try:
        yield on
    finally:
        if started:
            shutdown()


def check_batch_size(batch_size: int, key: str = "batch_size") -> None:
    """The global-batch rule: ConfigError (one line naming `key`) unless the world size divides batch_size."""
    w = world()
    if batch_size % w:
        from easycore.config import fail

        fail(key, batch_size, f"with {w} processes the global batch is split evenly over the ranks "
                              f"(batch_size // {w} each): use a multiple of {w}")


def shutdown() -> None:
    """Leave the process group (no-op without one). No barrier: a rank that finished early does not wait."""
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def active() -> bool:
    """A group of more than one process is running."""
    return td.is_available() and td.is_initialized() and td.get_world_size() > 1


def rank() -> int:
    return td.get_rank() if td.is_available() and td.is_initialized() else 0


def world() -> int:
    return td.get_world_size() if td.is_available() and td.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (and the only process of a run without a group): the one that writes files."""
    return rank() == 0


def barrier() -> None:
    if active():
        td.barrier()


def local_device(device: torch.device) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK (the current CUDA device `init` set) for CUDA in a group, else `device`."""
    device = torch.device(device)
    if active() and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


# ----------------------------------------------------------------------------- collectives (no-ops on one process)
def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else torch.device("cpu")


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A new tensor: `t` reduced over the ranks ('sum' | 'min' | 'max'), on t's device and dtype; t itself on one
    process."""
    if not active():
        return t
    ops = {"sum": td.ReduceOp.SUM, "min": td.ReduceOp.MIN, "max": td.ReduceOp.MAX}
    buf = t.detach().to(_comm_device(), copy=True)
    td.all_reduce(buf, op=ops[op])
    return buf.to(t.device)


def all_gather_by_index(values: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """The full per-sample vector [n] from every rank's part: out[idx_r] = values_r for each rank r.

    values [m_r] (any dtype; m_r may differ between ranks), idx [m_r] positions in [0, n). Where a position occurs
    more than once (the padding of `shard`) the first occurrence in rank order wins (deterministic); positions no
    rank holds are NaN (floating dtypes) or 0 / False. Returns a tensor on values' device and dtype, the same on
    every rank. On one process: the same scatter of the local values."""
    values, idx = values.detach(), idx.detach().long()
    device, dtype = values.device, values.dtype
    if active():
        dev = _comm_device()
        v = values.to(dev)
        v = v.to(torch.uint8) if dtype == torch.bool else v
        i = idx.to(dev)
        sizes = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(world())]
        td.all_gather(sizes, torch.tensor([len(v)], dtype=torch.long, device=dev))
        sizes = [int(s) for s in sizes]
        m = max(sizes)
        vp = torch.zeros(m, dtype=v.dtype, device=dev)
        ip = torch.zeros(m, dtype=torch.long, device=dev)
        vp[: len(v)], ip[: len(i)] = v, i
        vs, is_ = [torch.empty_like(vp) for _ in sizes], [torch.empty_like(ip) for _ in sizes]
        td.all_gather(vs, vp)
        td.all_gather(is_, ip)
        values = torch.cat([a[:s] for a, s in zip(vs, sizes)]).to(device).to(dtype)
        idx = torch.cat([a[:s] for a, s in zip(is_, sizes)]).to(device)
    else:
        idx = idx.to(device)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"all_gather_by_index: positions out of range [0, {n})")
    pos = torch.arange(len(idx), device=device)
    first = torch.full((n,), len(idx), dtype=torch.long, device=device).scatter_reduce_(0, idx, pos, "amin")
    keep = first[idx] == pos
    out = (torch.full((n,), float("nan"), dtype=dtype, device=device) if dtype.is_floating_point
           else torch.zeros(n, dtype=dtype, device=device))
    out[idx[keep]] = values[keep]
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (pickled; put tensors on the CPU first); `obj` on one process."""
    if not active():
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def sync_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BatchNorm running statistics) into every rank's `module`, in place."""
    if not active():
        return
    dev = _comm_device()
    for b in module.buffers():
        if b.device == dev:
            td.broadcast(b, src=src)
        else:
            tmp = b.to(dev)
            td.broadcast(tmp, src=src)
            b.copy_(tmp)


def first_failure(local: Optional[int], world_size: Optional[int] = None) -> Optional[tuple[int, int]]:
    """Agree on a failure: local = the first failing step on this rank, or None. Returns (step, rank) of the
    earliest failure over all ranks (lowest rank on ties), or None when no rank failed; the same on every rank."""
    if not active():
        return None if local is None else (local, 0)
    w = world_size or world()
    big = torch.iinfo(torch.long).max // (2 * w)
    code = all_reduce(torch.tensor([big if local is None else local], dtype=torch.long) * w + rank(), "min")
    step, r = divmod(int(code), w)
    return None if step >= big else (step, r)


# ----------------------------------------------------------------------------- the DDP wrapper of a training run
def job_counts(counts: dict) -> dict:
    """The counts summed over the ranks (a collective: every rank calls it); a copy of `counts` on one process."""
    if not active():
        return dict(counts)
    keys = list(counts)
    tot = all_reduce(torch.tensor([int(counts[k]) for k in keys], dtype=torch.long))
    return {k: int(v) for k, v in zip(keys, tot.tolist())}


class _Both(torch.nn.Module):
    """What DDP wraps: net(x), or (features, logits) of ONE forward (DDP expects one forward per backward)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, both: bool = False):
        if not both:
            return self.net(x)
        f = self.net.features(x)
        return f, self.net.fc(f)


class DDPModel(torch.nn.Module):
    """`net` in DistributedDataParallel, as the training modes see a model: model(x), model.features(x) and
    model.fc(feats). model.features(x) runs the whole forward through DDP once and model.fc(those features) returns
    the logits of that same forward, so the gradients of every step are averaged over the ranks. train()/eval()
    reach `net` (the attacks put it in eval mode); the weights stay in `net` (checkpoints save net.state_dict())."""

    def __init__(self, net: torch.nn.Module, device: torch.device, *, compile: bool = False):
        super().__init__()
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(_Both(net), device_ids=[device.index] if device.type == "cuda" else None)
        self.ddp = torch.compile(ddp) if compile else ddp
        self.net = net
        self._last = None

    def forward(self, x):
        return self.ddp(x)

    def features(self, x):
        f, logits = self.ddp(x, both=True)
        self._last = (f, logits)
        return f

    def fc(self, f):
        last, self._last = self._last, None
        if last is not None and f is last[0]:
            return last[1]
        return self.net.fc(f)
