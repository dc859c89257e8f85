"""The training loop's extension points: `Loop` (the state a callback sees) and `Callback`, with the two built-in
callbacks (AIGN recording, periodic test accuracy). The data schedules (ACS, easycore/core/acs.py) are callbacks too.

    on_epoch_start(loop)                    before an epoch's batches (data schedules: `loop.loader.set_subset`,
                                            `loop.weights`, `loop.skip`; AIGN: open the inline record)
    before_batch(loop, x, y, idx)           before the forward pass (inline AIGN: x.requires_grad_())
    after_backward(loop, x, y, idx, out)    after loss.backward(), before the optimiser step
    on_epoch_end(loop, record)              after the batches (exact AIGN pass); may add keys to the history record
    state_dict() / load_state_dict(state)   saved in every checkpoint, restored on resume
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from easycore.config import TrainConfig
from easycore.core import dist
from easycore.core.aign import AIGNTracker, exact_pass
from easycore.core.runtime import accuracy
from easycore.data.base import ArrayDataset
from easycore.data.loaders import Loader


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
