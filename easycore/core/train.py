"""One training loop for standard training, PGD-AT, TRADES and FGSM-RS, static or adaptive data schedules.

`train()` owns the steps every run shares: build the model, the optimiser and the loader; resume from a checkpoint;
for each epoch: seed, let the callbacks prepare it (a data schedule may change the subset and the per-sample
weights, or skip the epoch), run the batches of the training mode (`modes.MODES`), let the callbacks record, write
an atomic checkpoint. Everything else plugs in through the named extension points of `Callback` (listed in
callbacks.py: on_epoch_start, before_batch, after_backward, on_epoch_end, state_dict / load_state_dict).
A resumed run continues to the same result (bit-identical on CPU): an epoch's batches, augmentations and random
starts depend only on (seed, epoch), and every callback's state travels in the checkpoint (the AIGN records of the
tracked epochs go to per-epoch files in `records_dir(state_path)`; the checkpoint lists them).

Several processes (torchrun; the rules in easycore/core/dist.py): the model is wrapped in DistributedDataParallel,
`cfg.batch_size` is the global batch (each rank takes batch_size // world per step from its shard of the
one-process epoch order), the history's loss and accuracy are averaged over the ranks, the counts summed, rank 0
alone writes the checkpoint and resumes it for everyone (broadcast), and a non-finite loss on any rank stops every
rank at the same step.

The pieces around the loop live beside it: the extension points in `callbacks.py`, checkpoint and model files in
`checkpoint.py`, device and seeding in `runtime.py`, the DDP wrapper in `dist.py`; running many runs of one group
in one process (or several processes under one GPU) in `group.py`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from easycore.config import OptimConfig, RuntimeConfig, TrainConfig
from easycore.core import dist, syncbn
from easycore.core.aign import AIGNTracker
from easycore.core.callbacks import AIGNCallback, Callback, EvalCallback, Loop  # noqa: F401  (re-exported: train.Callback)
from easycore.core.checkpoint import (  # noqa: F401
    code_hash,
    config_hash,
    load_model,
    records_dir,
    remove_state,
    resume,
    save_model,
)
from easycore.core.models import build_model
from easycore.core.modes import MODES
from easycore.core.runtime import (  # noqa: F401
    accuracy,
    predict,
    resolve_device,
    seed_everything,
    setup_backend,
    use_amp,
)
from easycore.data.base import ArrayDataset, hash_seed
from easycore.data.loaders import DeviceLoader, Loader
from easycore.rng import get_rng_state
from easycore.store import save_state

log = logging.getLogger("easycore.core.train")


class NonFiniteLoss(RuntimeError):
    pass


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def lr_factor(cfg: OptimConfig, step: int, total: int) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based) of `total`."""
    t = step / max(total, 1)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(t >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "onecycle":  # linear up to the peak, linear down to 0
        w = cfg.warmup
        if w > 0 and t < w:
            return 0.1 + 0.9 * t / w
        return max(0.0, (1 - t) / (1 - w))
    raise ValueError(cfg.schedule)


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict]
    tracker: Optional[AIGNTracker]
    epochs_run: int               # epochs computed in this call (0 when everything came from a checkpoint)
    seconds: float
    counts: dict                  # examples trained on, sample-forward and sample-backward passes (whole run)
    epoch_seconds: list[float] = field(default_factory=list)   # wall time of each epoch computed in this call
    callback_seconds: dict = field(default_factory=dict)       # of that, each callback's epoch hooks ({name: s}):
                                                               # the AIGN pass, a data schedule's re-selections...


