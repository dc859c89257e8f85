"""One training loop for standard training, PGD-AT, TRADES and FGSM-RS, static or adaptive data schedules.

`train()` owns the steps every run shares: build the model, the optimiser and the loader; resume from a checkpoint;
for each epoch: seed, let the callbacks prepare it (a data schedule may change the subset and the per-sample
weights, or skip the epoch), run the batches of the training mode (`modes.MODES`), let the callbacks record, write
an atomic checkpoint. Everything else plugs in through named extension points (`Callback`):
    on_epoch_start(loop)                    before an epoch's batches (data schedules: `loop.loader.set_subset`,
                                            `loop.weights`, `loop.skip`; AIGN: open the inline record)
    before_batch(loop, x, y, idx)           before the forward pass (inline AIGN: x.requires_grad_())
    after_backward(loop, x, y, idx, out)    after loss.backward(), before the optimiser step
    on_epoch_end(loop, record)              after the batches (exact AIGN pass); may add keys to the history record
    state_dict() / load_state_dict(state)   saved in every checkpoint, restored on resume
A resumed run continues to the same result (bit-identical on CPU): an epoch's batches, augmentations and random
starts depend only on (seed, epoch), and every callback's state travels in the checkpoint (the AIGN records of the
tracked epochs go to per-epoch files in `records_dir(state_path)`; the checkpoint lists them).

Several processes (torchrun; the rules in easycore/dist.py): the model is wrapped in DistributedDataParallel,
`cfg.batch_size` is the global batch (each rank takes batch_size // world per step from its shard of the
one-process epoch order), the history's loss and accuracy are averaged over the ranks, the counts summed, rank 0
alone writes the checkpoint and resumes it for everyone (broadcast), and a non-finite loss on any rank stops every
rank at the same step.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from . import dist, syncbn
from .aign import AIGNTracker, exact_pass
from .config import ConfigError, OptimConfig, RuntimeConfig, TrainConfig
from .data import ArrayDataset, DeviceLoader, Loader, hash_seed
from .models import build_model
from .modes import MODES
from .rng import get_rng_state, set_rng_state
from .store import ArtifactError, load_state, save_state

log = logging.getLogger("easycore.train")


class NonFiniteLoss(RuntimeError):
    pass


# ----------------------------------------------------------------------------- extension points
@dataclass
class Loop:
    """The state of a running `train()`, as the callbacks see it."""
    cfg: TrainConfig
    model: torch.nn.Module
    loader: Loader
    device: torch.device
    amp: bool
    channels_last: bool
    mode: str
    seed: int
    progress: bool = True
    epoch: int = 0
    weights: Optional[torch.Tensor] = None   # per-sample loss weights indexed by position in the full set, or None
    skip: bool = False                       # this epoch trains nothing (the lr schedule still advances)
    counts: dict = field(default_factory=lambda: {"examples": 0, "forward": 0, "backward": 0})


class Callback:
    """No-op base: override the extension points you need (see the module docstring)."""
    name = "callback"   # the key of its state in the checkpoint

    def on_epoch_start(self, loop: Loop) -> None: ...

    def before_batch(self, loop: Loop, x, y, idx) -> None: ...

    def after_backward(self, loop: Loop, x, y, idx, out) -> None: ...

    def on_epoch_end(self, loop: Loop, record: dict) -> None: ...

    def state_dict(self):
        return None

    def load_state_dict(self, state) -> None: ...


class AIGNCallback(Callback):
    """Records AIGN and the training dynamics into `tracker`: inline from the training step's own input gradient,
    exact by an eval-mode pass over `score_loader` (the un-augmented set, in order) after each tracked epoch."""
    name = "aign"

    def __init__(self, tracker: AIGNTracker, score_loader: Loader):
        self.tracker, self.score_loader = tracker, score_loader

    def on_epoch_start(self, loop: Loop) -> None:
        self.tracker.start_epoch(loop.epoch, loop.device)

    def before_batch(self, loop: Loop, x, y, idx) -> None:
        if self.tracker.inline_active:
            x.requires_grad_(True)

    def after_backward(self, loop: Loop, x, y, idx, out) -> None:
        if self.tracker.inline_active:
            self.tracker.record_inline(idx, x.grad, len(y), out.logits, y, out.feats)

    def on_epoch_end(self, loop: Loop, record: dict) -> None:
        t, exact = self.tracker, None
        if t.wants_exact and t.tracks(loop.epoch):
            # each rank scores its shard of the set; the values are merged by sample index (one process: the
            # scatter of the loader's own positions)
            exact = exact_pass(loop.model, self.score_loader, amp=loop.amp, progress=loop.progress, index=True)
            idx = exact.pop("index")
            exact = {k: dist.all_gather_by_index(v, idx, t.n) for k, v in exact.items()}
        if dist.active():
            t.gather_inline(lambda v, i: dist.all_gather_by_index(v, i, t.n))
        t.end_epoch(loop.epoch, exact)

    def state_dict(self):
        return self.tracker.state_dict()

    def load_state_dict(self, state) -> None:
        self.tracker.load_state_dict(state)


class EvalCallback(Callback):
    """Clean accuracy on a test set every `every` epochs (and after the last), into the history record."""
    name = "eval"

    def __init__(self, test_set: ArrayDataset, every: int):
        self.test_set, self.every = test_set, every

    def on_epoch_end(self, loop: Loop, record: dict) -> None:
        if self.every and ((loop.epoch + 1) % self.every == 0 or loop.epoch + 1 == loop.cfg.epochs) and dist.is_main():
            record["test_acc"] = accuracy(loop.model, self.test_set)  # rank 0's history is the one saved


# ----------------------------------------------------------------------------- optimiser
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


# ----------------------------------------------------------------------------- device
def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        # a params problem: the CLI reports it in one line (exit 2)
        raise ConfigError("params: runtime.device = 'cuda' is not allowed here: torch sees no GPU; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def setup_backend(rt: RuntimeConfig, device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not rt.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if rt.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Eval-mode argmax predictions (CPU tensor) for uint8 or [0,1] float inputs held anywhere: moved to the
    model's device one batch at a time, then `attacks.predict` (which restores the model's mode)."""
    from .attacks import predict as predict_on_device

    device = next(model.parameters()).device
    out = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(device)
        xb = xb.float().div_(255) if xb.dtype == torch.uint8 else xb
        out.append(predict_on_device(model, xb, batch_size=batch_size).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model, data) -> float:
    """Clean accuracy on an ArrayDataset or over a Loader's batches (eval mode; the model's mode restored)."""
    if isinstance(data, ArrayDataset):
        return float((predict(model, data.x) == data.y).float().mean()) if len(data) else float("nan")
    from .attacks import predict as predict_on_device

    device, hit, n = next(model.parameters()).device, 0, 0
    for x, y, _ in data:
        hit += int((predict_on_device(model, x.to(device)) == y.to(device)).sum())
        n += len(y)
    return hit / n if n else float("nan")


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict]
    tracker: Optional[AIGNTracker]
    epochs_run: int               # epochs computed in this call (0 when everything came from a checkpoint)
    seconds: float
    counts: dict                  # examples trained on, sample-forward and sample-backward passes (whole run)
    epoch_seconds: list[float] = field(default_factory=list)   # wall time of each epoch computed in this call


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_hash() -> str:
    """A hash of the package's sources: a checkpoint made by other code is not resumed."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


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
        log.warning("WORLD_SIZE=%s but no process group: every process trains alone (call easycore.dist.init())",
                    os.environ["WORLD_SIZE"])
    dist.check_batch_size(cfg.batch_size)
    device = dist.local_device(resolve_device(runtime.device))
    setup_backend(runtime, device)
    amp = runtime.amp and device.type == "cuda"
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
    history, start = _resume(state_path, config_hash(identity), loop, opt, callbacks)
    if start == 0 and state_path is not None and dist.is_main():
        remove_state(state_path)  # a stale checkpoint (other settings, unreadable) and its records
    compile_ = runtime.compile and device.type == "cuda"
    if world > 1:  # after the resume (DDP broadcasts rank 0's weights and buffers once more)
        fwd = DDPModel(model, device, compile=compile_)
    else:
        fwd = torch.compile(model) if compile_ else model
    t_start = time.perf_counter()
    epoch_seconds = []
    try:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            loop.epoch = epoch
            seed_everything(hash_seed(seed, epoch))
            loader.set_epoch(epoch)
            for cb in callbacks:
                cb.on_epoch_start(loop)
            rec = {"epoch": epoch + 1}
            if not loop.skip:
                rec.update(_run_epoch(loop, fwd, mode_fn.fn, opt, callbacks, tqdm))
            dist.sync_buffers(model)  # several processes: every rank scores and saves rank 0's BN statistics
            for cb in callbacks:
                cb.on_epoch_end(loop, rec)
            history.append(rec)
            epoch_seconds.append(time.perf_counter() - t0)
            log.info("%s epoch %d/%d%s (%.1fs)", mode, epoch + 1, cfg.epochs,
                     "".join(f" {k} {v:.4f}" for k, v in rec.items() if k not in ("epoch", "lr") and isinstance(v, float)),
                     epoch_seconds[-1])
            if state_path is not None:
                counts = _job_counts(loop.counts)
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
                       _job_counts(loop.counts), epoch_seconds)


def records_dir(state_path) -> Path:
    """The folder of a checkpoint's per-epoch AIGN records: `.main.state.pt` -> `.main.state.records/`."""
    state_path = Path(state_path)
    return state_path.with_suffix(".records") if state_path.suffix == ".pt" else Path(f"{state_path}.records")


