"""A run's files: the resume checkpoint (read, validated, resumed; removed once the outputs are written) and the
final model (safetensors + the metadata that rebuilds it).

A checkpoint is resumed only when its identity hash (settings, data fingerprint, code) matches the run's; an
unreadable, stale or mismatched one is ignored with a warning and the run starts fresh. Several processes: rank 0
reads it and broadcasts it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from easycore.core import dist
from easycore.core.models import build_model
from easycore.rng import get_rng_state, set_rng_state
from easycore.store import ArtifactError, load_state

if TYPE_CHECKING:
    from easycore.core.callbacks import Loop

log = logging.getLogger("easycore.core.train")


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_hash() -> str:
    """A hash of the package's sources: a checkpoint made by other code is not resumed."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def records_dir(state_path) -> Path:
    """The folder of a checkpoint's per-epoch AIGN records: `.main.state.pt` -> `.main.state.records/`."""
    state_path = Path(state_path)
    return state_path.with_suffix(".records") if state_path.suffix == ".pt" else Path(f"{state_path}.records")


def remove_state(state_path) -> None:
    """Delete a checkpoint and its AIGN records (when a run's outputs are written, or a stale one is replaced)."""
    Path(state_path).unlink(missing_ok=True)
    shutil.rmtree(records_dir(state_path), ignore_errors=True)


def resume(state_path, ident_hash: str, loop: Loop, opt, callbacks) -> tuple[list, int]:
    """Load a matching checkpoint into the model, optimiser, callbacks and RNGs: (history, first epoch to run).
    Several processes: rank 0 reads it and broadcasts it (the others need no access to its files); the counts
    stay with rank 0 (the job's counts are the ranks' sum)."""
    if dist.active():
        st = _read_checkpoint(state_path, ident_hash, "cpu", callbacks, loop=loop, opt=opt) if dist.is_main() \
            else None
        st = dist.broadcast_object(st)
        if st is not None and not dist.is_main():
            _load_callbacks(st, callbacks)
    else:
        st = _read_checkpoint(state_path, ident_hash, loop.device, callbacks, loop=loop, opt=opt)
    if st is None:
        return [], 0
    loop.model.load_state_dict(st["model"])
    opt.load_state_dict(st["optimizer"])
    if dist.is_main():
        loop.counts.update(st["counts"])
    set_rng_state(st["rng"])
    log.warning("resumed from %s after epoch %d/%d", state_path, st["epoch"], loop.cfg.epochs)
    return st["history"], st["epoch"]


def _read_checkpoint(state_path, ident_hash: str, map_location, callbacks, *, loop: Optional["Loop"] = None,
                     opt=None) -> Optional[dict]:
    """The checkpoint at state_path with the callbacks' state loaded from it, or None (with a warning) when there
    is none, it is unreadable, it was made with other settings, it is damaged (`validate_state`, with `loop`), or
    a callback's files are missing."""
    if state_path is None or not Path(state_path).exists():
        return None
    try:
        st = load_state(state_path, map_location=map_location)
    except ArtifactError as e:
        log.warning("ignoring unreadable checkpoint (%s); starting fresh", e)
        return None
    if not isinstance(st, dict) or st.get("identity_hash") != ident_hash:
        log.warning("checkpoint %s was made with other settings, data or code; starting fresh", state_path)
        return None
    if loop is not None:
        why = validate_state(st, epochs=loop.cfg.epochs, model=loop.model, opt=opt)
        if why:
            log.warning("ignoring damaged checkpoint %s (%s); starting fresh", state_path, why)
            return None
    try:
        _load_callbacks(st, callbacks)  # the AIGN callback (first) checks its record files before it changes
    except ArtifactError as e:
        log.warning("ignoring checkpoint %s (%s); starting fresh", state_path, e)
        return None
    return st


