"""The pipeline's stages as plain functions: check -> prepare -> proxy -> select -> train -> evaluate.

Each reads validated params, checks the fingerprints of what it reads, logs what it read and wrote, prints its key
result, and writes atomically. The CLI (`easycore <stage>`) and the DVC stages call these; run names and paths come
from `runs.py`. Outputs hold no wall-clock values (byte-identical when recomputed on one machine); each run's wall
time and pass counts go to `runs/timings/<stage>/...json` (a log, not a DVC output).

  data/prepared/{train,test}.safetensors, info.json        prepare
  runs/proxy/<name>/s<seed>/{dynamics.npz,model.safetensors,history.json,summary.json}   proxy (main | transfer)
  runs/coresets/<scores>/<method>-<fraction>/s<seed>/{indices.npy,summary.json}       select
  runs/train/<scores>/<run>/{model.safetensors,history.json}                      train
  runs/eval/<scores>/<run>/{metrics.json,outcomes.npz}                            evaluate

Several processes (`torchrun --nproc_per_node=N -m easycore proxy|train ...`, easycore/core/dist.py): the proxy and train
stages join the process group, train with DDP, and rank 0 alone computes the final-model pass and writes every
output; the other ranks return {} once training ends.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from easycore.config import ConfigError, Params
from easycore.core import dist
from easycore.core.aign import AIGNTracker
from easycore.core.runtime import slow_cpu_bf16, use_amp
from easycore.core.train import (
    accuracy,
    config_hash,
    remove_state,
    resolve_device,
    save_model,
    train,
)
from easycore.data.base import ArrayDataset
from easycore.data.loaders import load_dataset
from easycore.pipeline import runs
from easycore.store import (
    ArtifactError,
    load_arrays,
    read_json,
    save_arrays,
    write_json,
)

log = logging.getLogger("easycore")

PREPARED = Path("data/prepared")
CODE = Path("runs/code")


def _say(msg: str) -> None:
    """A stage's key result: printed (what a user of the CLI sees), and logged."""
    print(msg, flush=True)


def write_timing(stage: str, name: str, seconds: float, **extra) -> Path:
    """Wall time (and any counts) of one stage run, and when it ended (UTC), as a log beside the outputs (not a DVC
    output): benchmarks/study_wall.py lays a study's runs out in time from them."""
    path = Path("runs/timings") / stage / f"{name}.json"
    ended = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return write_json(path, {"seconds": round(float(seconds), 2), "ended": ended, **extra})


CALLBACK_PIECES = {"aign": "exact AIGN pass", "schedule": "coreset re-selection (adaptive)", "eval": "test accuracy"}
"""What each training-loop callback's epoch hooks spend their time on (its name -> the piece of a run's cost)."""


def pieces_of(res, *, after: float = 0.0, after_name: str = "after training") -> dict:
    """A run's seconds by piece, for its timing log: the optimiser steps (the epochs less the callbacks' epoch hooks),
    each callback's hooks (the AIGN pass, an adaptive method's re-selections, ...), and what runs `after` training."""
    hooks = {CALLBACK_PIECES.get(k, k): round(v, 2) for k, v in sorted(res.callback_seconds.items())}
    out = {"optimiser steps": round(sum(res.epoch_seconds) - sum(res.callback_seconds.values()), 2), **hooks}
    if after:
        out[after_name] = round(after, 2)
    return out


# ----------------------------------------------------------------------------- check
def check(params: Params, out: Path = CODE, *, matrix: Path = runs.MATRIX) -> None:
    """The first stage: params are valid (load_params already checked them) and every registry imports. Writes
    runs/code/<command>.txt (deps.write_manifests), which every other stage depends on: DVC runs nothing else when
    params are bad (no param reaches a shell unvalidated), and a stage re-runs exactly when code it can run changed;
    and runs/params/<family>.json (deps.write_params), the params of the many-run families (select, train, eval).
    First matrix.yaml (runs.write_matrix), the lists dvc.yaml expands: when params declare other runs than it lists,
    it is rewritten and, as a DVC stage (DVC already expanded the old lists), the stage stops: run `dvc repro` again."""
    from easycore.pipeline.deps import PARAMS, write_manifests, write_params
    from easycore.registry import registry

    for kind in ("methods", "modes", "models", "datasets", "attacks"):
        registry(kind)  # import every registry: a broken registration fails here, before any stage
    slow = slow_cpu_bf16(params.runtime, resolve_device(params.runtime.device))
    if slow:
        _say(f"check: WARNING {slow}")
    if runs.write_matrix(params, matrix):
        if os.environ.get(runs.DVC_STAGE):
            raise ConfigError(f"check: params.yaml declares other runs than {matrix} listed (dvc.yaml's stages); "
                              f"{matrix} is rewritten: run `dvc repro` again (nothing else ran)")
        _say(f"check: wrote {matrix} (the runs dvc.yaml expands)")
    write_manifests(out)
    write_params(params, Path(out).parent / PARAMS.name)
    _say(f"check: params valid; {len(runs.expected_runs(params))} training runs declared")


