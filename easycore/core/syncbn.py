"""BatchNorm over the GLOBAL batch under DDP (runtime.sync_bn), on CPU and CUDA alike.

With W processes each rank normalises by default with its own batch's statistics (batch_size / W samples), so a
model with BatchNorm trains differently from one process at batch_size (the AIGN of a 2-rank CPU proxy differed by up
to 36 % relative). `runtime.sync_bn: true` computes the batch statistics over the global batch:

  * CUDA (nccl): torch.nn.SyncBatchNorm;
  * elsewhere (gloo, CPU; torch's SyncBatchNorm refuses CPU tensors): `GlobalBatchNorm`, which all-reduces the
    per-rank per-channel [count, sum, sum of squares] (float64, by a differentiable all-reduce, so the backward pass is the global batch's as well) and normalises with the global mean and biased
    variance; running statistics are updated with the global unbiased variance, as BatchNorm does on one process.

The union of the ranks' batches is the one-process batch (easycore/core/dist.py), so W ranks then compute what one
process computes, up to float rounding (tests/test_scale.py: 2 ranks vs 1 process, the layer and a whole proxy
run's AIGN and selection; docs/scale.md gives the measured agreement).
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

from easycore.core import dist

log = logging.getLogger("easycore.core.syncbn")


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of each rank's input is the sum of the ranks' gradients of
    the result (every rank's loss depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx, t):
        import torch.distributed as td

        out = t.clone()
        td.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, g):
        import torch.distributed as td

        g = g.clone()
        td.all_reduce(g)
        return g


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm{1,2,3}d whose training-mode statistics are those of the union of the ranks' batches (module doc).
    Without a process group, or in eval mode, it is plain BatchNorm."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and dist.active()):
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        xd = x.double()
        local = torch.stack([torch.full((x.shape[1],), x.numel() / x.shape[1], dtype=torch.float64, device=x.device),
                             xd.sum(dims), (xd * xd).sum(dims)])
        n, s, ss = _AllReduceSum.apply(local)            # sum over the ranks (autograd: grads all-reduced too)
        if float(n[0]) <= 1:                             # as BatchNorm (every rank sees the global count: all raise)
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()} "
                             f"on this rank and {float(n[0]):.0f} value per channel over the {dist.world()} ranks")
        mean = s / n
        var = (ss / n - mean * mean).clamp_min(0)       # biased: what normalises the batch
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                count = float(n[0])
                unbiased = var * (count / max(count - 1, 1))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = [1, -1] + [1] * (x.dim() - 2)
        inv = torch.rsqrt(var + self.eps).to(x.dtype)
        y = (x - mean.to(x.dtype).view(shape)) * inv.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm (nn.modules.batchnorm._BatchNorm, not SyncBatchNorm) replaced by a
    GlobalBatchNorm holding the same parameters and buffers (in place where possible; returns the new root)."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, (nn.SyncBatchNorm,
                                                                                        GlobalBatchNorm)):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        new = convert(child)
        if new is not child:
            setattr(out, name, new)
    return out


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def for_world(model: nn.Module, device: torch.device, sync_bn: bool, world: int) -> nn.Module:
    """What train() calls on the fresh model: with several processes and sync_bn, BatchNorm over the global batch
    (SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere); with several processes and a BatchNorm model but sync_bn
    false, a warning (each rank normalises by its own batch: not the one-process run). Returns the model."""
    if world <= 1 or not has_batchnorm(model):
        return model
    if not sync_bn:
        log.warning("%d processes, a model with BatchNorm and runtime.sync_bn false: each rank normalises with its "
                    "own batch_size/%d samples, so the run differs from one process; set runtime.sync_bn: true",
                    world, world)
        return model
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return convert(model)