def remove_state(state_path) -> None:
    """Delete a checkpoint and its AIGN records (when a run's outputs are written, or a stale one is replaced)."""
    Path(state_path).unlink(missing_ok=True)
    shutil.rmtree(records_dir(state_path), ignore_errors=True)


def _job_counts(counts: dict) -> dict:
    """The counts summed over the ranks (a collective: every rank calls it); a copy of `counts` on one process."""
    if not dist.active():
        return dict(counts)
    keys = list(counts)
    tot = dist.all_reduce(torch.tensor([int(counts[k]) for k in keys], dtype=torch.long))
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


def _resume(state_path, ident_hash: str, loop: Loop, opt, callbacks) -> tuple[list, int]:
    """Load a matching checkpoint into the model, optimiser, callbacks and RNGs: (history, first epoch to run).
    Several processes: rank 0 reads it and broadcasts it (the others need no access to its files); the counts
    stay with rank 0 (the job's counts are the ranks' sum)."""
    if dist.active():
        st = _read_checkpoint(state_path, ident_hash, "cpu", callbacks) if dist.is_main() else None
        st = dist.broadcast_object(st)
        if st is not None and not dist.is_main():
            _load_callbacks(st, callbacks)
    else:
        st = _read_checkpoint(state_path, ident_hash, loop.device, callbacks)
    if st is None:
        return [], 0
    loop.model.load_state_dict(st["model"])
    opt.load_state_dict(st["optimizer"])
    if dist.is_main():
        loop.counts.update(st["counts"])
    set_rng_state(st["rng"])
    log.warning("resumed from %s after epoch %d/%d", state_path, st["epoch"], loop.cfg.epochs)
    return st["history"], st["epoch"]


