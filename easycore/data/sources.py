"""What a dataset is read from, as one identity DVC can compare: the `data_source` stage.

DVC cannot observe an environment variable (EASYCORE_DATA overrides `data.root`) nor files outside the repository
that no stage declares, so pointing the data root at other files left `prepare` "up to date". The `data_source`
stage is marked `always_changed` in dvc.yaml (DVC runs it on every `dvc repro`; `dvc status` lists it as "always
changed"); it writes runs/data/source.json, the identity of the files the dataset's loader reads, and `prepare`
depends on that file. Other files re-run `prepare`; a byte-identical copy in another folder re-runs nothing.

The identity holds the files' paths relative to the data root, their sizes and (up to CONTENT_LIMIT bytes in all) a
sha256 of each file's content; above it (ImageNet: ~150 GB) names and sizes only, said in the file (`by`). No
absolute path and no time: the same files give the same dvc.lock on every machine. Content digests are remembered
per file in EASYCORE_CACHE, keyed by path, size, mtime, ctime and inode (a rewrite in place changes the ctime, which
no tool sets back), so a repeated run reads nothing.

Which files a dataset reads is registered with the dataset (`@DATASETS.register(name, sources=fn)`, easycore/data/loaders.py):
fn(root) -> the paths (files or folders) its loader would open, in the loader's own order of preference; when its
data is not there, the paths it would look for (none holds a file, so the stage says the data is missing); [] for a
dataset that reads no files.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable

log = logging.getLogger("easycore.data.sources")

CONTENT_LIMIT = 4 << 30          # bytes: above this, a set is identified by its file names and sizes
SOURCE = Path("runs/data/source.json")


def cache_file() -> Path:
    from easycore.data.base import cache_dir

    return cache_dir() / "source-digests.json"


def _walk(folder: Path, above: frozenset) -> list[Path]:
    """Every file under `folder`, following symbolic links to folders and files as the loaders do (torchvision's
    ImageFolder walks with followlinks=True: a symlinked class folder is read, so it is hashed); a link back to a
    folder above it (a loop the loaders would walk forever) is a DataError."""
    import os

    from easycore.data.base import DataError

    real = os.path.realpath(folder)
    if real in above:
        raise DataError(f"data source: {folder} links back to {real}, a folder above it (a symlink loop); remove the "
                        f"link")
    above = above | {real}
    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir():                           # follows a link to a folder
                out += _walk(Path(e.path), above)
            elif e.is_file():                        # follows a link to a file; a dangling link is no file
                out.append(Path(e.path))
    return out


def _files(paths: Iterable[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(_walk(p, frozenset()))
        elif p.is_file():
            out.append(p)
    return out


def _relative(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:                                   # a source outside the root (a registration's choice)
        return p.name


def identity(root, paths: Iterable[Path], *, content_limit: int = CONTENT_LIMIT, progress: bool = False) -> dict:
    """The identity of the files under `paths` (files or folders): {"files", "bytes", "by", "sha256", "read"}.
    `by` is "content" (relative path, size and sha256 of every file) or "names and sizes" (over content_limit)."""
    root = Path(root).expanduser()
    paths = [Path(p) for p in paths]
    files = _files(paths)
    stats = [f.stat() for f in files]
    total = sum(s.st_size for s in stats)
    by_content = total <= content_limit
    memo_path = cache_file()
    try:
        memo = json.loads(memo_path.read_text()) if by_content and memo_path.exists() else {}
    except (OSError, ValueError):
        memo = {}
    fresh = 0
    digest = hashlib.sha256()
    it = zip(files, stats)
    if progress and by_content and len(files) > 1000:
        from tqdm import tqdm

        it = tqdm(it, total=len(files), desc="data source", unit="file")
    for f, st in it:
        line = f"{_relative(f, root)}\t{st.st_size}"
        if by_content:
            key = str(f.resolve())
            stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            hit = memo.get(key)
            if hit and hit[:-1] == stamp:
                sha = hit[-1]
            else:
                with open(f, "rb") as fh:
                    sha = hashlib.file_digest(fh, "sha256").hexdigest()
                memo[key] = stamp + [sha]
                fresh += 1
            line += f"\t{sha}"
        digest.update(line.encode() + b"\n")
    if fresh:
        from easycore.store import atomic_path

        try:
            with atomic_path(memo_path) as tmp:
                tmp.write_text(json.dumps(memo, sort_keys=True))
        except OSError as e:                              # a read-only cache costs time, not correctness
            log.warning("cannot remember the source digests in %s: %s", memo_path, e)
    log.info("data source: %d files, %d bytes under %s (%d hashed now)", len(files), total, root, fresh)
    return {"files": len(files), "bytes": total, "by": "content" if by_content else "names and sizes",
            "sha256": digest.hexdigest(), "read": [_relative(p, root) for p in paths if p.exists()]}


def status_clean(status_json: str) -> bool:
    """Is `dvc status --json` clean apart from the always-changed data_source stage (nothing else to re-run)?"""
    return all(v == ["always changed"] for v in json.loads(status_json.strip() or "{}").values())