# ----------------------------------------------------------------------------- prepare
def _streams(params: Params) -> bool:
    """Is the dataset read through the streaming loader (files decoded by DataLoader workers) rather than held in
    memory: ImageNet always, others with data.loader 'streaming'."""
    from easycore.data.loaders import DATASETS

    return params.data.loader == "streaming" or bool(DATASETS.get(params.data.dataset).meta.get("streaming"))


def prepare(params: Params, out_dir: Path = PREPARED, *, verify: bool = False) -> dict:
    """The (subset of the) train and test splits: uint8 pixels for in-memory data, or for streamed data (ImageNet)
    a manifest (labels, official positions, the file-manifest fingerprint) that the later stages re-open.
    Before writing anything: the test split's class list must be the train split's (`datasets.check_classes`), and
    every selected file of a file-per-image set passes a header check (`datasets.check_files`; verify: a full
    decode of each in data.workers workers, `easycore prepare --verify`). DataError naming the folder / file."""
    from easycore.data.loaders import balanced_subset
    from easycore.store import save_tensors

    d = params.data
    root = d.resolved_root()
    out_dir = Path(out_dir)
    sets = []
    for split, n_pc, key in (("train", d.n_per_class, "data.n_per_class"), ("test", d.test_n_per_class,
                                                                           "data.test_n_per_class")):
        if _streams(params):
            from easycore.data.datasets import open_dataset

            full = open_dataset(d.dataset, split, root, download=d.download)
            sets.append(full.subset(balanced_subset(full.labels, n_pc, d.seed, key=key)))
        else:
            sets.append(load_dataset(d.dataset, split, root, download=d.download, n_per_class=n_pc, seed=d.seed,
                                     key=key))
    from easycore.data.datasets import check_classes
    from easycore.data.streaming import check_files

    check_classes(d.dataset, sets[0].classes, sets[1].classes, getattr(sets[1], "folder", None))
    for ds in sets:
        if _streams(params) and check_files(ds, decode=verify, num_workers=d.workers,
                                            image_size=min(d.image_size or 224, 64)):
            log.info("prepare: %s: %d files %s", ds.split, len(ds), "decoded" if verify else "header-checked")
    for ds in sets:  # both splits read and checked before anything is written
        if _streams(params):
            save_tensors(out_dir / f"{ds.split}.safetensors", {"y": torch.as_tensor(ds.labels),
                                                               "index": torch.as_tensor(ds.index)},
                         {"name": ds.name, "split": ds.split, "classes": list(ds.classes),
                          "fingerprint": ds.fingerprint, "streaming": True, **decode_recipe(params)})
        else:
            ds.save(out_dir / f"{ds.split}.safetensors")
    tr, te = sets
    info = {"dataset": d.dataset, "classes": list(tr.classes), "streaming": _streams(params),
            "train": {"n": len(tr), "fingerprint": tr.fingerprint, "per_class": np.bincount(tr.labels).tolist()},
            "test": {"n": len(te), "fingerprint": te.fingerprint, "per_class": np.bincount(te.labels).tolist()}}
    if _streams(params):
        info.update(decode_recipe(params))
    write_json(out_dir / "info.json", info)
    log.info("prepare: read %s from %s; wrote %s/{train,test}.safetensors, info.json", d.dataset, root, out_dir)
    _say(f"prepare: {d.dataset} train {len(tr)} / test {len(te)} samples ({tr.fingerprint})")
    return info


def decode_recipe(params: Params) -> dict:
    """How the later stages decode a streamed set's files (the side the images are resized to): part of the
    prepared manifest, so the stages that depend on it re-run when it changes (`prepare` is the stage that depends
    on data.*), and checked against the params when the manifest is re-opened."""
    return {"image_size": params.data.image_size or 224}


