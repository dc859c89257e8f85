"""Datasets as uint8 tensors [N, C, H, W] + int64 labels, and a device-resident batch iterator.

Sources (tried in this order for each dataset, under the data root):
  cifar10        torchvision CIFAR10 (`cifar-10-batches-py/`), else an ImageFolder copy
                 (`cifar10-jpeg.tar.gz`, or a folder `cifar10-jpeg/` / `cifar10/` with train/ and test/)
  cifar100, svhn torchvision CIFAR100 / SVHN
  mnist, fashion_mnist  torchvision MNIST / FashionMNIST (`MNIST/raw/`), else gzipped raw files in
                 `mnist/` / `fashion-mnist/` (as in Debian's dataset packages), decompressed into the cache
  synthetic      generated in memory (tests, smoke runs): coloured patterns, 10 classes, 3x32x32
With `download: true`, torchvision downloads the official files into the root.

The data root comes from params (`data.root`) or the environment variable EASYCORE_DATA. Derived files
(extracted archives, decompressed raw files) go to EASYCORE_CACHE (default ~/.cache/easycore).

Every sample keeps a stable index (its position in the full official split) and every dataset carries
a fingerprint (name, split, indices, labels and pixels hashed) that travels with the artifacts built from it.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import Iterator, Optional, Protocol

import numpy as np
import torch

from easycore.data.base import (
    STATS,
    ArrayDataset,
    DataError,
    DataInfo,
    _missing,
    cache_dir,
    hash_seed,
)
from easycore.registry import Registry

log = logging.getLogger("easycore.data.loaders")


DATASETS = Registry("dataset", "datasets")
"""name -> Entry(fn): fn(name, split, root, download) -> (labels [N], decode(positions) -> uint8 [n, C, H, W],
class names). `synthetic` is generated in memory (registered for the choices; see `load_dataset`)."""


class Loader(Protocol):
    """The loader seam: what `train()`, the exact AIGN pass and evaluation iterate over.

    Implementations: `DeviceLoader` (the whole uint8 set resident on the device; CIFAR/MNIST-size data) and
    `streaming.StreamingLoader` (torchvision datasets through DataLoader workers; data that does not fit).
      info            DataInfo of the full set the loader reads
      batch_size      samples per batch (the last batch of an epoch may be smaller unless drop_last)
      set_epoch(e)    fixes epoch e's order and augmentation: they depend only on (seed, e)
      set_subset(pos) iterate only over these positions of the set from now on (None = all): the data-schedule
                      seam (adaptive coresets); the epoch order is pos[randperm(len(pos))] when shuffling
      len(loader)     batches per epoch for the current subset
      iter(loader)    (x, y, idx): x float32 in [0, 1] [B, C, H, W] on the device (channels_last if asked),
                      y int64 [B], idx int64 [B] = positions in the full set, both on the device
    """
    info: DataInfo
    batch_size: int

    def set_epoch(self, epoch: int) -> None: ...

    def set_subset(self, positions: Optional[torch.Tensor]) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]: ...


# ----------------------------------------------------------------------------- subset
def balanced_subset(labels: np.ndarray, n_per_class: Optional[int], seed: int, *, key: str = "data.n_per_class") -> np.ndarray:
    """Sorted positions of a seeded class-balanced subset (all positions when n_per_class is None)."""
    labels = np.asarray(labels)
    if n_per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        if n_per_class > len(pos):
            from easycore.config import fail

            fail(key, n_per_class, f"class {int(c)} has only {len(pos)} samples; use <= {len(pos)} or null")
        keep.append(rng.choice(pos, size=n_per_class, replace=False))
    return np.sort(np.concatenate(keep))


# ----------------------------------------------------------------------------- loading
def load_dataset(name: str, split: str, root, *, download: bool = False, n_per_class: Optional[int] = None,
                 seed: int = 0, key: str = "data.n_per_class") -> ArrayDataset:
    """Load `split` ('train' | 'test') of `name` as an ArrayDataset, optionally a balanced subset."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser()
    if name == "synthetic":
        return _synthetic(split, n_per_class or (500 if split == "train" else 100), seed)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS.names()}")
    labels, decode, classes = DATASETS.get(name).fn(name, split, root, download)
    pos = balanced_subset(labels, n_per_class, seed, key=key)
    x = decode(pos)
    y = torch.as_tensor(np.asarray(labels)[pos], dtype=torch.long)
    ds = ArrayDataset(name, split, x, y, torch.as_tensor(pos, dtype=torch.long), classes)
    log.info("loaded %s from %s", ds.describe(), root)
    return ds


