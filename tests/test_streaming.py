"""The streaming loader (easycore.data.streaming) against DeviceLoader, its determinism, sharding, recipes, the
device-or-streaming rule, and flat peak memory (a small run of benchmarks/streaming_memory.py)."""
import numpy as np
import pytest
import torch

from easycore.data.loaders import DeviceLoader, load_dataset
from easycore.data.base import DataError
from easycore.data.datasets import from_arrays, open_dataset
from easycore.data.streaming import (EpochSampler, Recipe, StreamingLoader, choose_loader, epoch_order, make_loader,
                                resized_crop_params)
from test_datasets import make_cifar_folder, make_imagenet, save_jpeg


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return make_cifar_folder(tmp_path_factory.mktemp("cifar"), per_class=10)  # 30 train JPEGs, 32x32


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    return make_imagenet(tmp_path_factory.mktemp("imagenet"), per_class=4)  # 12 train JPEGs, varying sizes


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone(), i.clone()) for x, y, i in loader]


def _device_batches(x, y, positions, *, epoch, **kw):
    """DeviceLoader's batches with idx = positions in the full set; a subset through set_subset when DeviceLoader
    has it (the protocol), else a DeviceLoader over the subset's rows, its idx mapped back (same order rule)."""
    if positions is None or hasattr(DeviceLoader, "set_subset"):
        dl = DeviceLoader(x, y, device="cpu", **kw)
        if positions is not None:
            dl.set_subset(torch.as_tensor(positions))
        return _batches(dl, epoch)
    pos = torch.as_tensor(positions)
    return [(xb, yb, pos[ib]) for xb, yb, ib in _batches(DeviceLoader(x[pos], y[pos], device="cpu", **kw), epoch)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_same_batches_as_device_loader(cifar_root, num_workers):
    """JPEG folder: the streaming loader (decode in the workers) and DeviceLoader over load_dataset's in-memory
    decode give identical pixels, labels, idx and batch boundaries, 2 epochs, with and without a subset."""
    src = open_dataset("cifar10", "train", cifar_root)
    ref = load_dataset("cifar10", "train", cifar_root)
    kw = dict(batch_size=8, shuffle=True, augment=False, seed=5)
    sl = StreamingLoader.from_source(src, num_workers=num_workers, persistent_workers=num_workers > 0, **kw)
    subset = np.random.default_rng(0).choice(30, size=17, replace=False)
    for positions in (None, subset, None):  # back to the full set: set_subset(None)
        sl.set_subset(positions)
        assert len(sl) == (3 if positions is not None else 4)
        for epoch in (0, 1):
            got, want = _batches(sl, epoch), _device_batches(ref.x, ref.y, positions, epoch=epoch, **kw)
            assert [len(b[1]) for b in got] == [len(b[1]) for b in want]
            for (x1, y1, i1), (x2, y2, i2) in zip(got, want):
                assert x1.dtype == torch.float32 and torch.equal(x1, x2)
                assert torch.equal(y1, y2) and torch.equal(i1, i2)
            seen = torch.cat([b[2] for b in got])
            assert sorted(seen.tolist()) == sorted(range(30) if positions is None else subset.tolist())
    assert not torch.equal(torch.cat([b[2] for b in _batches(sl, 0)]), torch.cat([b[2] for b in _batches(sl, 1)]))


def _per_sample(loader, epoch):
    out = {}
    for x, _, idx in _batches(loader, epoch):
        for xi, i in zip(x, idx.tolist()):
            out[i] = xi
    return out


def _is_crop_flip(aug, img, pad=4):
    """Brute force: aug equals some crop (offsets 0..2*pad) of the zero-padded img, maybe flipped."""
    h, w = img.shape[1:]
    p = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    cands = [p[:, oy:oy + h, ox:ox + w] for oy in range(2 * pad + 1) for ox in range(2 * pad + 1)]
    return any(torch.equal(aug, c) or torch.equal(aug, c.flip(-1)) for c in cands)


def test_augmentation_deterministic_across_workers_and_epochs(cifar_root, imagenet_root):
    src = open_dataset("cifar10", "train", cifar_root)
    a = StreamingLoader.from_source(src, batch_size=8, augment=True, seed=1, num_workers=0)
    b = StreamingLoader.from_source(src, batch_size=5, augment=True, seed=1, num_workers=2)
    plain = _per_sample(StreamingLoader.from_source(src, batch_size=30, shuffle=False), 0)
    e0, e0b, e1 = _per_sample(a, 0), _per_sample(b, 0), _per_sample(a, 1)
    assert all(torch.equal(e0[i], e0b[i]) for i in range(30))  # workers and batch size do not matter
    assert sum(not torch.equal(e0[i], e1[i]) for i in range(30)) >= 25  # epochs differ
    assert sum(not torch.equal(e0[i], plain[i]) for i in range(30)) >= 25
    assert all(_is_crop_flip((e0[i] * 255).round().to(torch.uint8), (plain[i] * 255).round().to(torch.uint8))
               for i in range(0, 30, 3))
    other_seed = _per_sample(StreamingLoader.from_source(src, batch_size=8, augment=True, seed=2), 0)
    assert sum(not torch.equal(e0[i], other_seed[i]) for i in range(30)) >= 25

    inet = open_dataset("imagenet", "train", imagenet_root)
    c = StreamingLoader.from_source(inet, batch_size=4, augment=True, seed=1, image_size=24, num_workers=0)
    d = StreamingLoader.from_source(inet, batch_size=3, augment=True, seed=1, image_size=24, num_workers=2)
    i0, i0d, i1 = _per_sample(c, 0), _per_sample(d, 0), _per_sample(c, 1)
    assert all(v.shape == (3, 24, 24) for v in i0.values())
    assert all(torch.equal(i0[i], i0d[i]) for i in range(12))
    assert sum(not torch.equal(i0[i], i1[i]) for i in range(12)) >= 10


def test_rank_sharding_covers_the_epoch_order():
    n, positions = 30, torch.tensor([29, 3, 7, 11, 0, 5, 8, 13, 21, 22, 2, 17, 19, 25, 26, 9, 4, 1, 6, 10, 14, 15, 16])
    src = from_arrays(load_dataset("synthetic", "test", ".").subset(range(n)))
    for world in (2, 3):
        loaders = [StreamingLoader.from_source(src, batch_size=4, seed=3, rank=r, world_size=world) for r in range(world)]
        for epoch in (0, 1):
            order = epoch_order(n, positions, 3, epoch, True)
            parts = []
            for r, ld in enumerate(loaders):
                ld.set_subset(positions)
                parts.append(torch.cat([b[2] for b in _batches(ld, epoch)]))
                # DistributedSampler's index pattern (shuffle off) applied to our epoch order
                ds = torch.utils.data.DistributedSampler(range(len(order)), num_replicas=world, rank=r, shuffle=False)
                assert parts[-1].tolist() == order[list(ds)].tolist()
            assert {len(p) for p in parts} == {-(-len(positions) // world)}
            assert len({len(ld) for ld in loaders}) == 1
            assert set(torch.cat(parts).tolist()) == set(order.tolist())  # union covers the epoch
            assert len(torch.cat(parts)) - len(order) < world  # padding: fewer than world repeats
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(10, rank=2, world_size=2)


def test_recipes_match_torchvision():
    import torchvision.transforms.v2 as T
    from PIL import Image

    for k, (h, w) in enumerate([(40, 56), (300, 20), (20, 300), (64, 64)]):  # tall/wide: fallback branch too
        torch.manual_seed(k)
        want = T.RandomResizedCrop.get_params(torch.zeros(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3])
        torch.manual_seed(k)
        assert resized_crop_params(h, w, None) == tuple(want)
        assert resized_crop_params(h, w, torch.Generator().manual_seed(k)) == tuple(want)
    rng = np.random.default_rng(0)
    for size, (h, w) in [(24, (40, 56)), (64, (90, 70)), (224, (300, 260))]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ref = T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size), T.PILToTensor()])(img)
        got = Recipe("imagenet", size=size)(img, None)
        assert got.dtype == torch.uint8 and torch.equal(got, ref)
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert torch.equal(Recipe("cifar")(x, None), x)
    assert _is_crop_flip(Recipe("cifar")(x, torch.Generator().manual_seed(0)), x)
    with pytest.raises(ValueError, match="recipe"):
        Recipe("mnist")


