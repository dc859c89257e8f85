"""Map-style datasets on the official layouts, for the streaming loader (and for sets that fit in memory).

`open_dataset(name, split, root, positions)` returns a `Source`: a map-style dataset over the (sub)set
(`source.dataset[j]` -> (image, label), image = PIL.Image or uint8 tensor [C, H, W]), its labels, the
positions of its samples in the full official split, and a DataInfo (`source.info`). Readers (`READERS`):

  cifar100   `cifar-100-python/{train,test,meta}` pickles read here in the official format (the dict keys
             torchvision's CIFAR100 reads: data uint8 [N, 3072] CHW-major, fine_labels, meta fine_label_names)
  cifar10    `cifar-10-batches-py/` pickles the same way, else the ImageFolder copy data.py accepts
  svhn       `{train,test,extra}_32x32.mat` (scipy.io.loadmat: X uint8 [32, 32, 3, N], y [N, 1] with label 10 =
             digit 0, mapped to 0 as torchvision's SVHN does)
  imagenet   ImageFolder `train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG` (split 'test' reads val/) under the root
             or `<root>/imagenet/`; with `meta.bin` there (written by torchvision.datasets.ImageNet from the
             devkit) through torchvision.datasets.ImageNet, which adds human-readable class names
  any other  data.load_dataset's in-memory ArrayDataset (mnist, fashion_mnist, synthetic) wrapped as a Source

md5: torchvision's CIFAR100/SVHN refuse any file whose md5 is not the official one, so a copy in the official
format that is not byte-identical to the official download (a test copy, a re-pickled file) cannot be read
through them. The readers here parse the official format themselves and, with `verify_md5=True` (default),
compare each file's md5 with the official value taken from torchvision's class attributes (CIFAR100.train_list,
.test_list, .meta; SVHN.split_list): a mismatch stops with a DataError naming the file and both md5s.
`verify_md5=False` reads such copies (the tests do: they generate small copies).

Fingerprints (DataInfo.fingerprint; equal for the same data whichever loader reads it):
  array-backed sets (CIFAR pickles, SVHN .mat, load_dataset sets) hash the pixels exactly as
      data.fingerprint does, so they equal the fingerprint of data.load_dataset(name, split, n_per_class) for
      the same positions;
  file-per-image sets (ImageNet, image folders) hash a file manifest, `manifest_fingerprint`: for every
      sample its path relative to the split folder, its size in bytes, its label and its position; pixels are
      not read, so opening ImageNet costs a directory listing and one stat per selected file.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from easycore.data.base import (
    STATS,
    ArrayDataset,
    DataError,
    DataInfo,
    _missing,
    fingerprint,
)
from easycore.data.loaders import load_dataset
from easycore.data.readers import (
    _imagenet_root,
    read_cifar_pickles,
    read_image_folder,
    read_svhn,
    relative_paths,
)

log = logging.getLogger("easycore.data.datasets")

RECIPES = ("cifar", "imagenet")  # see streaming.Recipe


# ----------------------------------------------------------------------------- map-style datasets
class ArraySet(torch.utils.data.Dataset):
    """Map-style view of uint8 [N, C, H, W] + labels: ds[i] -> (x[i] uint8 [C, H, W], int label)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


class Positions(torch.utils.data.Dataset):
    """ds[j] = base[positions[j]] (like torch.utils.data.Subset, positions kept as a numpy array)."""

    def __init__(self, base, positions: np.ndarray):
        self.base, self.positions = base, np.asarray(positions, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, j: int):
        return self.base[int(self.positions[j])]


