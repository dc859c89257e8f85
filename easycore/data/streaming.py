"""The streaming data path: `StreamingLoader` (the Loader protocol of data.py over a map-style dataset read by
torch.utils.data.DataLoader workers) and `make_loader` (DeviceLoader when the set fits, streaming otherwise).

Batches and order (the contract shared with data.DeviceLoader):
  * epoch e's order over the current subset positions `pos` (all positions when no subset is set) is
        pos[torch.randperm(len(pos), generator=torch.Generator().manual_seed(hash_seed(seed, e)))]
    (pos itself without shuffle): for the full set exactly DeviceLoader's order, so with augmentation off both
    loaders yield the same batches (pixels, labels, idx) for the same seed and epoch;
  * idx = positions in the full set the loader reads (the Source / dataset it was built on);
  * x float32 in [0, 1] [B, C, H, W] on the device (channels_last if asked), y and idx int64 on the device;
    collated as uint8 in the workers (pinned on CUDA), moved, then converted on the device.
Sharding (DDP): rank r of world_size W takes the epoch order the way torch.utils.data.DistributedSampler
  does: the order is padded to ceil(m / W) * W by repeating its head, and rank r takes order[r::W]; every rank
  has the same number of batches (a few samples are seen twice per epoch when W does not divide m).
Augmentation (per sample, in the workers): sample `idx` of epoch e draws from its own
  torch.Generator().manual_seed(hash_seed(seed, e, idx)), so the result does not depend on num_workers,
  batch size, rank or worker scheduling; the loader never touches the global RNG (the DataLoader gets a
  private generator). Recipes (`Recipe`):
  cifar      train: zero-pad `pad` (4) + random crop back to H x W + horizontal flip (p 0.5); eval: none
             (the images must all have one shape; DeviceLoader's on-device augmentation draws the same
             distribution, from other random numbers)
  imagenet   train: RandomResizedCrop(size, scale (0.08, 1), ratio (3/4, 4/3)) + horizontal flip; eval:
             Resize(int(size * 256 / 224)) of the shorter side + CenterCrop(size); size 224, or e.g. 64 for
             cheaper studies; torchvision's functional ops (bilinear, antialiased), parameters drawn as
             torchvision's RandomResizedCrop.get_params draws them, from the per-sample generator.
  All outputs are uint8 [C, size, size] (imagenet) or [C, H, W] (cifar), so batches collate.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from easycore.data.base import (
    DataError,
    DataInfo,
    hash_seed,
    shard,  # DistributedSampler's rule, shared with DeviceLoader
)
from easycore.data.datasets import (
    CHUNK,
    JPEG_EOI,
    JPEG_SOI,
    PNG_IEND,
    PNG_MAGIC,
    Source,
)
from easycore.data.loaders import DeviceLoader


# ----------------------------------------------------------------------------- per-sample transforms
def to_chw_uint8(img) -> torch.Tensor:
    """PIL image, uint8 ndarray [H, W(, C)] or uint8 tensor [C, H, W] -> uint8 tensor [C, H, W] (maybe a
    channels-last view: collation stacks it into a contiguous batch)."""
    if isinstance(img, torch.Tensor):
        return img if img.ndim == 3 else img.unsqueeze(0)
    a = np.array(img, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a).permute(2, 0, 1)


def _hwc(img) -> np.ndarray:
    """uint8 [H, W, C] numpy view/array of a PIL image, ndarray or CHW tensor (not copied when avoidable)."""
    if isinstance(img, torch.Tensor):
        return (img if img.ndim == 3 else img.unsqueeze(0)).permute(1, 2, 0).numpy()
    a = np.asarray(img, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def _hw(img) -> tuple[int, int]:
    if isinstance(img, torch.Tensor):
        return int(img.shape[-2]), int(img.shape[-1])
    w, h = img.size
    return h, w


def resized_crop_params(h: int, w: int, gen: Optional[torch.Generator], scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random resized crop of an h x w image: torchvision's
    RandomResizedCrop.get_params, drawing from `gen` (the default generator when None: then equal to
    torchvision's for the same global seed)."""
    area = h * w
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=gen).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=gen).item())
        cw = int(round(math.sqrt(target_area * aspect)))
        ch = int(round(math.sqrt(target_area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            i = torch.randint(0, h - ch + 1, size=(1,), generator=gen).item()
            j = torch.randint(0, w - cw + 1, size=(1,), generator=gen).item()
            return i, j, ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


@dataclass(frozen=True)
class Recipe:
    """Per-sample transform: `recipe(img, gen)` -> uint8 [C, H, W]; gen None = eval transform (see module doc)."""
    kind: str = "cifar"                  # 'cifar' | 'imagenet'
    size: int = 224                      # imagenet: output side
    pad: int = 4                         # cifar: crop padding
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self):
        if self.kind not in ("cifar", "imagenet"):
            raise ValueError(f"recipe must be 'cifar' or 'imagenet', got {self.kind!r}")

    @property
    def resize_to(self) -> int:
        return int(self.size * 256 / 224)

    def out_shape(self, in_shape: Optional[tuple[int, int, int]], channels: int = 3) -> Optional[tuple[int, int, int]]:
        """(C, H, W) of every output: fixed for imagenet, the input shape for cifar (None if unknown)."""
        return (channels, self.size, self.size) if self.kind == "imagenet" else in_shape

    def __call__(self, img, gen: Optional[torch.Generator]) -> torch.Tensor:
        return self._imagenet(img, gen) if self.kind == "imagenet" else self._cifar(img, gen)

    def _cifar(self, img, gen):
        if gen is None:
            return to_chw_uint8(img)
        p = self.pad
        oy = int(torch.randint(0, 2 * p + 1, (1,), generator=gen))
        ox = int(torch.randint(0, 2 * p + 1, (1,), generator=gen))
        flip = bool(torch.rand(1, generator=gen) < 0.5)
        a = _hwc(img)
        h, w = a.shape[:2]
        dy, dx = oy - p, ox - p  # out[r, c] = padded[r + oy, c + ox] = a[r + dy, c + dx], zero outside a
        out = np.zeros_like(a)
        out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
            a[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
        if flip:
            out = out[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)

    def _imagenet(self, img, gen):
        import torchvision.transforms.v2.functional as F

        if gen is None:
            img = F.resize(img, [self.resize_to], antialias=True)
            img = F.center_crop(img, [self.size, self.size])
        else:
            h, w = _hw(img)
            i, j, ch, cw = resized_crop_params(h, w, gen, self.scale, self.ratio)
            img = F.resized_crop(img, i, j, ch, cw, [self.size, self.size], antialias=True)
            if bool(torch.rand(1, generator=gen) < 0.5):
                img = F.horizontal_flip(img)
        return to_chw_uint8(img)


# ----------------------------------------------------------------------------- dataset wrapper + sampler
def sample_path(base, pos: int) -> str:
    """The file behind sample `pos` of a map-style dataset (ImageFolder, datasets.Positions over one), else
    'sample <pos>'."""
    try:
        while hasattr(base, "positions") and hasattr(base, "base"):
            base, pos = base.base, int(base.positions[pos])
        return str(base.samples[pos][0])
    except (AttributeError, IndexError, TypeError):
        return f"sample {pos}"


def worker_error(e: Exception) -> Exception:
    """A DataError raised in a DataLoader worker comes back wrapped (its message prefixed with 'Caught DataError
    in DataLoader worker process k' and the worker's traceback): the original one-line message, as a DataError."""
    msg = str(e)
    if "Original Traceback" in msg:
        for line in reversed(msg.strip().splitlines()):
            if "DataError: " in line:
                return DataError(line.split("DataError: ", 1)[1])
    return e



class IndexedDataset(torch.utils.data.Dataset):
    """ds[(position, epoch)] -> (uint8 [C, H, W], label, position): `base[position]` through the recipe, with
    augmentation drawn from hash_seed(seed, epoch, position). The epoch travels with the key (from the
    sampler, in the main process), so persistent workers need no notification of the epoch."""

    def __init__(self, base, recipe: Recipe, *, seed: int = 0, augment: bool = False,
                 shape: Optional[tuple[int, ...]] = None):
        self.base, self.recipe, self.seed, self.augment = base, recipe, seed, augment
        self.shape = None if shape is None else tuple(shape)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        pos, epoch = key if isinstance(key, tuple) else (key, 0)
        try:
            img, label = self.base[pos]
            gen = torch.Generator().manual_seed(hash_seed(self.seed, epoch, pos)) if self.augment else None
            x = self.recipe(img, gen)            # a PIL image decodes here (lazily)
        except (OSError, SyntaxError, ValueError) as e:   # PIL: UnidentifiedImageError, "image file is truncated"
            raise DataError(f"cannot decode image {sample_path(self.base, pos)}: {type(e).__name__}: {e}") from None
        if self.shape is not None and tuple(x.shape) != self.shape:
            raise DataError(f"sample {pos} has shape {tuple(x.shape)} after the {self.recipe.kind} recipe, expected "
                            f"{self.shape} (recipe 'cifar' needs images of one size; use 'imagenet' to resize)")
        return x, int(label), pos


def epoch_order(n: int, positions: Optional[torch.Tensor], seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """Epoch `epoch`'s order over `positions` (None = range(n)), int64 CPU: DeviceLoader's order."""
    pos = torch.arange(n) if positions is None else positions
    if not shuffle:
        return pos
    g = torch.Generator(device="cpu").manual_seed(hash_seed(seed, epoch))
    return pos[torch.randperm(len(pos), generator=g)]


class EpochSampler(torch.utils.data.Sampler):
    """Yields (position, epoch) for this rank's part of the current epoch's order (see module doc)."""

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch, self.positions = 0, None

    def set_subset(self, positions) -> None:
        if positions is None:
            self.positions = None
            return
        pos = torch.as_tensor(np.asarray(positions.cpu() if isinstance(positions, torch.Tensor) else positions),
                              dtype=torch.long).reshape(-1)
        if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= self.n):
            raise IndexError(f"subset positions out of range [0, {self.n})")
        self.positions = pos

    def order(self) -> torch.Tensor:
        """The epoch's full order (all ranks), before sharding."""
        return epoch_order(self.n, self.positions, self.seed, self.epoch, self.shuffle)

    def indices(self) -> torch.Tensor:
        return shard(self.order(), self.rank, self.world_size)

    def __len__(self) -> int:
        m = self.n if self.positions is None else len(self.positions)
        return -(-m // self.world_size) if self.world_size > 1 else m

    def __iter__(self):
        e, idx = self.epoch, self.indices()
        for a in range(0, len(idx), 1 << 14):  # chunked: no list of 1.28M tuples for ImageNet
            for p in idx[a:a + (1 << 14)].tolist():
                yield p, e


# ----------------------------------------------------------------------------- the loader
class StreamingLoader:
    """The Loader protocol (data.py) over a map-style dataset read through DataLoader workers.

    dataset[j] -> (image, label) for j in [0, info.n): a torchvision dataset (ImageFolder, ImageNet, CIFAR100,
    SVHN ...) without transforms, or a datasets.Source's dataset (`StreamingLoader.from_source`). Decoding
    and the recipe run in the workers (num_workers 0 = in this process); batches are collated as uint8,
    pinned on CUDA (pin_memory None = auto), moved to `device` and converted to float in [0, 1] there.
    """

    def __init__(self, dataset, info: DataInfo, *, batch_size: int, device="cpu", shuffle: bool = True,
                 augment: bool = False, seed: int = 0, drop_last: bool = False, channels_last: bool = False,
                 recipe: Recipe | str = "cifar", image_size: int = 224, shape: Optional[tuple[int, ...]] = None,
                 num_workers: int = 0, pin_memory: Optional[bool] = None, persistent_workers: bool = False,
                 prefetch_factor: Optional[int] = None, rank: int = 0, world_size: int = 1,
                 multiprocessing_context=None):
        if len(dataset) != info.n:
            raise ValueError(f"dataset has {len(dataset)} samples but info.n = {info.n}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.info, self.batch_size = info, batch_size
        self.device = torch.device(device)
        self.shuffle, self.augment, self.seed = shuffle, augment, seed
        self.drop_last, self.channels_last = drop_last, channels_last
        self.recipe = recipe if isinstance(recipe, Recipe) else Recipe(recipe, size=image_size)
        self.sampler = EpochSampler(info.n, seed=seed, shuffle=shuffle, rank=rank, world_size=world_size)
        self.pin = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)
        self.dataset = IndexedDataset(dataset, self.recipe, seed=seed, augment=augment,
                                      shape=self.recipe.out_shape(shape, info.in_channels) if shape else None)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, sampler=self.sampler, drop_last=drop_last,
            num_workers=num_workers, pin_memory=self.pin, persistent_workers=persistent_workers and num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            generator=torch.Generator().manual_seed(hash_seed(seed, -2)),  # keeps the global RNG untouched
            multiprocessing_context=multiprocessing_context if num_workers > 0 else None)

    @classmethod
    def from_source(cls, source: Source, **kw) -> "StreamingLoader":
        """A loader over a datasets.Source (its dataset, info, recipe kind and image shape)."""
        kw.setdefault("recipe", source.recipe)
        kw.setdefault("shape", source.shape)
        return cls(source.dataset, source.info, **kw)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = int(epoch)

    def set_subset(self, positions) -> None:
        """Iterate only over `positions` (positions in the full set; None = all) from now on."""
        self.sampler.set_subset(positions)

    def __len__(self) -> int:
        k = len(self.sampler)
        return k // self.batch_size if self.drop_last else -(-k // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        nb = self.pin
        for xb, yb, ib in _unwrapped(self.loader):
            xb = xb.to(self.device, non_blocking=nb).float().div_(255)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb.to(self.device, non_blocking=nb), ib.to(self.device, non_blocking=nb)


# ----------------------------------------------------------------------------- device-or-streaming
def _unwrapped(loader):
    """Iterate a DataLoader; a worker's DataError comes out as the worker's one-line DataError (`worker_error`)."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except DataError as e:
            raise worker_error(e) from None
        yield batch


def decode_all(source: Source, *, recipe: Optional[Recipe] = None, image_size: int = 224, num_workers: int = 0,
               batch_size: int = 256, keep: bool = True) -> torch.Tensor:
    """The whole source through the eval recipe as one uint8 tensor [n, C, H, W] (in order): what DeviceLoader
    holds. Array-backed sources return their tensor as is. keep=False: decode every image and keep nothing (a
    check; returns an empty tensor). A file that cannot be decoded: DataError naming it."""
    if source.x is not None:
        return source.x
    recipe = recipe or Recipe(source.recipe, size=image_size)
    shape = recipe.out_shape(source.shape, source.in_channels)
    ds = IndexedDataset(source.dataset, recipe, shape=shape)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers,
                                     generator=torch.Generator().manual_seed(0))
    out = None
    for xb, _, ib in _unwrapped(dl):
        if not keep:
            continue
        if out is None:
            out = torch.empty((len(source),) + tuple(xb.shape[1:]), dtype=torch.uint8)
        out[ib] = xb
    return out if out is not None else torch.empty((0,) + (shape or (source.in_channels, 0, 0)), dtype=torch.uint8)


def default_budget(device) -> int:
    """Bytes the uint8 set may take on `device` for DeviceLoader: a quarter of the device's total memory (CUDA:
    the GPU's; CPU: physical RAM). Deterministic per machine type (not the momentary free memory), so the same
    params on the same hardware always pick the same loader."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def resident_bytes(source: Source, recipe: Recipe) -> Optional[int]:
    """Bytes of the uint8 set after the eval recipe (None when image sizes vary and the recipe keeps them)."""
    shape = recipe.out_shape(source.shape, source.in_channels)
    return None if shape is None else len(source) * math.prod(shape)


def choose_loader(source: Source, *, device, augment: bool, image_size: int = 224,
                  memory_budget: Optional[int] = None, world_size: int = 1) -> str:
    """'device' or 'streaming' (the rule of make_loader): 'device' iff
      (1) every sample has one shape after the eval recipe (arrays, CIFAR-size folders, or the imagenet recipe),
      (2) the augmentation can run on the device: no augmentation, or the cifar recipe (DeviceLoader's crop +
          flip; RandomResizedCrop needs the full-size image, so ImageNet training always streams),
      (3) n * C * H * W bytes <= memory_budget (default: default_budget(device)); world_size is accepted for
          callers' symmetry: both loaders shard by rank the same way (dist.shard)."""
    recipe = Recipe(source.recipe, size=image_size)
    nbytes = resident_bytes(source, recipe)
    budget = default_budget(device) if memory_budget is None else memory_budget
    ok = nbytes is not None and (not augment or recipe.kind == "cifar") and nbytes <= budget
    return "device" if ok else "streaming"


def make_loader(source: Source, *, batch_size: int, device="cpu", shuffle: bool = True, augment: bool = False,
                seed: int = 0, drop_last: bool = False, channels_last: bool = False, image_size: int = 224,
                memory_budget: Optional[int] = None, kind: str = "auto", num_workers: int = 0,
                pin_memory: Optional[bool] = None, persistent_workers: bool = False, rank: int = 0,
                world_size: int = 1):
    """A Loader over `source`: DeviceLoader (the uint8 set decoded once, resident on `device`) when
    choose_loader says 'device' (kind 'auto'), else StreamingLoader; kind 'device' / 'streaming' forces one.
    Both carry `source.info` (the same fingerprint), so artifacts do not depend on the choice; with
    augmentation on, the random crops differ between the two (same distribution, other random numbers)."""
    if kind == "auto":
        kind = choose_loader(source, device=device, augment=augment, image_size=image_size,
                             memory_budget=memory_budget, world_size=world_size)
    if kind == "streaming":
        return StreamingLoader.from_source(source, batch_size=batch_size, device=device, shuffle=shuffle,
                                           augment=augment, seed=seed, drop_last=drop_last,
                                           channels_last=channels_last, image_size=image_size,
                                           num_workers=num_workers, pin_memory=pin_memory,
                                           persistent_workers=persistent_workers, rank=rank, world_size=world_size)
    if kind != "device":
        raise ValueError(f"loader kind must be 'auto', 'device' or 'streaming', got {kind!r}")
    if augment and source.recipe != "cifar":
        raise ValueError(f"DeviceLoader augments with the cifar recipe only; {source.name} needs kind 'streaming'")
    x = decode_all(source, image_size=image_size, num_workers=num_workers)
    return DeviceLoader(x, torch.as_tensor(source.labels), batch_size=batch_size, device=device, shuffle=shuffle,
                        augment=augment, seed=seed, drop_last=drop_last, channels_last=channels_last, info=source.info,
                        rank=rank, world_size=world_size)


def header_problem(path) -> Optional[str]:
    """A cheap check of one image file (two small reads, no decode): empty, or a JPEG / PNG without its end
    marker (a truncated copy). None when the file looks whole; other formats are left to the decoder."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if not head:
                return "empty file"
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError as e:
        return f"cannot read: {e.strerror}"
    if head.startswith(JPEG_SOI) and JPEG_EOI not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if head.startswith(PNG_MAGIC) and PNG_IEND not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


def check_files(source: "Source", *, decode: bool = False, num_workers: int = 0, image_size: int = 64) -> int:
    """Check every file of a file-per-image (sub)set before any training: the header check (`header_problem`) of
    each file, and with decode=True a full decode of each through the eval recipe in DataLoader workers (the
    check `prepare --verify` runs). DataError naming the first bad file ('cannot decode image <file>: ...').
    Returns the number of files checked (0 for array-backed sets)."""
    if source.samples is None:
        return 0
    for a in range(0, len(source), CHUNK):
        for f in source.files(a, a + CHUNK):
            why = header_problem(Path(source.folder) / f)
            if why:
                raise DataError(f"cannot decode image {Path(source.folder) / f}: {why}; replace or remove the file "
                                f"and run prepare again")
    if decode:
        from easycore.data.streaming import decode_all

        decode_all(source, image_size=image_size, num_workers=num_workers, keep=False)
    return len(source)