def _hwc_to_chw(a: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    if a.ndim == 3:
        a = a[:, :, :, None]
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


def _tv_guard(name: str, root: Path, fn, present: Optional[Path] = None):
    """fn() (a torchvision dataset constructor); its "Dataset not found or corrupted. You can use download=True"
    as a DataError that says which: when `present` exists the files are there but not the official ones."""
    try:
        return fn()
    except RuntimeError as e:
        if "not found" in str(e).lower() or "corrupt" in str(e).lower():
            if present is not None and present.exists():
                raise DataError(f"{name}: the files under {present} are present but torchvision refuses them (their "
                                f"md5 is not the official one: a partial download or another copy); replace them "
                                f"with the official files (remove them and set data.download: true)") from None
            raise DataError(f"{name}: torchvision says: {str(e).replace('download=True', 'data.download: true')}") from None
        raise


def _cifar10_sources(root: Path) -> list[Path]:
    """What cifar10 is read from under root, in the loaders' order: the official pickles, else an ImageFolder copy
    (its train/ and test/ folders), else the archive. When none is there, the official pickles' folder (where
    download puts them), which holds no file: the data_source stage then says the data is missing."""
    official = root / "cifar-10-batches-py"
    if official.is_dir():
        return [official]
    for cand in (root / "cifar10-jpeg", root / "cifar10", root):
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return [cand / "train", cand / "test"]
    tgz = root / "cifar10-jpeg.tar.gz"
    return [tgz] if tgz.exists() else [official]


@DATASETS.register("cifar10", sources=_cifar10_sources)
def _cifar10(name, split, root, download):
    import torchvision

    if (root / "cifar-10-batches-py").is_dir() or download:
        ds = _tv_guard(name, root, lambda: torchvision.datasets.CIFAR10(str(root), train=split == "train", download=download),
                       root / "cifar-10-batches-py")
        return np.asarray(ds.targets), lambda pos: _hwc_to_chw(ds.data[pos]), list(ds.classes)
    folder = _cifar10_folder(root)
    if folder is None:
        raise _missing(name, root, "cifar-10-batches-py/ (official) or cifar10-jpeg.tar.gz / an ImageFolder "
                                   "folder with train/<class>/*.jpg and test/<class>/*.jpg")
    return _image_folder(folder / split)


def cifar10_extracted(root: Path, tgz: Path) -> Path:
    """Where the cache holds `tgz` extracted: keyed by the archive's content (not its size and time), so another
    archive under the same name never reads back the previous one."""
    from easycore.data.sources import identity

    return cache_dir() / f"cifar10-jpeg-{identity(root, [tgz])['sha256'][:16]}"


def _cifar10_folder(root: Path) -> Optional[Path]:
    """The ImageFolder copy of cifar10 under root (the archive extracted into the cache), or None."""
    found = _cifar10_sources(root)
    if found[0].name == "cifar-10-batches-py":          # the official pickles, or nothing there
        return None
    if found[0].name != "cifar10-jpeg.tar.gz":
        return found[0].parent                           # the folder holding train/ and test/
    tgz = found[0]
    dest = cifar10_extracted(root, tgz)
    if not (dest / ".complete").exists():
        log.info("extracting %s -> %s", tgz, dest)
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with tarfile.open(tgz, "r:gz") as tf:
                tf.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib_error()) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"cannot read archive {tgz}: {type(e).__name__}: {e}. The file is truncated or not a "
                            f"tar.gz; replace it, or point data.root / EASYCORE_DATA elsewhere") from None
        inner = tmp
        subdirs = [p for p in tmp.iterdir() if p.is_dir()]
        if not (tmp / "train").is_dir() and len(subdirs) == 1:
            inner = subdirs[0]
        if not ((inner / "train").is_dir() and (inner / "test").is_dir()):
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"archive {tgz} has no train/ and test/ folders (ImageFolder layout expected)")
        shutil.rmtree(dest, ignore_errors=True)
        inner.rename(dest)
        shutil.rmtree(tmp, ignore_errors=True)
        (dest / ".complete").touch()
    return dest


