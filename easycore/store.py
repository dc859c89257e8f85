"""Artifacts on disk: atomic, byte-stable writes; loaders that never run code from a file; one-line errors.

Every writer goes through `atomic_path`: the payload is written to a temp file in the target folder and
renamed into place, so a killed process never leaves a half-written artifact under the real name. The file
then has the mode a plain `open()` would give it (0o666 & ~umask), not mkstemp's 0o600.

Byte-stable: the same content gives the same bytes whatever the target or temp file is called, so DVC sees
an unchanged output as unchanged.

Formats:
- tensors (model weights, prepared datasets): `save_tensors` / `load_tensors`, safetensors with the metadata
  as one JSON string. No pickle at all.
- resume checkpoints (optimizer/scheduler state, history, RNG states): `save_state` / `load_state`,
  torch.save read back with `torch.load(weights_only=True)`: only tensors and plain Python values
  (dict, list, tuple, str, int, float, bool, None) and numeric numpy arrays; anything else is refused
  before any of it runs.
- arrays with metadata: `save_arrays` / `load_arrays`, an .npz with a `__meta__` JSON entry, fixed zip
  timestamps, never pickled (object arrays are refused both ways).
- JSON: `write_json` / `read_json`; single arrays: `save_npy`.

Every loader raises `ArtifactError` with one line naming the file: "missing ...", "... is corrupt or
truncated ...; delete it and re-run the stage that makes it", or "refusing to load ...".
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

if TYPE_CHECKING:      # torch is imported where tensors are read or written, not at import time
    import torch

META_KEY = "__meta__"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)          # the zip format's earliest date: a fixed stamp for every member
PLAIN_TYPES = (str, int, float, bool, type(None))


class ArtifactError(RuntimeError):
    """An artifact is missing, corrupt, unsafe, or was built from other data than the one it is used with."""


# ----------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    try:                                   # Linux: read it without changing it (thread-safe)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; on success give it mode 0o666 & ~umask, fsync it and rename it onto
    `path`; on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _corrupt(path, what: str = "") -> ArtifactError:
    why = f" ({what})" if what else ""
    return ArtifactError(f"{path} is corrupt or truncated{why}; delete it and re-run the stage that makes it")


def _one_line(e: BaseException, limit: int = 200) -> str:
    s = " ".join(str(e).split())
    s = s if len(s) <= limit else s[: limit - 3] + "..."
    return f"{type(e).__name__}: {s}" if s else type(e).__name__


def _require(path, kind: str = "artifact") -> Path:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing {kind} {path}; run the stage that makes it (dvc repro) first")
    return path


# ----------------------------------------------------------------------------- JSON
def write_json(path, obj: Any) -> Path:
    """Write `obj` as indented JSON (keys in the order given; numpy scalars/arrays and Paths converted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(path)


def read_json(path) -> Any:
    path = _require(path, "file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _corrupt(path, f"not valid JSON: {_one_line(e)}") from None


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _meta_json(meta: Mapping[str, Any]) -> str:
    return json.dumps(dict(meta), default=_json_default, separators=(",", ":"))


# ----------------------------------------------------------------------------- tensors (safetensors)
def save_tensors(path, tensors: Mapping[str, "torch.Tensor"], meta: Mapping[str, Any]) -> Path:
    """Save named tensors plus a JSON-able metadata dict as one .safetensors file, atomically.

    Tensors are detached, moved to CPU and made contiguous; tensors sharing memory are copied apart (the
    format stores each one whole). The bytes depend only on the names, tensors and meta: safetensors orders
    tensors by dtype and name itself, and the meta is one JSON string under the key "__meta__".
    Returns the path.
    """
    import torch
    from safetensors.torch import save_file

    flat: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in tensors.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise TypeError(f"save_tensors({path}): {k!r} must be a str naming a torch.Tensor, got {type(v).__name__}")
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr and ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        flat[k] = t
    header = {META_KEY: _meta_json(meta)}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(flat, str(tmp), metadata=header)
    return Path(path)


def load_tensors(path, *, device: str = "cpu", fingerprint: str | None = None,
                 length: int | None = None) -> tuple[dict[str, "torch.Tensor"], dict]:
    """Load a file written by `save_tensors`. Returns (tensors by name in sorted name order, meta dict);
    checks the meta's dataset fingerprint and per-sample length `n` when given (see `check_meta`)."""
    from safetensors import safe_open

    path = _require(path)
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in sorted(f.keys())}
        meta = json.loads(header[META_KEY]) if META_KEY in header else {}
    except Exception as e:  # SafetensorError (header too large/small, incomplete buffer), JSON, OSError, ...
        raise _corrupt(path, f"not a readable safetensors file: {_one_line(e)}") from None
    if not isinstance(meta, dict):
        raise _corrupt(path, "its __meta__ is not a JSON object")
    check_meta(path, meta, fingerprint=fingerprint, length=length)
    return tensors, meta


# ----------------------------------------------------------------------------- resume state (torch, weights_only)
@functools.lru_cache(maxsize=None)
def _numpy_safe_globals() -> tuple:
    """The globals a pickled numeric numpy array needs (reconstruct, ndarray, dtype, the numeric dtype
    classes). None of them can run code: torch's weights_only unpickler still refuses everything else."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    out = [_reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                  np.float16, np.float32, np.float64, np.complex64, np.complex128):
            out.append(type(np.dtype(t)))
    return tuple(out)


def _check_plain(obj: Any, where: str = "state") -> None:
    """Raise TypeError naming the first value that `torch.load(weights_only=True)` would refuse."""
    import torch

    if type(obj) in PLAIN_TYPES or isinstance(obj, (torch.Tensor, torch.dtype, torch.Size, torch.device)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if type(k) not in PLAIN_TYPES:
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; keys must be str/int/float/bool/None")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, np.ndarray) and type(obj) is np.ndarray and not obj.dtype.hasobject \
            and obj.dtype.fields is None and type(obj.dtype) in _numpy_safe_globals():
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: a resume state may hold only "
                    f"tensors, numeric numpy arrays, dict/list/tuple and str/int/float/bool/None")


def _torch_save_bytes(obj: Any, f) -> None:
    """torch.save into an open file object: the zip's root folder is then always 'archive' (torch names it
    after the file when given a path, which would put the random temp name into the bytes). Zip dates are
    fixed by torch and its serialization_id is a hash of the record names and CRCs: no random id."""
    import torch

    torch.save(obj, f)


def save_state(path, obj: Any) -> Path:
    """Save a resume checkpoint (nested dict/list/tuple of tensors, numeric numpy arrays and plain values:
    optimizer/scheduler state dicts, history, `rng.get_rng_state()`), atomically and byte-stably.
    Raises TypeError (nothing written) naming the first value `load_state` would refuse. Returns the path."""
    _check_plain(obj)
    with atomic_path(path, suffix=".pt") as tmp:
        with open(tmp, "wb") as f:
            _torch_save_bytes(obj, f)
    return Path(path)


def load_state(path, map_location="cpu") -> Any:
    """Load a checkpoint with torch.load(weights_only=True): tensors, plain values and numeric numpy arrays
    only. A file that would construct anything else (e.g. a pickle with a malicious __reduce__) raises
    ArtifactError "refusing to load ...: not a plain-tensor checkpoint" and nothing in it runs."""
    import torch

    path = _require(path, "checkpoint")
    _check_torch_container(path)
    try:
        with torch.serialization.safe_globals(list(_numpy_safe_globals())), warnings.catch_warnings():
            warnings.simplefilter("ignore")        # "Detected pickle protocol 4 ...": refused below if unsupported
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "Unsupported" in msg or "allowlist" in msg:
            detail = _refusal_detail(msg)
            raise ArtifactError(f"refusing to load {path}: not a plain-tensor checkpoint ({detail}); it may "
                                f"run code when unpickled; delete it and re-run the stage that makes it") from None
        raise _corrupt(path, _one_line(e)) from None
    except Exception as e:  # RuntimeError from the zip reader, EOFError, ...
        raise _corrupt(path, _one_line(e)) from None
    if _has_object_array(obj):
        raise ArtifactError(f"refusing to load {path}: not a plain-tensor checkpoint (an object-dtype array)")
    return obj


def _refusal_detail(msg: str) -> str:
    """The one informative line of torch's long weights_only message, e.g. 'Unsupported global: GLOBAL io.open'."""
    for line in msg.splitlines():
        line = line.split("WeightsUnpickler error:", 1)[-1].strip()
        if line.startswith("Unsupported global:"):
            return line.split(" was not an allowed global")[0]
        if line.startswith("Can only build") and "but got " in line:
            return "cannot build " + line.split("but got ", 1)[1][:100]
        if line.startswith(("Unsupported", "Trying to")):
            return line[:120]
    return "it names objects other than tensors and plain values"


