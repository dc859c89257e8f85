"""Readers of the official layouts (CIFAR pickles, SVHN .mat, ImageNet folders), with md5 checks."""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from easycore.data.base import DataError, _missing


# ----------------------------------------------------------------------------- readers
def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_md5(path: Path, official: str, verify: bool) -> None:
    """DataError when `verify` and the md5 of `path` is not the official one."""
    if verify:
        got = _md5(path)
        if got != official:
            raise DataError(f"{path}: md5 {got} is not the official {official} (the file is present but differs "
                            f"from the official download: a partial download or another copy); replace it with the "
                            f"official file (remove it and set data.download: true to fetch it); a copy in the "
                            f"official format is read only from Python, easycore.data.datasets.open_dataset(..., "
                            f"verify_md5=False)")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def read_cifar_pickles(name: str, split: str, root: Path, *, download: bool = False, verify_md5: bool = True):
    """CIFAR-10/100 official pickles -> (x uint8 [N, 3, 32, 32], labels int64 [N], classes).

    Same parsing as torchvision's CIFAR10/CIFAR100: batches in train_list/test_list order, `data` rows reshaped
    to [3, 32, 32], `labels` (CIFAR-10) or `fine_labels` (CIFAR-100), classes from the meta file's
    `label_names` / `fine_label_names`."""
    import torchvision

    cls = torchvision.datasets.CIFAR100 if name == "cifar100" else torchvision.datasets.CIFAR10
    base = root / cls.base_folder
    if not base.is_dir() and download:
        cls(str(root), train=True, download=True)  # fetches and checks the official archive
    files = cls.train_list if split == "train" else cls.test_list
    needed = [f for f, _ in files] + [cls.meta["filename"]]
    if not all((base / f).is_file() for f in needed):
        raise _missing(name, root, f"{cls.base_folder}/ with {', '.join(needed)} (official layout)")
    xs, ys = [], []
    for f, md5 in files:
        check_md5(base / f, md5, verify_md5)
        entry = _unpickle(base / f)
        xs.append(np.asarray(entry["data"], dtype=np.uint8))
        ys.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    check_md5(base / cls.meta["filename"], cls.meta["md5"], verify_md5)
    classes = _unpickle(base / cls.meta["filename"])[cls.meta["key"]]
    x = torch.from_numpy(np.vstack(xs).reshape(-1, 3, 32, 32))
    return x, np.asarray(ys, dtype=np.int64), list(classes)


def read_svhn(split: str, root: Path, *, download: bool = False, verify_md5: bool = True):
    """SVHN `<split>_32x32.mat` -> (x uint8 [N, 3, 32, 32], labels int64 [N] with 10 -> 0, classes '0'..'9')."""
    import scipy.io
    import torchvision

    _, fname, md5 = torchvision.datasets.SVHN.split_list[split]
    path = root / fname
    if not path.is_file() and download:
        torchvision.datasets.SVHN(str(root), split=split, download=True)
    if not path.is_file():
        raise _missing("svhn", root, f"{fname} (official layout)")
    check_md5(path, md5, verify_md5)
    try:
        mat = scipy.io.loadmat(str(path))
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if "X" not in mat or "y" not in mat or mat["X"].ndim != 4:
        raise DataError(f"{path} has no X [32, 32, 3, N] / y [N, 1] arrays (official SVHN format expected)")
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(mat["X"].astype(np.uint8, copy=False), (3, 2, 0, 1))))
    y = mat["y"].astype(np.int64).reshape(-1)
    y[y == 10] = 0
    return x, y, [str(i) for i in range(10)]


def _imagenet_root(root: Path, folder: str) -> Path:
    for cand in (root / "imagenet", root):
        if (cand / folder).is_dir():
            return cand
    raise _missing("imagenet", root, f"{folder}/<wnid>/*.JPEG (ImageFolder layout) under it or under imagenet/")


def read_image_folder(folder: Path, name: str = "imagenet"):
    """torchvision ImageFolder over `folder` -> (dataset, labels, classes); sample order and class indices
    exactly ImageFolder's (classes = sorted folder names)."""
    import torchvision

    try:
        ds = torchvision.datasets.ImageFolder(str(folder))
    except FileNotFoundError as e:
        raise DataError(f"{name}: image folder {folder} is not usable: {e} (ImageFolder layout expected: "
                        f"<split>/<class>/<image>; ImageNet's val/ must be sorted into <wnid>/ folders, as "
                        f"torchvision.datasets.ImageNet does from the devkit)") from None
    return ds, np.asarray(ds.targets, dtype=np.int64), list(ds.classes)


def relative_paths(samples, folder) -> list[str]:
    """Paths of ImageFolder `samples` [(path, label)] relative to `folder`, '/'-separated."""
    prefix = os.path.join(os.path.expanduser(str(folder)), "")
    if not all(p.startswith(prefix) for p, _ in samples):
        return [Path(os.path.relpath(p, folder)).as_posix() for p, _ in samples]
    return [p[len(prefix):].replace(os.sep, "/") for p, _ in samples]
