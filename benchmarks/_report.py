"""Shared helpers for the benchmark scripts: describe the machine, append a dated Markdown section."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

from easycore.store import atomic_path

HEADER = "# Benchmarks\n\nAppended by the scripts in `benchmarks/` (newest last). Each section names its machine.\n"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description() -> str:
    """One line: CPU (cores, torch's CPU capability, whether bf16 autocast has a fast path: runtime.cpu_bf16_fast),
    GPU (if any), torch version and threads, Python, OS."""
    import torch

    from easycore.core.runtime import cpu_bf16_fast

    parts = [f"CPU: {_cpu_name()} ({os.cpu_count()} logical cores; torch CPU capability "
             f"{torch.backends.cpu.get_cpu_capability()}, fast bf16 path: {'yes' if cpu_bf16_fast() else 'no'})"]
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        parts.append(f"GPU: {', '.join(gpus)} (CUDA {torch.version.cuda})")
    else:
        parts.append("GPU: none")
    parts.append(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    parts.append(f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    return "; ".join(parts)


def append_section(path, title: str, markdown_body: str, *, machine: bool = True) -> Path:
    """Append `## title (UTC timestamp)` + machine line + body to the Markdown file `path` (atomically)."""
    path = Path(path)
    old = path.read_text() if path.exists() else HEADER
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title} ({stamp})", ""]
    if machine:
        lines += [f"Machine: {machine_description()}", ""]
    section = "\n".join(lines) + "\n" + markdown_body.rstrip() + "\n"
    text = old.rstrip() + "\n\n" + section
    with atomic_path(path, suffix=".md") as tmp:
        tmp.write_text(text)
    return path
