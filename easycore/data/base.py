"""The data layer's ground: the errors, the in-memory dataset, fingerprints, the cache folder, seed hashing, and the order a sample is read in on each rank."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

STATS = {  # per-channel mean / std of the training split, for the normalisation inside the models
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "synthetic": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}


class DataError(RuntimeError):
    """Data missing or unreadable. The message names the setting and the ways to provide the data."""


@dataclass(frozen=True)
class DataInfo:
    """What a model, a checkpoint and an artifact need to know about a dataset, without its pixels."""
    name: str
    split: str
    n: int                           # samples in the (sub)set
    classes: tuple[str, ...]
    in_channels: int
    mean: tuple[float, ...]          # per-channel normalisation constants used inside the models
    std: tuple[float, ...]
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def cache_dir() -> Path:
    return Path(os.environ.get("EASYCORE_CACHE") or Path.home() / ".cache" / "easycore").expanduser()


@dataclass
class ArrayDataset:
    name: str
    split: str
    x: torch.Tensor          # uint8 [N, C, H, W]
    y: torch.Tensor          # int64 [N]
    index: torch.Tensor      # int64 [N], position in the full official split
    classes: list[str]
    fingerprint: str = ""

    def __post_init__(self):
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.name, self.split, self.x, self.y, self.index)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def labels(self) -> np.ndarray:
        return self.y.numpy()

    @property
    def stats(self):
        return STATS[self.name]

    @property
    def info(self) -> DataInfo:
        mean, std = self.stats
        return DataInfo(self.name, self.split, len(self), tuple(self.classes), self.in_channels, tuple(mean),
                        tuple(std), self.fingerprint)

    def subset(self, positions) -> "ArrayDataset":
        """Rows `positions` (positions in THIS dataset, e.g. coreset indices); new fingerprint."""
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.long)
        if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= len(self)):
            raise IndexError(f"subset positions out of range [0, {len(self)})")
        return replace(self, x=self.x[pos], y=self.y[pos], index=self.index[pos], fingerprint="")

    def save(self, path) -> Path:
        """uint8 pixels, labels and indices as safetensors; name, split, classes and fingerprint as metadata."""
        from easycore.store import save_tensors

        return save_tensors(path, {"x": self.x, "y": self.y, "index": self.index},
                            {"name": self.name, "split": self.split, "classes": list(self.classes),
                             "fingerprint": self.fingerprint})

    @staticmethod
    def load(path) -> "ArrayDataset":
        from easycore.store import ArtifactError, load_tensors

        t, m = load_tensors(path)
        try:
            ds = ArrayDataset(m["name"], m["split"], t["x"], t["y"], t["index"], list(m["classes"]), m["fingerprint"])
        except (KeyError, TypeError) as e:
            raise ArtifactError(f"{path} is not a prepared dataset (no {e}); re-run `easycore prepare`") from None
        ds.validate(path)
        return ds

    def validate(self, path) -> None:
        """A prepared set is what `prepare` writes: uint8 pixels [N, C, H, W], int64 labels [N] in
        [0, len(classes)) and positions [N], a known dataset name, and the fingerprint its metadata claims,
        recomputed (never trusted). ArtifactError (one line) otherwise."""
        from easycore.store import ArtifactError

        x, y, index = self.x, self.y, self.index
        why = None
        if self.name not in STATS:
            why = f"unknown dataset name {self.name!r}"
        elif x.dtype != torch.uint8 or x.dim() != 4:
            why = f"pixels must be uint8 [N, C, H, W], got {str(x.dtype).replace('torch.', '')} {tuple(x.shape)}"
        elif y.dtype != torch.int64 or y.dim() != 1 or index.dtype != torch.int64 or index.dim() != 1:
            why = f"labels and positions must be int64 vectors, got {y.dtype} {tuple(y.shape)}, {index.dtype} " \
                  f"{tuple(index.shape)}"
        elif not len(x) == len(y) == len(index):
            why = f"{len(x)} images but {len(y)} labels and {len(index)} positions"
        elif len(y) == 0:
            why = "no samples"
        elif int(y.min()) < 0 or int(y.max()) >= len(self.classes):
            why = f"labels must be in [0, {len(self.classes)}) (its classes), got [{int(y.min())}, {int(y.max())}]"
        else:
            got = fingerprint(self.name, self.split, x, y, index)
            if got != self.fingerprint:
                why = f"its content ({got}) is not what its metadata's fingerprint ({self.fingerprint}) says"
        if why:
            raise ArtifactError(f"{path} is not a valid prepared dataset: {why}; re-run `easycore prepare`")

    def describe(self) -> str:
        return (f"{self.name}/{self.split}: {len(self)} samples, {self.num_classes} classes, "
                f"shape {tuple(self.x.shape[1:])}, fingerprint {self.fingerprint}")


def fingerprint(name: str, split: str, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(f"{name}|{split}|{tuple(x.shape)}".encode())
    for t in (index, y, x):
        h.update(t.contiguous().numpy().tobytes())
    return f"{name}-{split}-n{len(y)}-{h.hexdigest()[:12]}"


def _missing(name: str, root: Path, expected: str) -> DataError:
    return DataError(
        f"{name} not found under data root {str(root)!r} (expected {expected}). Provide the data by one of: "
        f"(1) set data.root in params.yaml or the environment variable EASYCORE_DATA to a folder that holds it; "
        f"(2) set data.download: true (or pass --download) to let torchvision fetch the official files (needs internet); "
        f"(3) use data.dataset: synthetic for a smoke run.")


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank `rank`'s part of `order`, as torch.utils.data.DistributedSampler (drop_last False) takes it: pad to
    ceil(m / W) * W by repeating the head, then order[rank::W]. DeviceLoader and the streaming loader both use it
    (tests/test_ddp.py checks it against DistributedSampler's own order)."""
    if world_size == 1:
        return order
    m = len(order)
    total = -(-m // world_size) * world_size
    if total > m and m:
        order = torch.cat([order, order.repeat(-(-(total - m) // m))[: total - m]])
    return order[rank:total:world_size]


def padded_order(order: torch.Tensor, world_size: int) -> torch.Tensor:
    """`order` padded as `shard` pads it: rank r's part of the result is its [r::W] slice (= shard(order, r, W))."""
    if world_size == 1:
        return order
    return torch.stack([shard(order, r, world_size) for r in range(world_size)], 1).reshape(-1)
