"""Input pipeline: easycore's device-resident iterator vs torchvision DataLoaders, same data.

    python -m benchmarks.input_pipeline [--model cnn_tiny] [--workers 0,2] [--rounds 3] [--quick]

Loaders (batch --batch-size, shuffled, random crop pad 4 + horizontal flip unless said otherwise):
  device        easycore.data.loaders.DeviceLoader: uint8 set resident on the device, crop+flip in batch on the device
  tv_pil_w{k}   torch DataLoader(num_workers=k) over a Dataset that, per sample, makes a PIL image from the
                uint8 HWC array and applies torchvision.transforms RandomCrop(32, padding=4) +
                RandomHorizontalFlip + ToTensor (the usual CIFAR recipe; workers persistent)
  tv_tensor_w0  DataLoader over a TensorDataset(uint8) + .float()/255 per batch, NO augmentation
                (the cheapest possible DataLoader: a lower bound on its overhead)
Two measures, interleaved round-robin, median over rounds:
  iterate   one pass over the set touching every batch (moved to the device), no model: batches/s
  epoch     one training epoch of the model (standard loss, SGD) fed by that loader: batches/s
"""
from __future__ import annotations

import sys

from benchmarks._common import base_parser, interleaved, load_data, median, publish, ratio, session, spread, table, timed


class PILTransformDataset:
    """uint8 HWC images -> PIL -> torchvision transforms, one sample at a time (like torchvision's CIFAR10)."""

    def __init__(self, x_hwc, y, transform):
        self.x, self.y, self.transform = x_hwc, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def main(argv=None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--model", default="cnn_tiny", help="the demo net (params.yaml's) for the epoch measure")
    ap.add_argument("--n-per-class", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", default="0,2", help="num_workers values for the PIL DataLoader")
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.n_per_class, args.batch_size, args.workers = "cnn_tiny", 4, 20, "0"
    rounds = args.rounds or (1 if args.quick else 3)
    with session(args) as device:
        return _run(args, rounds, device)


def _run(args, rounds, device) -> int:
    import torch
    import torch.nn.functional as F
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, TensorDataset

    from easycore.data.loaders import DeviceLoader
    from easycore.core.models import build_model

    ds, data_desc = load_data(args.dataset, args.n_per_class, quick=args.quick)
    cuda = device.type == "cuda"
    bs = args.batch_size
    x_hwc = ds.x.permute(0, 2, 3, 1).contiguous().numpy()
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    workers = [int(w) for w in args.workers.split(",") if w.strip()]

    loaders = {"device": DeviceLoader(ds.x, ds.y, batch_size=bs, device=device, shuffle=True, augment=True, seed=0)}
    for w in workers:
        loaders[f"tv_pil_w{w}"] = DataLoader(PILTransformDataset(x_hwc, ds.y.numpy(), tf), batch_size=bs, shuffle=True,
                                             num_workers=w, persistent_workers=w > 0, pin_memory=cuda)
    loaders["tv_tensor_w0"] = DataLoader(TensorDataset(ds.x, ds.y), batch_size=bs, shuffle=True, pin_memory=cuda)
    n_batches = {k: len(v) for k, v in loaders.items()}

    def batches(name):
        epoch = getattr(batches, "epoch", 0) + 1
        batches.epoch = epoch
        ld = loaders[name]
        if name == "device":
            ld.set_epoch(epoch)
            for x, y, _ in ld:
                yield x, y
            return
        for x, y in ld:
            x = x.to(device, non_blocking=True)
            if x.dtype == torch.uint8:
                x = x.float().div_(255)
            yield x, y.to(device, non_blocking=True)

    def iterate(name):
        def go():
            acc = 0.0
            for x, _ in batches(name):
                acc += float(x[0, 0, 0, 0])  # touch each batch (forces any lazy work; syncs on CUDA)
            return acc
        return lambda: n_batches[name] / timed(go, device)

    torch.manual_seed(0)
    model = build_model(args.model, ds.num_classes, ds.in_channels, *ds.stats).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def epoch(name):
        def go():
            for x, y in batches(name):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return lambda: n_batches[name] / timed(go, device)

    print(f"input_pipeline: {data_desc}, batch {bs}, loaders {list(loaders)}, {rounds} rounds on {device}")
    # rates are batches/s (higher is better): ratio(device, x) = device rate / x rate = x time / device time
    t_iter = interleaved({k: iterate(k) for k in loaders}, rounds)
    t_epoch = interleaved({k: epoch(k) for k in loaders}, rounds)
    for ld in loaders.values():  # shut persistent workers down
        getattr(ld, "_iterator", None) and ld._iterator._shutdown_workers()
    rows = []
    for k in loaders:
        rows.append([k, median(t_iter[k]), spread(t_iter[k]), f"{ratio(t_iter, 'device', k):.2f}x",
                     median(t_epoch[k]), spread(t_epoch[k]), f"{ratio(t_epoch, 'device', k):.2f}x"])
    ratio_lines = []
    for w in workers:
        k = f"tv_pil_w{w}"
        r = ratio(t_epoch, "device", k)
        ratio_lines.append(f"- ratio device / {k}: iterate {ratio(t_iter, 'device', k):.2f}x, epoch with {args.model} "
                           f"{r:.2f}x (target >= 2x on CPU for the demo net: {'met' if r >= 2 else 'NOT met'})")
    # Amdahl bound for the epoch ratio: a loader can save at most its own per-batch cost
    if workers:
        k = f"tv_pil_w{workers[0]}"
        t_load, t_dev, t_ep = 1 / median(t_iter[k]), 1 / median(t_iter["device"]), 1 / median(t_epoch["device"])
        bound = (t_ep - t_dev + t_load) / t_ep
        ratio_lines.append(f"- bound on the epoch ratio vs {k} if the loader overlapped nothing: (epoch - device iterate "
                           f"+ {k} iterate) / epoch = {bound:.2f}x (per batch: model step ~{1000 * (t_ep - t_dev):.0f} ms, "
                           f"{k} loading {1000 * t_load:.1f} ms, device loading {1000 * t_dev:.2f} ms)")
    body = "\n".join([
        f"Data: {data_desc}; batch {bs}; demo net {args.model}; {rounds} interleaved rounds (median, "
        f"ratio = median of per-round ratios); device {device}, {torch.get_num_threads()} torch threads.",
        "",
        table(["loader", "iterate batches/s", "range", "device vs it", f"epoch ({args.model}) batches/s", "range",
               "device vs it"], rows),
        "",
        *ratio_lines,
        "- tv_tensor_w0 does no augmentation (lower bound on DataLoader overhead), so it is not a like-for-like baseline.",
    ])
    publish(args, "Input pipeline: DeviceLoader vs torchvision DataLoader", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
