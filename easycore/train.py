"""One training loop for standard training, PGD-AT, TRADES and FGSM-RS, with AIGN tracking.

The seam between modes is a per-batch loss function `loss_fn(model, x, y) -> BatchOut`; the loop owns
everything else: the device-resident iterator, SGD + schedule, bf16 autocast / channels_last on CUDA,
AIGN tracking, non-finite checks, and an atomic checkpoint after every epoch from which `resume`
continues to the same result (bit-identical on CPU): an epoch's batches, augmentations and attack
random starts depend only on (seed, epoch).
"""
from __future__ import annotations

import dataclasses
import json
import hashlib
import logging
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .aign import AIGNTracker, exact_pass
from .config import ConfigError, OptimConfig, TrainConfig
from .data import ArrayDataset, DeviceLoader, hash_seed
from .models import build_model
from .store import ArtifactError, load_torch, save_torch

log = logging.getLogger("easycore.train")

KILL_ENV = "EASYCORE_DEBUG_KILL_AT"  # "epoch:batch" (1-based epoch): SIGKILL self there. For tests only.


class NonFiniteLoss(RuntimeError):
    pass


class BatchOut(NamedTuple):
    loss: torch.Tensor                   # scalar, mean over the batch
    logits: torch.Tensor                 # logits on the CLEAN input when available (else adversarial)
    feats: Optional[torch.Tensor] = None  # penultimate features for those logits (standard mode)


LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], BatchOut]


# ----------------------------------------------------------------------------- modes
def make_loss_fn(mode: str, attack=None, *, amp: bool = False) -> LossFn:
    """Per-batch loss for a training mode. The attacks run in eval mode (they restore train mode)."""
    if mode == "standard":
        def standard(model, x, y):
            feats = model.features(x)
            logits = model.fc(feats)
            return BatchOut(F.cross_entropy(logits.float(), y), logits, feats)
        return standard

    from . import attacks

    if mode == "pgd_at":
        def pgd_at(model, x, y):
            x_adv = attacks.pgd(model, x, y, eps=attack.eps, alpha=attack.alpha, steps=attack.steps, amp=amp)
            logits = model(x_adv)
            return BatchOut(F.cross_entropy(logits.float(), y), logits)
        return pgd_at
    if mode == "fgsm_rs":
        def fgsm_rs(model, x, y):
            x_adv = attacks.fgsm_rs(model, x, y, eps=attack.eps, amp=amp)
            logits = model(x_adv)
            return BatchOut(F.cross_entropy(logits.float(), y), logits)
        return fgsm_rs
    if mode == "trades":
        def trades(model, x, y):
            loss, logits = attacks.trades_loss(model, x, y, eps=attack.eps, alpha=attack.alpha,
                                               steps=attack.steps, beta=attack.beta, amp=amp)
            return BatchOut(loss, logits)
        return trades
    raise ValueError(f"unknown training mode {mode!r}")


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


def make_scheduler(opt, cfg: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, total_steps))