@dataclass
class Source:
    """A map-style (sub)set and what the loaders need to know about it (see the module docstring).

    dataset[j] -> (image, label) for j in [0, n); image = PIL.Image or uint8 tensor [C, H, W].
    labels[j], index[j] = label and position in the full official split of sample j.
    Array-backed sets: `x` = the uint8 tensor [n, C, H, W] (already in memory). File-per-image sets: `samples`
    = the ImageFolder samples [(path, label)] of the whole split folder `folder` and `positions` = the rows of
    it this (sub)set reads (no per-sample copy is kept: ImageNet's list is the ImageFolder's own).
    `shape` = (C, H, W) when every image has that shape (arrays, CIFAR folders), None when sizes vary.
    """
    name: str
    split: str
    dataset: torch.utils.data.Dataset
    labels: np.ndarray
    index: np.ndarray
    classes: tuple[str, ...]
    in_channels: int
    recipe: str
    shape: Optional[tuple[int, int, int]]
    cached_fingerprint: str = field(default="", repr=False)   # `fingerprint`, once computed
    x: Optional[torch.Tensor] = None
    samples: Optional[Sequence] = field(default=None, repr=False)
    positions: Optional[np.ndarray] = field(default=None, repr=False)
    folder: Optional[Path] = None
    class_names: Optional[tuple[str, ...]] = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def fingerprint(self) -> str:
        """See the module docstring; computed on first use (a subset of ImageNet stats only its own files)."""
        if not self.cached_fingerprint:
            self.cached_fingerprint = self._fingerprint()
        return self.cached_fingerprint

    @property
    def info(self) -> DataInfo:
        mean, std = STATS[self.name]
        return DataInfo(self.name, self.split, len(self), tuple(self.classes), self.in_channels, tuple(mean),
                        tuple(std), self.fingerprint)

    def files(self, start: int = 0, stop: Optional[int] = None) -> list[str]:
        """Paths of samples [start, stop) of this (sub)set relative to `folder` ('/'-separated)."""
        if self.samples is None:
            raise ValueError(f"{self.name}/{self.split} is array-backed: it has no files")
        return relative_paths([self.samples[p] for p in self.positions[start:stop].tolist()], self.folder)

    def _fingerprint(self) -> str:
        if self.x is not None:
            return fingerprint(self.name, self.split, self.x, torch.as_tensor(self.labels),
                               torch.as_tensor(self.index))
        h = manifest_hasher(self.name, self.split, len(self))
        for a in range(0, len(self), CHUNK):  # in chunks: flat memory for ImageNet's 1.28M files
            files = self.files(a, a + CHUNK)
            update_manifest(h, files, file_sizes(self.folder, files), self.labels[a:a + CHUNK], self.index[a:a + CHUNK])
        return f"{self.name}-{self.split}-n{len(self)}-{h.hexdigest()[:12]}"

    def subset(self, positions) -> "Source":
        """Samples `positions` (positions in THIS source); new fingerprint, index kept (official positions)."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= len(self)):
            raise IndexError(f"subset positions out of range [0, {len(self)})")
        if self.x is not None:
            x = self.x[torch.as_tensor(pos)]
            return replace(self, dataset=ArraySet(x, torch.as_tensor(self.labels[pos])), x=x,
                           labels=self.labels[pos], index=self.index[pos], cached_fingerprint="")
        base = self.dataset.base if isinstance(self.dataset, Positions) else self.dataset
        rows = self.positions[pos]
        return replace(self, dataset=Positions(base, rows), labels=self.labels[pos], index=self.index[pos],
                       positions=rows, cached_fingerprint="")

    def describe(self) -> str:
        shape = "variable size" if self.shape is None else f"shape {self.shape}"
        return f"{self.name}/{self.split}: {len(self)} samples, {self.num_classes} classes, {shape}, fingerprint {self.fingerprint}"


# ----------------------------------------------------------------------------- fingerprints
def file_sizes(folder, files: Sequence[str]) -> np.ndarray:
    """Sizes in bytes of `folder/f` for f in files (one stat each)."""
    folder = Path(folder)
    try:
        return np.fromiter((os.stat(folder / f).st_size for f in files), dtype=np.int64, count=len(files))
    except OSError as e:
        raise DataError(f"cannot stat {e.filename}: {e.strerror}; the data under {folder} changed while reading it") from None


CHUNK = 1 << 16


def manifest_fingerprint(name: str, split: str, files: Sequence[str], sizes, labels, index) -> str:
    """`<name>-<split>-n<N>-<12 hex>`: sha256 of the manifest (relative path, size, label, position per sample),
    in sample order. Changes when a file is added, removed, renamed, resized or relabelled, or the subset
    changes; not when the data root moves or the pixels change at equal size (content edits that keep the size
    are not detected: the price of not reading 150 GB). Source computes the same hash chunk by chunk."""
    h = manifest_hasher(name, split, len(files))
    for a in range(0, len(files), CHUNK):
        update_manifest(h, files[a:a + CHUNK], sizes[a:a + CHUNK], labels[a:a + CHUNK], index[a:a + CHUNK])
    return f"{name}-{split}-n{len(files)}-{h.hexdigest()[:12]}"


def manifest_hasher(name: str, split: str, n: int):
    return hashlib.sha256(f"{name}|{split}|manifest|{n}".encode())


def update_manifest(h, files: Sequence[str], sizes, labels, index) -> None:
    """Add manifest lines `path<TAB>size<TAB>label<TAB>position` to the hash `h`."""
    sizes, labels, index = (np.asarray(a, dtype=np.int64).tolist() for a in (sizes, labels, index))
    if not (len(files) == len(sizes) == len(labels) == len(index)):
        raise ValueError("manifest columns differ in length")
    h.update("".join(f"{f}\t{s}\t{y}\t{i}\n" for f, s, y, i in zip(files, sizes, labels, index)).encode())


def _cifar10_source(split: str, root: Path, download: bool, verify_md5: bool) -> "Source":
    from easycore.data.loaders import _cifar10_folder

    if (root / "cifar-10-batches-py").is_dir() or download:
        return _array_source("cifar10", split, *read_cifar_pickles("cifar10", split, root, download=download,
                                                                   verify_md5=verify_md5))
    folder = _cifar10_folder(root)
    if folder is None:
        raise _missing("cifar10", root, "cifar-10-batches-py/ (official) or cifar10-jpeg.tar.gz / an ImageFolder "
                                        "folder with train/<class>/*.jpg and test/<class>/*.jpg")
    ds, labels, classes = read_image_folder(folder / split, "cifar10")
    return _file_source("cifar10", split, ds, labels, classes, "cifar", (3, 32, 32), folder / split)


def _file_source(name, split, ds, labels, classes, recipe, shape, folder, class_names=None) -> Source:
    n = len(labels)
    return Source(name, split, ds, labels, np.arange(n, dtype=np.int64), tuple(classes), 3, recipe, shape,
                  samples=ds.samples, positions=np.arange(n, dtype=np.int64), folder=Path(folder),
                  class_names=class_names)


def _array_source(name, split, x, labels, classes) -> Source:
    y = np.asarray(labels, dtype=np.int64)
    return Source(name, split, ArraySet(x, torch.as_tensor(y)), y, np.arange(len(y)), tuple(classes),
                  int(x.shape[1]), "cifar", tuple(int(s) for s in x.shape[1:]), x=x)


def _imagenet_source(split: str, root: Path, download: bool, verify_md5: bool) -> Source:
    folder_name = "train" if split == "train" else "val"
    base = _imagenet_root(root, folder_name)
    names = None
    if (base / "meta.bin").is_file():
        import torchvision

        try:
            ds = torchvision.datasets.ImageNet(str(base), split=folder_name)
        except (RuntimeError, FileNotFoundError) as e:
            raise DataError(f"imagenet: torchvision.datasets.ImageNet cannot read {base}: {e}") from None
        classes, names = list(ds.wnids), tuple(", ".join(c) for c in ds.classes)
        labels = np.asarray(ds.targets, dtype=np.int64)
    else:
        ds, labels, classes = read_image_folder(base / folder_name)
    return _file_source("imagenet", split, ds, labels, classes, "imagenet", None, base / folder_name, names)


# ----------------------------------------------------------------------------- checks at prepare
def check_classes(name: str, train_classes, test_classes, test_folder=None) -> None:
    """Train and test share one class list, the train set's (labels are indices into it: an ImageFolder split
    numbers its own sorted folders, so a renamed or missing test class folder shifts every later label).
    DataError, one line naming the folder (or class) that differs."""
    tr, te = list(train_classes), list(test_classes)
    if tr == te:
        return
    where = (lambda c: f"{Path(test_folder).as_posix()}/{c}") if test_folder is not None else (lambda c: f"class {c!r}")
    extra = [c for c in te if c not in tr]
    missing = [c for c in tr if c not in te]
    what = []
    if extra:
        what.append(f"{where(extra[0])} is not a train class" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    if missing:
        what.append(f"{where(missing[0])} is missing (a train class)" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if not what:
        what.append("the same classes in another order")
    raise DataError(f"{name}: the test split's classes differ from the train split's ({len(tr)} train / {len(te)} "
                    f"test classes): {'; '.join(what)}; labels would not line up: make the test class folders the "
                    f"train ones")


JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
PNG_MAGIC, PNG_IEND = b"\x89PNG", b"IEND\xaeB`\x82"


READERS: dict[str, Callable[[str, Path, bool, bool], Source]] = {
    "cifar10": _cifar10_source,
    "cifar100": lambda split, root, download, verify: _array_source(
        "cifar100", split, *read_cifar_pickles("cifar100", split, root, download=download, verify_md5=verify)),
    "svhn": lambda split, root, download, verify: _array_source(
        "svhn", split, *read_svhn(split, root, download=download, verify_md5=verify)),
    "imagenet": _imagenet_source,
}
SPLITS = {"svhn": ("train", "test", "extra")}


def open_dataset(name: str, split: str, root, positions=None, *, download: bool = False,
                 verify_md5: bool = True) -> Source:
    """The (sub)set `positions` (positions in the full official split; None = all) of `split` of `name` as a
    Source. Splits: 'train' | 'test' ('test' = ImageNet's val/; SVHN also 'extra'). Files are opened lazily
    for file-per-image sets (nothing is decoded here)."""
    if split not in SPLITS.get(name, ("train", "test")):
        raise ValueError(f"split must be one of {SPLITS.get(name, ('train', 'test'))} for {name}, got {split!r}")
    root = Path(root).expanduser()
    if name in READERS:
        src = READERS[name](split, root, download, verify_md5)
    else:
        ds = load_dataset(name, split, root, download=download)
        src = from_arrays(ds)
    if positions is not None:
        src = src.subset(positions)
    src.fingerprint  # computed here, where the data was just read
    log.info("opened %s from %s", src.describe(), root)
    return src


def from_arrays(ds: ArrayDataset) -> Source:
    """An in-memory ArrayDataset as a Source (same fingerprint as the ArrayDataset)."""
    y = ds.y.numpy().astype(np.int64)
    return Source(ds.name, ds.split, ArraySet(ds.x, ds.y), y, ds.index.numpy().astype(np.int64), tuple(ds.classes),
                  ds.in_channels, "cifar", tuple(int(s) for s in ds.x.shape[1:]), cached_fingerprint=ds.fingerprint, x=ds.x)


def to_arrays(src: Source) -> ArrayDataset:
    """An array-backed Source as an ArrayDataset (same fingerprint); file-per-image sets: see streaming.decode_all."""
    if src.x is None:
        raise ValueError(f"{src.name}/{src.split} is file-per-image; decode it with streaming.decode_all")
    return ArrayDataset(src.name, src.split, src.x, torch.as_tensor(src.labels), torch.as_tensor(src.index),
                        list(src.classes), src.fingerprint)
