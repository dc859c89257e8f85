"""Dataset loaders (offline copies in ../shared/data), subsets, fingerprints and the device iterator."""
import numpy as np
import pytest
import torch

from conftest import need_data
from easycore.config import ConfigError
from easycore.data.loaders import DeviceLoader, augment_batch, balanced_subset, load_dataset
from easycore.data.base import ArrayDataset, DataError


def test_cifar10_offline_copy(data_root, tmp_path, monkeypatch):
    need_data("cifar10-jpeg.tar.gz")
    tr = load_dataset("cifar10", "train", data_root, n_per_class=5, seed=0)
    te = load_dataset("cifar10", "test", data_root, n_per_class=3, seed=0)
    assert tr.x.shape == (50, 3, 32, 32) and tr.x.dtype == torch.uint8 and tr.y.dtype == torch.int64
    assert tr.classes[0] == "airplane" and tr.classes[-1] == "truck"
    assert np.bincount(tr.y.numpy()).tolist() == [5] * 10 and len(te) == 30
    assert int(tr.index.max()) < 50000 and int(te.index.max()) < 10000
    again = load_dataset("cifar10", "train", data_root, n_per_class=5, seed=0)
    assert again.fingerprint == tr.fingerprint and torch.equal(again.x, tr.x)
    other = load_dataset("cifar10", "train", data_root, n_per_class=5, seed=1)
    assert other.fingerprint != tr.fingerprint


@pytest.mark.parametrize("name,folder,n_train", [("mnist", "mnist", 60000), ("fashion_mnist", "fashion-mnist", 60000)])
def test_mnist_like_offline_copy(data_root, tmp_path, monkeypatch, name, folder, n_train):
    need_data(folder)
    monkeypatch.setenv("EASYCORE_CACHE", str(tmp_path))
    tr = load_dataset(name, "train", data_root, n_per_class=3, seed=0)
    assert tr.x.shape == (30, 1, 28, 28) and tr.num_classes == 10
    assert int(tr.index.max()) < n_train


@pytest.mark.parametrize("name", ["cifar100", "svhn"])
def test_official_only_datasets_fail_clearly_without_files(tmp_path, name):
    with pytest.raises(DataError) as e:
        load_dataset(name, "train", tmp_path)
    msg = str(e.value)
    assert "data.root" in msg and "EASYCORE_DATA" in msg and "download" in msg


@pytest.mark.parametrize("name,files,n_train,n_test", [("cifar100", "cifar-100-python", 50000, 10000),
                                                    ("svhn", ("train_32x32.mat", "test_32x32.mat"), 73257, 26032)])
def test_cifar100_svhn_offline_copy(data_root, name, files, n_train, n_test):
    """A real offline copy, where there is one (only CIFAR-10, MNIST and Fashion-MNIST are shipped; the readers are
    checked on generated files in the official formats by tests/test_datasets.py)."""
    need_data(*([files] if isinstance(files, str) else files))
    k = 100 if name == "cifar100" else 10
    tr = load_dataset(name, "train", data_root, n_per_class=2, seed=0)
    te = load_dataset(name, "test", data_root, n_per_class=1, seed=0)
    assert tr.x.shape == (2 * k, 3, 32, 32) and tr.x.dtype == torch.uint8 and tr.num_classes == k
    assert np.bincount(tr.y.numpy(), minlength=k).tolist() == [2] * k and len(te) == k
    assert int(tr.index.max()) < n_train and int(te.index.max()) < n_test
    again = load_dataset(name, "train", data_root, n_per_class=2, seed=0)
    assert again.fingerprint == tr.fingerprint and torch.equal(again.x, tr.x)


def test_balanced_subset_seeded_and_clear_error():
    labels = np.repeat(np.arange(3), [10, 4, 6])
    a = balanced_subset(labels, 4, seed=0)
    assert np.bincount(labels[a]).tolist() == [4, 4, 4]
    assert np.array_equal(a, balanced_subset(labels, 4, seed=0))
    assert not np.array_equal(a, balanced_subset(labels, 4, seed=1))
    with pytest.raises(ConfigError, match=r"data.n_per_class = 5 .*class 1 has only 4"):
        balanced_subset(labels, 5, seed=0)


def test_subset_and_save_roundtrip(tmp_path):
    ds = load_dataset("synthetic", "train", ".", n_per_class=5)
    sub = ds.subset([3, 7, 11])
    assert torch.equal(sub.index, torch.tensor([3, 7, 11])) and sub.fingerprint != ds.fingerprint
    sub.save(tmp_path / "s.pt")
    back = ArrayDataset.load(tmp_path / "s.pt")
    assert back.fingerprint == sub.fingerprint and torch.equal(back.x, sub.x)


def test_augment_batch_is_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    out = augment_batch(x, g, pad=2)
    assert out.shape == x.shape
    for i in range(2):  # every output is a (possibly flipped) 6x6 window of the zero-padded image
        xp = torch.nn.functional.pad(x[i, 0], (2, 2, 2, 2))
        wins = [xp[a:a + 6, b:b + 6] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i, 0], w) or torch.equal(out[i, 0], w.flip(1)) for w in wins)


def test_device_loader_covers_epoch_and_is_seeded():
    ds = load_dataset("synthetic", "train", ".", n_per_class=7)
    ld = DeviceLoader(ds.x, ds.y, batch_size=16, device="cpu", augment=True, seed=3)
    ld.set_epoch(1)
    batches = list(ld)
    idx = torch.cat([b[2] for b in batches])
    assert sorted(idx.tolist()) == list(range(len(ds)))
    for xb, yb, ib in batches:
        assert xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1
        assert torch.equal(yb, ds.y[ib])
    again = list(ld)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    ld.set_epoch(2)
    assert not torch.equal(torch.cat([b[2] for b in ld]), idx)


def test_device_loader_subset_is_the_data_schedule_seam():
    """set_subset: an epoch covers exactly those positions, in an order fixed by (seed, epoch); None = all again."""
    ds = load_dataset("synthetic", "train", ".", n_per_class=7)
    ld = DeviceLoader(ds.x, ds.y, batch_size=8, device="cpu", seed=3)
    pos = torch.tensor([3, 9, 10, 11, 40, 41, 55, 60, 61, 62, 69])
    ld.set_subset(pos)
    ld.set_epoch(0)
    assert len(ld) == 2
    first = torch.cat([b[2] for b in ld])
    assert sorted(first.tolist()) == pos.tolist()
    assert torch.equal(first, torch.cat([b[2] for b in ld]))          # same epoch: same order
    for xb, yb, ib in ld:
        assert torch.equal(yb, ds.y[ib]) and torch.equal((xb * 255).round().to(torch.uint8), ds.x[ib])
    ld.set_epoch(1)
    assert sorted(torch.cat([b[2] for b in ld]).tolist()) == pos.tolist()
    ld.set_subset(None)
    assert sorted(torch.cat([b[2] for b in ld]).tolist()) == list(range(len(ds)))