# ----------------------------------------------------------------------------- device
def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        # a params problem: the CLI reports it in one line (exit 2)
        raise ConfigError("params: train.device = 'cuda' is not allowed here: torch sees no GPU; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def setup_backend(cfg: TrainConfig, device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if cfg.deterministic:
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


def accuracy(model, ds: ArrayDataset) -> float:
    return float((predict(model, ds.x) == ds.y).float().mean()) if len(ds) else float("nan")


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict]
    tracker: Optional[AIGNTracker]
    epochs_run: int               # epochs computed in this call (0 when everything came from a checkpoint)
    seconds: float


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train(cfg: TrainConfig, train_set: ArrayDataset, *, mode: str = "standard", seed: int = 0,
          state_path: Optional[Path] = None, tracker: Optional[AIGNTracker] = None,
          aign_batch_size: int = 512, test_set: Optional[ArrayDataset] = None, progress: bool = True,
          batch_hook: Optional[Callable[[int, int, torch.Tensor], torch.Tensor]] = None) -> TrainResult:
    """Train `cfg.model` on `train_set` in `mode`. With `state_path`, a checkpoint is written there after
    every epoch (atomically) and a matching one found there is resumed. Returns the trained model."""
    from tqdm.auto import tqdm

    if tracker is not None and tracker.wants_inline and mode != "standard":
        raise ValueError("inline AIGN needs mode standard (the training backward must be the clean-input one); "
                         "use aign.mode: exact")
    device = resolve_device(cfg.device)
    setup_backend(cfg, device)
    cuda = device.type == "cuda"
    amp = cfg.amp and cuda
    chl = cfg.channels_last  # NHWC: faster on CUDA and (measured, cnn_tiny) ~1.5x on CPU too

    seed_everything(hash_seed(seed, -1))
    model = build_model(cfg.model, train_set.num_classes, train_set.in_channels, *train_set.stats).to(device)
    if chl:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg.optim)
    loader = DeviceLoader(train_set.x, train_set.y, batch_size=cfg.batch_size, device=device, shuffle=True,
                          augment=cfg.augment, seed=seed, channels_last=chl)
    total = len(loader) * cfg.epochs
    sched = make_scheduler(opt, cfg.optim, total)
    fwd = torch.compile(model) if (cfg.compile and cuda) else model
    loss_fn = make_loss_fn(mode, cfg.attack, amp=amp)

    identity = {"config": dataclasses.asdict(cfg), "mode": mode, "seed": seed, "fingerprint": train_set.fingerprint,
                "tracker": None if tracker is None else [tracker.mode, tracker.every]}
    ident_hash = config_hash(identity)
    start, history = 0, []
    if state_path is not None and Path(state_path).exists():
        try:
            st = load_torch(state_path, map_location=device)
        except ArtifactError as e:
            log.warning("ignoring unreadable checkpoint (%s); starting fresh", e)
            st = None
        if st is not None and st.get("identity_hash") != ident_hash:
            log.warning("checkpoint %s was made with other settings or data; starting fresh", state_path)
            st = None
        if st is not None:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            history = st["history"]
            start = st["epoch"]
            if tracker is not None:
                tracker.load_state_dict(st["tracker"])
            _set_rng(st["rng"])
            log.info("resumed from %s after epoch %d/%d", state_path, start, cfg.epochs)

    kill_at = _parse_kill(os.environ.get(KILL_ENV))
    t_start = time.perf_counter()
    check_every = 50 if cuda else 1
    epoch = start
    try:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            seed_everything(hash_seed(seed, epoch))
            loader.set_epoch(epoch)
            inline = False
            if tracker is not None:
                tracker.start_epoch(epoch, device)
                inline = tracker.inline_active
            model.train()
            losses = torch.zeros(len(loader), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            bar = tqdm(loader, desc=f"{mode} epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
            for b, (x, y, idx) in enumerate(bar):
                if kill_at == (epoch + 1, b):
                    os.kill(os.getpid(), signal.SIGKILL)
                if inline:
                    x.requires_grad_(True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = loss_fn(fwd, x, y)
                loss = out.loss if batch_hook is None else batch_hook(epoch, b, out.loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if inline:
                    tracker.record_inline(idx, x.grad, len(y), out.logits, y, out.feats)
                opt.step()
                sched.step()
                losses[b] = loss.detach().float()
                correct += (out.logits.detach().argmax(1) == y).sum()
                if (b + 1) % check_every == 0 or b == len(loader) - 1:
                    _check_finite(losses[: b + 1], epoch)
            exact = None
            if tracker is not None and tracker.wants_exact and tracker.tracks(epoch):
                exact = exact_pass(model, loader.x, loader.y, batch_size=aign_batch_size, amp=amp,
                                   channels_last=chl, progress=progress)
            if tracker is not None:
                tracker.end_epoch(epoch, exact)
            rec = {"epoch": epoch + 1, "loss": float(losses.mean()), "train_acc": float(correct) / len(train_set),
                   "lr": float(sched.get_last_lr()[0]), "seconds": time.perf_counter() - t0}
            if test_set is not None and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                rec["test_acc"] = accuracy(model, test_set)
            history.append(rec)
            log.info("%s epoch %d/%d loss %.4f train_acc %.3f%s (%.1fs)", mode, epoch + 1, cfg.epochs, rec["loss"],
                     rec["train_acc"], f" test_acc {rec['test_acc']:.3f}" if "test_acc" in rec else "", rec["seconds"])
            if state_path is not None:
                save_torch(state_path, {
                    "identity_hash": ident_hash, "identity": identity, "epoch": epoch + 1,
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "history": history, "tracker": None if tracker is None else tracker.state_dict(), "rng": _get_rng()})
    except KeyboardInterrupt:
        where = f"after epoch {epoch}" if state_path is not None else "(no checkpoint path given)"
        log.warning("interrupted during epoch %d; the last complete epoch is saved %s at %s; run the same command "
                    "again to resume", epoch + 1, where, state_path)
        raise
    return TrainResult(model, history, tracker, cfg.epochs - start, time.perf_counter() - t_start)


def _check_finite(losses: torch.Tensor, epoch: int) -> None:
    """losses[b] is batch b's loss: the first non-finite entry names the batch."""
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise NonFiniteLoss(f"non-finite training loss ({float(losses[b])}) at epoch {epoch + 1}, batch {b} "
                            f"(0-based); lower the learning rate, or check the data and params")


def _parse_kill(v: Optional[str]):
    if not v:
        return None
    e, _, b = v.partition(":")
    return int(e), int(b)


def _get_rng() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng(st: dict) -> None:
    torch.set_rng_state(st["torch"].cpu())
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in st["cuda"]])


def save_model(path, model: torch.nn.Module, meta: dict) -> Path:
    """Final weights + everything needed to rebuild the model (name, classes, stats) + provenance."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_torch(path, {"model": sd, "meta": meta})


def load_model(path, device="cpu"):
    """Rebuild a model saved by `save_model`. Returns (model in eval mode, meta)."""
    ck = load_torch(path)
    meta = ck["meta"]
    model = build_model(meta["model"], meta["num_classes"], meta["in_channels"], meta["mean"], meta["std"])
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), meta
