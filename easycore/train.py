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
starts depend only on (seed, epoch), and every callback's state travels in the checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

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
        exact = None
        if self.tracker.wants_exact and self.tracker.tracks(loop.epoch):
            exact = exact_pass(loop.model, self.score_loader, amp=loop.amp, progress=loop.progress)
        self.tracker.end_epoch(loop.epoch, exact)

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
        if self.every and ((loop.epoch + 1) % self.every == 0 or loop.epoch + 1 == loop.cfg.epochs):
            record["test_acc"] = accuracy(loop.model, self.test_set)


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
          test_set: Optional[ArrayDataset] = None, progress: bool = True) -> TrainResult:
    """Train `cfg.model` in `mode` on `data` (a Loader, or an ArrayDataset held on the device by a DeviceLoader).

    callbacks: extension points (module docstring); `tracker` adds the AIGN callback (exact pass in batches of
    `aign_batch_size`); `test_set` with cfg.eval_every logs test accuracy. With `state_path`, a checkpoint is
    written there after every epoch (atomically) and a matching one found there is resumed.
    """
    from tqdm.auto import tqdm

    mode_fn = MODES.get(mode)
    if tracker is not None and tracker.wants_inline and mode_fn.adversarial:
        raise ValueError("inline AIGN needs mode standard (the training backward must be the clean-input one); "
                         "use aign.mode: exact")
    device = resolve_device(runtime.device)
    setup_backend(runtime, device)
    amp = runtime.amp and device.type == "cuda"
    chl = runtime.channels_last  # NHWC: faster on CUDA and (measured, cnn_tiny) ~1.5x on CPU too
    loader = _as_loader(data, cfg.batch_size, device, augment=cfg.augment, shuffle=True, seed=seed, channels_last=chl)
    callbacks = list(callbacks)
    if tracker is not None:
        score = _as_loader(data, aign_batch_size, device, augment=False, shuffle=False, seed=seed, channels_last=chl)
        callbacks.insert(0, AIGNCallback(tracker, score))
    if test_set is not None and cfg.eval_every:
        callbacks.append(EvalCallback(test_set, cfg.eval_every))

    seed_everything(hash_seed(seed, -1))
    info = loader.info
    model = build_model(cfg.model, info.num_classes, info.in_channels, info.mean, info.std).to(device)
    if chl:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg.optim)
    loop = Loop(cfg, model, loader, device, amp, chl, mode, seed, progress)
    fwd = torch.compile(model) if (runtime.compile and device.type == "cuda") else model
    unhook = _count_passes(model, loop.counts)

    identity = {"config": dataclasses.asdict(cfg), "mode": mode, "seed": seed, "fingerprint": info.fingerprint,
                "callbacks": [c.name for c in callbacks if c.state_dict() is not None], "code": code_hash(),
                "tracker": None if tracker is None else [tracker.mode, tracker.every]}
    history, start = _resume(state_path, config_hash(identity), loop, opt, callbacks)
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
            for cb in callbacks:
                cb.on_epoch_end(loop, rec)
            history.append(rec)
            epoch_seconds.append(time.perf_counter() - t0)
            log.info("%s epoch %d/%d%s (%.1fs)", mode, epoch + 1, cfg.epochs,
                     "".join(f" {k} {v:.4f}" for k, v in rec.items() if k not in ("epoch", "lr") and isinstance(v, float)),
                     epoch_seconds[-1])
            if state_path is not None:
                save_state(state_path, {
                    "identity_hash": config_hash(identity), "identity": identity, "epoch": epoch + 1,
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                    "counts": dict(loop.counts),
                    "callbacks": {c.name: st for c in callbacks if (st := c.state_dict()) is not None},
                    "rng": get_rng_state()})
    except KeyboardInterrupt:
        where = f"after epoch {loop.epoch}" if state_path is not None else "(no checkpoint path given)"
        log.warning("interrupted during epoch %d; the last complete epoch is saved %s at %s; run the same command "
                    "again to resume", loop.epoch + 1, where, state_path)
        raise
    finally:
        unhook()
    return TrainResult(model, history, tracker, cfg.epochs - start, time.perf_counter() - t_start, dict(loop.counts),
                       epoch_seconds)


def _as_loader(data, batch_size: int, device, *, augment: bool, shuffle: bool, seed: int, channels_last: bool):
    if not isinstance(data, ArrayDataset):
        return data
    return DeviceLoader(data.x, data.y, batch_size=batch_size, device=device, shuffle=shuffle, augment=augment,
                        seed=seed, channels_last=channels_last, info=data.info)


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
    bar = tqdm(loader, desc=f"{loop.mode} epoch {loop.epoch + 1}/{cfg.epochs}", leave=False, disable=not loop.progress)
    for b, (x, y, idx) in enumerate(bar):
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
    loop.counts["examples"] += seen
    return {"loss": float(losses.mean()), "train_acc": float(correct) / max(seen, 1), "lr": lr}


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
    """Load a matching checkpoint into the model, optimiser, callbacks and RNGs: (history, first epoch to run)."""
    if state_path is None or not Path(state_path).exists():
        return [], 0
    try:
        st = load_state(state_path, map_location=loop.device)
    except ArtifactError as e:
        log.warning("ignoring unreadable checkpoint (%s); starting fresh", e)
        return [], 0
    if st.get("identity_hash") != ident_hash:
        log.warning("checkpoint %s was made with other settings, data or code; starting fresh", state_path)
        return [], 0
    loop.model.load_state_dict(st["model"])
    opt.load_state_dict(st["optimizer"])
    loop.counts.update(st["counts"])
    for c in callbacks:
        if c.name in st["callbacks"]:
            c.load_state_dict(st["callbacks"][c.name])
    set_rng_state(st["rng"])
    log.info("resumed from %s after epoch %d/%d", state_path, st["epoch"], loop.cfg.epochs)
    return st["history"], st["epoch"]


def _check_finite(losses: torch.Tensor, epoch: int) -> None:
    """losses[b] is batch b's loss: the first non-finite entry names the batch."""
    bad = ~torch.isfinite(losses)
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