def zlib_error():
    import zlib

    return zlib.error


def _image_folder(folder: Path):
    import torchvision
    from PIL import Image, UnidentifiedImageError

    try:
        ds = torchvision.datasets.ImageFolder(str(folder))
    except FileNotFoundError as e:  # no class folders, or a class folder without images
        raise DataError(f"image folder {folder} is not usable: {e} (ImageFolder layout expected: "
                        f"<split>/<class>/*.jpg); fix or replace the data under data.root / EASYCORE_DATA") from None

    def decode(pos):
        out = None
        for j, p in enumerate(pos):
            path = ds.samples[p][0]
            try:
                with Image.open(path) as im:
                    a = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                raise DataError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None
            if out is None:
                out = np.empty((len(pos),) + a.shape, dtype=np.uint8)
            if a.shape != out.shape[1:]:
                raise DataError(f"image {path} has shape {a.shape}, expected {out.shape[1:]}")
            out[j] = a
        return _hwc_to_chw(out)

    return np.asarray(ds.targets), decode, list(ds.classes)


@DATASETS.register("cifar100", sources=lambda root: [root / "cifar-100-python"])
def _tv_cifar100(name, split, root, download):
    from easycore.data.readers import read_cifar_pickles

    if not (root / "cifar-100-python").is_dir() and not download:
        raise _missing(name, root, "cifar-100-python/ (official torchvision layout)")
    # parsed here as torchvision parses it, each file's md5 checked with a message naming the file
    x, labels, classes = read_cifar_pickles(name, split, root, download=download)
    return labels, lambda pos: x[torch.as_tensor(np.asarray(pos))], list(classes)


@DATASETS.register("svhn", sources=lambda root: [root / f"{s}_32x32.mat" for s in ("train", "test")])
def _tv_svhn(name, split, root, download):
    from easycore.data.readers import read_svhn

    if not (root / f"{split}_32x32.mat").exists() and not download:
        raise _missing(name, root, f"{split}_32x32.mat (official torchvision layout)")
    x, labels, classes = read_svhn(split, root, download=download)   # md5 checked, naming the file
    return labels, lambda pos: x[torch.as_tensor(np.asarray(pos))], list(classes)


_MNIST = {"mnist": ("MNIST", "mnist"), "fashion_mnist": ("FashionMNIST", "fashion-mnist")}
_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _mnist_sources(name: str, root: Path) -> list[Path]:
    cls_name, gz_folder = _MNIST[name]
    if (root / cls_name / "raw" / _RAW[0]).exists():
        return [root / cls_name / "raw"]
    return [root / gz_folder / f"{r}.gz" for r in _RAW]


