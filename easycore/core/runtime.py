"""Where a run computes and how: the device, seeding, the backend switches, and eval-mode predictions.

Small functions every stage uses (training, evaluation, the proxy); nothing here trains.
"""
from __future__ import annotations

import functools
import logging
import os
import random

import numpy as np
import torch

from easycore.config import ConfigError, RuntimeConfig
from easycore.data.base import ArrayDataset

log = logging.getLogger("easycore")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        # a params problem: the CLI reports it in one line (exit 2)
        raise ConfigError("params: runtime.device = 'cuda' is not allowed here: torch sees no GPU; use auto or cpu")
    return torch.device(name)


def use_amp(rt: RuntimeConfig, device: torch.device) -> bool:
    """bf16 autocast for this device: on CUDA with runtime.amp, on the CPU with runtime.cpu_bf16 (warned once per
    process where the CPU has no fast bf16 path: `slow_cpu_bf16`)."""
    msg = slow_cpu_bf16(rt, device)
    if msg:
        _warn_once(msg)
    return (rt.amp and device.type == "cuda") or (rt.cpu_bf16 and device.type == "cpu")


@functools.cache
def cpu_bf16_fast() -> bool:
    """Has this CPU a fast bf16 path for convolutions and matmuls (oneDNN's: AVX-512 BW/VL/DQ, native with
    avx512_bf16 / AMX)? torch's own answer (`torch.ops.mkldnn._is_mkldnn_bf16_supported`). Where it has none,
    bf16 autocast on the CPU is emulated: a training epoch measured 10.6x (standard) and 13.1x (TRADES) slower than fp32
    on an AMD EPYC Zen 3 with AVX2 only (reports/benchmarks.md, "bf16 without a fast bf16 path")."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def slow_cpu_bf16(rt: RuntimeConfig, device: torch.device) -> str | None:
    """The warning for runtime.cpu_bf16 on a CPU without a fast bf16 path (None where there is nothing to say).
    A warning, not an error: the numbers are the profile's (bf16), only slower; `easycore check` prints it first."""
    if not (rt.cpu_bf16 and device.type == "cpu") or cpu_bf16_fast():
        return None
    return (f"runtime.cpu_bf16 is on, but this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX-512 bf16 "
            "path) emulates bf16: training measured 10-13x slower than fp32 on such a CPU, so a profile's stated "
            "cost does not hold here. Run it on a CPU with avx512_bf16 / AMX (grep the flags in /proc/cpuinfo) or "
            "on a GPU; runtime.cpu_bf16: false is fast here but computes other numbers than the profile's "
            "(`python -m benchmarks.study_cost --params FILE` predicts a profile's wall time on this machine)")


@functools.cache
def _warn_once(msg: str) -> None:
    log.warning(msg)


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
    from easycore.core.attacks import predict as predict_on_device

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
    from easycore.core.attacks import predict as predict_on_device

    device, hit, n = next(model.parameters()).device, 0, 0
    for x, y, _ in data:
        hit += int((predict_on_device(model, x.to(device)) == y.to(device)).sum())
        n += len(y)
    return hit / n if n else float("nan")