def load_prepared(prepared: Path = PREPARED, params: Optional[Params] = None):
    """(train, test): ArrayDatasets, or for a streamed dataset `datasets.Source`s re-opened under data.root at the
    prepared positions (their fingerprint must match the manifest's)."""
    from easycore.store import load_tensors

    prepared = Path(prepared)
    out = []
    for split in ("train", "test"):
        f = prepared / f"{split}.safetensors"
        if not f.exists():
            raise ArtifactError(f"missing {f}; run `easycore prepare` (or dvc repro) first")
        tensors, meta = load_tensors(f)
        if not meta.get("streaming"):
            out.append(ArrayDataset.load(f))
            continue
        from easycore.data.datasets import open_dataset

        if params is None:
            raise ArtifactError(f"{f} is a manifest of streamed data: the data root (params) is needed to open it")
        for key, want in decode_recipe(params).items():
            if meta.get(key) != want:
                raise ArtifactError(f"{f} was prepared for data.{key} {meta.get(key)!r} but the params say {want!r}; "
                                    f"re-run `easycore prepare` (dvc repro)")
        src = open_dataset(meta["name"], split, params.data.resolved_root(), positions=tensors["index"].numpy())
        if src.fingerprint != meta["fingerprint"]:
            raise ArtifactError(f"the {split} files under {params.data.resolved_root()} ({src.fingerprint}) are not the "
                                f"ones {f} was prepared from ({meta['fingerprint']}); re-run `easycore prepare`")
        out.append(src)
    return tuple(out)


def make_loader(params: Params, ds, *, batch_size: int, shuffle: bool, augment: bool, seed: int, device,
                channels_last: Optional[bool] = None, shard: bool = True, per_process: bool = False):
    """The Loader of a prepared set: DeviceLoader for an ArrayDataset (the whole set on the device), else
    `streaming.make_loader` (data.loader, data.workers, data.image_size). Under torchrun each rank gets its shard
    (shard=False: the whole set), with batch_size // world per step (the global batch; per_process: batch_size
    per step, for scoring passes)."""
    from easycore.data.loaders import DeviceLoader

    chl = params.runtime.channels_last if channels_last is None else channels_last
    world, rank = (dist.world(), dist.rank()) if shard else (1, 0)
    bs = batch_size if per_process else batch_size // world
    if isinstance(ds, ArrayDataset):
        return DeviceLoader(ds.x, ds.y, batch_size=bs, device=device, shuffle=shuffle, augment=augment,
                            seed=seed, channels_last=chl, info=ds.info, rank=rank, world_size=world)
    from easycore.data.streaming import make_loader as stream

    return stream(ds, batch_size=bs, device=device, shuffle=shuffle, augment=augment, seed=seed,
                  channels_last=chl, image_size=params.data.image_size or 224, num_workers=params.data.workers,
                  kind="auto" if params.data.loader == "auto" else params.data.loader, rank=rank, world_size=world)


