"""Shared helpers for the reliability tests (test_params, test_resume, test_integrity)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def sub_env(**extra) -> dict:
    """Environment for subprocesses: one thread (deterministic, cheap on shared CPUs)."""
    # no EASYCORE_DATA (CI sets it; it would override the data.root the tests give)
    env = {k: v for k, v in os.environ.items() if k != "EASYCORE_DATA"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(args: list[str], cwd, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "easycore", *args], cwd=cwd, env=sub_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


@contextlib.contextmanager
def one_thread():
    """torch on one thread for the block: bit-reproducible, and far faster on a shared, loaded CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def kill_callback():
    """A training callback that SIGKILLs its own process before batch `batch` of epoch `epoch` (1-based epoch):
    the test-only kill switch, plugged in through the loop's extension points."""
    import signal

    from easycore.core.train import Callback

    class KillAt(Callback):
        name = "kill"

        def __init__(self, epoch: int, batch: int):
            self.epoch, self.batch, self.b = epoch, batch, 0

        def on_epoch_start(self, loop):
            self.b = 0

        def before_batch(self, loop, x, y, idx):
            if (loop.epoch + 1, self.b) == (self.epoch, self.batch):
                os.kill(os.getpid(), signal.SIGKILL)
            self.b += 1

    return KillAt


def train_tiny(a: dict) -> dict:
    """A tiny CPU training run through the real loop (`train()` with its checkpoint/resume logic).

    a: n_per_class, epochs, batch_size, lr, seed, state (path or None), tracker (None | AIGN mode),
    optional data_seed, out (path: the result is also saved there). One torch thread, restored after.
    """
    import torch

    from easycore.core.aign import AIGNTracker
    from easycore.config import OptimConfig, RuntimeConfig, TrainConfig
    from easycore.data.loaders import load_dataset
    from easycore.core.train import train

    KillAt = kill_callback()
    with one_thread():
        ds = load_dataset("synthetic", "train", ".", n_per_class=a["n_per_class"], seed=a.get("data_seed", 0))
        cfg = TrainConfig(model="cnn_tiny", epochs=a["epochs"], batch_size=a["batch_size"],
                          augment=True, optim=OptimConfig(lr=a["lr"], schedule="onecycle", warmup=0.2))
        tracker = None
        if a.get("tracker"):
            tracker = AIGNTracker(n=len(ds), mode=a["tracker"], every=1, epochs=cfg.epochs)
        callbacks = [KillAt(*map(int, a["kill_at"].split(":")))] if a.get("kill_at") else []
        res = train(cfg, ds, mode="standard", seed=a["seed"], state_path=a.get("state"), tracker=tracker,
                    aign_batch_size=16, progress=False, runtime=RuntimeConfig(device="cpu"), callbacks=callbacks)
    out = {"model": {k: v.detach().clone() for k, v in res.model.state_dict().items()},
           "epochs_run": res.epochs_run, "history": res.history,
           "tracker": None if tracker is None else tracker.matrices(),
           "tracked": None if tracker is None else list(tracker.tracked_epochs)}
    if a.get("out"):
        torch.save(out, a["out"])
    return out


# the same run in a fresh process (for the KillAt callback, which SIGKILLs the process)
TRAIN_SCRIPT = f"""
import json, logging, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from _reliability import train_tiny
train_tiny(json.loads(sys.argv[1]))
"""


def run_train_script(tmp: Path, args: dict, *, kill_at: str | None = None, timeout: float = 120):
    script = tmp / "train_script.py"
    if not script.exists():
        script.write_text(TRAIN_SCRIPT)
    env = sub_env()
    args = dict(args, kill_at=kill_at) if kill_at else args
    return subprocess.run([sys.executable, str(script), json.dumps(args)], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=timeout)


def history_core(history: list[dict]) -> list[tuple]:
    """The reproducible part of a history (not the timings)."""
    return [(h["epoch"], h["loss"], h["train_acc"], h["lr"]) for h in history]


# ----------------------------------------------------------------------------- tiny image folders
def png_bytes(seed: int, size: int = 32) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int, size: int = 32) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_image_folder(base: Path, n_train: int = 3, n_test: int = 2, classes=("cat", "dog")) -> Path:
    """base/{train,test}/<class>/NNNN.png: an ImageFolder copy in the cifar10-jpeg layout."""
    k = 0
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            d = base / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{i:04d}.png").write_bytes(png_bytes(k))
                k += 1
    return base


def make_image_tgz(path: Path, work: Path, **kw) -> Path:
    """A cifar10-jpeg.tar.gz holding cifar10-jpeg/{train,test}/<class>/*.png."""
    folder = make_image_folder(work / "cifar10-jpeg", **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        tf.add(folder, arcname="cifar10-jpeg")
    return path


def weights_equal(a: dict, b: dict) -> list[str]:
    """Names of the tensors that differ (empty list: bit-identical)."""
    import torch

    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def free_port() -> int:
    """A free TCP port on the loopback interface (a process group's rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_ranks(fn, world: int, arg, timeout: float = 120) -> list:
    """Run fn(rank, world, port, arg) on `world` spawned processes, as torchrun would: when one fails, the others are
    terminated (and any left after `timeout` seconds killed). Returns the exit codes."""
    import time

    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    ctx = mp.start_processes(fn, args=(world, free_port(), arg), nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if ctx.join(timeout=1):
                    break
            except ProcessException:  # a rank failed (killed or raised): join() has terminated the others
                break
            assert time.monotonic() < deadline, "the ranks did not finish"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
            p.join()
    return [p.exitcode for p in ctx.processes]