def _read_checkpoint(state_path, ident_hash: str, map_location, callbacks) -> Optional[dict]:
    """The checkpoint at state_path with the callbacks' state loaded from it, or None (with a warning) when there
    is none, it is unreadable, it was made with other settings, or a callback's files are missing."""
    if state_path is None or not Path(state_path).exists():
        return None
    try:
        st = load_state(state_path, map_location=map_location)
    except ArtifactError as e:
        log.warning("ignoring unreadable checkpoint (%s); starting fresh", e)
        return None
    if st.get("identity_hash") != ident_hash:
        log.warning("checkpoint %s was made with other settings, data or code; starting fresh", state_path)
        return None
    try:
        _load_callbacks(st, callbacks)  # the AIGN callback (first) checks its record files before it changes
    except ArtifactError as e:
        log.warning("ignoring checkpoint %s (%s); starting fresh", state_path, e)
        return None
    return st


def _load_callbacks(st: dict, callbacks) -> None:
    for c in callbacks:
        if c.name in st["callbacks"]:
            c.load_state_dict(st["callbacks"][c.name])


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


def save_model(path, model: torch.nn.Module, meta: dict) -> Path:
    """Final weights (safetensors) + everything needed to rebuild the model (name, classes, stats) + provenance."""
    from .store import save_tensors

    return save_tensors(path, model.state_dict(), meta)


def load_model(path, device="cpu"):
    """Rebuild a model saved by `save_model`. Returns (model in eval mode, meta). A file that is not such a model
    (missing keys, another architecture's weights) is an ArtifactError with one line."""
    from .store import load_tensors

    sd, meta = load_tensors(path)
    missing = [k for k in ("model", "num_classes", "in_channels", "mean", "std") if k not in meta]
    if missing:
        raise ArtifactError(f"{path} is not a model written by easycore (its metadata lacks {', '.join(missing)}); "
                            f"re-run the stage that makes it")
    wrong = f"{path} does not hold the weights of the model its metadata names ({meta.get('model')!r})"
    try:
        model = build_model(meta["model"], meta["num_classes"], meta["in_channels"], meta["mean"], meta["std"])
        want = model.state_dict()
        diff = [(what, [k for k in keys if test(k)]) for what, keys, test in (
            ("missing", want, lambda k: k not in sd), ("unexpected", sd, lambda k: k not in want),
            ("of another shape", want, lambda k: k in sd and tuple(sd[k].shape) != tuple(want[k].shape)))]
        if any(ks for _, ks in diff):
            raise ArtifactError(f"{wrong}: " + ", ".join(f"{len(ks)} tensors {what} (e.g. {ks[0]!r})"
                                                          for what, ks in diff if ks))
        model.load_state_dict(sd)
    except (KeyError, ValueError, RuntimeError) as e:
        if isinstance(e, ArtifactError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{wrong}: {first}") from None
    return model.to(device).eval(), meta
