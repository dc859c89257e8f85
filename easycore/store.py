"""Artifacts on disk: atomic writes, and metadata (dataset fingerprint + params) that travels with every file.

Every writer goes through `atomic_path`: the payload is written to a temp file in the target folder and
renamed into place, so a killed process never leaves a half-written artifact under the real name.

Array artifacts are `.npz` files with a `__meta__` entry (a JSON string); `load_arrays` checks it against
an expected fingerprint and length and fails with one clear message when they do not match.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

META_KEY = "__meta__"


class ArtifactError(RuntimeError):
    """An artifact is missing, corrupt, or was built from other data than the one it is used with."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it onto `path`, on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(path)


def read_json(path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); delete it and re-run the stage that makes it") from None


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def save_arrays(path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Save named arrays plus a metadata dict (fingerprint, params, ...) as one .npz, atomically."""
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[META_KEY] = np.array(json.dumps(dict(meta), default=_json_default))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)
    return Path(path)


def load_arrays(path, *, fingerprint: str | None = None, length: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Load an .npz written by `save_arrays`, checking its dataset fingerprint and per-sample length."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing artifact {path}; run the stage that makes it (dvc repro) first")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != META_KEY}
            meta = json.loads(str(z[META_KEY])) if META_KEY in z.files else {}
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, ...
        raise ArtifactError(f"cannot read {path}: {type(e).__name__}: {e}; delete it and re-run the stage that makes it") from None
    check_meta(path, meta, fingerprint=fingerprint, length=length)
    return arrays, meta


def check_meta(path, meta: Mapping, *, fingerprint: str | None = None, length: int | None = None) -> None:
    if fingerprint is not None:
        got = meta.get("fingerprint")
        if got != fingerprint:
            raise ArtifactError(
                f"{path} was built from other data (fingerprint {got!r}) than the data it is used with "
                f"({fingerprint!r}); re-run the stage that makes it with the same data settings")
    if length is not None and "n" in meta and int(meta["n"]) != int(length):
        raise ArtifactError(f"{path} holds {meta['n']} samples but the dataset has {length}")


def save_torch(path, obj: Any) -> Path:
    import torch

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch(path, map_location="cpu") -> Any:
    import torch

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing checkpoint {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ArtifactError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None


def save_npy(path, array: np.ndarray) -> Path:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array))
    return Path(path)


def save_tensors(path, tensors, meta) -> Path:  # provisional; replaced by the store branch
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in sorted(tensors.items())},
                metadata={"meta": json.dumps(dict(meta), sort_keys=True, default=_json_default)})
    with atomic_path(path, suffix=".safetensors") as tmp:
        tmp.write_bytes(data)
    return Path(path)


def load_tensors(path):  # provisional; replaced by the store branch
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ArtifactError(f"{path} is corrupt or truncated ({type(e).__name__}); delete it and re-run the stage "
                            f"that makes it") from None
    return tensors, meta
