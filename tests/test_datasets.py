"""Readers of the official layouts (easycore.data.datasets) on small copies generated here in the official formats.

No dataset file is shipped: each test writes a tiny CIFAR-100 (`cifar-100-python/` pickles + meta), SVHN
(`*_32x32.mat`) or ImageNet (`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`, optionally `meta.bin`) copy in a
temporary folder. torchvision's own readers are the reference: their md5 lists are patched to the generated
files' md5s (the official md5s cannot be met by a generated file), and they must read the same pixels, labels
and classes as ours.
"""
import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from easycore.data.loaders import balanced_subset, load_dataset
from easycore.data.base import STATS, DataError
from easycore.data.datasets import manifest_fingerprint, open_dataset, to_arrays


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- generators (also used by test_streaming)
def make_cifar100(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict:
    """`root/cifar-100-python/{train,test,meta}` in the official pickle format; returns what was written."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    fine = [f"fine{i:02d}" for i in range(100)]
    out = {"fine_label_names": fine}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n) * 7 % 5) * 13]  # 5 distinct classes among 100
        entry = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{split} batch 1 of 1",
                 "fine_labels": labels, "coarse_labels": [v // 5 for v in labels], "data": data}
        with open(base / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        out[split] = (data, np.asarray(labels))
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": fine, "coarse_label_names": [f"coarse{i}" for i in range(20)]}, f, protocol=2)
    return out


def make_svhn(root: Path, split: str = "train", n: int = 25, seed: int = 0):
    """`root/<split>_32x32.mat`: X uint8 [32, 32, 3, N], y uint8 [N, 1] in 1..10 (10 = digit 0)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(root / f"{split}_32x32.mat"), {"X": X, "y": y})
    return X, y


def save_jpeg(path: Path, h: int, w: int, seed: int, quality: int = 90) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full_like(xx, seed * 37 % 256)], -1)
    img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=quality)


WNIDS = ("n01440764", "n01443537", "n01484850")


def make_imagenet(root: Path, per_class: int = 4, val_per_class: int = 2, sizes=((40, 56), (64, 48), (50, 50))) -> Path:
    """`root/{train,val}/<wnid>/*.JPEG` with images of varying sizes; returns root."""
    k = 0
    for split, per in (("train", per_class), ("val", val_per_class)):
        for c, wnid in enumerate(WNIDS):
            for i in range(per):
                h, w = sizes[(c + i) % len(sizes)]
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{k:08d}.JPEG"
                save_jpeg(root / split / wnid / name, h, w, seed=k)
                k += 1
    return root


def make_cifar_folder(root: Path, classes=("cat", "dog", "frog"), per_class: int = 10, test_per_class: int = 2) -> Path:
    """`root/cifar10/{train,test}/<class>/*.jpg`, 32x32 (the ImageFolder copy layout data.py accepts)."""
    k = 0
    for split, per in (("train", per_class), ("test", test_per_class)):
        for c in classes:
            for i in range(per):
                save_jpeg(root / "cifar10" / split / c / f"{i:04d}.jpg", 32, 32, seed=k)
                k += 1
    return root


# ----------------------------------------------------------------------------- CIFAR-100
def _patch_cifar100_md5(monkeypatch, root):
    import torchvision

    base = root / "cifar-100-python"
    cls = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [["train", _md5(base / "train")]])
    monkeypatch.setattr(cls, "test_list", [["test", _md5(base / "test")]])
    monkeypatch.setattr(cls, "meta", dict(cls.meta, md5=_md5(base / "meta")))