@DATASETS.register("mnist", sources=lambda root: _mnist_sources("mnist", root))
@DATASETS.register("fashion_mnist", sources=lambda root: _mnist_sources("fashion_mnist", root))
def _mnist_like(name, split, root, download):
    import torchvision

    cls_name, gz_folder = _MNIST[name]
    cls = getattr(torchvision.datasets, cls_name)
    base = root
    if not (root / cls_name / "raw" / _RAW[0]).exists() and not download:
        src = root / gz_folder
        if not all((src / f"{r}.gz").exists() for r in _RAW):
            raise _missing(name, root, f"{cls_name}/raw/ (torchvision layout) or {gz_folder}/*-ubyte.gz")
        # keyed by the archives' content: another EASYCORE_DATA (other files under the same names) never reads
        # back the files decompressed from the previous one
        digest = hashlib.sha256()
        for r in _RAW:
            with open(src / f"{r}.gz", "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
        base = cache_dir() / f"{gz_folder}-raw-{digest.hexdigest()[:16]}"
        raw = base / cls_name / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for r in _RAW:
            if not (raw / r).exists():
                try:
                    with gzip.open(src / f"{r}.gz", "rb") as fi, open(raw / f".{r}.tmp", "wb") as fo:
                        shutil.copyfileobj(fi, fo)
                except (OSError, EOFError, zlib_error()) as e:
                    (raw / f".{r}.tmp").unlink(missing_ok=True)
                    raise DataError(f"cannot decompress {src / (r + '.gz')}: {type(e).__name__}: {e}") from None
                os.replace(raw / f".{r}.tmp", raw / r)
    ds = _tv_guard(name, root, lambda: cls(str(base), train=split == "train", download=download), base / cls_name / "raw")
    return ds.targets.numpy(), lambda pos: ds.data[torch.as_tensor(pos)].unsqueeze(1).contiguous(), list(ds.classes)


def _imagenet_sources(root: Path) -> list[Path]:
    """train/ and val/ where easycore.data.datasets reads them (under imagenet/ or the root), with torchvision's meta.bin;
    a folder that is not there is named under the root (it holds no file: the data_source stage says so)."""
    from easycore.data.readers import _imagenet_root

    out = []
    for folder in ("train", "val"):
        try:
            base = _imagenet_root(root, folder)
        except DataError:
            out.append(root / folder)
            continue
        out += [p for p in (base / "meta.bin", base / folder) if p.exists() and p not in out]
    return out


@DATASETS.register("imagenet", streaming=True, sources=_imagenet_sources)
def _imagenet(name, split, root, download):
    """ImageNet-1K (train/ and val/ ImageFolder layout): too large for memory, read by the streaming loader
    (easycore.data.datasets.open_dataset); `prepare` writes a manifest of positions instead of pixels."""
    raise DataError("imagenet is read by the streaming loader, not into memory: use the pipeline (easycore prepare "
                    "writes a manifest) or easycore.data.datasets.open_dataset")


@DATASETS.register("synthetic", sources=lambda root: [])
def _synthetic_entry(*_):  # pragma: no cover - load_dataset builds synthetic data itself
    raise AssertionError("synthetic data is generated by load_dataset")


def _synthetic(split: str, n_per_class: int, seed: int, num_classes: int = 10, size: int = 32) -> ArrayDataset:
    """Learnable toy images: class c = a coloured oriented stripe pattern + noise. Deterministic."""
    g = torch.Generator().manual_seed(1000 * seed + (0 if split == "train" else 1))
    n = n_per_class * num_classes
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    angle = y.float() * (torch.pi / num_classes)
    freq = 0.35 + 0.05 * (y % 3).float()
    phase = torch.rand(n, generator=g) * 6.28
    wave = torch.sin(freq[:, None, None] * (xx * torch.cos(angle)[:, None, None] + yy * torch.sin(angle)[:, None, None]) + phase[:, None, None])
    color = torch.stack([(y % 3 == 0), (y % 3 == 1), (y >= 5)], 1).float() * 0.5 + 0.25
    img = 0.5 + 0.35 * wave[:, None] * color[:, :, None, None] + 0.12 * torch.randn(n, 3, size, size, generator=g)
    x = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return ArrayDataset("synthetic", split, x, y, torch.arange(n), [f"class{i}" for i in range(num_classes)])


# ----------------------------------------------------------------------------- device iterator
def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero pad `pad`) + horizontal flip, in batch on x's device. x: [B, C, H, W] any dtype."""
    b, c, h, w = x.shape
    dev = x.device
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device).to(dev)
    flip = (torch.rand(b, generator=gen, device=gen.device) < 0.5).to(dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]                 # [B, H, 1]
    cols = ox[:, None] + torch.arange(w, device=dev)                               # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]              # [B, 1, W]
    bi = torch.arange(b, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows, cols]                                   # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


