"""`easycore reports` (`make reports`): re-execute the report notebooks from the outputs already in the workspace,
without training anything.

* Every report stage of dvc.yaml (`report_<name>`: `easycore notebook <name>`) whose runs/ and data/ inputs are all
  present is re-executed in place, as its stage runs it. After `dvc repro`, or `make pull` on a fresh clone, that is
  all six, and they come out byte-identical to the committed ones: `git diff` shows only what an edited notebook
  changed.
* A notebook that can render from an exported outcomes file (coresets: its `outcomes_path` parameter) and lacks its
  runs (a fresh clone without `make pull`) is rendered from the committed `<report.dir>/outcomes.npz` into
  `<report.dir>/from-outcomes/` (git-ignored), so no committed file changes: the verdict, per-class analysis,
  curves and figures, without the training cost columns and per-run metrics, which that file does not hold.
* The others are listed with the inputs they lack (`make pull` fetches them from the DVC remote).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import yaml

from easycore.config import ConfigError, load_params

log = logging.getLogger("easycore")
SANDBOX = "from-outcomes"


def report_inputs(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, list[str]]:
    """{notebook: the runs/ and data/ paths its report stage depends on}, from dvc.yaml's report_* stages."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    out = {}
    for stage, st in stages.items():
        if stage.startswith("report_"):
            name = st["cmd"].split()[-1]
            out[name] = [str(d) for d in st.get("deps", []) if str(d).startswith(("runs/", "data/"))]
    return out


def _describes_data(outcomes: Path) -> bool:
    """Can the coresets notebook render from `outcomes` here: data/prepared/info.json present, or the file carries
    the data's description (report.outcomes_data)?"""
    from easycore.report import outcomes_data
    from easycore.store import ArtifactError

    if Path("data/prepared/info.json").exists():
        return True
    try:
        outcomes_data(outcomes)
    except ArtifactError:
        return False
    return True


def _sandbox_params(params_path: str, root: Path) -> Path:
    """A copy of the params file whose report.dir is <report.dir>/from-outcomes (written there)."""
    raw = yaml.safe_load(Path(params_path).read_text())
    raw["report"]["dir"] = str(root / SANDBOX)
    path = root / SANDBOX / "params.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def render_all(params_path: str = "params.yaml", *, only: Optional[Sequence[str]] = None) -> dict:
    """Re-execute every report notebook its inputs allow (module docstring). Returns {"rendered": [...],
    "from_outcomes": [...], "missing": {notebook: [inputs]}}; raises ConfigError when nothing could be rendered."""
    from easycore.report import notebook

    params = load_params(params_path)
    root = Path(params.report.dir)
    inputs = report_inputs()
    unknown = sorted(set(only or ()) - set(inputs))
    if unknown:
        raise ConfigError(f"no report stage for {unknown}; choose from {sorted(inputs)}")
    done: dict = {"rendered": [], "from_outcomes": [], "missing": {}}
    for name, deps in inputs.items():
        if only and name not in only:
            continue
        lacking = [d for d in deps if not Path(d).exists()]
        outcomes = root / "outcomes.npz"
        if not lacking:
            notebook.run(name, params_path=params_path)
            done["rendered"].append(name)
        elif outcomes.exists() and notebook.takes(name, "outcomes_path") and _describes_data(outcomes):
            notebook.run(name, params_path=str(_sandbox_params(params_path, root)), outcomes=outcomes.as_posix())
            done["from_outcomes"].append(name)
        else:
            done["missing"][name] = lacking
    for name, lacking in done["missing"].items():
        print(f"reports: {name} not rendered: {', '.join(lacking)} missing (`make pull` fetches them)", flush=True)
    for name in done["from_outcomes"]:
        print(f"reports: {name} rendered from {root / 'outcomes.npz'} into {root / SANDBOX}/ (no runs/ here)",
              flush=True)
    if not done["rendered"] and not done["from_outcomes"]:
        raise ConfigError("no report has its inputs here; `make pull` (the DVC remote) or `dvc repro` first")
    return done