def test_loader_details(cifar_root, imagenet_root):
    src = open_dataset("cifar10", "train", cifar_root)
    ld = StreamingLoader.from_source(src, batch_size=8, augment=True, channels_last=True, drop_last=True)
    state = torch.get_rng_state()
    batches = _batches(ld, 0)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is not touched
    assert len(batches) == len(ld) == 3 and all(len(b[1]) == 8 for b in batches)
    x, y, idx = batches[0]
    assert x.is_contiguous(memory_format=torch.channels_last) and 0 <= x.min() and x.max() <= 1
    assert y.dtype == idx.dtype == torch.int64 and ld.info == src.info and ld.info.n == 30
    with pytest.raises(IndexError, match="out of range"):
        ld.set_subset([0, 30])
    inet = open_dataset("imagenet", "train", imagenet_root)  # varying sizes: the cifar recipe refuses them
    with pytest.raises(DataError, match="one size"):
        list(StreamingLoader.from_source(inet, batch_size=4, recipe="cifar", shape=(3, 40, 56)))
    with pytest.raises(ValueError, match="info.n"):
        StreamingLoader(src.dataset, inet.info, batch_size=4)


def test_make_loader_rule(cifar_root, imagenet_root):
    src = open_dataset("cifar10", "train", cifar_root)  # 30 x 3 x 32 x 32 = 92160 bytes
    assert isinstance(make_loader(src, batch_size=8, memory_budget=92160, augment=True), DeviceLoader)
    assert isinstance(make_loader(src, batch_size=8, memory_budget=92159), StreamingLoader)
    sharded = make_loader(src, batch_size=8, world_size=2, rank=1, memory_budget=92160)  # both loaders shard
    assert isinstance(sharded, DeviceLoader) and (sharded.rank, sharded.world_size) == (1, 2)
    assert make_loader(src, batch_size=8).info == src.info  # default budget: a quarter of RAM
    inet = open_dataset("imagenet", "train", imagenet_root)
    big = 1 << 40
    assert choose_loader(inet, device="cpu", augment=True, memory_budget=big) == "streaming"  # RandomResizedCrop
    assert choose_loader(inet, device="cpu", augment=False, image_size=24, memory_budget=12 * 3 * 24 * 24) == "device"
    dev = make_loader(inet, batch_size=5, image_size=24, memory_budget=big, seed=4)
    st = make_loader(inet, batch_size=5, image_size=24, kind="streaming", seed=4)
    assert isinstance(dev, DeviceLoader) and isinstance(st, StreamingLoader) and dev.info == st.info
    for (x1, y1, i1), (x2, y2, i2) in zip(_batches(dev, 1), _batches(st, 1), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(i1, i2)
    with pytest.raises(ValueError, match="streaming"):
        make_loader(inet, batch_size=5, kind="device", augment=True)


@pytest.mark.slow
def test_peak_memory_flat_as_n_grows():
    """benchmarks/streaming_memory.py, small: one pass over a JPEG folder of N=150 and 4N=600 images (136 px ->
    the imagenet eval recipe at 128 px: 48 KiB per sample in uint8), streaming vs DeviceLoader, in one
    subprocess (see the benchmark's doc). Measured on the 2-core dev machine (3 runs): from N=150 to 600 the
    streaming peak grew by -1.8 to +0.3 MiB while the uint8 set grew 21.1 MiB; DeviceLoader's peak grew 21.2 to
    23.5 MiB."""
    from benchmarks.streaming_memory import measure, summary

    s = summary(measure([150, 600], image_size=136, out_size=128, batch_size=50))
    data = s["streaming"]["data_growth_bytes"]
    assert data == 450 * 3 * 128 * 128
    assert s["streaming"]["peak_growth_bytes"] < 0.3 * data, s   # measured -1.8 to +3.4 MiB of 21.1 (load noise)
    assert s["device"]["peak_growth_bytes"] > 0.7 * data, s  # the measurement does see a resident set
