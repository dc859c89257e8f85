"""The pipeline's stages as plain functions: prepare -> proxy -> select -> train -> evaluate.

Each reads validated params, checks the fingerprints of what it reads, logs what it read and wrote, and
writes atomically. The CLI (`easycore <stage>`) and the DVC stages call these.

Layout (all paths relative to the working directory):
  data/prepared/{train,test}.pt, info.json           prepare
  runs/proxy/<name>/{dynamics.npz,model.pt,history.json,summary.json}   proxy (name: main | transfer)
  runs/coresets/<method>-<fraction>[-<proxy>]/{indices.npy,summary.json} select
  runs/train/<run>/{model.pt,history.json}             train     (run: <method>-<fraction>-<mode>-s<seed>)
  runs/eval/<run>/{metrics.json,outcomes.npz}          evaluate
A run's resume checkpoint lies beside its output folder as `.<name>.state.pt` (kept out of DVC's outs so an
interrupted `dvc repro` resumes it) and is removed once the run's outputs are written.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .aign import AIGNTracker
from .config import Params
from .data import ArrayDataset, load_dataset
from .store import ArtifactError, load_arrays, read_json, save_arrays, write_json
from .train import accuracy, config_hash, resolve_device, save_model, train

log = logging.getLogger("easycore")

PREPARED = Path("data/prepared")


def fmt_fraction(f: float) -> str:
    return f"{f:g}"


def run_name(method: str, fraction: float, mode: str, seed: int) -> str:
    return f"{method}-{fmt_fraction(fraction)}-{mode}-s{seed}"


def state_path_for(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.state.pt"


# ----------------------------------------------------------------------------- prepare
def prepare(params: Params, out_dir: Path = PREPARED) -> dict:
    d = params.data
    root = d.resolved_root()
    t0 = time.perf_counter()
    tr = load_dataset(d.dataset, "train", root, download=d.download, n_per_class=d.n_per_class, seed=d.seed,
                      key="data.n_per_class")
    te = load_dataset(d.dataset, "test", root, download=d.download, n_per_class=d.test_n_per_class, seed=d.seed,
                      key="data.test_n_per_class")
    out_dir = Path(out_dir)
    tr.save(out_dir / "train.pt")
    te.save(out_dir / "test.pt")
    info = {"dataset": d.dataset, "root": str(root), "classes": tr.classes,
            "train": {"n": len(tr), "fingerprint": tr.fingerprint, "per_class": np.bincount(tr.y.numpy()).tolist()},
            "test": {"n": len(te), "fingerprint": te.fingerprint, "per_class": np.bincount(te.y.numpy()).tolist()},
            "seconds": round(time.perf_counter() - t0, 2)}
    write_json(out_dir / "info.json", info)
    log.info("prepare: read %s from %s; wrote %s/{train,test}.pt, info.json", d.dataset, root, out_dir)
    return info


def load_prepared(prepared: Path = PREPARED) -> tuple[ArrayDataset, ArrayDataset]:
    prepared = Path(prepared)
    for f in ("train.pt", "test.pt"):
        if not (prepared / f).exists():
            raise ArtifactError(f"missing {prepared / f}; run `easycore prepare` (or dvc repro) first")
    return ArrayDataset.load(prepared / "train.pt"), ArrayDataset.load(prepared / "test.pt")


def _model_meta(ds: ArrayDataset, model: str, **extra) -> dict:
    mean, std = ds.stats
    return {"model": model, "num_classes": ds.num_classes, "in_channels": ds.in_channels, "mean": list(mean),
            "std": list(std), "dataset": ds.name, "classes": ds.classes, **extra}


# ----------------------------------------------------------------------------- proxy
def proxy(params: Params, out_dir: Path, *, model: Optional[str] = None, prepared: Path = PREPARED,
          progress: bool = True) -> dict:
    """Standard training on the full (prepared) training set, recording AIGN + dynamics every tracked
    epoch; then penultimate features and DeepFool distances at the final checkpoint."""
    from .attacks import deepfool_distance

    p = params.proxy
    model_name = model or p.model
    tr, te = load_prepared(prepared)
    cfg = p.as_train(model_name)
    cfg.device = params.train.device
    tracker = AIGNTracker(n=len(tr), mode=p.aign.mode, every=p.aign.every, epochs=p.epochs)
    out_dir = Path(out_dir)
    state = state_path_for(out_dir)
    log.info("proxy: %s on %s (%d epochs, AIGN %s every %d)", model_name, tr.describe(), p.epochs, p.aign.mode, p.aign.every)
    res = train(cfg, tr, mode="standard", seed=p.seed, state_path=state, tracker=tracker,
                aign_batch_size=p.aign.batch_size, progress=progress)
    net = res.model.eval()
    device = next(net.parameters()).device
    feats, dists = [], []
    for s in range(0, len(tr), p.aign.batch_size):  # final checkpoint: features + DeepFool distances, one pass
        xb = tr.x[s:s + p.aign.batch_size].to(device).float() / 255
        with torch.no_grad():
            feats.append(net.features(xb).float().cpu())
        dists.append(deepfool_distance(net, xb, steps=p.deepfool_steps,
                                       num_classes=p.deepfool_candidates or None).float().cpu())
    arrays = tracker.matrices()
    arrays.update(features=torch.cat(feats).numpy(), deepfool=torch.cat(dists).numpy(), labels=tr.y.numpy(),
                  tracked_epochs=np.asarray(tracker.tracked_epochs, dtype=np.int64))
    test_acc = accuracy(net, te)
    meta = {"fingerprint": tr.fingerprint, "n": len(tr), "model": model_name, "aign_mode": p.aign.mode,
            "every": p.aign.every, "epochs": p.epochs, "seed": p.seed, "params": dataclasses.asdict(p),
            "test_acc": test_acc, "seconds": res.seconds}
    save_arrays(out_dir / "dynamics.npz", arrays, meta)
    save_model(out_dir / "model.pt", net, _model_meta(tr, model_name, fingerprint=tr.fingerprint, role="proxy"))
    write_json(out_dir / "history.json", res.history)
    write_json(out_dir / "summary.json", {k: v for k, v in meta.items() if k != "params"} |
               {"bytes_per_sample": int(sum(a.nbytes for a in arrays.values()) / len(tr))})
    state.unlink(missing_ok=True)
    log.info("proxy: test acc %.3f; wrote %s/{dynamics.npz,model.pt,history.json,summary.json}", test_acc, out_dir)
    return meta


# ----------------------------------------------------------------------------- select
def select(params: Params, method: str, fraction: float, out_dir: Path, *, proxy_dir: Path,
           prepared: Path = PREPARED) -> dict:
    from .coresets import run_select

    c = params.coreset
    tr, _ = load_prepared(prepared)
    out_dir = Path(out_dir)
    summary = run_select(method, fraction, Path(proxy_dir) / "dynamics.npz", out_dir / "indices.npy",
                         out_dir / "summary.json", fingerprint=tr.fingerprint, labels=tr.y.numpy(),
                         balanced=c.balanced, seed=c.seed, window=c.window, p=c.p, squared=c.squared,
                         score_epochs=c.score_epochs, ccs_score=c.ccs_score, ccs_cutoff=c.ccs_cutoff,
                         moderate_band=c.moderate_band)
    log.info("select: %s f=%g from %s -> %s (%d samples)", method, fraction, proxy_dir, out_dir,
             summary.get("n_selected", -1))
    return summary


# ----------------------------------------------------------------------------- train
def train_run(params: Params, out_dir: Path, *, mode: str, seed: int, indices: Optional[Path] = None,
              model: Optional[str] = None, prepared: Path = PREPARED, progress: bool = True) -> dict:
    """Train on the coreset `indices` (positions in the prepared train set; None = all) in `mode`."""
    t = params.train
    tr, te = load_prepared(prepared)
    source = "full"
    if indices is not None:
        summ_path = Path(indices).with_name("summary.json")
        if summ_path.exists():
            summ = read_json(summ_path)
            if summ.get("fingerprint") not in (None, tr.fingerprint):
                raise ArtifactError(f"{indices} was selected on other data ({summ.get('fingerprint')}) than "
                                    f"{prepared}/train.pt ({tr.fingerprint}); re-run select")
        idx = np.load(indices)
        if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= len(tr))) or len(np.unique(idx)) != len(idx):
            raise ArtifactError(f"{indices}: indices must be unique positions in [0, {len(tr)})")
        tr = tr.subset(np.sort(idx))
        source = str(indices)
    cfg = dataclasses.replace(t, model=model or t.model)
    out_dir = Path(out_dir)
    state = state_path_for(out_dir)
    log.info("train: %s %s on %s (%s)", cfg.model, mode, tr.describe(), source)
    res = train(cfg, tr, mode=mode, seed=seed, state_path=state, test_set=te, progress=progress)
    meta = _model_meta(tr, cfg.model, fingerprint=tr.fingerprint, mode=mode, seed=seed, source=source,
                       n_train=len(tr), config_hash=config_hash(dataclasses.asdict(cfg)), seconds=res.seconds)
    save_model(out_dir / "model.pt", res.model, meta)
    write_json(out_dir / "history.json", res.history)
    state.unlink(missing_ok=True)
    log.info("train: wrote %s/{model.pt,history.json} (%.1fs)", out_dir, res.seconds)
    return meta


# ----------------------------------------------------------------------------- evaluate
def evaluate_run(params: Params, model_path: Path, out_dir: Path, *, prepared: Path = PREPARED,
                 progress: bool = True) -> dict:
    from .evaluate import evaluate_model, write_eval
    from .train import load_model

    _, te = load_prepared(prepared)
    device = resolve_device(params.train.device)
    net, mmeta = load_model(model_path, device)
    if mmeta.get("num_classes") != te.num_classes:
        raise ArtifactError(f"{model_path} has {mmeta.get('num_classes')} classes but the test set has {te.num_classes}")
    n = min(params.eval.n_test, len(te))
    x, y = te.x[:n].to(device), te.y[:n].to(device)
    metrics, outcomes = evaluate_model(net, x, y, params.eval, seed=0, progress=progress)
    meta = {"fingerprint": te.fingerprint, "n": n, "checkpoint": str(model_path),
            "train": {k: mmeta.get(k) for k in ("model", "mode", "seed", "source", "n_train", "fingerprint")}}
    write_eval(out_dir, metrics, outcomes, meta)
    log.info("evaluate: %s on %d test samples -> %s", model_path, n, out_dir)
    return metrics