def _has_object_array(obj: Any) -> bool:
    if isinstance(obj, np.ndarray):
        return obj.dtype.hasobject
    if isinstance(obj, dict):
        return any(_has_object_array(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_has_object_array(v) for v in obj)
    return False


def _check_torch_container(path: Path) -> None:
    """Tell a damaged file from a refused one before unpickling: a torch zip must open and pass its CRCs; a
    legacy (non-zip) torch file must at least be a well-formed pickle stream."""
    size = path.stat().st_size
    if size == 0:
        raise _corrupt(path, "empty file")
    with open(path, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path) or head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
                names = z.namelist()
        except Exception as e:
            raise _corrupt(path, _one_line(e)) from None
        if bad is not None:
            raise _corrupt(path, f"bad CRC in {bad}")
        if not any(n.endswith("data.pkl") for n in names):
            raise _corrupt(path, "not a torch checkpoint: no data.pkl")
        return
    import pickletools

    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
    except Exception:
        raise _corrupt(path, "neither a complete torch zip archive nor a pickle stream") from None


def load_torch(path, map_location="cpu") -> Any:
    """Read a .pt file from before safetensors (model.pt, prepared/*.pt, .state.pt): weights_only=True
    only, same rules and errors as `load_state`."""
    return load_state(path, map_location=map_location)


def save_torch(path, obj: Any) -> Path:
    """Deprecated: use save_tensors (weights, datasets) or save_state (resume checkpoints). Writes `obj` with
    torch.save, atomically and byte-stably, without the plain-content check (load_torch still enforces it)."""
    with atomic_path(path, suffix=".pt") as tmp:
        with open(tmp, "wb") as f:
            _torch_save_bytes(obj, f)
    return Path(path)


# ----------------------------------------------------------------------------- arrays (.npz / .npy)
def save_arrays(path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Save named arrays plus a metadata dict (fingerprint, params, ...) as one .npz, atomically.

    Byte-stable: members are stored uncompressed in the order given (then `__meta__`), each dated
    1980-01-01 with fixed attributes. Object arrays are refused (TypeError): they would need pickle.
    Readable by plain `np.load`. Returns the path.
    """
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    if META_KEY in payload:
        raise ValueError(f"save_arrays: {META_KEY!r} is reserved for the metadata")
    for k, a in payload.items():
        if a.dtype.hasobject:
            raise TypeError(f"save_arrays({path}): array {k!r} has dtype {a.dtype} (Python objects); store "
                            f"numbers, bools or fixed-width strings")
    payload[META_KEY] = np.array(_meta_json(meta))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f, zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED) as z:
            for k, a in payload.items():
                info = zipfile.ZipInfo(k + ".npy", date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_STORED
                info.create_system = 3                   # unix, whatever machine writes it
                info.external_attr = 0o644 << 16
                with z.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, a, allow_pickle=False)
    return Path(path)


def load_arrays(path, *, fingerprint: str | None = None, length: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Load an .npz written by `save_arrays`, checking its dataset fingerprint and per-sample length.
    Returns (arrays by name in file order, meta dict). Never unpickles: an object-dtype array is refused."""
    path = _require(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            arrays = {}
            for k in z.files:
                if k == META_KEY:
                    continue
                try:
                    arrays[k] = z[k]
                except ValueError as e:
                    if "pickle" in str(e).lower():
                        raise ArtifactError(f"refusing to load {path}: array {k!r} holds Python objects "
                                            f"(object dtype, needs pickle); delete it and re-run the stage "
                                            f"that makes it") from None
                    raise
            meta = json.loads(str(z[META_KEY])) if META_KEY in z.files else {}
    except ArtifactError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, OSError, ...
        raise _corrupt(path, _one_line(e)) from None
    check_meta(path, meta, fingerprint=fingerprint, length=length)
    return arrays, meta


def check_meta(path, meta: Mapping, *, fingerprint: str | None = None, length: int | None = None) -> None:
    """Raise ArtifactError when meta["fingerprint"] differs from `fingerprint` or meta["n"] from `length`."""
    if fingerprint is not None:
        got = meta.get("fingerprint")
        if got != fingerprint:
            raise ArtifactError(
                f"{path} was built from other data (fingerprint {got!r}) than the data it is used with "
                f"({fingerprint!r}); re-run the stage that makes it with the same data settings")
    if length is not None and "n" in meta and int(meta["n"]) != int(length):
        raise ArtifactError(f"{path} holds {meta['n']} samples but the dataset has {length}")


def save_npy(path, array: np.ndarray) -> Path:
    """Save one array as .npy, atomically (np.save's bytes carry no date or name: already byte-stable)."""
    a = np.asarray(array)
    if a.dtype.hasobject:
        raise TypeError(f"save_npy({path}): dtype {a.dtype} holds Python objects; store numbers or bools")
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, a, allow_pickle=False)
    return Path(path)