def train(cfg: TrainConfig, data: Union[Loader, ArrayDataset], *, mode: str = "standard", seed: int = 0,
          runtime: RuntimeConfig = RuntimeConfig(), state_path: Optional[Path] = None,
          callbacks: Sequence[Callback] = (), tracker: Optional[AIGNTracker] = None, aign_batch_size: int = 512,
          test_set=None, progress: bool = True, score_loader: Optional[Loader] = None) -> TrainResult:
    """Train `cfg.model` in `mode` on `data` (a Loader, or an ArrayDataset held on the device by a DeviceLoader).

    callbacks: extension points (module docstring); `tracker` adds the AIGN callback (exact pass over
    `score_loader`: the un-augmented set in order, default `data` in batches of `aign_batch_size` per process);
    `test_set` (ArrayDataset or Loader) with cfg.eval_every logs test accuracy. With `state_path`, a
    checkpoint is written there after every epoch (atomically) and a matching one found there is resumed; the AIGN
    records go to `records_dir(state_path)`.

    In a process group (`dist.init()`, torchrun): DDP with global batch cfg.batch_size (refused unless the world
    size divides it); `data` as an ArrayDataset is sharded here, a Loader must come sharded (rank, world_size,
    per-rank batch). Every rank returns the same model; the history and counts are the whole job's.
    """
    from tqdm.auto import tqdm

    mode_fn = MODES.get(mode)
    if tracker is not None and tracker.wants_inline and mode_fn.adversarial:
        raise ValueError("inline AIGN needs mode standard (the training backward must be the clean-input one); "
                         "use aign.mode: exact")
    world, rank = dist.world(), dist.rank()
    if world == 1 and int(os.environ.get("WORLD_SIZE") or 1) > 1:
        log.warning("WORLD_SIZE=%s but no process group: every process trains alone (call easycore.core.dist.init())",
                    os.environ["WORLD_SIZE"])
    dist.check_batch_size(cfg.batch_size)
    device = dist.local_device(resolve_device(runtime.device))
    setup_backend(runtime, device)
    amp = use_amp(runtime, device)
    chl = runtime.channels_last  # NHWC: faster on CUDA and (measured, cnn_tiny) ~1.5x on CPU too
    progress = progress and dist.is_main()
    loader = _as_loader(data, cfg.batch_size // world, device, augment=cfg.augment, shuffle=True, seed=seed,
                        channels_last=chl, rank=rank, world_size=world)
    callbacks = list(callbacks)
    if tracker is not None:
        score = score_loader if score_loader is not None else _as_loader(
            data, aign_batch_size, device, augment=False, shuffle=False, seed=seed, channels_last=chl, rank=rank,
            world_size=world)
        callbacks.insert(0, AIGNCallback(tracker, score))
    if test_set is not None and cfg.eval_every:
        callbacks.append(EvalCallback(test_set, cfg.eval_every))

    seed_everything(hash_seed(seed, -1))
    info = loader.info
    model = build_model(cfg.model, info.num_classes, info.in_channels, info.mean, info.std).to(device)
    model = syncbn.for_world(model, device, runtime.sync_bn, world)  # BatchNorm over the global batch (sync_bn)
    if chl:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg.optim)
    loop = Loop(cfg, model, loader, device, amp, chl, mode, seed, progress)
    unhook = _count_passes(model, loop.counts)

    identity = {"config": dataclasses.asdict(cfg), "mode": mode, "seed": seed, "fingerprint": info.fingerprint,
                "callbacks": [c.name for c in callbacks if c.state_dict() is not None], "code": code_hash(),
                "tracker": None if tracker is None else [tracker.mode, tracker.every]}
    if tracker is not None and state_path is not None:
        tracker.store, tracker.write = records_dir(state_path) / config_hash(identity), dist.is_main()
    history, start = resume(state_path, config_hash(identity), loop, opt, callbacks)
    if start == 0 and state_path is not None and dist.is_main():
        remove_state(state_path)  # a stale checkpoint (other settings, unreadable) and its records
    compile_ = runtime.compile and device.type == "cuda"
    if world > 1:  # after the resume (DDP broadcasts rank 0's weights and buffers once more)
        fwd = dist.DDPModel(model, device, compile=compile_)
    else:
        fwd = torch.compile(model) if compile_ else model
    t_start = time.perf_counter()
    epoch_seconds, cb_seconds = [], {}

    def hook(name: str, *args) -> None:  # each callback's epoch hook, timed: what of an epoch is not the steps
        for cb in callbacks:
            t = time.perf_counter()
            getattr(cb, name)(*args)
            cb_seconds[cb.name] = cb_seconds.get(cb.name, 0.0) + time.perf_counter() - t
    try:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            loop.epoch = epoch
            seed_everything(hash_seed(seed, epoch))
            loader.set_epoch(epoch)
            hook("on_epoch_start", loop)
            rec = {"epoch": epoch + 1}
            if not loop.skip:
                rec.update(_run_epoch(loop, fwd, mode_fn.fn, opt, callbacks, tqdm))
            dist.sync_buffers(model)  # several processes: every rank scores and saves rank 0's BN statistics
            hook("on_epoch_end", loop, rec)
            history.append(rec)
            epoch_seconds.append(time.perf_counter() - t0)
            log.info("%s epoch %d/%d%s (%.1fs)", mode, epoch + 1, cfg.epochs,
                     "".join(f" {k} {v:.4f}" for k, v in rec.items() if k not in ("epoch", "lr") and isinstance(v, float)),
                     epoch_seconds[-1])
            if state_path is not None:
                counts = dist.job_counts(loop.counts)
                if dist.is_main():
                    save_state(state_path, {
                        "identity_hash": config_hash(identity), "identity": identity, "epoch": epoch + 1,
                        "model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                        "counts": counts,
                        "callbacks": {c.name: st for c in callbacks if (st := c.state_dict()) is not None},
                        "rng": get_rng_state()})
    except KeyboardInterrupt:
        where = f"after epoch {loop.epoch}" if state_path is not None else "(no checkpoint path given)"
        log.warning("interrupted during epoch %d; the last complete epoch is saved %s at %s; run the same command "
                    "again to resume", loop.epoch + 1, where, state_path)
        raise
    finally:
        unhook()
    return TrainResult(model, history, tracker, cfg.epochs - start, time.perf_counter() - t_start,
                       dist.job_counts(loop.counts), epoch_seconds, cb_seconds)


