"""Execute a report notebook: `notebooks/<name>.py` (jupytext percent format, the one source a person edits) is
converted in memory and executed by papermill with its `parameters` cell overridden; the executed copy is written
atomically to reports/notebooks/ (a failed run leaves the published copy untouched and writes
`<out>.failed.ipynb` beside it for inspection)."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from easycore.report import STAGING_ENV, publish
from easycore.store import ArtifactError, atomic_path

NOTEBOOKS = Path("notebooks")


def _strip_timestamps(path: Path) -> None:
    """Drop papermill's wall-clock metadata (start/end times, durations) and number the executed cells' ids (the
    parameters cell papermill injects gets a random one), so an unchanged notebook re-executes to the same bytes."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    for meta in [nb.metadata] + [c.metadata for c in nb.cells]:
        pm = meta.get("papermill")
        if isinstance(pm, dict):
            for k in ("start_time", "end_time", "duration", "output_path"):  # output_path: the random temp file
                pm.pop(k, None)
        meta.pop("execution", None)
    nbformat.write(nb, path)


# the kernel process writes its own log to our stderr: "running over TCP without encryption" at start and, when
# the shutdown's SIGINT lands inside a handler, "KeyboardInterrupt caught in kernel" (both harmless). Cell output
# and cell errors travel over the kernel protocol, not this log, so they are unaffected.
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


# The kernel inherits this process's environment: with MPLBACKEND=Agg (a non-interactive backend) plt.show() draws
# nothing and the executed notebook has no figures. The inline backend puts each figure into the cell's outputs as
# a PNG (byte-stable: no timestamps), and `report.save_figure` still writes the files.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


@contextlib.contextmanager
def _kernel_backend(backend: str):
    """MPLBACKEND=backend for the kernel started inside the block; the previous value restored after."""
    old = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = backend
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old


def image_outputs(nb) -> dict[int, int]:
    """{cell index: number of image outputs (image/png or image/svg+xml)} of an executed notebook node."""
    out = {}
    for i, cell in enumerate(nb.cells):
        n = sum(1 for o in cell.get("outputs", []) for k in o.get("data", {}) if k.startswith("image/"))
        if n:
            out[i] = n
    return out


class NotebookError(ArtifactError):
    """A notebook cell raised: one line naming the notebook, the cell and the error."""


def source(name: str, folder: Path = NOTEBOOKS) -> Path:
    path = Path(folder) / f"{name}.py"
    if not path.exists():
        raise ArtifactError(f"no notebook {path}; choose one of {sorted(p.stem for p in Path(folder).glob('*.py'))}")
    return path


def load(name: str, folder: Path = NOTEBOOKS):
    """The notebook `name` as an nbformat node (from its percent-format source)."""
    import jupytext

    nb = jupytext.read(source(name, folder))
    for i, cell in enumerate(nb.cells):  # nbformat draws cell ids at random; papermill copies them into its metadata
        cell["id"] = f"src-{i}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def takes(name: str, parameter: str, folder: Path = NOTEBOOKS) -> bool:
    """Does notebook `name` declare `parameter` in its parameters cell?"""
    nb = load(name, folder)
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    return cell is not None and any(line.split("=")[0].strip() == parameter for line in cell.source.splitlines())


def run(name: str, parameters: Optional[Mapping[str, Any]] = None, *, out: Optional[Path] = None,
        params_path: str = "params.yaml", folder: Path = NOTEBOOKS, cwd: Optional[Path] = None,
        outcomes: Optional[str] = None) -> Path:
    """Execute notebook `name` with `parameters` (strings are YAML-parsed, as on the command line) and
    params_path; returns the executed notebook's path. `outcomes`: an exported outcomes file (a path the caller
    checked) given to a notebook that takes `outcomes_path` (coresets): it renders from that file, not runs/."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from easycore.config import load_params

    values = {k: (yaml.safe_load(v) if isinstance(v, str) else v) for k, v in (parameters or {}).items()}
    values["params_path"] = params_path
    if outcomes is not None:
        if not takes(name, "outcomes_path", folder):
            raise ArtifactError(f"notebook {name} does not render from an outcomes file (no outcomes_path parameter)")
        values["outcomes_path"] = str(outcomes)
    root = Path(load_params(params_path).report.dir)
    executed = root / "notebooks"
    out = Path(out or executed / f"{name}{''.join(f'_{v}' for v in (parameters or {}).values())}.ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = out.with_suffix(".failed.ipynb")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    # the notebook's tables, figures, summary.json, outcomes.npz go to a staging folder (report.staged) and are
    # published only when every cell ran (report.publish): a late failure or a kill leaves the published set whole
    base = Path(cwd) if cwd else Path.cwd()
    staging = base / root / f".staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)          # what a killed run left
    old_env = os.environ.get(STAGING_ENV)
    os.environ[STAGING_ENV] = f"{os.path.abspath(base / root)}{os.pathsep}{os.path.abspath(staging)}"
    try:
        with atomic_path(out, suffix=".ipynb") as tmp, _kernel_backend(INLINE_BACKEND):
            try:
                papermill.execute_notebook(load(name, folder), str(tmp), parameters=values, kernel_name="python3",
                                           progress_bar=False, log_output=False, cwd=str(cwd) if cwd else None,
                                           extra_arguments=KERNEL_ARGS)
            except PapermillExecutionError as e:
                os.replace(tmp, failed)
                first = (e.evalue or "").strip().splitlines()
                raise NotebookError(f"notebook {name} failed in cell {e.exec_count}: {e.ename}: "
                                    f"{first[0] if first else ''} (executed copy: {failed})") from None
            _strip_timestamps(tmp)
            if staging.exists():
                publish(staging, base / root)
    finally:
        if old_env is None:
            os.environ.pop(STAGING_ENV, None)
        else:
            os.environ[STAGING_ENV] = old_env
        shutil.rmtree(staging, ignore_errors=True)
    failed.unlink(missing_ok=True)
    print(f"notebook: {name} -> {out}", flush=True)
    return out