def decode_at(params: Params, ds, positions) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples at `positions` as (uint8 [k, C, H, W], labels [k]) through the eval recipe."""
    positions = np.asarray(positions, dtype=np.int64)
    if isinstance(ds, ArrayDataset):
        idx = torch.as_tensor(positions)
        return ds.x[idx], ds.y[idx]
    from easycore.data.streaming import decode_all

    sub = ds.subset(positions)
    return decode_all(sub, image_size=params.data.image_size or 224, num_workers=params.data.workers), \
        torch.as_tensor(sub.labels)


def _model_meta(ds, model: str, **extra) -> dict:
    info = ds.info
    return {"model": model, "num_classes": info.num_classes, "in_channels": info.in_channels, "mean": list(info.mean),
            "std": list(info.std), "dataset": info.name, "classes": list(info.classes), **extra}


# ----------------------------------------------------------------------------- proxy
def proxy(params: Params, name: str = "main", out_dir: Optional[Path] = None, *, seed: int = 0,
          prepared: Path = PREPARED, progress: bool = True) -> dict:
    """Replicate `seed` of proxy run `name` (main or a transfer model): standard training on the full (prepared)
    training set with seed proxy.seed + seed, recording AIGN + dynamics every tracked epoch; then penultimate
    features and DeepFool distances at the final model. Under torchrun: DDP training; rank 0 does the rest ({} on
    the other ranks)."""
    with dist.session(params.runtime.device):
        return _proxy(params, name, out_dir, seed=seed, prepared=prepared, progress=progress)


def proxy_all(params: Params, name: str = "main", *, prepared: Path = PREPARED, progress: bool = True) -> list[dict]:
    """Every replicate of proxy run `name` (`runs.proxy_seeds`), one after another in one process: the proxy stage
    of that run (its folder runs/proxy/<name>/ is the stage's one output)."""
    with dist.session(params.runtime.device):
        return [_proxy(params, name, None, seed=s, prepared=prepared, progress=progress)
                for s in runs.proxy_seeds(params, name)]


def _proxy(params: Params, name: str, out_dir: Optional[Path], *, seed: int, prepared: Path, progress: bool) -> dict:
    from easycore.core.attacks import deepfool_distance

    p = params.proxy
    model_name = p.model_of(name)
    state = runs.state_path_for(out_dir) if out_dir else runs.proxy_state(name, seed)
    out_dir = Path(out_dir or runs.proxy_dir(name, seed))
    pseed = p.seed + int(seed)    # the replicate's proxy seed
    tr, te = load_prepared(prepared, params)
    cfg = p.as_train(model_name)
    dist.check_batch_size(cfg.batch_size, "proxy.batch_size")
    device = dist.local_device(resolve_device(params.runtime.device))
    tracker = AIGNTracker(n=len(tr), mode=p.aign.mode, every=p.aign.every, epochs=p.epochs)
    score = make_loader(params, tr, batch_size=p.aign.batch_size, shuffle=False, augment=False, seed=pseed,
                        device=device, per_process=True)
    drop_stale_state(state, out_dir / "model.safetensors")
    log.info("proxy %s s%d: %s on %s (%d epochs, seed %d, AIGN %s every %d)", name, seed, model_name, tr.describe(),
             p.epochs, pseed, p.aign.mode, p.aign.every)
    loader = make_loader(params, tr, batch_size=cfg.batch_size, shuffle=True, augment=cfg.augment, seed=pseed,
                         device=device)
    res = train(cfg, loader, mode="standard", seed=pseed, runtime=params.runtime, state_path=state, tracker=tracker,
                score_loader=score, progress=progress)
    if not dist.is_main():
        return {}
    net = res.model.eval()
    t_after = time.perf_counter()
    feats, dists = [], []
    plain = make_loader(params, tr, batch_size=p.aign.batch_size, shuffle=False, augment=False, seed=pseed,
                        device=device, channels_last=False, shard=False)
    with_deepfool = runs.needs_deepfool(params, name, seed)
    amp = use_amp(params.runtime, device)
    for xb, _, _ in plain:  # final model: features (+ DeepFool distances where read), one pass in order
        with torch.no_grad():
            feats.append(net.features(xb).float().cpu())
        if with_deepfool:
            dists.append(deepfool_distance(net, xb, steps=p.deepfool_steps, amp=amp,
                                           num_classes=p.deepfool_candidates or None).float().cpu())
    arrays = tracker.matrices()
    arrays.update(features=torch.cat(feats).numpy(), labels=np.asarray(tr.labels),
                  tracked_epochs=np.asarray(tracker.tracked_epochs, dtype=np.int64))
    if with_deepfool:
        arrays["deepfool"] = torch.cat(dists).numpy()
    test_acc = accuracy(net, te if isinstance(te, ArrayDataset) else
                        make_loader(params, te, batch_size=p.aign.batch_size, shuffle=False, augment=False, seed=0,
                                    device=device))
    meta = {"fingerprint": tr.fingerprint, "n": len(tr), "model": model_name, "aign_mode": p.aign.mode,
            "every": p.aign.every, "epochs": p.epochs, "replicate": int(seed), "seed": pseed,
            "params": dataclasses.asdict(p),
            "test_acc": test_acc}
    save_arrays(out_dir / "dynamics.npz", arrays, meta)
    save_model(out_dir / "model.safetensors", net, _model_meta(tr, model_name, fingerprint=tr.fingerprint, role="proxy"))
    write_json(out_dir / "history.json", res.history)
    write_json(out_dir / "summary.json", {k: v for k, v in meta.items() if k != "params"} |
               {"bytes_per_sample": int(sum(a.nbytes for a in arrays.values()) / len(tr))})
    after = time.perf_counter() - t_after
    write_timing("proxy", f"{name}-s{seed}", res.seconds + after, **res.counts, training_seconds=round(res.seconds, 2),
                 pieces=pieces_of(res, after=after, after_name="features, DeepFool, test accuracy" if with_deepfool
                                  else "features, test accuracy"))
    remove_state(state)
    log.info("proxy %s s%d: wrote %s/{dynamics.npz,model.safetensors,history.json,summary.json}", name, seed, out_dir)
    _say(f"proxy {name} s{seed}: {model_name}, {p.epochs} epochs, seed {pseed}, test accuracy {test_acc:.3f} "
         f"({res.seconds:.0f}s)")
    return meta


# ----------------------------------------------------------------------------- select
def select(params: Params, method: str, fraction: float, scores: str = "main", out_dir: Optional[Path] = None, *,
           seed: int = 0, prepared: Path = PREPARED) -> dict:
    """Replicate `seed`'s static coreset of `method` at `fraction`: from the records of that replicate's proxy run
    `scores`, every seeded choice (random draws, ties) seeded by coreset.seed + seed."""
    from easycore.core.coresets import run_select

    c = params.coreset
    params.proxy.model_of(scores)
    tr, _ = load_prepared(prepared, params)
    out_dir = Path(out_dir or runs.selection_dir(scores, method, fraction, seed))
    summary = run_select(method, fraction, runs.proxy_dir(scores, seed) / "dynamics.npz", out_dir / "indices.npy",
                         out_dir / "summary.json", fingerprint=tr.fingerprint, labels=np.asarray(tr.labels),
                         balanced=c.balanced, seed=c.seed + int(seed), window=c.window, p=c.p, squared=c.squared,
                         score_epochs=c.score_epochs, ccs_score=c.ccs_score, ccs_cutoff=c.ccs_cutoff,
                         moderate_band=c.moderate_band)
    log.info("select: wrote %s/{indices.npy,summary.json}", out_dir)
    _say(f"select: {method} f={fraction:g} from proxy {scores} s{seed}: {summary['n_selected']} of "
         f"{summary['n_total']} samples")
    return summary


def select_all(params: Params, scores: str = "main", *, prepared: Path = PREPARED) -> list[dict]:
    """Every static coreset the pipeline makes from proxy run `scores` (`runs.selections`), in one process: the
    select stage of that proxy (its folder runs/coresets/<scores>/ is the stage's one output)."""
    pairs = runs.selections(params, scores)
    if not pairs:   # a transfer proxy whose scores are compared, not trained on (coreset.transfer_methods: [])
        out = runs.ROOT / "coresets" / scores
        write_json(out / "summary.json", {"scores": scores, "selections": []})
        _say(f"select: no coreset is trained on proxy {scores}'s scores (coreset.transfer_methods is empty); "
             f"wrote {out}/summary.json")
        return []
    return [select(params, m, f, scores, seed=s, prepared=prepared) for m, f, s in pairs]


def read_indices(path: Path, train_set) -> np.ndarray:
    """A selection's indices, checked: the selection was made on this data, the array is a 1-D integer array of
    unique positions inside the set. ArtifactError (one line) otherwise."""
    path = Path(path)
    summ_path = path.with_name("summary.json")
    if summ_path.exists():
        summ = read_json(summ_path)
        if summ.get("fingerprint") not in (None, train_set.fingerprint):
            raise ArtifactError(f"{path} was selected on other data ({summ.get('fingerprint')}) than the prepared "
                                f"train set ({train_set.fingerprint}); re-run select")
    if not path.exists():
        raise ArtifactError(f"missing {path}; run the select stage that makes it (dvc repro)")
    try:
        idx = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise ArtifactError(f"cannot read {path} (ValueError: {e}): corrupt or truncated; delete it and "
                                f"re-run select") from None
        raise ArtifactError(f"refusing to load {path}: an object array (Python objects, needs pickle); indices "
                            f"must be integers; re-run select") from None
    except Exception as e:
        raise ArtifactError(f"cannot read {path} ({type(e).__name__}: {e}): corrupt or truncated; delete it and "
                            f"re-run select") from None
    if idx.dtype.kind not in "iu":
        raise ArtifactError(f"{path}: indices must be integers, got dtype {idx.dtype}; re-run select")
    if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= len(train_set))) or len(np.unique(idx)) != len(idx):
        raise ArtifactError(f"{path}: indices must be unique positions in [0, {len(train_set)})")
    if len(idx) == 0:
        raise ArtifactError(f"{path}: the coreset is empty (0 samples); nothing to train on: use a larger fraction")
    return idx.astype(np.int64)