def _as_loader(data, batch_size: int, device, *, augment: bool, shuffle: bool, seed: int, channels_last: bool,
               rank: int = 0, world_size: int = 1):
    """`data` as a Loader: an ArrayDataset in a DeviceLoader (rank's shard, per-rank batch_size); a Loader as is
    (in a process group it must be sharded for `world_size`: ValueError otherwise)."""
    if not isinstance(data, ArrayDataset):
        w = getattr(data, "world_size", None) or getattr(getattr(data, "sampler", None), "world_size", 1)
        if w != world_size:
            raise ValueError(f"the Loader is sharded for {w} process(es) but {world_size} are training: build it "
                             f"with rank=dist.rank(), world_size=dist.world() and the per-rank batch size")
        return data
    return DeviceLoader(data.x, data.y, batch_size=batch_size, device=device, shuffle=shuffle, augment=augment,
                        seed=seed, channels_last=channels_last, info=data.info, rank=rank, world_size=world_size)


def _run_epoch(loop: Loop, fwd, mode_fn, opt, callbacks: Sequence[Callback], tqdm) -> dict:
    """One epoch of optimiser steps over loop.loader; returns the history entries (loss, train_acc, lr)."""
    cfg, loader, device = loop.cfg, loop.loader, loop.device
    loop.model.train()
    n_batches = len(loader)
    losses = torch.zeros(n_batches, device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    check_every = 50 if device.type == "cuda" else 1
    lr = cfg.optim.lr
    bar = tqdm(total=epoch_samples(loader), desc=f"{loop.mode} epoch {loop.epoch + 1}/{cfg.epochs}", unit="img",
               leave=False, disable=not loop.progress)
    for b, (x, y, idx) in enumerate(loader):
        bar.update(len(y))
        for cb in callbacks:
            cb.before_batch(loop, x, y, idx)
        w = None if loop.weights is None else loop.weights[idx]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=loop.amp):
            out = mode_fn(fwd, x, y, w, attack=cfg.attack, amp=loop.amp)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        for cb in callbacks:
            cb.after_backward(loop, x, y, idx, out)
        # the lr at this step: position in the run = (epoch * n_batches + b) / (epochs * n_batches)
        lr = cfg.optim.lr * lr_factor(cfg.optim, loop.epoch * n_batches + b, cfg.epochs * n_batches)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        losses[b] = out.loss.detach().float()
        correct += (out.logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if (b + 1) % check_every == 0 or b == n_batches - 1:
            _check_finite(losses[: b + 1], loop.epoch)
    bar.close()
    loop.counts["examples"] += seen
    if dist.active():  # the job's: each step's loss is the mean of the ranks' (equal-size) batch means
        w = dist.world()
        losses = dist.all_reduce(losses) / w
        correct = dist.all_reduce(correct)
        seen = int(dist.all_reduce(torch.tensor([seen], dtype=torch.long)))
    return {"loss": float(losses.mean()), "train_acc": float(correct) / max(seen, 1), "lr": lr}


def epoch_samples(loader) -> int:
    """Samples one pass over `loader` yields (for progress bars): its `epoch_samples` when it has one, else
    batches x batch size."""
    n = getattr(loader, "epoch_samples", None)
    return int(n) if n is not None else len(loader) * int(loader.batch_size)


def _count_passes(model: torch.nn.Module, counts: dict):
    """Count sample-forward and sample-backward passes through `model` (training, attacks, scoring alike), at its
    last layer `fc`, which every forward (model(x) or features + fc) and every backward goes through."""
    def fwd(_m, args):
        counts["forward"] += int(args[0].shape[0])

    def bwd(_m, grad_out):
        counts["backward"] += int(grad_out[0].shape[0])

    h1 = model.fc.register_forward_pre_hook(fwd)
    h2 = model.fc.register_full_backward_pre_hook(bwd)
    return lambda: (h1.remove(), h2.remove())


def _check_finite(losses: torch.Tensor, epoch: int) -> None:
    """losses[b] is batch b's loss: the first non-finite entry names the batch. Several processes: the ranks agree
    (a collective), so every rank raises at the same check, naming the first failing rank."""
    bad = ~torch.isfinite(losses)
    if dist.active():
        hit = dist.first_failure(int(bad.nonzero()[0]) if bool(bad.any()) else None)
        if hit is not None:
            b, r = hit
            value = f" ({float(losses[b])})" if r == dist.rank() else ""
            raise NonFiniteLoss(f"non-finite training loss{value} at epoch {epoch + 1}, batch {b} (0-based) on rank "
                                f"{r} of {dist.world()}; lower the learning rate, or check the data and params")
        return
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise NonFiniteLoss(f"non-finite training loss ({float(losses[b])}) at epoch {epoch + 1}, batch {b} "
                            f"(0-based); lower the learning rate, or check the data and params")
