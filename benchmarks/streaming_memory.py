"""Peak memory of one pass over a JPEG ImageFolder: StreamingLoader vs DeviceLoader, at N and 4N images.

    python -m benchmarks.streaming_memory [--sizes 2000,8000] [--image-size 136] [--out-size 128] [--workers 0]

Generates ImageNet-layout folders (`imagenet/train/<wnid>/*.JPEG`, `--image-size` px, 10 classes) of each size
under --root (default: a temporary folder). One subprocess imports torch / torchvision / easycore, runs every
loader kind over the smallest folder once (warm-up: lazy imports, codecs, DataLoader machinery), then for each
(N, loader), largest N first: gc + malloc_trim (free heap pages go back to the OS, so a run cannot reuse them
unseen), reset of the kernel's peak-RSS counter (/proc/self/clear_refs), and open_dataset('imagenet',
'train') + make_loader(kind=...) with the imagenet eval recipe at --out-size (no augmentation: the one recipe
both loaders can run) + --epochs passes over all batches on the CPU. Reported: peak RSS (VmHWM) above the RSS
before the run, and with --workers > 0 the largest peak RSS of any DataLoader worker so far (RUSAGE_CHILDREN
is a running maximum over the process's life, warm-up included; a worker's RSS counts the pages it shares
with its parent).
The subprocess runs with glibc's mmap threshold fixed at 1 MiB (MALLOC_MMAP_THRESHOLD_): buffers of 1 MiB and
more are mapped and unmapped directly, so RSS follows the live large buffers (with the default dynamic
threshold, allocator caching adds several MiB of run-to-run noise). Largest N first: one-time costs the
warm-up missed land on the largest N, so the growth between sizes is if anything overstated.
The uint8 set DeviceLoader holds is N * 3 * out_size^2 bytes; a streaming pass should grow with N only by the
file list (~ 200 B/sample expected; ~1,240 B/sample measured in the issue-24 review, docs/scale.md section 5). Linux only (/proc). The default --out is print only (this benchmark is not in
`python -m benchmarks`' list).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import REPO, base_parser, publish, table

KINDS = ("streaming", "device")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_image_folder(root, n: int, size: int = 80, classes: int = 10, seed: int = 0, split: str = "train",
                      quality: int = 90) -> Path:
    """`root/imagenet/<split>/n000000<c>/n000000<c>_<k>.JPEG`: n JPEGs of size x size (smooth colour field +
    noise, class c has hue c); returns root/imagenet. Reuses a complete folder of the same n."""
    import numpy as np
    from PIL import Image

    base = Path(root) / "imagenet"
    folder = base / split
    stamp = folder / f".complete-{n}-{size}-{classes}-{seed}"
    if stamp.exists():
        return base
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        c = i % classes
        d = folder / f"n{c:08d}"
        d.mkdir(parents=True, exist_ok=True)
        hue = np.array([np.cos(c), np.sin(c), np.cos(2 * c)], np.float32) * 60 + 128
        img = hue + 50 * (xx[..., None] - yy[..., None]) + rng.normal(0, 25, (size, size, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"n{c:08d}_{i}.JPEG", quality=quality)
    stamp.touch()
    return base


def _run(kind: str, root: str, out_size: int, batch_size: int, workers: int, epochs: int) -> dict:
    import resource

    from easycore.data.datasets import open_dataset
    from easycore.data.streaming import make_loader

    reset = _reset_peak()
    rss_before = _status_kib("VmRSS")
    src = open_dataset("imagenet", "train", root)
    loader = make_loader(src, kind=kind, batch_size=batch_size, device="cpu", shuffle=True, augment=False, seed=0,
                         image_size=out_size, num_workers=workers)
    seen, checksum = 0, 0.0
    for e in range(epochs):
        loader.set_epoch(e)
        for x, y, idx in loader:
            seen += len(y)
            checksum += float(x[:, :, 0, 0].sum())
    return {"kind": kind, "n": len(src), "seen": seen, "rss_before_kib": rss_before, "peak_kib": _status_kib("VmHWM"),
            "peak_reset": reset, "workers_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if workers else 0,
            "data_bytes": len(src) * 3 * out_size * out_size, "checksum": checksum}


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def child(kinds, roots, out_size: int, batch_size: int, workers: int, epochs: int) -> list[dict]:
    """Warm up on roots[0], then measure every (root, kind), the last root first (see the module doc)."""
    import gc

    import torch

    from easycore.data.datasets import open_dataset
    from easycore.data.streaming import make_loader

    torch.set_num_threads(1)
    src = open_dataset("imagenet", "train", roots[0])
    for kind in kinds:
        for _ in make_loader(src, kind=kind, batch_size=batch_size, device="cpu", image_size=out_size,
                             num_workers=workers):
            pass
    del src
    out = []
    for root in roots[::-1]:
        for kind in kinds:
            gc.collect()
            _trim()  # free heap pages back to the OS: a run must not reuse them unseen
            out.append(_run(kind, root, out_size, batch_size, workers, epochs))
            gc.collect()
    return out


def measure(sizes, *, root=None, kinds=KINDS, image_size: int = 136, out_size: int = 128, batch_size: int = 128,
            workers: int = 0, epochs: int = 1) -> list[dict]:
    """Generate the folders (under `root`, default a temporary folder) and measure every (size, kind) in one
    subprocess (see the module doc; `sizes` ascending); the results, with `growth_kib` = peak - RSS before."""
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="streaming-memory-")
        root = tmp.name
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_=str(1 << 20), PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    try:
        folders = [str(make_image_folder(Path(root) / f"n{n}", n, image_size).parent) for n in sizes]
        cmd = [sys.executable, "-m", "benchmarks.streaming_memory", "--child", ",".join(kinds), "--roots",
               ",".join(folders), "--out-size", str(out_size), "--batch-size", str(batch_size), "--workers",
               str(workers), "--epochs", str(epochs)]
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode != 0 or len(lines) != 1:
            raise RuntimeError(f"streaming_memory child failed (rc {p.returncode}):\n{p.stderr[-2000:]}")
        out = json.loads(lines[0][len("RESULT "):])
    finally:
        if tmp is not None:
            tmp.cleanup()
    for r in out:
        r["growth_kib"] = r["peak_kib"] - r["rss_before_kib"]
    return out


def summary(results: list[dict]) -> dict:
    """Per kind: growth of the peak between the smallest and the largest N (bytes), and the data growth."""
    s = {}
    for kind in {r["kind"] for r in results}:
        rs = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["n"])
        a, b = rs[0], rs[-1]
        s[kind] = {"peak_growth_bytes": (b["growth_kib"] - a["growth_kib"]) * 1024,
                   "data_growth_bytes": b["data_bytes"] - a["data_bytes"], "n": (a["n"], b["n"]),
                   "per_sample_bytes": (b["growth_kib"] - a["growth_kib"]) * 1024 / max(1, b["n"] - a["n"])}
    return s


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.set_defaults(out="")
    ap.add_argument("--sizes", default="2000,8000")
    ap.add_argument("--image-size", type=int, default=136, help="side of the generated JPEGs")
    ap.add_argument("--out-size", type=int, default=128, help="imagenet recipe output side (eval: resize + center crop)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--root", default=None, help="folder for the generated images (default: a temporary folder)")
    ap.add_argument("--child", default=None, help=_hidden())
    ap.add_argument("--roots", default="", help=_hidden())
    args = ap.parse_args(argv)
    if args.child is not None:
        print("RESULT " + json.dumps(child(args.child.split(","), args.roots.split(","), args.out_size, args.batch_size, args.workers,
                                           args.epochs)), flush=True)
        return 0
    if args.quick:
        args.sizes, args.image_size, args.out_size, args.batch_size = "100,400", 72, 64, 50
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    results = measure(sizes, root=args.root, image_size=args.image_size, out_size=args.out_size,
                      batch_size=args.batch_size, workers=args.workers, epochs=args.epochs)
    rows = [[r["kind"], r["n"], r["data_bytes"] / 2**20, r["rss_before_kib"] / 1024, r["peak_kib"] / 1024,
             r["growth_kib"] / 1024, r["workers_maxrss_kib"] / 1024] for r in results]
    s = summary(results)
    lines = [f"ImageNet-layout JPEG folder, {args.image_size}px images -> imagenet eval recipe at {args.out_size}px, "
             f"batch {args.batch_size}, {args.workers} workers, {args.epochs} epoch(s), CPU; "
             f"one subprocess, largest N first, glibc mmap threshold 1 MiB; "
             f"peak counter reset before the run: {results[0]['peak_reset']}.", "",
             table(["loader", "N", "uint8 set (MiB)", "RSS before (MiB)", "peak (MiB)", "peak - before (MiB)",
                    "largest worker peak so far (MiB)"], rows), ""]
    for kind, v in sorted(s.items()):
        lines.append(f"- {kind}: N {v['n'][0]} -> {v['n'][1]}: peak grows {v['peak_growth_bytes'] / 2**20:.1f} MiB "
                     f"({v['per_sample_bytes']:.0f} B/sample) while the uint8 set grows "
                     f"{v['data_growth_bytes'] / 2**20:.1f} MiB ({v['data_growth_bytes'] / max(1, v['n'][1] - v['n'][0]):.0f} B/sample)")
    publish(args, "Memory: streaming vs device-resident loader", "\n".join(lines))
    return 0


def _hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