def drop_stale_state(state: Path, output: Path) -> bool:
    """A run's resume checkpoint is stale once the run's outputs exist and are newer than it (outputs restored by
    `dvc repro` from the cache, or a process killed between writing its outputs and removing the checkpoint):
    remove it with a warning, so it is never resumed. A checkpoint newer than the outputs (a re-run interrupted
    while the previous outputs were still there) is kept. Returns whether one was removed."""
    try:
        if not (state.exists() and output.exists() and output.stat().st_mtime_ns >= state.stat().st_mtime_ns):
            return False
        state.unlink()
    except FileNotFoundError:
        return False
    log.warning("removed stale checkpoint %s: the run's outputs (%s) are newer; starting fresh", state, output)
    return True


# ----------------------------------------------------------------------------- train
def train_run(params: Params, out_dir: Path, *, mode: str, seed: int, indices: Optional[Path] = None,
              adaptive: Optional[tuple[str, float]] = None, model: Optional[str] = None, prepared: Path = PREPARED,
              progress: bool = True, state: Optional[Path] = None, keep_state: bool = False,
              name: Optional[str] = None) -> dict:
    """Train in `mode` on the coreset `indices` (positions in the prepared train set), on an adaptive coreset
    `adaptive` = (method, fraction) re-selected during training, or (neither) on the full set.
    `state`: the resume checkpoint (default beside out_dir); keep_state: leave the final checkpoint for the caller
    to remove (a group keeps its finished runs' checkpoints until the whole group is written, so a killed group
    resumes every run where it stopped); `name`: the run's name in logs and timings.
    Under torchrun: DDP training; rank 0 writes the outputs ({} on the other ranks)."""
    with dist.session(params.runtime.device):
        return _train_run(params, out_dir, mode=mode, seed=seed, indices=indices, adaptive=adaptive, model=model,
                          prepared=prepared, progress=progress, state=state, keep_state=keep_state, name=name)