def validate_state(st: dict, *, epochs: int, model: torch.nn.Module, opt=None) -> Optional[str]:
    """Why the checkpoint `st` (identity already matched) cannot be resumed, or None: the completed epoch count
    in [1, epochs], a history of exactly that many epoch records (1, 2, ...), the model's tensors (names, shapes,
    finite floats), an optimizer state of the optimizer's layout, integer counts, the RNG states `set_rng_state`
    needs (they are restored once, as a test), and a callbacks mapping; no all-zero weight matrix; optimizer state
    tensors of their parameters' shapes, finite; pass counts >= 0. A checkpoint is a file anybody can edit: an
    `epoch` of 99 would otherwise skip training and publish its weights as the model, -5 would run 11 epochs of a
    6-epoch run, a malformed generator state would fail every re-run with a traceback, and NaN momentum would end
    in "lower the learning rate"."""
    ep = st.get("epoch")
    if isinstance(ep, bool) or not isinstance(ep, int) or not 1 <= ep <= epochs:
        return f"epoch {ep!r} is not a completed epoch of this {epochs}-epoch run"
    hist = st.get("history")
    if not isinstance(hist, list) or len(hist) != ep or not all(
            isinstance(r, dict) and r.get("epoch") == i + 1 for i, r in enumerate(hist)):
        return f"its history is not the records of epochs 1..{ep}"
    sd, want = st.get("model"), model.state_dict()
    weights = {k for k, _ in model.named_parameters()}
    if not isinstance(sd, dict) or set(sd) != set(want):
        return "its model weights are not this model's"
    for k, v in want.items():
        got = sd[k]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(v.shape) or got.dtype != v.dtype:
            return f"model tensor {k!r} is not this model's ({tuple(v.shape)} {v.dtype})"
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            return f"model tensor {k!r} holds NaN or inf"
        if k in weights and got.dim() >= 2 and not bool(got.any()):
            return f"model tensor {k!r} is all zeros (no initialised or trained weight is)"
    osd = st.get("optimizer")
    if not isinstance(osd, dict) or not isinstance(osd.get("state"), dict) \
            or not isinstance(osd.get("param_groups"), list):
        return "its optimizer state is malformed"
    if opt is not None:
        mine = opt.state_dict()["param_groups"]
        if len(osd["param_groups"]) != len(mine) or any(
                not isinstance(g, dict) or g.get("params") != m["params"] for g, m in zip(osd["param_groups"], mine)):
            return "its optimizer state is not this optimizer's"
        params = [p for g in opt.param_groups for p in g["params"]]
        for i, per in osd["state"].items():
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(params) or not isinstance(per, dict):
                return "its optimizer state is not this optimizer's"
            for name, t in per.items():
                if not isinstance(t, torch.Tensor):
                    continue
                if t.dim() > 0 and (tuple(t.shape) != tuple(params[i].shape) or t.dtype != params[i].dtype):
                    return (f"its optimizer state {name!r} of parameter {i} is {tuple(t.shape)} {t.dtype}, not the "
                            f"parameter's {tuple(params[i].shape)} {params[i].dtype}")
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    return f"its optimizer state {name!r} of parameter {i} holds NaN or inf"
    counts = st.get("counts")
    if not isinstance(counts, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and math.isfinite(v) and v >= 0 for v in counts.values()):
        return "its counts are malformed (pass counts are finite numbers >= 0)"
    rng = st.get("rng")
    if not isinstance(rng, dict) or not all(k in rng for k in ("torch", "numpy", "python")) \
            or not isinstance(rng["torch"], torch.Tensor) or not isinstance(rng["numpy"], (dict, list, tuple)) \
            or not isinstance(rng["python"], (dict, list, tuple)):
        return "its random generator states are missing or malformed"
    why = _rng_restorable(rng)
    if why:
        return f"its random generator states are malformed ({why})"
    if not isinstance(st.get("callbacks"), dict):
        return "its callbacks' state is malformed"
    return None


def _rng_restorable(rng: dict) -> Optional[str]:
    """Why `set_rng_state(rng)` fails (the error, one line), or None; the generators are left as they were."""
    saved = get_rng_state()
    try:
        set_rng_state(rng)
    except Exception as e:          # noqa: BLE001  (whatever torch / numpy / random raise for a bad state)
        first = (str(e).strip().splitlines() or [""])[0][:120]
        return f"{type(e).__name__}: {first}" if first else type(e).__name__
    finally:
        set_rng_state(saved)
    return None


def _load_callbacks(st: dict, callbacks) -> None:
    for c in callbacks:
        if c.name in st["callbacks"]:
            c.load_state_dict(st["callbacks"][c.name])


def save_model(path, model: torch.nn.Module, meta: dict) -> Path:
    """Final weights (safetensors) + everything needed to rebuild the model (name, classes, stats) + provenance."""
    from easycore.store import save_tensors

    return save_tensors(path, model.state_dict(), meta)


def check_model_meta(path, meta: dict) -> None:
    """The metadata load_model builds the model from, typed: model a string, num_classes >= 1 and in_channels >= 1
    integers, mean / std in_channels finite numbers (std > 0). ArtifactError (one line) otherwise."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    bad = None
    if not isinstance(meta.get("model"), str):
        bad = "model"
    elif not (is_int(meta["num_classes"]) and meta["num_classes"] >= 1):
        bad = "num_classes"
    elif not (is_int(meta["in_channels"]) and meta["in_channels"] >= 1):
        bad = "in_channels"
    else:
        for k in ("mean", "std"):
            v = meta[k]
            if not (isinstance(v, list) and len(v) == meta["in_channels"]
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                            and (k == "mean" or x > 0) for x in v)):
                bad = k
                break
    if bad is not None:
        raise ArtifactError(f"{path}: model metadata {bad} = {meta[bad]!r} is not valid; the file is not a model "
                            f"written by easycore or is damaged; re-run the stage that makes it")


def load_model(path, device="cpu"):
    """Rebuild a model saved by `save_model`. Returns (model in eval mode, meta). A file that is not such a model
    (missing keys, another architecture's weights) is an ArtifactError with one line."""
    from easycore.store import load_tensors

    sd, meta = load_tensors(path)
    missing = [k for k in ("model", "num_classes", "in_channels", "mean", "std") if k not in meta]
    if missing:
        raise ArtifactError(f"{path} is not a model written by easycore (its metadata lacks {', '.join(missing)}); "
                            f"re-run the stage that makes it")
    check_model_meta(path, meta)
    wrong = f"{path} does not hold the weights of the model its metadata names ({meta.get('model')!r})"
    try:
        model = build_model(meta["model"], meta["num_classes"], meta["in_channels"], meta["mean"], meta["std"])
        want = model.state_dict()
        diff = [(what, [k for k in keys if test(k)]) for what, keys, test in (
            ("missing", want, lambda k: k not in sd), ("unexpected", sd, lambda k: k not in want),
            ("of another shape", want, lambda k: k in sd and tuple(sd[k].shape) != tuple(want[k].shape)))]
        if any(ks for _, ks in diff):
            raise ArtifactError(f"{wrong}: " + ", ".join(f"{len(ks)} tensors {what} (e.g. {ks[0]!r})"
                                                          for what, ks in diff if ks))
        model.load_state_dict(sd)
    except (KeyError, ValueError, RuntimeError) as e:
        if isinstance(e, ArtifactError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{wrong}: {first}") from None
    return model.to(device).eval(), meta
