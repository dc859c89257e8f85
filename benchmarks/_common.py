"""Helpers shared by the speed benchmarks: arguments, data, interleaved timing, Markdown tables.

Timing discipline: every script measures the variants it compares in ONE process, round-robin (the
starting variant rotates each round so no variant always runs first), after an untimed warm-up, and
reports the median over rounds; ratios are medians of the per-round ratios (robust to slow drift of the
machine's speed while the script runs).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "reports" / "benchmarks.md"


def data_root() -> Path:
    """EASYCORE_DATA, else ../shared/data beside the checkout (as the tests and params default)."""
    return Path(os.environ.get("EASYCORE_DATA") or REPO.parent / "shared" / "data")


def demo_settings() -> dict:
    """The demo proxy's settings from params.yaml (model, batch, subset size, AIGN mode and batch), with
    fallbacks when the file is absent or invalid: the 'demo net' of the benchmarks."""
    d = {"model": "cnn_tiny", "batch_size": 64, "n_per_class": 40, "aign_mode": "both", "aign_batch_size": 256,
         "dataset": "cifar10", "source": "built-in fallback"}
    try:
        from easycore.config import load_params

        p = load_params(REPO / "params.yaml")
        d.update(model=p.proxy.model, batch_size=p.proxy.batch_size, n_per_class=p.data.n_per_class or 100,
                 aign_mode=p.proxy.aign.mode, aign_batch_size=p.proxy.aign.batch_size, source="params.yaml")
        if p.data.dataset in ("cifar10", "synthetic"):
            d["dataset"] = p.data.dataset
    except Exception:  # noqa: BLE001 - any problem: the fallback
        pass
    return d


def base_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0], epilog="\n".join(doc.strip().splitlines()[1:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke sizes (synthetic data, cnn_tiny); numbers meaningless")
    ap.add_argument("--out", default=None, help=f"Markdown file to append the section to ('' = print only; default "
                    f"{DEFAULT_OUT.relative_to(REPO)}, or print only with --quick)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave torch's default)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (median reported)")
    ap.add_argument("--dataset", default="cifar10", choices=["cifar10", "synthetic"],
                    help="cifar10 from the offline copy (falls back to synthetic when absent)")
    return ap


def resolve_out(args) -> str:
    """--out default: the script's report file, or '' (print only) for a --quick smoke run."""
    if args.out is None:
        args.out = "" if args.quick else str(getattr(args, "default_out", DEFAULT_OUT))
    return args.out


@contextlib.contextmanager
def session(args):
    """Yield the device; resolve --out; apply --threads (--quick: 1 thread unless given, so a smoke run on a
    busy machine does not oversubscribe it) and restore torch's thread count afterwards (the scripts also
    run in-process from the tests and `python -m benchmarks`)."""
    from easycore.core.train import resolve_device

    resolve_out(args)
    before = torch.get_num_threads()
    threads = args.threads or (1 if args.quick else 0)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield resolve_device(args.device)
    finally:
        torch.set_num_threads(before)


def load_data(dataset: str, n_per_class: int, *, quick: bool = False, seed: int = 0, split: str = "train"):
    """(ArrayDataset, one-line description). cifar10 from the offline copy, else synthetic (said so)."""
    from easycore.data.loaders import load_dataset
    from easycore.data.base import DataError

    if quick or dataset == "synthetic":
        ds = load_dataset("synthetic", split, ".", n_per_class=n_per_class, seed=seed)
        return ds, f"synthetic, {len(ds)} images"
    try:
        ds = load_dataset(dataset, split, data_root(), n_per_class=n_per_class, seed=seed)
        return ds, f"{dataset} {split} subset ({n_per_class}/class, {len(ds)} images) from {data_root()}"
    except DataError as e:
        ds = load_dataset("synthetic", split, ".", n_per_class=n_per_class, seed=seed)
        return ds, f"synthetic, {len(ds)} images (FALLBACK: {dataset} not available: {str(e)[:120]}...)"


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def interleaved(variants: dict[str, Callable[[], float]], rounds: int, *, warmup: bool = True,
                log: Optional[Callable[[str], None]] = print) -> dict[str, list[float]]:
    """Call every variant once per round, round-robin with a rotating start; each call returns its own
    measured seconds (so it can exclude set-up). Returns {name: [seconds per round]}."""
    names = list(variants)
    if warmup:
        for n in names:
            variants[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            out[n].append(float(variants[n]()))
        if log:
            log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {out[n][-1]:.3f}s" for n in names))
    return out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of times[num][r] / times[den][r]."""
    return median([a / b for a, b in zip(times[num], times[den])])


def spread(xs: Sequence[float]) -> str:
    """min-max as a compact string, to show the noise."""
    return f"{min(xs):.3g}-{max(xs):.3g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def publish(args, title: str, body: str) -> str:
    """Print the section; append it (dated, with the machine line) to args.out unless --out ''."""
    from benchmarks._report import append_section, machine_description

    if args.quick:
        title += " [--quick smoke run: sizes tiny, numbers NOT meaningful]"
    print(f"\n## {title}\n\nMachine: {machine_description()}\n\n{body}")
    if args.out:
        append_section(args.out, title, body)
        print(f"\n(appended to {args.out})")
    return body