def _train_run(params: Params, out_dir: Path, *, mode: str, seed: int, indices: Optional[Path],
               adaptive: Optional[tuple[str, float]], model: Optional[str], prepared: Path, progress: bool,
               state: Optional[Path] = None, keep_state: bool = False, name: Optional[str] = None) -> dict:
    t = params.train
    tr, te = load_prepared(prepared, params)
    device = dist.local_device(resolve_device(params.runtime.device))
    source, callbacks = "full", []
    if indices is not None:
        tr = tr.subset(np.sort(read_indices(indices, tr)))
        source = str(indices)
    elif adaptive is not None:
        from easycore.core.acs import schedule_callback
        from easycore.core.coresets import budget

        if budget(adaptive[1], len(tr)) < 1:
            raise ArtifactError(f"coreset fraction {adaptive[1]!r} of {len(tr)} training samples keeps 0 samples; "
                                f"use a fraction >= {0.5 / max(len(tr), 1):.3g}")

        score = make_loader(params, tr, batch_size=256, shuffle=False, augment=False, seed=seed, device=device,
                            shard=False)
        callbacks.append(schedule_callback(params, adaptive[0], adaptive[1], np.asarray(tr.labels), score, mode=mode,
                                           seed=seed))
        source = f"adaptive {adaptive[0]} f={adaptive[1]:g}"
    cfg = dataclasses.replace(t, model=model or t.model)
    if indices is None and adaptive is None and t.full_epochs:    # the full-data reference's own epochs
        cfg = dataclasses.replace(cfg, epochs=t.full_epochs)
    dist.check_batch_size(cfg.batch_size, "train.batch_size")
    out_dir = Path(out_dir)
    label = name or out_dir.name                         # what the user reads; timings go by the run's path
    name = name or f"{out_dir.parent.name}/{out_dir.name}"
    state = Path(state) if state is not None else runs.state_path_for(out_dir)
    if not keep_state:  # (a group keeps its own runs' checkpoints, finished ones too, until it is all written)
        drop_stale_state(state, out_dir / "model.safetensors")
    log.info("train %s: %s %s on %s (%s)", name, cfg.model, mode, tr.describe(), source)
    loader = make_loader(params, tr, batch_size=cfg.batch_size, shuffle=True, augment=cfg.augment, seed=seed,
                         device=device)
    test = te if isinstance(te, ArrayDataset) else make_loader(params, te, batch_size=256, shuffle=False,
                                                                augment=False, seed=0, device=device, shard=False)
    res = train(cfg, loader, mode=mode, seed=seed, runtime=params.runtime, state_path=state, test_set=test,
                callbacks=callbacks, progress=progress)
    if not dist.is_main():
        return {}
    test_acc = accuracy(res.model, test)
    meta = _model_meta(tr, cfg.model, fingerprint=tr.fingerprint, mode=mode, seed=seed, source=source,
                       n_train=len(tr), config_hash=config_hash(dataclasses.asdict(cfg)), counts=res.counts,
                       test_acc=test_acc)
    save_model(out_dir / "model.safetensors", res.model, meta)
    write_json(out_dir / "history.json", res.history)
    if res.epochs_run:  # (a run restored whole from its final checkpoint keeps the timing of when it trained)
        write_timing("train", name, res.seconds, **res.counts, pieces=pieces_of(res))
    if not keep_state:
        remove_state(state)
    log.info("train: wrote %s/{model.safetensors,history.json}", out_dir)
    _say(f"train: {label}: {cfg.model} {mode} on {res.counts['examples'] // max(cfg.epochs, 1)} samples/epoch, "
         f"test accuracy {test_acc:.3f} ({res.seconds:.0f}s)")
    return meta


def train_named(params: Params, run: runs.Run, *, progress: bool = True, keep_state: bool = False) -> dict:
    """The training run `run` of the pipeline (paths from runs.py)."""
    from easycore.core.methods import METHODS

    kind = METHODS.get(run.method).kind
    where = dict(mode=run.mode, seed=run.seed, progress=progress, state=run.state_path(), keep_state=keep_state,
                 name=run.key)
    if run.scores != runs.NONE:
        return train_run(params, run.train_dir(), indices=run.selection_dir() / "indices.npy", **where)
    if kind == "adaptive":
        return train_run(params, run.train_dir(), adaptive=(run.method, run.fraction), **where)
    if kind == "reference":
        return train_run(params, run.train_dir(), **where)
    raise ArtifactError(f"{run.key}: a static method needs the proxy run that scored it (scores main or a transfer "
                        f"model), not {runs.NONE!r}")


