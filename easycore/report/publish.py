"""Publishing report outputs: staged (all-or-nothing) writes, tables, figures, JSON, the scale caption."""
from __future__ import annotations

import io
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from easycore.config import Params
from easycore.store import atomic_path

TABLES = Path("reports/tables")


FIGURES = Path("reports/figures")


# ----------------------------------------------------------------------------- all-or-nothing report outputs
# `easycore notebook` (notebook.run) sets STAGING_ENV to "<report.dir><os.pathsep><staging folder>" while the
# notebook executes: every writer below then writes what lies under report.dir into the staging folder instead (and
# returns the published path, so the notebook's own output is unchanged), and notebook.run publishes the staging
# folder when the notebook succeeded (`publish`). A failing or killed notebook leaves the published set untouched.
STAGING_ENV = "EASYCORE_REPORT_STAGING"


def staged(path: str | os.PathLike) -> Path:
    """Where a report output `path` is written: its place in the staging folder while a notebook runs under
    `easycore notebook` (paths under report.dir), else `path` itself."""
    spec = os.environ.get(STAGING_ENV)
    if not spec:
        return Path(path)
    root, _, staging = spec.partition(os.pathsep)
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.curdir or rel.split(os.sep)[0] == os.pardir:
        return Path(path)
    return Path(staging) / rel


def publish(staging: Path, root: Path) -> list[Path]:
    """Move a notebook's staged outputs into report.dir `root`: a file directly under the staging folder (summary.json,
    outcomes.npz) replaces its published copy (one rename); a folder one level down (figures/<name>, tables/<name>)
    replaces its published folder as a whole (two renames), so files an earlier configuration wrote there do not
    survive. Returns the published paths."""
    staging, root = Path(staging), Path(root)
    done = []
    for entry in sorted(staging.iterdir()):
        dest = root / entry.name
        if entry.is_file():
            os.replace(entry, dest)
            done.append(dest)
            continue
        dest.mkdir(parents=True, exist_ok=True)
        for sub in sorted(entry.iterdir()):
            target = dest / sub.name
            if sub.is_dir() and target.is_dir():
                old = staging / f".old-{entry.name}-{sub.name}"
                os.rename(target, old)
                os.rename(sub, target)
                shutil.rmtree(old)
            else:
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(sub, target)
            done.append(target)
    return done


def out_dirs(params: Params, name: str) -> tuple[Path, Path]:
    """(figures, tables) folders of notebook `name` under report.dir, created (a notebook with nothing to draw still
    has its declared output folders); under `easycore notebook` they are created in the staging folder."""
    root = Path(params.report.dir)
    dirs = root / "figures" / name, root / "tables" / name
    for d in dirs:
        staged(d).mkdir(parents=True, exist_ok=True)
    return dirs


# ----------------------------------------------------------------------------- output
def to_markdown(df: pd.DataFrame, caption: Optional[str] = None, index: bool = True) -> str:
    md = df.to_markdown(index=index)
    return f"{caption}\n\n{md}\n" if caption else f"{md}\n"


def save_table(df: pd.DataFrame, stem: str, *, caption: Optional[str] = None, out_dir: str | os.PathLike = TABLES,
               index: bool = True, csv: Optional[pd.DataFrame] = None) -> tuple[Path, Path]:
    """Write out_dir/<stem>.md (caption, blank line, Markdown table) and out_dir/<stem>.csv, atomically. `csv`: a
    machine-readable (numeric, no Markdown) frame to write instead of `df` to the CSV."""
    out_dir = Path(out_dir)
    staged(out_dir).mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    with atomic_path(staged(md)) as tmp:
        tmp.write_text(to_markdown(df, caption, index=index))
    buf = io.StringIO()
    (csv if csv is not None else df).to_csv(buf, index=index if csv is None else False, float_format="%.6g")
    with atomic_path(staged(csv_path)) as tmp:
        tmp.write_text(buf.getvalue())
    return md, csv_path


