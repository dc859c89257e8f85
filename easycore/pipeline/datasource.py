"""The data_source stage: the identity of the files the dataset is read from (easycore.data.sources), written on every `dvc repro`, and the housekeeping of checkpoints a run-cache restore left."""
from __future__ import annotations

import logging
from pathlib import Path

from easycore.data.sources import SOURCE, identity

log = logging.getLogger("easycore")


def stage(params, out: Path = SOURCE, *, progress: bool = False) -> dict:
    """The `data_source` stage: the identity of the files params.data.dataset is read from under the resolved data
    root (data.root, or EASYCORE_DATA), written to `out` (runs/data/source.json; same files, same bytes)."""
    from easycore.registry import registry

    DATASETS = registry("datasets")
    from easycore.data.base import DataError, _missing
    from easycore.store import write_json

    d = params.data
    root = d.resolved_root()
    entry = DATASETS.get(d.dataset)
    if "sources" not in entry.meta:
        raise DataError(f"dataset {d.dataset!r} is registered without sources= (the files its loader reads under the "
                        f"data root), so DVC could not tell when they change; add sources=fn to its "
                        f"@DATASETS.register line (sources=lambda root: [] for data that reads no files)")
    paths = entry.sources(root)                          # [] = a dataset that reads no files (synthetic)
    ident = {"dataset": d.dataset, **identity(root, paths, progress=progress)}
    if paths and not ident["files"] and not d.download:
        raise _missing(d.dataset, root, "one of the layouts easycore/data/loaders.py lists")
    write_json(out, ident)
    log.info("data source: read %s under %s; wrote %s", ", ".join(ident["read"]) or "nothing", root, out)
    # housekeeping at the start of every `dvc repro` (this stage always runs, before any training stage): the
    # checkpoints a stage restored from DVC's run-cache left behind (runs.stale_states)
    from easycore.pipeline.runs import remove_stale_states

    gone = remove_stale_states(params)
    if gone:
        log.warning("removed %d stale checkpoint(s) of runs whose outputs are complete and newer: %s", len(gone),
                    ", ".join(str(p) for p in gone[:3]) + (" ..." if len(gone) > 3 else ""))
    print(f"data source: {d.dataset}: {ident['files']} file{'s' * (ident['files'] != 1)}, "
          f"{ident['bytes'] / 1e6:.1f} MB under {root} ({ident['by']}, sha256 {ident['sha256'][:12]})", flush=True)
    return ident