# ----------------------------------------------------------------------------- evaluate
def check_model_fits(model_path, mmeta: dict, info) -> None:
    """A model is evaluated only on the data it was built for: its metadata's dataset, classes and input channels
    are those of the test set's DataInfo `info`. ArtifactError (one line) otherwise."""
    for key, want in (("dataset", info.name), ("num_classes", info.num_classes), ("in_channels", info.in_channels)):
        got = mmeta.get(key)
        if key == "dataset" and got is None:           # models written before the key existed
            continue
        if got != want:
            raise ArtifactError(f"{model_path} was built for {key} {got!r} but the test set has {want!r} "
                                f"({info.name}); evaluate it on its own data or re-train it")


def evaluate_run(params: Params, model_path: Path, out_dir: Path, *, prepared: Path = PREPARED,
                 progress: bool = True, name: Optional[str] = None) -> dict:
    """Clean and attacked accuracy (eval params, at the headline eps of the model's training mode) of the model at
    `model_path` on the first eval.n_test test images."""
    test = load_test(params, prepared)
    return _evaluate(params, test, model_path, out_dir, progress=progress, name=name)


@dataclasses.dataclass
class TestImages:
    """The evaluated test images, decoded once (a group evaluates every model on the same tensors)."""
    x: torch.Tensor
    y: torch.Tensor
    fingerprint: str
    num_classes: int
    device: torch.device
    info: Optional[object] = None      # the test set's DataInfo (dataset, classes, channels: check_model_fits)


def load_test(params: Params, prepared: Path = PREPARED, *, n: Optional[int] = None) -> TestImages:
    """The first `n` (default eval.n_test) test images of the class-interleaved order, decoded, in position order."""
    from easycore.core.evaluate import test_positions

    _, te = load_prepared(prepared, params)
    device = resolve_device(params.runtime.device)
    positions = test_positions(te.labels, params.eval.n_test if n is None else n)   # one rule: evaluate.py
    x, y = decode_at(params, te, positions)
    return TestImages(x.to(device), y.to(device), te.fingerprint, te.num_classes, device, te.info)


def _evaluate(params: Params, test: TestImages, model_path: Path, out_dir: Path, *, progress: bool,
              name: Optional[str]) -> dict:
    from easycore.core.evaluate import evaluate_model, write_eval
    from easycore.core.train import load_model

    device = test.device
    net, mmeta = load_model(model_path, device)
    if test.info is not None:
        check_model_fits(model_path, mmeta, test.info)
    elif mmeta.get("num_classes") != test.num_classes:
        raise ArtifactError(f"{model_path} has {mmeta.get('num_classes')} classes but the test set has "
                            f"{test.num_classes}")
    n = len(test.y)
    out_dir = Path(out_dir)
    label = name or out_dir.name
    name = name or f"{out_dir.parent.name}/{out_dir.name}"
    t0 = time.perf_counter()
    cfg = dataclasses.replace(params.eval.for_mode(mmeta.get("mode") or ""), n_test=n)   # the mode's headline eps
    seconds: dict = {}
    metrics, outcomes = evaluate_model(net, test.x, test.y, cfg, seed=0,
                                       progress=progress, amp=use_amp(params.runtime, device), seconds=seconds)
    meta = {"fingerprint": test.fingerprint, "n": n, "checkpoint": str(model_path),
            "train": {k: mmeta.get(k) for k in ("model", "mode", "seed", "source", "n_train", "fingerprint", "counts")}}
    write_eval(out_dir, metrics, outcomes, meta)
    write_timing("eval", name, time.perf_counter() - t0, images=n,
                 pieces={k: round(v, 2) for k, v in seconds.items()})
    log.info("evaluate: %s on %d test samples -> %s", model_path, n, out_dir)
    accs = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v)
    _say(f"evaluate: {label} on {n} test images: {accs}")
    return metrics


def eval_n(params: Params, run) -> int:
    """How many test images the evaluation of `run` (or of its group) takes: eval.primary_n_test for the primary
    family's groups, eval.n_test for the others (a prefix of the same class-interleaved order)."""
    return params.eval.n_for(params.is_primary_group(run.scores, run.method, run.fraction))


def evaluate_named(params: Params, run: runs.Run, *, progress: bool = True, test: Optional[TestImages] = None) -> dict:
    """The evaluation of pipeline run `run` (`test`: the decoded test images, when a group already holds them)."""
    test = test or load_test(params, n=eval_n(params, run))
    return _evaluate(params, test, run.train_dir() / "model.safetensors", run.eval_dir(), progress=progress,
                     name=run.key)