def test_cifar100_official_format(tmp_path, monkeypatch):
    import torchvision

    written = make_cifar100(tmp_path)
    with pytest.raises(DataError, match=r"md5 [0-9a-f]{32} is not the official 16019d7e3df5f24257cddd939b257f8d"):
        open_dataset("cifar100", "train", tmp_path)
    src = open_dataset("cifar100", "train", tmp_path, verify_md5=False)
    data, labels = written["train"]
    assert len(src) == 30 and src.x.dtype == torch.uint8 and src.x.shape == (30, 3, 32, 32)
    assert torch.equal(src.x, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert src.labels.tolist() == labels.tolist() and src.index.tolist() == list(range(30))
    assert src.classes == tuple(written["fine_label_names"]) and src.info.num_classes == 100
    assert src.info.mean == STATS["cifar100"][0] and src.recipe == "cifar" and src.shape == (3, 32, 32)
    img, y = src.dataset[7]
    assert torch.equal(img, src.x[7]) and y == labels[7]
    te = open_dataset("cifar100", "test", tmp_path, verify_md5=False)
    assert len(te) == 10 and te.labels.tolist() == written["test"][1].tolist()

    # torchvision's parser (md5 lists patched to the generated files) reads the same, and our verify then passes
    _patch_cifar100_md5(monkeypatch, tmp_path)
    tv = torchvision.datasets.CIFAR100(str(tmp_path), train=True)
    assert np.array_equal(tv.data, src.x.permute(0, 2, 3, 1).numpy()) and tv.targets == src.labels.tolist()
    assert tuple(tv.classes) == src.classes
    checked = open_dataset("cifar100", "train", tmp_path)  # verify_md5 True: md5s from torchvision's class
    # the in-memory path (load_dataset through torchvision) and ours agree on pixels and fingerprint
    ref = load_dataset("cifar100", "train", tmp_path)
    assert checked.fingerprint == ref.fingerprint and torch.equal(checked.x, ref.x)
    pos = balanced_subset(src.labels, 2, seed=3)
    sub_ref = load_dataset("cifar100", "train", tmp_path, n_per_class=2, seed=3)
    sub = open_dataset("cifar100", "train", tmp_path, positions=pos)
    assert sub.fingerprint == sub_ref.fingerprint and sub.index.tolist() == sub_ref.index.tolist()
    assert to_arrays(sub).fingerprint == sub_ref.fingerprint


# ----------------------------------------------------------------------------- SVHN
def test_svhn_official_format(tmp_path, monkeypatch):
    import torchvision

    X, y = make_svhn(tmp_path, "train", n=25)
    make_svhn(tmp_path, "test", n=7, seed=1)
    with pytest.raises(DataError, match="md5 .* is not the official e26dedcc434d2e4c54c9b2d4a06d8373"):
        open_dataset("svhn", "train", tmp_path)
    src = open_dataset("svhn", "train", tmp_path, verify_md5=False)
    assert src.x.shape == (25, 3, 32, 32) and src.classes == tuple(str(i) for i in range(10))
    assert src.labels.tolist() == [int(v) % 10 for v in y[:, 0]]  # label 10 is digit 0
    assert src.labels[9] == 0 and src.labels[0] == 1
    for n in (0, 9, 24):  # X[h, w, c, n] -> x[n, c, h, w]
        assert torch.equal(src.x[n], torch.from_numpy(X[:, :, :, n]).permute(2, 0, 1))
    assert len(open_dataset("svhn", "test", tmp_path, verify_md5=False)) == 7
    with pytest.raises(ValueError, match="split"):
        open_dataset("svhn", "val", tmp_path)

    split_list = {k: list(v) for k, v in torchvision.datasets.SVHN.split_list.items()}
    for split in ("train", "test"):
        split_list[split][2] = _md5(tmp_path / f"{split}_32x32.mat")
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", split_list)
    tv = torchvision.datasets.SVHN(str(tmp_path), split="train")
    assert np.array_equal(tv.data, src.x.numpy()) and tv.labels.tolist() == src.labels.tolist()
    ref = load_dataset("svhn", "train", tmp_path)
    assert open_dataset("svhn", "train", tmp_path).fingerprint == ref.fingerprint


# ----------------------------------------------------------------------------- ImageNet
def test_imagenet_image_folder_and_meta_bin(tmp_path):
    import torchvision

    make_imagenet(tmp_path / "imagenet")  # under <root>/imagenet/
    tr = open_dataset("imagenet", "train", tmp_path)
    ref = torchvision.datasets.ImageFolder(str(tmp_path / "imagenet" / "train"))
    assert len(tr) == 12 and tr.classes == WNIDS and tr.labels.tolist() == ref.targets
    assert tr.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # class index = position of the sorted wnid
    assert tr.recipe == "imagenet" and tr.shape is None and tr.x is None and tr.info.mean == STATS["imagenet"][0]
    assert tr.files()[:2] == [f"{WNIDS[0]}/{WNIDS[0]}_0.JPEG", f"{WNIDS[0]}/{WNIDS[0]}_1.JPEG"]
    img, y = tr.dataset[5]
    assert img.mode == "RGB" and y == 1
    val = open_dataset("imagenet", "test", tmp_path)  # 'test' reads val/
    assert len(val) == 6 and val.labels.tolist() == [0, 0, 1, 1, 2, 2]

    # torchvision.datasets.ImageNet when meta.bin is there: same samples, human-readable names added
    names = {w: (f"name{i}", f"alias{i}") for i, w in enumerate(WNIDS)}
    torch.save((names, [WNIDS[i // 2] for i in range(6)]), tmp_path / "imagenet" / "meta.bin")
    trm = open_dataset("imagenet", "train", tmp_path)
    assert isinstance(trm.dataset, torchvision.datasets.ImageNet)
    assert trm.classes == WNIDS and trm.class_names == ("name0, alias0", "name1, alias1", "name2, alias2")
    assert trm.labels.tolist() == tr.labels.tolist() and trm.fingerprint == tr.fingerprint

    sub = open_dataset("imagenet", "train", tmp_path, positions=[11, 0, 5])
    assert sub.labels.tolist() == [2, 0, 1] and sub.index.tolist() == [11, 0, 5]
    assert sub.files() == [tr.files()[i] for i in (11, 0, 5)]
    assert sub.dataset[1][0].size == tr.dataset[0][0].size


def test_imagenet_layout_errors(tmp_path):
    with pytest.raises(DataError, match="imagenet not found .*train/<wnid>"):
        open_dataset("imagenet", "train", tmp_path)
    make_imagenet(tmp_path)
    flat = tmp_path / "val"
    for p in list(flat.rglob("*.JPEG")):
        p.rename(flat / p.name)
    for d in WNIDS:
        (flat / d).rmdir()
    with pytest.raises(DataError, match="val/ must be sorted into <wnid>/ folders"):
        open_dataset("imagenet", "test", tmp_path)
    with pytest.raises(DataError, match="data.root"):
        open_dataset("cifar100", "train", tmp_path)


# ----------------------------------------------------------------------------- manifest fingerprint
def test_manifest_fingerprint_tracks_files_not_loaders(tmp_path):
    make_imagenet(tmp_path / "a")
    fp = open_dataset("imagenet", "train", tmp_path / "a").fingerprint
    assert fp.startswith("imagenet-train-n12-")
    assert open_dataset("imagenet", "train", tmp_path / "a").fingerprint == fp  # re-created: same
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert open_dataset("imagenet", "train", tmp_path / "b").fingerprint == fp  # the root may move
    f = tmp_path / "b" / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG"
    save_jpeg(f, 70, 90, seed=99)  # same name, other size
    fp_size = open_dataset("imagenet", "train", tmp_path / "b").fingerprint
    assert fp_size != fp
    shutil.rmtree(tmp_path / "b")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    f = tmp_path / "b" / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG"
    f.rename(tmp_path / "b" / "train" / WNIDS[2] / f.name)  # relabelled (moved to another class)
    assert open_dataset("imagenet", "train", tmp_path / "b").fingerprint not in (fp, fp_size)
    assert open_dataset("imagenet", "train", tmp_path / "a", positions=[0, 1]).fingerprint != fp

    files, sizes, labels, index = ["a/1.JPEG", "b/2.JPEG"], [10, 20], [0, 1], [0, 1]
    base = manifest_fingerprint("imagenet", "train", files, sizes, labels, index)
    assert manifest_fingerprint("imagenet", "train", files, sizes, labels, index) == base
    assert manifest_fingerprint("imagenet", "train", files, [10, 21], labels, index) != base
    assert manifest_fingerprint("imagenet", "train", files, sizes, [0, 0], index) != base
    assert manifest_fingerprint("imagenet", "train", files, sizes, labels, [0, 2]) != base
    assert manifest_fingerprint("imagenet", "test", files, sizes, labels, index) != base


def test_in_memory_sets_keep_their_fingerprint():
    src = open_dataset("synthetic", "test", ".")  # not in READERS: data.load_dataset's ArrayDataset
    full = load_dataset("synthetic", "test", ".")
    assert src.fingerprint == full.fingerprint and torch.equal(src.x, full.x)
    pos = [3, 1, 40]
    assert src.subset(pos).fingerprint == full.subset(pos).fingerprint != src.fingerprint
    assert open_dataset("synthetic", "test", ".", positions=pos).fingerprint == full.subset(pos).fingerprint
    assert to_arrays(src.subset(pos)).fingerprint == full.subset(pos).fingerprint