class DeviceLoader:
    """The Loader for data that fits on the device: batches (x float in [0,1], y, idx) from uint8 tensors kept
    resident on `device`, augmented there in batch.

    Shuffling and augmentation are seeded per epoch (`set_epoch`) from `seed`, so an epoch's batches depend only
    on (seed, epoch, subset): a resumed run sees the same batches. idx are positions in the dataset.
    `info` describes the data (defaults to an anonymous DataInfo derived from the tensors).

    Sharding (DDP): rank `rank` of `world_size` W yields `batch_size` samples per step (the per-rank batch, as in
    StreamingLoader) from its part of the epoch order, taken as torch.utils.data.DistributedSampler takes it
    (`dist.shard`: the order padded to a multiple of W by repeating its head, rank r takes [r::W]). Global batch
    k = the padded order's [k*G:(k+1)*G] with G = batch_size * W, rank r takes its samples r, r+W, ...: the union of
    the ranks' batches is exactly the one-process loader's batch k of size G, with the same augmentation (the
    global batch's random crops are drawn, then sliced), so W ranks at batch_size B/W see what one process at
    batch size B sees (when W divides the set size: else the last batch repeats a few head samples).
    """

    def __init__(self, x_u8: torch.Tensor, y: torch.Tensor, *, batch_size: int, device, shuffle: bool = True,
                 augment: bool = False, seed: int = 0, drop_last: bool = False, channels_last: bool = False,
                 info: Optional[DataInfo] = None, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.device = torch.device(device)
        self.x = x_u8.to(self.device)
        self.y = y.to(self.device)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.drop_last, self.channels_last = seed, drop_last, channels_last
        self.rank, self.world_size = rank, world_size
        self.info = info or DataInfo("tensors", "", len(y), tuple(str(c) for c in range(int(y.max()) + 1 if len(y) else 0)),
                                     int(x_u8.shape[1]), (0.5,) * int(x_u8.shape[1]), (0.25,) * int(x_u8.shape[1]), "")
        self.epoch = 0
        self.positions: Optional[torch.Tensor] = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_subset(self, positions: Optional[torch.Tensor]) -> None:
        self.positions = None if positions is None else torch.as_tensor(positions, dtype=torch.long).cpu()

    def _n(self) -> int:
        """Samples this rank yields per epoch (its shard of the current subset)."""
        n = len(self.y) if self.positions is None else len(self.positions)
        return -(-n // self.world_size) if self.world_size > 1 else n

    @property
    def epoch_samples(self) -> int:
        """Samples this process yields in one epoch (for progress bars)."""
        return len(self) * self.batch_size if self.drop_last else self._n()

    def __len__(self) -> int:
        n = self._n()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        if self.world_size > 1:
            yield from self._iter_shard()
            return
        n = self._n()
        g = torch.Generator(device="cpu").manual_seed(hash_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.positions is not None:
            order = self.positions[order]
        order = order.to(self.device)
        for s in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[s:s + self.batch_size]
            xb = self.x[idx]
            if self.augment:
                xb = augment_batch(xb, g)
            xb = xb.float().div_(255)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx], idx

    def _iter_shard(self):
        """This rank's part of the one-process iteration at batch size batch_size * world_size (class doc)."""
        from easycore.data.base import padded_order

        r, w = self.rank, self.world_size
        n = len(self.y) if self.positions is None else len(self.positions)
        g = torch.Generator(device="cpu").manual_seed(hash_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.positions is not None:
            order = self.positions[order]
        order = padded_order(order, w).to(self.device)
        gb = self.batch_size * w
        for s in range(0, len(self) * gb, gb):
            gidx = order[s:s + gb]
            idx = gidx[r::w]
            if self.augment:  # draw the whole global batch's crops (as one process does), keep this rank's rows
                xb = augment_batch(self.x[gidx], g)[r::w]
            else:
                xb = self.x[idx]
            xb = xb.float().div_(255)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx], idx


# ----------------------------------------------------------------------------- datasets read by easycore.data.datasets
STATS["imagenet"] = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # the ImageNet constants torchvision's models use