# ----------------------------------------------------------------------------- AutoAttack on the verdict's models
def autoattack_targets(params: Params, root: Path = runs.ROOT) -> list[runs.Run]:
    """The runs the verdict compares, per mode of eval.autoattack_modes and fraction: the full-data reference,
    EasyCore, random, and the best other method by mean robust accuracy over seeds (from their metrics.json); the
    replicates of the secondary seeds only (train.survey_seeds): AutoAttack is a check for gradient masking beside
    the evaluation's worst case, not the verdict's data."""
    out: list[runs.Run] = []
    keep_seeds = set(params.train.secondary_seeds())
    every = [r for r in runs.expected_runs(params) if r.seed in keep_seeds]
    for mode in params.eval.autoattack_modes:
        out += [r for r in every if r.mode == mode and r.method == runs.FULL]
        for f in sorted({r.fraction for r in every if r.method != runs.FULL}):
            cell = [r for r in every if r.mode == mode and r.fraction == f and r.method != runs.FULL
                    and r.scores in ("main", runs.NONE)]
            means: dict[str, list[float]] = {}
            for r in cell:
                path = r.eval_dir(root) / "metrics.json"
                if path.exists():
                    means.setdefault(r.method, []).append(read_json(path)["robust"]["accuracy"])
            others = {m: float(np.mean(v)) for m, v in means.items() if m not in ("easycore", "random")}
            keep = {"easycore", "random"} | ({max(others, key=others.get)} if others else set())
            out += [r for r in cell if r.method in keep]
    return out


def autoattack_survivors(params: Params, run: runs.Run, index, x, y, fingerprint: str, device, *,
                         progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(before, after), bool [len(index)]: the run's robust outcomes at `index` (positions among the evaluated images)
    and whether each image is still correct after standard AutoAttack at eval.eps, attacked only where `before` holds
    (what AutoAttack could change). x (uint8), y: the images at `index`."""
    from easycore.core.evaluate import autoattack
    from easycore.core.train import load_model

    arrays, _ = load_arrays(run.eval_dir() / "outcomes.npz", fingerprint=fingerprint)
    before = torch.as_tensor(arrays["robust"][np.asarray(index)])
    eps = params.eval.for_mode(run.mode).eps
    after = before.clone()
    idx = before.nonzero().squeeze(1)
    if len(idx):
        net, _ = load_model(run.train_dir() / "model.safetensors", device)
        sel = idx.to(x.device)
        xs, ys = x[sel].to(device).float() / 255, y[sel].to(device)
        after[idx] = autoattack(net, xs, ys, eps=eps, seed=0, batch_size=params.eval.batch_size,
                                progress=progress).cpu()
    return before, after


def autoattack_stage(params: Params, out_root: Path = runs.ROOT / "autoattack", *, prepared: Path = PREPARED,
                     progress: bool = True) -> dict:
    """Standard AutoAttack at eval.eps on eval.autoattack_n of the evaluated test images, spread over the classes
    (`evaluate.class_interleaved`: the first image of each class, then the second, ...), for each verdict model on
    the images it still classifies correctly after the evaluation's attacks (what AutoAttack could change). Writes
    <out_root>/<scores>/<run>/outcomes.npz (robust: before, robust_aa: after; per image of the subset) and
    summary.json (with `index`: the subset's positions among the evaluated images)."""
    from easycore.core.evaluate import class_interleaved, test_positions

    e = params.eval
    _, te = load_prepared(prepared, params)
    device = resolve_device(params.runtime.device)
    evaluated = test_positions(te.labels, e.n_test)                 # the images the evaluation took, in its order
    index = class_interleaved(te.labels[evaluated], e.autoattack_n)  # positions among them
    n = len(index)
    x_all, y_all = decode_at(params, te, evaluated[index])
    targets = autoattack_targets(params)
    summary = {"n": n, "eps": e.eps, "index": index.tolist(), "runs": {}}
    if e.mode_eps:
        summary["mode_eps"] = dict(sorted(e.mode_eps.items()))
    t0 = time.perf_counter()
    absolute = evaluated[index]                                      # the subset's positions in the test set
    for run in targets:
        own = test_positions(te.labels, eval_n(params, run))        # the images this run's evaluation took
        at = np.searchsorted(own, absolute)                          # (a superset of `evaluated`: a prefix rule)
        before, after = autoattack_survivors(params, run, at, x_all, y_all, te.fingerprint, device,
                                             progress=progress)
        save_arrays(out_root / run.key / "outcomes.npz", {"robust": before.numpy(), "robust_aa": after.numpy()},
                    {"fingerprint": te.fingerprint, "n": n, "run": run.key})
        summary["runs"][run.key] = {"robust": float(before.float().mean()), "robust_aa": float(after.float().mean())}
        _say(f"autoattack: {run.key}: robust {before.float().mean():.3f} -> {after.float().mean():.3f} "
             f"on {n} test images spread over the classes")
    write_json(out_root / "summary.json", summary)
    write_timing("autoattack", "all", time.perf_counter() - t0, runs=len(targets))
    return summary