def save_json(obj, path: str | os.PathLike) -> Path:
    from easycore.store import write_json

    write_json(staged(path), obj)
    return Path(path)


def save_figure(fig, stem: str, formats: Sequence[str] = ("png", "svg"), *,
                out_dir: str | os.PathLike = FIGURES, dpi: int = 150) -> list[Path]:
    """Save `fig` as out_dir/<stem>.<fmt> for each format (PNG at `dpi`), atomically, byte-stably (no timestamps,
    fixed SVG ids)."""
    import matplotlib

    out_dir = Path(out_dir)
    staged(out_dir).mkdir(parents=True, exist_ok=True)
    meta = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}}
    paths = []
    for fmt in formats:
        p = out_dir / f"{stem}.{fmt}"
        # svg.hashsalt: the SVG's clip-path ids are hashes salted with a random value unless a salt is given
        with atomic_path(staged(p), suffix=f".{fmt}") as tmp, matplotlib.rc_context({"svg.hashsalt": "easycore"}):
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta.get(fmt))
        paths.append(p)
    return paths


def hardware() -> str:
    """'<n> CPU cores (<processor>)' or the CUDA device name(s)."""
    import torch

    if torch.cuda.is_available():
        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU"


def pipeline_minutes(timings: Path = Path("runs/timings")) -> Optional[float]:
    """Sum of the recorded stage wall times (proxy, train, evaluate runs; the report stages not included)."""
    files = list(Path(timings).rglob("*.json")) if Path(timings).is_dir() else []
    total = 0.0
    for f in files:
        try:
            total += float(json.loads(f.read_text())["seconds"])
        except (OSError, ValueError, KeyError):
            continue
    return round(total / 60, 1) if files else None


def scale_caption(params: Params, info: Optional[dict] = None, *, what: str = "") -> str:
    """One caption line stating the scale: dataset, subset sizes, model, epochs, seeds, attacks, hardware (no wall
    time: a report output re-made from the same runs has the same bytes; see `timing_table`)."""
    d, t, e = params.data, params.train, params.eval
    n_tr = info["train"]["n"] if info else None
    n_te = info["test"]["n"] if info else None
    sub = "full training set" if d.n_per_class is None else f"{d.n_per_class}/class"
    strong = f" + {', '.join(e.strong)} on survivors" if e.strong else ""
    aa = ""
    n_att = f"{min(e.n_test, n_te or e.n_test)} test images attacked"
    if e.primary_n_test and e.primary_n_test != e.n_test:
        n_att = (f"{min(e.primary_n_test, n_te or e.primary_n_test)} test images attacked for the primary family, "
                 f"{min(e.n_test, n_te or e.n_test)} for the other groups")
    eps = (", ".join(f"{m} {e.for_mode(m).eps * 255:g}/255" for m in t.modes) if e.mode_eps else
           f"{e.eps * 255:.0f}/255")
    full = (f"; full-data reference {t.full_epochs} epochs, {len(t.full_data_seeds())} replicates"
            if t.full_epochs or t.full_seeds else "")
    return (f"*{what}Scale: {d.dataset} {sub} ({n_tr} train samples), {n_att}; model {t.model}, {t.epochs} epochs "
            f"(batch {t.batch_size}){full}; TRADES beta {t.attack.beta}, "
            f"{t.attack.steps} steps; robust = per-image worst case over {', '.join(e.attacks)} at Linf eps "
            f"{eps} (PGD-{e.pgd_steps}){strong}{aa}; proxy {params.proxy.model} "
            f"{params.proxy.epochs} epochs; {len(t.seeds)} whole-pipeline replicate"
            f"{'s' if len(t.seeds) > 1 else ''} (seeds {t.seeds}; secondary groups: {t.secondary_seeds()}); "
            f"hardware: {hardware()}. Intervals: 95 %, the replicate as the unit (crossed test images x replicates, "
            f"t with Satterthwaite df >= K - 1; over test images alone where a cell has one replicate); bold only where the "
            f"paired interval against the runner-up excludes 0.*")
